//! Paging of list answers: a page size with a default and a cap, and an opaque continuation token.

use crate::validate::{ValidationError, ValidationResult};

/// Items per page when the request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page served; larger requests are clamped.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The sort key of the last item of the previous page; `None` for the first page.
    after: Option<String>,
    size: usize,
}

/// What a page token starts with (a token of another format, or of another server, is refused).
const TOKEN_PREFIX: &str = "k1.";

impl Page {
    /// From the request's `page_size` (0 = default) and `page_token` (empty = first page).
    pub fn from_request(page_size: u32, page_token: &str) -> ValidationResult<Self> {
        use base64::Engine as _;
        let size = match usize::try_from(page_size).unwrap_or(MAX_PAGE_SIZE) {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let refused = || {
                ValidationError::new(
                    "page.page_token",
                    "is not a token this server issued; pass the next_page_token of the previous answer",
                )
            };
            let encoded = page_token.strip_prefix(TOKEN_PREFIX).ok_or_else(refused)?;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .map_err(|_| refused())?;
            Some(String::from_utf8(bytes).map_err(|_| refused())?)
        };
        Ok(Self { after, size })
    }

    /// The key after which this page starts (`None` for the first page), for lists read page by page from a
    /// database.
    pub fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// Items per page.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The token of the page that starts after `key`.
    pub fn token_after(key: &str) -> String {
        use base64::Engine as _;
        format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
        )
    }

    /// The items of this page in the order of `key`, and the token of the next one (empty on the last page).
    /// The token holds the last item's key, not a position: an item added or removed while a client pages
    /// through shows once at most, and none that stays is skipped or shown twice. `key` must be unique per
    /// item (end it with the item's id).
    pub fn keyed<'a, T>(&self, items: &'a [T], key: impl Fn(&T) -> String) -> (Vec<&'a T>, String) {
        let mut keyed: Vec<(String, &T)> = items.iter().map(|item| (key(item), item)).collect();
        keyed.sort_by(|left, right| left.0.cmp(&right.0));
        let mut rest = keyed
            .into_iter()
            .filter(|(item_key, _)| self.after.as_ref().is_none_or(|after| item_key > after))
            .peekable();
        let mut page = Vec::with_capacity(self.size.min(items.len()));
        let mut last_key = String::new();
        while page.len() < self.size {
            let Some((item_key, item)) = rest.next() else {
                break;
            };
            page.push(item);
            last_key = item_key;
        }
        let next = if rest.peek().is_some() {
            Self::token_after(&last_key)
        } else {
            String::new()
        };
        (page, next)
    }
}

/// The usual sort key of a named thing: its name without case, then its id.
pub fn name_key(name: &str, id: &str) -> String {
    format!("{}\u{0}{id}", name.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(items: &[u32], size: u32) -> Vec<u32> {
        let mut token = String::new();
        let mut seen = Vec::new();
        loop {
            let page = Page::from_request(size, &token).unwrap();
            let (slice, next) = page.keyed(items, |item| format!("{item:08}"));
            seen.extend(slice.into_iter().copied());
            if next.is_empty() {
                break;
            }
            token = next;
        }
        seen
    }

    #[test]
    fn pages_walk_the_whole_list_once() {
        let items: Vec<u32> = (0..250).rev().collect();
        assert_eq!(walk(&items, 100), (0..250).collect::<Vec<_>>());
    }

    #[test]
    fn an_item_inserted_while_paging_shows_at_most_once_and_nothing_repeats() {
        let mut items: Vec<u32> = (0..300).map(|item| item * 2).collect();
        let first = Page::from_request(100, "").unwrap();
        let (page_one, token) = first.keyed(&items, |item| format!("{item:08}"));
        let page_one: Vec<u32> = page_one.into_iter().copied().collect();
        // Inserted before the cursor: an offset would now show the 100th item again.
        items.push(1);
        items.push(401);
        let second = Page::from_request(100, &token).unwrap();
        let (page_two, _) = second.keyed(&items, |item| format!("{item:08}"));
        let page_two: Vec<u32> = page_two.into_iter().copied().collect();
        assert!(page_one.iter().all(|item| !page_two.contains(item)));
        assert_eq!(page_two[0], 200);
        assert!(!page_two.contains(&1));
    }

    #[test]
    fn defaults_caps_and_bad_tokens() {
        let items: Vec<u32> = (0..2000).collect();
        let key = |item: &u32| format!("{item:08}");
        assert_eq!(
            Page::from_request(0, "")
                .unwrap()
                .keyed(&items, key)
                .0
                .len(),
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(
            Page::from_request(5000, "")
                .unwrap()
                .keyed(&items, key)
                .0
                .len(),
            MAX_PAGE_SIZE
        );
        assert!(Page::from_request(10, "o100").is_err());
        assert!(Page::from_request(10, "k1.!!!").is_err());
        assert!(Page::from_request(10, "garbage").is_err());
    }
}
