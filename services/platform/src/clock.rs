//! Wall-clock time as the services store it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// RFC 3339 text (UTC, seconds) of `ms` since the Unix epoch, for any value (see [`clouddp_core::time`]).
pub fn rfc3339(ms: i64) -> String {
    clouddp_core::time::rfc3339_ms(ms)
}
