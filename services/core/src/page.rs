//! Paging of list answers: a page size with a default and a cap, and an opaque continuation token.

use crate::validate::{ValidationError, ValidationResult};

/// Items per page when the request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page served; larger requests are clamped.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    offset: usize,
    size: usize,
}

impl Page {
    /// From the request's `page_size` (0 = default) and `page_token` (empty = first page).
    pub fn from_request(page_size: u32, page_token: &str) -> ValidationResult<Self> {
        let size = match usize::try_from(page_size).unwrap_or(MAX_PAGE_SIZE) {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let offset = if page_token.is_empty() {
            0
        } else {
            page_token
                .strip_prefix("o")
                .and_then(|digits| digits.parse::<usize>().ok())
                .ok_or_else(|| {
                    ValidationError::new(
                        "page.page_token",
                        "is not a token this server issued; pass the next_page_token of the previous answer",
                    )
                })?
        };
        Ok(Self { offset, size })
    }

    /// The items of this page, and the token of the next one (empty on the last page).
    pub fn slice<'a, T>(&self, items: &'a [T]) -> (&'a [T], String) {
        let start = self.offset.min(items.len());
        let end = start.saturating_add(self.size).min(items.len());
        let next = if end < items.len() {
            format!("o{end}")
        } else {
            String::new()
        };
        (&items[start..end], next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_the_whole_list_once() {
        let items: Vec<u32> = (0..250).collect();
        let mut token = String::new();
        let mut seen = Vec::new();
        loop {
            let page = Page::from_request(100, &token).unwrap();
            let (slice, next) = page.slice(&items);
            seen.extend_from_slice(slice);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn defaults_caps_and_bad_tokens() {
        let items: Vec<u32> = (0..2000).collect();
        assert_eq!(
            Page::from_request(0, "").unwrap().slice(&items).0.len(),
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(
            Page::from_request(5000, "").unwrap().slice(&items).0.len(),
            MAX_PAGE_SIZE
        );
        assert_eq!(
            Page::from_request(10, "x1").unwrap_err().field,
            "page.page_token"
        );
    }
}
