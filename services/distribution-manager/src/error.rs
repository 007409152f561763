//! The distribution manager's errors, and their one mapping to gRPC status codes.

use clouddp_core::ValidationError;

/// What went wrong, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    /// The request is malformed; fix the named field.
    #[error(transparent)]
    InvalidArgument(#[from] ValidationError),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A thing with that name or key exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A rule forbids the operation in the current state.
    #[error("{0}")]
    Precondition(String),
    /// A dependency (database, store) is unavailable; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The request's own credential (an enrollment token) is not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this to this thing (a blocked device enrolling, a device asking as another).
    #[error("{0}")]
    PermissionDenied(String),
    /// A bug or corrupted data; not the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of a distribution manager operation.
pub type DmResult<T> = Result<T, DmError>;

impl DmError {
    /// True when retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for DmError {
    fn from(error: sqlx::Error) -> Self {
        match clouddp_platform::db::transient_reason(&error) {
            Some(reason) => Self::Unavailable(reason),
            None => Self::Internal(format!("database: {error}")),
        }
    }
}

impl From<DmError> for tonic::Status {
    fn from(error: DmError) -> Self {
        match error {
            DmError::InvalidArgument(validation) => {
                tonic::Status::invalid_argument(validation.to_string())
            }
            DmError::NotFound(message) => tonic::Status::not_found(message),
            DmError::AlreadyExists(message) => tonic::Status::already_exists(message),
            DmError::Precondition(message) => tonic::Status::failed_precondition(message),
            DmError::Unavailable(message) => tonic::Status::unavailable(message),
            DmError::Unauthenticated(message) => tonic::Status::unauthenticated(message),
            DmError::PermissionDenied(message) => tonic::Status::permission_denied(message),
            DmError::Internal(message) => {
                tracing::error!(%message, "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}
