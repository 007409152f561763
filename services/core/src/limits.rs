//! Every documented limit of the contract, in one place: the servers check these constants, and the proto
//! crate's tests hold the `.proto` comments to them ([`documented`]), so a limit and its documentation cannot
//! drift apart.

/// Content endpoint instances of a cloud DP.
pub const MAX_INSTANCES: u32 = 16;
/// Characters of a display name (DPs, groups, boundary groups).
pub const MAX_NAME_CHARS: usize = 63;
/// Characters of a free-text name (client settings, deployments).
pub const MAX_FREE_NAME_CHARS: usize = 128;
/// Characters of a group's or a content's description.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Characters of the reason given when stopping a DP's service.
pub const MAX_REASON_CHARS: usize = 256;
/// Device (or user) ids one client settings object is assigned.
pub const MAX_PRINCIPALS: usize = 100_000;
/// Characters of one device or user id.
pub const MAX_PRINCIPAL_CHARS: usize = 255;
/// Days ahead an alert may be postponed.
pub const MAX_POSTPONE_DAYS: i64 = 365;
/// Seconds between heartbeats of an alert stream.
pub const MAX_HEARTBEAT_SECONDS: u32 = 300;
/// Days of hourly usage history returned (samples are kept this long).
pub const MAX_USAGE_DAYS: u32 = 35;
/// Client settings priority (1 wins).
pub const MAX_PRIORITY: u32 = 10_000;
/// Bytes of any string field of a request whose comment names no other limit.
pub const MAX_STRING_BYTES: usize = 4_096;
/// Bytes of a PEM string field of a request (a certificate, a key, a certificate request).
pub const MAX_PEM_BYTES: usize = 65_536;
/// Bytes of any bytes field of a request (a .pfx file, publish settings, a restore chunk).
pub const MAX_BYTES_FIELD: usize = 4 * 1024 * 1024;
/// Entries of any list (or map) field of a request whose comment names no other limit.
pub const MAX_LIST_ENTRIES: usize = 1_000;

/// `100000` → `100,000`, as the comments write numbers.
pub fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Every documented limit: the `.proto` file (under `proto/clouddp/v1/`) and the words its comments must hold.
pub fn documented() -> Vec<(&'static str, String)> {
    vec![
        ("distribution_points.proto", format!("1 to {MAX_INSTANCES}")),
        (
            "distribution_points.proto",
            format!("1 to {MAX_NAME_CHARS} characters"),
        ),
        (
            "distribution_points.proto",
            format!(
                "at most {} characters",
                grouped(MAX_DESCRIPTION_CHARS as u64)
            ),
        ),
        (
            "distribution_points.proto",
            format!("at most {MAX_REASON_CHARS} characters"),
        ),
        (
            "content.proto",
            format!(
                "at most {} characters",
                grouped(MAX_DESCRIPTION_CHARS as u64)
            ),
        ),
        (
            "client_policy.proto",
            format!("at most {}", grouped(MAX_PRINCIPALS as u64)),
        ),
        (
            "client_policy.proto",
            format!("1 to {MAX_PRINCIPAL_CHARS} printable characters"),
        ),
        (
            "client_policy.proto",
            format!("1 (wins) to {}", grouped(u64::from(MAX_PRIORITY))),
        ),
        (
            "common.proto",
            format!(
                "a string field is at most {} bytes, a PEM field (`*_pem`) at most {} bytes, a bytes field at most {} MiB, and a list or map field at most {} entries",
                grouped(MAX_STRING_BYTES as u64),
                grouped(MAX_PEM_BYTES as u64),
                MAX_BYTES_FIELD >> 20,
                grouped(MAX_LIST_ENTRIES as u64)
            ),
        ),
        ("monitoring.proto", format!("1 to {MAX_USAGE_DAYS}")),
        ("monitoring.proto", format!("1 to {MAX_HEARTBEAT_SECONDS}")),
        (
            "monitoring.proto",
            format!("at most {MAX_POSTPONE_DAYS} days ahead"),
        ),
        (
            "common.proto",
            format!("at most {}", crate::page::MAX_PAGE_SIZE),
        ),
        (
            "common.proto",
            format!("server default ({})", crate::page::DEFAULT_PAGE_SIZE),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_as_the_comments_write_them() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1024), "1,024");
        assert_eq!(grouped(100_000), "100,000");
        assert_eq!(grouped(10_000), "10,000");
    }
}
