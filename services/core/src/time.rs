//! Times as people read them. Every `i64` the types allow renders without panicking: RFC 3339 (UTC, seconds)
//! from 1970 to the end of year 9999, and a plain phrase outside that range, which no threshold, certificate or
//! postponement a person can act on reaches.

use std::time::{Duration, UNIX_EPOCH};

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z, in seconds since the Unix epoch.
pub const LAST_RFC3339_SECOND: i64 = 253_402_300_799;

/// A hundred years in milliseconds (365.25-day years): the horizon past which a forecast says "not within 100
/// years" rather than a date.
pub const HUNDRED_YEARS_MS: i64 = 36_525 * 24 * 3600 * 1000;

/// RFC 3339 text (UTC, seconds) of `ms` milliseconds since the Unix epoch; "before 1970-01-01T00:00:00Z" and
/// "after 9999-12-31T23:59:59Z" outside the range RFC 3339 can write.
pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339_seconds(ms.div_euclid(1000))
}

/// RFC 3339 text (UTC) of `seconds` since the Unix epoch, with the same phrases as [`rfc3339_ms`] out of range.
pub fn rfc3339_seconds(seconds: i64) -> String {
    match u64::try_from(seconds) {
        Err(_) => "before 1970-01-01T00:00:00Z".to_owned(),
        Ok(_) if seconds > LAST_RFC3339_SECOND => "after 9999-12-31T23:59:59Z".to_owned(),
        Ok(unsigned) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unsigned))
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_ends_of_the_range_render() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_764_619_688_000), "2025-12-01T20:08:08Z");
        assert_eq!(rfc3339_seconds(LAST_RFC3339_SECOND), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_seconds(LAST_RFC3339_SECOND + 1),
            "after 9999-12-31T23:59:59Z"
        );
        assert_eq!(rfc3339_ms(-1), "before 1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(i64::MAX), "after 9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_ms(i64::MIN), "before 1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(i64::MAX), "after 9999-12-31T23:59:59Z");
    }

    #[test]
    fn a_hundred_years_is_a_hundred_julian_years() {
        assert_eq!(HUNDRED_YEARS_MS, 3_155_760_000_000);
    }

    proptest! {
        #[test]
        fn every_millisecond_renders(ms in any::<i64>()) {
            let text = rfc3339_ms(ms);
            prop_assert!(!text.is_empty());
        }
    }
}
