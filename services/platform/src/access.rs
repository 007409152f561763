//! Who may call what: the principals of a site, the permissions, the built-in roles and the one table that maps
//! every RPC of both services to the permission it needs. Both services enforce this table through
//! [`crate::authorize`]; a test holds it to the descriptor set, so a new RPC without an entry fails.

use std::fmt;

/// The gRPC services whose RPCs need no credential at all: load balancers and probes read health, and grpcurl
/// lists services with reflection.
pub const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// What a caller may do; an RPC needs exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Read DPs and watch them.
    DpRead,
    /// Install, register, change, scale, start and delete DPs.
    DpWrite,
    /// Stop a DP's service (monitoring stops a DP over its thresholds).
    DpStop,
    /// Read a DP's store with a short-lived read-and-list grant (usage logs and sizes).
    StoreAccess,
    /// Read DP groups.
    GroupRead,
    /// Change DP groups.
    GroupWrite,
    /// Read content and its distribution status.
    ContentRead,
    /// Register content.
    ContentWrite,
    /// Distribute, redistribute, remove, validate and cancel.
    DistributionWrite,
    /// Read certificates (public parts only).
    CertificateRead,
    /// Import certificates.
    CertificateWrite,
    /// Read client settings, boundary groups and deployments.
    PolicyRead,
    /// Change client settings and deployments.
    PolicyWrite,
    /// Change boundary groups (part of the site's network layout).
    BoundaryWrite,
    /// Ask where to download content from, as the device of the caller's credential.
    Locate,
    /// Read the token signing keys' public parts.
    KeysRead,
    /// Rotate the token signing key.
    KeysRotate,
    /// Read the site.
    SiteRead,
    /// Back up and restore the site (its secrets travel sealed).
    SiteBackup,
    /// Read usage and alerts and watch alerts.
    AlertRead,
    /// Acknowledge and postpone alerts.
    AlertWrite,
    /// Read role bindings.
    AccessRead,
    /// Grant and revoke roles.
    AccessWrite,
    /// Read the audit trail.
    AuditRead,
    /// Read enrolled devices.
    DeviceRead,
    /// Create bulk registration tokens, block and unblock devices.
    DeviceWrite,
    /// Enroll a device with a bulk registration token: the token is the credential, so no role is needed.
    Enroll,
    /// Renew the caller's own device certificate.
    DeviceRenew,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Self; 28] = [
        Self::DpRead,
        Self::DpWrite,
        Self::DpStop,
        Self::StoreAccess,
        Self::GroupRead,
        Self::GroupWrite,
        Self::ContentRead,
        Self::ContentWrite,
        Self::DistributionWrite,
        Self::CertificateRead,
        Self::CertificateWrite,
        Self::PolicyRead,
        Self::PolicyWrite,
        Self::BoundaryWrite,
        Self::Locate,
        Self::KeysRead,
        Self::KeysRotate,
        Self::SiteRead,
        Self::SiteBackup,
        Self::AlertRead,
        Self::AlertWrite,
        Self::AccessRead,
        Self::AccessWrite,
        Self::AuditRead,
        Self::DeviceRead,
        Self::DeviceWrite,
        Self::Enroll,
        Self::DeviceRenew,
    ];

    /// The permission's name, as errors and the audit log show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::DpRead => "dp.read",
            Self::DpWrite => "dp.write",
            Self::DpStop => "dp.stop",
            Self::StoreAccess => "store.access",
            Self::GroupRead => "group.read",
            Self::GroupWrite => "group.write",
            Self::ContentRead => "content.read",
            Self::ContentWrite => "content.write",
            Self::DistributionWrite => "distribution.write",
            Self::CertificateRead => "certificate.read",
            Self::CertificateWrite => "certificate.write",
            Self::PolicyRead => "policy.read",
            Self::PolicyWrite => "policy.write",
            Self::BoundaryWrite => "boundary.write",
            Self::Locate => "location.locate",
            Self::KeysRead => "keys.read",
            Self::KeysRotate => "keys.rotate",
            Self::SiteRead => "site.read",
            Self::SiteBackup => "site.backup",
            Self::AlertRead => "alert.read",
            Self::AlertWrite => "alert.write",
            Self::AccessRead => "access.read",
            Self::AccessWrite => "access.write",
            Self::AuditRead => "audit.read",
            Self::DeviceRead => "device.read",
            Self::DeviceWrite => "device.write",
            Self::Enroll => "device.enroll",
            Self::DeviceRenew => "device.renew",
        }
    }

    /// True for permissions that only read.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Self::DpRead
                | Self::GroupRead
                | Self::ContentRead
                | Self::CertificateRead
                | Self::PolicyRead
                | Self::KeysRead
                | Self::SiteRead
                | Self::AlertRead
                | Self::AccessRead
                | Self::AuditRead
                | Self::DeviceRead
        )
    }

    /// False for the one permission whose RPC carries its own credential (a bulk registration token).
    pub fn needs_certificate(self) -> bool {
        self != Self::Enroll
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The built-in roles, named as the reference names its security roles, plus the roles of devices and of the
/// site's own services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything an administrator can do.
    FullAdministrator,
    /// DPs, DP groups, boundary groups, certificates, signing keys and the site.
    InfrastructureAdministrator,
    /// Content, distributions, client settings and deployments.
    ApplicationAdministrator,
    /// Every read and the alert watch.
    ReadOnlyAnalyst,
    /// A managed device: asks where to download from, as itself.
    Device,
    /// The monitoring service: watches DPs, reads their usage, stops a DP over its thresholds.
    MonitoringService,
    /// The content endpoint: reads the token verification keys and the DPs.
    ContentEndpoint,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 7] = [
        Self::FullAdministrator,
        Self::InfrastructureAdministrator,
        Self::ApplicationAdministrator,
        Self::ReadOnlyAnalyst,
        Self::Device,
        Self::MonitoringService,
        Self::ContentEndpoint,
    ];

    /// The roles an administrator can be granted (the others belong to devices and services by their kind).
    pub const ADMINISTRATIVE: [Self; 4] = [
        Self::FullAdministrator,
        Self::InfrastructureAdministrator,
        Self::ApplicationAdministrator,
        Self::ReadOnlyAnalyst,
    ];

    /// The role's name as the reference writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::FullAdministrator => "Full Administrator",
            Self::InfrastructureAdministrator => "Infrastructure Administrator",
            Self::ApplicationAdministrator => "Application Administrator",
            Self::ReadOnlyAnalyst => "Read-only Analyst",
            Self::Device => "Device",
            Self::MonitoringService => "Monitoring Service",
            Self::ContentEndpoint => "Content Endpoint",
        }
    }

    /// The role's short name for commands and config (`full-administrator`).
    pub fn key(self) -> &'static str {
        match self {
            Self::FullAdministrator => "full-administrator",
            Self::InfrastructureAdministrator => "infrastructure-administrator",
            Self::ApplicationAdministrator => "application-administrator",
            Self::ReadOnlyAnalyst => "read-only-analyst",
            Self::Device => "device",
            Self::MonitoringService => "monitoring-service",
            Self::ContentEndpoint => "content-endpoint",
        }
    }

    /// The role named by `text`: its key or its name, any case.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| {
            role.key().eq_ignore_ascii_case(text) || role.name().eq_ignore_ascii_case(text)
        })
    }

    /// Whether the role holds `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission as P;
        match self {
            // Store access belongs to monitoring alone, and an administrator locates no content as a device.
            Self::FullAdministrator => !matches!(
                permission,
                P::StoreAccess | P::Locate | P::DeviceRenew | P::Enroll
            ),
            Self::InfrastructureAdministrator => {
                permission.is_read() && permission != P::AccessRead
                    || matches!(
                        permission,
                        P::DpWrite
                            | P::DpStop
                            | P::GroupWrite
                            | P::CertificateWrite
                            | P::BoundaryWrite
                            | P::KeysRotate
                            | P::AlertWrite
                            | P::DeviceWrite
                    )
            }
            Self::ApplicationAdministrator => {
                permission.is_read() && permission != P::AccessRead
                    || matches!(
                        permission,
                        P::ContentWrite | P::DistributionWrite | P::PolicyWrite
                    )
            }
            Self::ReadOnlyAnalyst => permission.is_read() && permission != P::AccessRead,
            Self::Device => matches!(permission, P::Locate | P::DeviceRenew),
            Self::MonitoringService => matches!(
                permission,
                P::DpRead | P::DpStop | P::StoreAccess | P::AccessRead
            ),
            Self::ContentEndpoint => matches!(permission, P::DpRead | P::KeysRead),
        }
    }

    /// The roles that hold `permission`, for errors.
    pub fn holding(permission: Permission) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|role| role.allows(permission))
            .collect()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Every RPC of both services, by its full gRPC path, and the permission it needs.
