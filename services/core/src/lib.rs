//! The pure domain of clouddp: names and their validation, distribution point kinds and thresholds.
//! No I/O, no async runtime: everything here is plain data and rules, tested without a network.
#![forbid(unsafe_code)]

pub mod content;
pub mod dp;
pub mod limits;
pub mod location;
pub mod page;
pub mod seal;
pub mod time;
pub mod token;
pub mod usage;
pub mod validate;

pub use validate::{ValidationError, ValidationResult};
