//! What every clouddp server shares: layered configuration, tracing with OpenTelemetry, TLS, the gRPC bootstrap
//! (health, reflection, graceful shutdown), SQLite pools and gRPC client channels.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod authorize;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod confine;
pub mod db;
pub mod deadline;
pub mod grpc;
pub mod pki;
pub mod shutdown;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub mod tls;

pub use config::{ConfigError, ConfigResult};