pub const RPC_PERMISSIONS: &[(&str, Permission)] = {
    use Permission as P;
    &[
        // distribution points
        (
            "/clouddp.v1.DistributionPointService/InstallCloudDistributionPoint",
            P::DpWrite,
        ),
        (
            "/clouddp.v1.DistributionPointService/RegisterDistributionPoint",
            P::DpWrite,
        ),
        (
            "/clouddp.v1.DistributionPointService/GetDistributionPoint",
            P::DpRead,
        ),
        (
            "/clouddp.v1.DistributionPointService/ListDistributionPoints",
            P::DpRead,
        ),
        (
            "/clouddp.v1.DistributionPointService/UpdateDistributionPoint",
            P::DpWrite,
        ),
        (
            "/clouddp.v1.DistributionPointService/StartService",
            P::DpWrite,
        ),
        (
            "/clouddp.v1.DistributionPointService/StopService",
            P::DpStop,
        ),
        (
            "/clouddp.v1.DistributionPointService/ScaleService",
            P::DpWrite,
        ),
        (
            "/clouddp.v1.DistributionPointService/DeleteDistributionPoint",
            P::DpWrite,
        ),
        (
            "/clouddp.v1.DistributionPointService/WatchDistributionPoints",
            P::DpRead,
        ),
        (
            "/clouddp.v1.DistributionPointService/GetStoreAccess",
            P::StoreAccess,
        ),
        (
            "/clouddp.v1.DistributionPointService/ListStoreObjects",
            P::StoreAccess,
        ),
        (
            "/clouddp.v1.DistributionPointService/ReadStoreObject",
            P::StoreAccess,
        ),
        // groups
        (
            "/clouddp.v1.DistributionPointGroupService/CreateGroup",
            P::GroupWrite,
        ),
        (
            "/clouddp.v1.DistributionPointGroupService/GetGroup",
            P::GroupRead,
        ),
        (
            "/clouddp.v1.DistributionPointGroupService/UpdateGroup",
            P::GroupWrite,
        ),
        (
            "/clouddp.v1.DistributionPointGroupService/DeleteGroup",
            P::GroupWrite,
        ),
        (
            "/clouddp.v1.DistributionPointGroupService/AddMembers",
            P::GroupWrite,
        ),
        (
            "/clouddp.v1.DistributionPointGroupService/RemoveMembers",
            P::GroupWrite,
        ),
        (
            "/clouddp.v1.DistributionPointGroupService/ListGroups",
            P::GroupRead,
        ),
        // content
        (
            "/clouddp.v1.ContentService/RegisterContent",
            P::ContentWrite,
        ),
        ("/clouddp.v1.ContentService/GetContent", P::ContentRead),
        ("/clouddp.v1.ContentService/ListContent", P::ContentRead),
        (
            "/clouddp.v1.ContentService/DistributeContent",
            P::DistributionWrite,
        ),
        (
            "/clouddp.v1.ContentService/RedistributeContent",
            P::DistributionWrite,
        ),
        (
            "/clouddp.v1.ContentService/RemoveContent",
            P::DistributionWrite,
        ),
        (
            "/clouddp.v1.ContentService/ValidateContent",
            P::DistributionWrite,
        ),
        (
            "/clouddp.v1.ContentService/GetDistributionStatus",
            P::ContentRead,
        ),
        (
            "/clouddp.v1.ContentService/WatchDistributions",
            P::ContentRead,
        ),
        (
            "/clouddp.v1.ContentService/CancelDistribution",
            P::DistributionWrite,
        ),
        // certificates
        (
            "/clouddp.v1.CertificateService/ImportManagementCertificate",
            P::CertificateWrite,
        ),
        (
            "/clouddp.v1.CertificateService/ImportServiceCertificate",
            P::CertificateWrite,
        ),
        (
            "/clouddp.v1.CertificateService/GetCertificate",
            P::CertificateRead,
        ),
        (
            "/clouddp.v1.CertificateService/ListCertificates",
            P::CertificateRead,
        ),
        (
            "/clouddp.v1.CertificateService/ExportCertificate",
            P::CertificateRead,
        ),
        // client policy
        (
            "/clouddp.v1.ClientPolicyService/CreateClientSettings",
            P::PolicyWrite,
        ),
        (
            "/clouddp.v1.ClientPolicyService/UpdateClientSettings",
            P::PolicyWrite,
        ),
        (
            "/clouddp.v1.ClientPolicyService/GetClientSettings",
            P::PolicyRead,
        ),
        (
            "/clouddp.v1.ClientPolicyService/ListClientSettings",
            P::PolicyRead,
        ),
        (
            "/clouddp.v1.ClientPolicyService/DeleteClientSettings",
            P::PolicyWrite,
        ),
        (
            "/clouddp.v1.ClientPolicyService/CreateBoundaryGroup",
            P::BoundaryWrite,
        ),
        (
            "/clouddp.v1.ClientPolicyService/UpdateBoundaryGroup",
            P::BoundaryWrite,
        ),
        (
            "/clouddp.v1.ClientPolicyService/DeleteBoundaryGroup",
            P::BoundaryWrite,
        ),
        (
            "/clouddp.v1.ClientPolicyService/ListBoundaryGroups",
            P::PolicyRead,
        ),
        (
            "/clouddp.v1.ClientPolicyService/CreateDeployment",
            P::PolicyWrite,
        ),
        (
            "/clouddp.v1.ClientPolicyService/GetDeployment",
            P::PolicyRead,
        ),
        (
            "/clouddp.v1.ClientPolicyService/ListDeployments",
            P::PolicyRead,
        ),
        (
            "/clouddp.v1.ClientPolicyService/DeleteDeployment",
            P::PolicyWrite,
        ),
        // content location
        (
            "/clouddp.v1.ContentLocationService/LocateContent",
            P::Locate,
        ),
        (
            "/clouddp.v1.ContentLocationService/ListSigningKeys",
            P::KeysRead,
        ),
        (
            "/clouddp.v1.ContentLocationService/RotateSigningKey",
            P::KeysRotate,
        ),
        // site
        ("/clouddp.v1.SiteService/GetSite", P::SiteRead),
        ("/clouddp.v1.SiteService/BackupSite", P::SiteBackup),
        ("/clouddp.v1.SiteService/RestoreSite", P::SiteBackup),
        // access
        ("/clouddp.v1.AccessService/ListRoleBindings", P::AccessRead),
        ("/clouddp.v1.AccessService/GrantRole", P::AccessWrite),
        ("/clouddp.v1.AccessService/RevokeRole", P::AccessWrite),
        (
            "/clouddp.v1.AccessService/IssueAdminCredential",
            P::AccessWrite,
        ),
        (
            "/clouddp.v1.AccessService/ListAdminCredentials",
            P::AccessRead,
        ),
        (
            "/clouddp.v1.AccessService/RevokeAdminCredential",
            P::AccessWrite,
        ),
        // devices
        (
            "/clouddp.v1.DeviceService/CreateEnrollmentToken",
            P::DeviceWrite,
        ),
        ("/clouddp.v1.DeviceService/EnrollDevice", P::Enroll),
        (
            "/clouddp.v1.DeviceService/RenewDeviceCertificate",
            P::DeviceRenew,
        ),
        ("/clouddp.v1.DeviceService/ListDevices", P::DeviceRead),
        ("/clouddp.v1.DeviceService/BlockDevice", P::DeviceWrite),
        ("/clouddp.v1.DeviceService/UnblockDevice", P::DeviceWrite),
        // audit (each service serves its own trail)
        ("/clouddp.v1.AuditService/ListAuditEvents", P::AuditRead),
        // monitoring
        (
            "/clouddp.v1.MonitoringService/ListFollowedDistributionPoints",
            P::AlertRead,
        ),
        ("/clouddp.v1.MonitoringService/GetUsage", P::AlertRead),
        ("/clouddp.v1.MonitoringService/ListAlerts", P::AlertRead),
        ("/clouddp.v1.MonitoringService/GetAlert", P::AlertRead),
        ("/clouddp.v1.MonitoringService/PostponeAlert", P::AlertWrite),
        (
            "/clouddp.v1.MonitoringService/AcknowledgeAlert",
            P::AlertWrite,
        ),
        (
            "/clouddp.v1.MonitoringService/SubscribeAlerts",
            P::AlertRead,
        ),
    ]
};

