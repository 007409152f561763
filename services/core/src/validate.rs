//! Validation of names and other user input, with messages a person can act on.

/// Input that breaks a rule; the message names the field and says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field, as the API names it.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ValidationError {
    /// An error about `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Result of a validation.
pub type ValidationResult<T> = Result<T, ValidationError>;

/// A display name: 1 to 63 characters of ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit.
pub fn display_name(field: &'static str, value: &str) -> ValidationResult<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    if trimmed.len() > crate::limits::MAX_NAME_CHARS {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} characters long; at most {} are allowed",
                trimmed.len(),
                crate::limits::MAX_NAME_CHARS
            ),
        ));
    }
    let starts_well = trimmed
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric());
    let allowed = trimmed
        .chars()
        .all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'));
    if !starts_well || !allowed {
        return Err(ValidationError::new(
            field,
            format!(
                "{trimmed:?} is not allowed: use letters, digits, '-', '_' and '.', starting with a letter or digit"
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

/// A free-text name (client settings, deployments): 1 to 128 printable characters, trimmed.
pub fn display_name_free(field: &'static str, value: &str) -> ValidationResult<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    if trimmed.chars().count() > crate::limits::MAX_FREE_NAME_CHARS
        || trimmed.chars().any(char::is_control)
    {
        return Err(ValidationError::new(
            field,
            "use 1 to 128 printable characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A site code: exactly three ASCII letters or digits, kept uppercase.
pub fn site_code(value: &str) -> ValidationResult<String> {
    let trimmed = value.trim();
    if trimmed.len() != 3
        || !trimmed
            .chars()
            .all(|character| character.is_ascii_alphanumeric())
    {
        return Err(ValidationError::new(
            "site_code",
            format!(
                "{trimmed:?} is not a site code: use exactly three letters or digits, for example CDP"
            ),
        ));
    }
    Ok(trimmed.to_ascii_uppercase())
}

/// Free text (a description, a reason): at most `max` characters, no control characters but line breaks and
/// tabs; trimmed.
pub fn free_text(field: &'static str, value: &str, max: usize) -> ValidationResult<String> {
    let trimmed = value.trim();
    let length = trimmed.chars().count();
    if length > max {
        return Err(ValidationError::new(
            field,
            format!("is {length} characters long; at most {max} are allowed"),
        ));
    }
    if trimmed
        .chars()
        .any(|character| character.is_control() && !matches!(character, '\n' | '\t' | '\r'))
    {
        return Err(ValidationError::new(field, "holds control characters"));
    }
    Ok(trimmed.to_owned())
}

/// The longest description of a group or a content.
pub const MAX_DESCRIPTION: usize = crate::limits::MAX_DESCRIPTION_CHARS;
/// The longest reason given for stopping a DP's service.
pub const MAX_REASON: usize = crate::limits::MAX_REASON_CHARS;

/// An absolute filesystem path without `..` components or control characters.
pub fn absolute_path(field: &'static str, value: &str) -> ValidationResult<String> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "contains a control character"));
    }
    if !value.starts_with('/') {
        return Err(ValidationError::new(
            field,
            format!("{value:?} is not an absolute path; give the full path, starting with '/'"),
        ));
    }
    if value.split('/').any(|component| component == "..") {
        return Err(ValidationError::new(
            field,
            format!("{value:?} must not contain '..'"),
        ));
    }
    Ok(value.to_owned())
}

/// An `https://` URL with a host; an optional port and path are kept as given, without a trailing `/`.
pub fn https_url(field: &'static str, value: &str) -> ValidationResult<String> {
    let Some(rest) = value.strip_prefix("https://") else {
        return Err(ValidationError::new(
            field,
            format!("{value:?} is not an https:// URL; clients download over HTTPS only"),
        ));
    };
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    if host.is_empty()
        || !host.chars().all(|character| {
            character.is_ascii_alphanumeric() || matches!(character, '-' | '.' | '[' | ']')
        })
    {
        return Err(ValidationError::new(
            field,
            format!("{value:?} has no valid host name"),
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// A GUID such as an Azure subscription id: 8-4-4-4-12 hexadecimal digits, kept lowercase.
pub fn guid(field: &'static str, value: &str) -> ValidationResult<String> {
    let trimmed = value.trim();
    let groups: Vec<&str> = trimmed.split('-').collect();
    let shaped = groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, len)| {
            group.len() == len && group.chars().all(|character| character.is_ascii_hexdigit())
        });
    if !shaped {
        return Err(ValidationError::new(
            field,
            format!("{trimmed:?} is not a GUID like 0f4d3a1e-5b6c-4d7e-8f90-a1b2c3d4e5f6"),
        ));
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// A DNS label: 3 to 63 lowercase letters, digits and `-`, not starting or ending with `-`, no `--`.
pub fn dns_label(field: &'static str, value: &str) -> ValidationResult<String> {
    let ok = (3..=63).contains(&value.len())
        && value.chars().all(|character| {
            character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
        })
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--");
    if !ok {
        return Err(ValidationError::new(
            field,
            format!(
                "{value:?} is not allowed: use 3 to 63 lowercase letters, digits and single '-', not at either end"
            ),
        ));
    }
    Ok(value.to_owned())
}

/// An Azure storage account name: 3 to 24 lowercase letters and digits.
pub fn storage_account(field: &'static str, value: &str) -> ValidationResult<String> {
    let ok = (3..=24).contains(&value.len())
        && value
            .chars()
            .all(|character| character.is_ascii_lowercase() || character.is_ascii_digit());
    if !ok {
        return Err(ValidationError::new(
            field,
            format!(
                "{value:?} is not a storage account name: use 3 to 24 lowercase letters and digits"
            ),
        ));
    }
    Ok(value.to_owned())
}

/// An instance count of a cloud DP's content endpoint: 1 to 16.
pub fn instances(value: u32) -> ValidationResult<u32> {
    if !(1..=crate::limits::MAX_INSTANCES).contains(&value) {
        return Err(ValidationError::new(
            "cloud.instances",
            format!("{value} is out of range; use 1 to 16"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(display_name("name", " dp-01.lab ").unwrap(), "dp-01.lab");
        assert!(
            display_name("name", "")
                .unwrap_err()
                .message
                .contains("required")
        );
        assert!(display_name("name", "-dp").is_err());
        assert!(display_name("name", "dp one").is_err());
        assert!(
            display_name("name", &"a".repeat(64))
                .unwrap_err()
                .message
                .contains("64")
        );
    }

    #[test]
    fn site_codes() {
        assert_eq!(site_code("cdp").unwrap(), "CDP");
        assert!(site_code("CD").is_err());
        assert!(site_code("C-P").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(absolute_path("p", "/srv/dp").unwrap(), "/srv/dp");
        assert!(absolute_path("p", "srv/dp").is_err());
        assert!(absolute_path("p", "/srv/../etc").is_err());
        assert!(absolute_path("p", "/srv/\u{7}").is_err());
    }

    #[test]
    fn cloud_names() {
        assert_eq!(
            guid("s", "0F4D3A1E-5B6C-4D7E-8F90-A1B2C3D4E5F6").unwrap(),
            "0f4d3a1e-5b6c-4d7e-8f90-a1b2c3d4e5f6"
        );
        assert!(guid("s", "0f4d3a1e5b6c4d7e8f90a1b2c3d4e5f6").is_err());
        assert_eq!(dns_label("n", "contoso-cdp1").unwrap(), "contoso-cdp1");
        for bad in ["ab", "Contoso", "-cdp", "cdp-", "a--b", "a_b"] {
            assert!(dns_label("n", bad).is_err(), "{bad}");
        }
        assert!(storage_account("a", "devstoreaccount1").is_ok());
        assert!(storage_account("a", "Dev-Store").is_err());
        assert!(instances(0).is_err() && instances(17).is_err() && instances(2).is_ok());
    }

    #[test]
    fn urls() {
        assert_eq!(
            https_url("address", "https://dp1.example.com:7443/").unwrap(),
            "https://dp1.example.com:7443"
        );
        assert!(https_url("address", "http://dp1").is_err());
        assert!(https_url("address", "https://").is_err());
        assert!(https_url("address", "https://bad host").is_err());
    }
}
