//! gRPC adapters: validate and convert at the edge, call the use-case types, convert back.

mod access;
mod certificates;
mod client_policy;
mod content;
mod content_location;
mod devices;
mod distribution_points;
mod groups;
mod site;

pub use access::AccessGrpc;
pub use certificates::CertificateGrpc;
pub use client_policy::ClientPolicyGrpc;
pub use content::ContentGrpc;
pub use content_location::ContentLocationGrpc;
pub use devices::DeviceGrpc;
pub use distribution_points::DistributionPointGrpc;
pub use groups::DistributionPointGroupGrpc;
pub use site::SiteGrpc;

/// The validated page of a list request (the default page when none is given).
pub(crate) fn page(
    request: Option<&clouddp_proto::v1::PageRequest>,
) -> Result<clouddp_core::page::Page, crate::error::DmError> {
    let (size, token) = request
        .map(|page| (page.page_size, page.page_token.as_str()))
        .unwrap_or((0, ""));
    clouddp_core::page::Page::from_request(size, token).map_err(crate::error::DmError::from)
}

/// The trimmed value of a required field, or INVALID_ARGUMENT "`field`: is required".
pub(crate) fn required(field: &'static str, value: &str) -> Result<String, tonic::Status> {
    required_with(field, value, "is required")
}

/// The trimmed value of a required field, or INVALID_ARGUMENT "`field`: `hint`".
pub(crate) fn required_with(
    field: &'static str,
    value: &str,
    hint: &str,
) -> Result<String, tonic::Status> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(
            crate::error::DmError::from(clouddp_core::ValidationError::new(field, hint)).into(),
        );
    }
    Ok(trimmed.to_owned())
}
