//! The monitoring service's errors, and their one mapping to gRPC status codes.

use crate::follower::FollowError;

/// What went wrong, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum MonError {
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation does not apply in the current state.
    #[error("{0}")]
    Precondition(String),
    /// A dependency (the distribution manager, a store) is unavailable; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The local database failed or holds something unreadable.
    #[error("monitoring database: {0}")]
    Internal(String),
}

/// Result of a monitoring operation.
pub type MonResult<T> = Result<T, MonError>;

impl MonError {
    /// True when retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for MonError {
    fn from(error: sqlx::Error) -> Self {
        match clouddp_platform::db::transient_reason(&error) {
            Some(reason) => Self::Unavailable(reason),
            None => Self::Internal(error.to_string()),
        }
    }
}

impl From<serde_json::Error> for MonError {
    fn from(error: serde_json::Error) -> Self {
        Self::Internal(format!("stored JSON: {error}"))
    }
}

impl From<FollowError> for MonError {
    fn from(error: FollowError) -> Self {
        match error {
            FollowError::Stream(status) => Self::Unavailable(status.message().to_owned()),
            FollowError::Database(error) => error.into(),
        }
    }
}

impl From<MonError> for tonic::Status {
    fn from(error: MonError) -> Self {
        match error {
            MonError::InvalidArgument(message) => tonic::Status::invalid_argument(message),
            MonError::NotFound(message) => tonic::Status::not_found(message),
            MonError::Precondition(message) => tonic::Status::failed_precondition(message),
            MonError::Unavailable(message) => tonic::Status::unavailable(message),
            MonError::Internal(message) => {
                tracing::error!(%message, "monitoring database error");
                tonic::Status::internal(format!("monitoring database: {message}"))
            }
        }
    }
}