/// What an RPC path needs: `Ok(None)` for the open services, `Ok(Some(permission))` for a known RPC, `Err(())`
/// for a path the table does not know (refused).
#[allow(clippy::result_unit_err)]
pub fn required(path: &str) -> Result<Option<Permission>, ()> {
    let service = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .map(|(service, _)| service)
        .unwrap_or_default();
    if OPEN_SERVICES.contains(&service) {
        return Ok(None);
    }
    RPC_PERMISSIONS
        .iter()
        .find(|(rpc, _)| *rpc == path)
        .map(|(_, permission)| Some(*permission))
        .ok_or(())
}

/// The kind of a principal, the second part of its SPIFFE id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalKind {
    /// A person or a script administering the site.
    Admin,
    /// A managed device.
    Device,
    /// One of the site's own services.
    Service,
}

impl PrincipalKind {
    fn segment(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Device => "device",
            Self::Service => "service",
        }
    }
}

/// The name of the monitoring service's principal.
pub const MONITORING_SERVICE: &str = "monitoring";
/// The name of the content endpoint's principal.
pub const CONTENT_ENDPOINT_SERVICE: &str = "content-endpoint";

/// Who a caller is, read from its certificate: `spiffe://<trust domain>/<kind>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    /// Admin, device or service.
    pub kind: PrincipalKind,
    /// The admin's, device's or service's name.
    pub name: String,
}

