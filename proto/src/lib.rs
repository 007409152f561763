//! The `clouddp.v1` contracts, compiled once for every crate: messages, gRPC clients and servers, and the
//! encoded file descriptor set that servers register for reflection.
#![forbid(unsafe_code)]

pub mod bounded;
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
    "clouddp.v1.AccessService",
    "clouddp.v1.AuditService",
    "clouddp.v1.DeviceService",
];

/// The `clouddp.v1` services the monitoring service serves, by full name.
pub const MONITORING_SERVICES: &[&str] =
    &["clouddp.v1.MonitoringService", "clouddp.v1.AuditService"];

#[cfg(test)]
mod documented_limits {
    /// The `.proto` comments state each limit the servers enforce with the value they enforce
    /// (`clouddp_core::limits`): change one and this fails until the other follows.
    #[test]
    fn the_comments_state_every_limit_the_servers_enforce() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clouddp/v1");
        for (file, words) in clouddp_core::limits::documented() {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let comments: String = text
                .lines()
                .filter_map(|line| line.trim().strip_prefix("//"))
                .collect::<Vec<_>>()
                .join(" ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                comments.contains(&words),
                "{file}: no comment says {words:?}; the server enforces it"
            );
        }
    }
}
