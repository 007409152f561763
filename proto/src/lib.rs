//! The `clouddp.v1` contracts, compiled once for every crate: messages, gRPC clients and servers, and the
//! encoded file descriptor set that servers register for reflection.
#![forbid(unsafe_code)]

pub mod convert;

/// Package `clouddp.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("clouddp.v1");
}

/// The encoded `FileDescriptorSet` of every `clouddp.v1` file and its imports, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("clouddp_descriptor");

/// The `clouddp.v1` services the distribution manager serves, by full name.
pub const DISTRIBUTION_MANAGER_SERVICES: &[&str] = &[
    "clouddp.v1.DistributionPointService",
    "clouddp.v1.DistributionPointGroupService",
    "clouddp.v1.ContentService",
    "clouddp.v1.CertificateService",
    "clouddp.v1.ClientPolicyService",
    "clouddp.v1.ContentLocationService",
    "clouddp.v1.SiteService",
];

/// The `clouddp.v1` services the monitoring service serves, by full name.
pub const MONITORING_SERVICES: &[&str] = &["clouddp.v1.MonitoringService"];