impl Principal {
    /// A principal of `kind` named `name`.
    pub fn new(kind: PrincipalKind, name: &str) -> Self {
        Self {
            kind,
            name: name.to_owned(),
        }
    }

    /// Its SPIFFE id in `trust_domain`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/{}/{}",
            self.kind.segment(),
            self.name
        )
    }

    /// The principal a SPIFFE id names, when it is of `trust_domain` and well formed.
    pub fn from_spiffe_id(uri: &str, trust_domain: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (domain, path) = rest.split_once('/')?;
        if !domain.eq_ignore_ascii_case(trust_domain) {
            return None;
        }
        let (kind, name) = path.split_once('/')?;
        let kind = match kind {
            "admin" => PrincipalKind::Admin,
            "device" => PrincipalKind::Device,
            "service" => PrincipalKind::Service,
            _ => return None,
        };
        Self::is_valid_name(name).then(|| Self::new(kind, name))
    }

    /// Whether `name` may name a principal: letters, digits, `-`, `.`, `_` and `@`, 1 to 128 of them.
    pub fn is_valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-._@".contains(&byte))
    }

    /// The built-in role of a device or service principal; administrators have only granted roles.
    pub fn built_in_role(&self) -> Option<Role> {
        match (self.kind, self.name.as_str()) {
            (PrincipalKind::Device, _) => Some(Role::Device),
            (PrincipalKind::Service, MONITORING_SERVICE) => Some(Role::MonitoringService),
            (PrincipalKind::Service, CONTENT_ENDPOINT_SERVICE) => Some(Role::ContentEndpoint),
            _ => None,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.kind.segment(), self.name)
    }
}

