//! The clouddp device agent: its configuration now; locating, downloading, verifying and decrypting content as
//! the content-location work lands.
#![forbid(unsafe_code)]

pub mod config;

pub use config::{AgentConfig, ConfigError};
