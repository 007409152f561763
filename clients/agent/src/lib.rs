//! The clouddp device agent: locates a deployment's content, downloads it from the allowed distribution points
//! in order (resumable, parallel ranges), verifies and decrypts it, and writes its files atomically.
#![forbid(unsafe_code)]

pub mod config;
pub mod enroll;
pub mod get;
mod tree;

pub use config::{AgentConfig, ConfigError};