/// The trust domain of a site: its code, lower case, under `clouddp`.
pub fn trust_domain(site_code: &str) -> String {
    format!("{}.clouddp", site_code.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_contract_has_exactly_one_entry_and_no_entry_is_stale() {
        use prost::Message as _;
        let set =
            prost_types::FileDescriptorSet::decode(clouddp_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut contract = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    contract.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        let mut table: Vec<String> = RPC_PERMISSIONS
            .iter()
            .map(|(rpc, _)| (*rpc).to_owned())
            .collect();
        contract.sort();
        table.sort();
        let missing: Vec<_> = contract.iter().filter(|rpc| !table.contains(rpc)).collect();
        let stale: Vec<_> = table.iter().filter(|rpc| !contract.contains(rpc)).collect();
        assert!(missing.is_empty(), "RPCs without a permission: {missing:?}");
        assert!(
            stale.is_empty(),
            "entries for RPCs the contract lacks: {stale:?}"
        );
        let mut unique = table.clone();
        unique.dedup();
        assert_eq!(unique.len(), table.len(), "an RPC is listed twice");
    }

    #[test]
    fn every_permission_is_needed_by_some_rpc_and_held_by_some_role() {
        for permission in Permission::ALL {
            assert!(
                RPC_PERMISSIONS
                    .iter()
                    .any(|(_, needed)| *needed == permission),
                "{permission} guards no RPC"
            );
            assert!(
                !Role::holding(permission).is_empty() || !permission.needs_certificate(),
                "no role holds {permission}"
            );
        }
    }

    #[test]
    fn least_authority_of_the_built_in_roles() {
        assert!(!Role::FullAdministrator.allows(Permission::StoreAccess));
        assert!(!Role::FullAdministrator.allows(Permission::Locate));
        assert_eq!(
            Role::holding(Permission::StoreAccess),
            vec![Role::MonitoringService]
        );
        assert_eq!(Role::holding(Permission::Locate), vec![Role::Device]);
        assert_eq!(
            Role::holding(Permission::SiteBackup),
            vec![Role::FullAdministrator]
        );
        assert!(!Role::ReadOnlyAnalyst.allows(Permission::AlertWrite));
        assert!(!Role::ApplicationAdministrator.allows(Permission::DpWrite));
        assert!(!Role::InfrastructureAdministrator.allows(Permission::ContentWrite));
        for permission in Permission::ALL {
            assert_eq!(
                Role::Device.allows(permission),
                matches!(permission, Permission::Locate | Permission::DeviceRenew)
            );
        }
        assert!(Role::holding(Permission::Enroll).is_empty());
        assert_eq!(Role::holding(Permission::DeviceRenew), vec![Role::Device]);
    }

    #[test]
    fn spiffe_ids_parse_only_in_their_trust_domain() {
        let domain = trust_domain("CDP");
        let device =
            Principal::from_spiffe_id("spiffe://cdp.clouddp/device/pc-0042", &domain).unwrap();
        assert_eq!(device, Principal::new(PrincipalKind::Device, "pc-0042"));
        assert_eq!(
            device.spiffe_id(&domain),
            "spiffe://cdp.clouddp/device/pc-0042"
        );
        assert!(
            Principal::from_spiffe_id("spiffe://other.clouddp/device/pc-0042", &domain).is_none()
        );
        assert!(Principal::from_spiffe_id("spiffe://cdp.clouddp/root/x", &domain).is_none());
        assert!(Principal::from_spiffe_id("spiffe://cdp.clouddp/device/a/b", &domain).is_none());
        assert!(Principal::from_spiffe_id("spiffe://cdp.clouddp/admin/", &domain).is_none());
        assert_eq!(
            Principal::from_spiffe_id("spiffe://cdp.clouddp/service/monitoring", &domain)
                .unwrap()
                .built_in_role(),
            Some(Role::MonitoringService)
        );
    }

    #[test]
    fn unknown_paths_are_refused_and_open_services_need_nothing() {
        assert_eq!(required("/grpc.health.v1.Health/Check"), Ok(None));
        assert!(required("/clouddp.v1.Nothing/Here").is_err());
        assert_eq!(
            required("/clouddp.v1.SiteService/BackupSite"),
            Ok(Some(Permission::SiteBackup))
        );
    }
}
