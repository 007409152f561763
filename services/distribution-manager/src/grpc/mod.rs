//! gRPC adapters: validate and convert at the edge, call the use-case types, convert back.

mod distribution_points;
mod pending;

pub use distribution_points::DistributionPointGrpc;
pub use pending::{
    CertificateGrpc, ClientPolicyGrpc, ContentGrpc, ContentLocationGrpc,
    DistributionPointGroupGrpc, SiteGrpc,
};
