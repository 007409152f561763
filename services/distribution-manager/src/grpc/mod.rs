//! gRPC adapters: validate and convert at the edge, call the use-case types, convert back.

mod content;
mod distribution_points;
mod groups;
mod pending;

pub use content::ContentGrpc;
pub use distribution_points::DistributionPointGrpc;
pub use groups::DistributionPointGroupGrpc;
pub use pending::{CertificateGrpc, ClientPolicyGrpc, ContentLocationGrpc, SiteGrpc};
