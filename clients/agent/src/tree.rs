//! The whole content's BLAKE3 from its chunks: a chunk whose size is a power of two (no smaller than BLAKE3's own
//! 1 KiB chunk) is a complete subtree of BLAKE3's tree, so its chaining value can be computed alone, in any order,
//! on any thread, while the chunk is still in the CPU's cache, and the values joined into the root at the end.
//! The result is the plain `blake3::hash` of the whole content (tested against it below).

use blake3::hazmat::{
    ChainingValue, HasherExt as _, Mode, left_subtree_len, merge_subtrees_non_root,
    merge_subtrees_root,
};

/// Whether a content of `length` bytes in chunks of `chunk_size` can be hashed chunk by chunk: the chunk size a
/// power of two no smaller than BLAKE3's chunk, and more than one chunk (a single chunk is the root itself).
pub fn usable(chunk_size: u64, length: u64) -> bool {
    chunk_size.is_power_of_two() && chunk_size >= blake3::CHUNK_LEN as u64 && length > chunk_size
}

/// The chaining value of chunk `index` (its non-empty plaintext `bytes`) in chunks of `chunk_size`.
pub fn chunk_value(index: u64, chunk_size: u64, bytes: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * chunk_size);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// The BLAKE3 of a content of `length` bytes from the chaining values of all its chunks, in order; `None` when
/// the values do not cover the content (or the content is not [`usable`]).
pub fn root(values: &[ChainingValue], chunk_size: u64, length: u64) -> Option<blake3::Hash> {
    if !usable(chunk_size, length) || values.len() as u64 != length.div_ceil(chunk_size) {
        return None;
    }
    let (left, right) = split(values, chunk_size, length)?;
    Some(merge_subtrees_root(
        &subtree(left.0, chunk_size, left.1)?,
        &subtree(right.0, chunk_size, right.1)?,
        Mode::Hash,
    ))
}

type Part<'a> = (&'a [ChainingValue], u64);

/// BLAKE3's split of a subtree of `length` bytes (more than one chunk): the left part is the largest power of
/// two of chunks that leaves at least one byte to the right, so it is whole chunks of ours.
fn split(values: &[ChainingValue], chunk_size: u64, length: u64) -> Option<(Part<'_>, Part<'_>)> {
    let left = left_subtree_len(length);
    let at = usize::try_from(left / chunk_size).ok()?;
    let (first, second) = values.split_at_checked(at)?;
    Some(((first, left), (second, length - left)))
}

fn subtree(values: &[ChainingValue], chunk_size: u64, length: u64) -> Option<ChainingValue> {
    if length <= chunk_size {
        return values.first().copied();
    }
    let (left, right) = split(values, chunk_size, length)?;
    Some(merge_subtrees_non_root(
        &subtree(left.0, chunk_size, left.1)?,
        &subtree(right.0, chunk_size, right.1)?,
        Mode::Hash,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any length over one chunk, any power-of-two chunk size: the joined root is the content's BLAKE3.
        #[test]
        fn joined_root_is_the_plain_hash(
            chunk_shift in 10_u32..14,
            extra in 1_usize..40_000,
            seed in any::<u8>(),
        ) {
            let chunk_size = 1_u64 << chunk_shift;
            let length = usize::try_from(chunk_size).unwrap() + extra;
            let content: Vec<u8> = (0..length).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            prop_assert_eq!(by_chunks(&content, chunk_size), Some(blake3::hash(&content)));
        }
    }

    fn by_chunks(content: &[u8], chunk_size: u64) -> Option<blake3::Hash> {
        let values: Vec<ChainingValue> = content
            .chunks(usize::try_from(chunk_size).unwrap())
            .enumerate()
            .map(|(index, bytes)| chunk_value(index as u64, chunk_size, bytes))
            .collect();
        root(&values, chunk_size, content.len() as u64)
    }

    #[test]
    fn the_root_of_the_chunk_values_is_the_blake3_of_the_whole_content() {
        let content: Vec<u8> = (0..600_000_u32).map(|i| (i * 31 + i / 977) as u8).collect();
        for chunk_size in [1024_u64, 4096, 65_536] {
            for length in [
                chunk_size + 1,
                2 * chunk_size,
                3 * chunk_size - 5,
                4 * chunk_size,
                5 * chunk_size + 1,
                7 * chunk_size,
                content.len() as u64,
            ] {
                let prefix = &content[..usize::try_from(length).unwrap()];
                assert_eq!(
                    by_chunks(prefix, chunk_size),
                    Some(blake3::hash(prefix)),
                    "chunk size {chunk_size}, length {length}"
                );
            }
        }
    }

    #[test]
    fn a_changed_missing_or_misplaced_chunk_changes_the_root() {
        let chunk_size = 4096_u64;
        let content: Vec<u8> = (0..5 * 4096 + 100_u32).map(|i| (i % 251) as u8).collect();
        let whole = blake3::hash(&content);
        let values: Vec<ChainingValue> = content
            .chunks(4096)
            .enumerate()
            .map(|(index, bytes)| chunk_value(index as u64, chunk_size, bytes))
            .collect();
        let length = content.len() as u64;
        assert_eq!(root(&values, chunk_size, length), Some(whole));
        let mut damaged = content.clone();
        damaged[4096 * 3 + 7] ^= 1;
        assert_ne!(by_chunks(&damaged, chunk_size), Some(whole));
        // A chunk's value computed at another position, two chunks swapped, one missing: never the content's.
        let mut moved = values.clone();
        moved[1] = chunk_value(2, chunk_size, &content[4096..8192]);
        assert_ne!(root(&moved, chunk_size, length), Some(whole));
        let mut swapped = values.clone();
        swapped.swap(0, 1);
        assert_ne!(root(&swapped, chunk_size, length), Some(whole));
        assert_eq!(root(&values[1..], chunk_size, length), None);
    }

    #[test]
    fn single_chunks_and_unusual_chunk_sizes_are_not_hashed_by_chunks() {
        assert!(!usable(4096, 4096));
        assert!(!usable(4096, 100));
        assert!(!usable(512, 100_000));
        assert!(!usable(3000, 100_000));
        assert!(usable(1 << 20, (1 << 20) + 1));
        assert_eq!(root(&[[0; 32]], 4096, 4096), None);
    }
}
