//! The sealed-content format: a content version's plaintext cut into fixed-size chunks, each sealed with
//! AES-256-GCM under a fresh per-version data key (a STREAM construction).
//!
//! Layout of a sealed object: a 32-byte header, then for each chunk its ciphertext followed by its 16-byte tag.
//! Every chunk has a known offset, so any chunk can be fetched by byte range and opened alone.
//!
//! - nonce = chunk index (8 bytes, big-endian) ‖ 3 zero bytes ‖ last-chunk flag (1 byte);
//! - associated data binds the format, the content id and version, the chunk index and count, the chunk size and
//!   the plaintext length, so chunks cannot be reordered, dropped, duplicated, swapped between contents or
//!   versions, and the header cannot be altered;
//! - an empty plaintext still has one (empty) chunk, so truncation to nothing is detected.
//!
//! The SHA-256 of the whole plaintext and of each chunk live in the site's manifest, never in the store.

use std::fmt;
use std::ops::Range;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// The format version written in headers.
pub const FORMAT_VERSION: u16 = 1;
/// The plaintext chunk size used for content: 1 MiB.
pub const CHUNK_SIZE: u32 = 1 << 20;
/// Bytes of the GCM tag after each chunk.
pub const TAG_LEN: usize = 16;
/// Bytes of the header.
pub const HEADER_LEN: usize = 32;
/// The first bytes of every sealed object.
pub const MAGIC: [u8; 8] = *b"CDPSEAL\0";
/// Bytes of a data key.
pub const KEY_LEN: usize = 32;

const AAD_DOMAIN: &[u8] = b"clouddp-seal-v1";

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The header is not a clouddp sealed header, or not the expected one.
    #[error("sealed header: {0}")]
    Header(String),
    /// A chunk has the wrong length or index.
    #[error("chunk {index}: {message}")]
    Chunk { index: u64, message: String },
    /// A chunk failed authentication: it was altered, moved, or belongs to other content.
    #[error("chunk {index} failed authentication (altered, reordered or from other content)")]
    Authentication { index: u64 },
    /// The random generator or the cipher failed.
    #[error("crypto: {0}")]
    Crypto(String),
}

/// Result of sealing or opening.
pub type SealResult<T> = Result<T, SealError>;

/// A 256-bit data key. Its bytes never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; KEY_LEN]);

impl fmt::Debug for DataKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> SealResult<Self> {
        let mut bytes = [0_u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| SealError::Crypto("random generator failed".to_owned()))?;
        Ok(Self(bytes))
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> SealResult<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            SealError::Crypto(format!(
                "a data key has {KEY_LEN} bytes, not {}",
                bytes.len()
            ))
        })?;
        Ok(Self(array))
    }

    /// The key's bytes (to wrap it, or to hand it to an allowed client).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// What a sealed object belongs to: bound into every chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentBinding {
    /// The content id.
    pub content_id: String,
    /// The version number.
    pub version: u32,
}

/// The shape of a sealed object: chunk size, plaintext length and chunk count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedLayout {
    chunk_size: u32,
    plaintext_len: u64,
    chunk_count: u64,
}

impl SealedLayout {
    /// The layout of `plaintext_len` bytes in chunks of `chunk_size` (at least one chunk).
    pub fn new(plaintext_len: u64, chunk_size: u32) -> SealResult<Self> {
        if chunk_size == 0 {
            return Err(SealError::Header("chunk size must not be zero".to_owned()));
        }
        let chunk_count = plaintext_len.div_ceil(u64::from(chunk_size)).max(1);
        Ok(Self {
            chunk_size,
            plaintext_len,
            chunk_count,
        })
    }

    /// Plaintext bytes per chunk (the last chunk may be shorter).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Plaintext bytes in all.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        self.chunk_count
    }

    /// Bytes of the whole sealed object, header included.
    pub fn sealed_len(&self) -> u64 {
        HEADER_LEN as u64 + self.plaintext_len + self.chunk_count * TAG_LEN as u64
    }

    /// Plaintext bytes of chunk `index`.
    pub fn chunk_plain_len(&self, index: u64) -> SealResult<usize> {
        if index >= self.chunk_count {
            return Err(SealError::Chunk {
                index,
                message: format!("out of range: the content has {} chunks", self.chunk_count),
            });
        }
        let start = index * u64::from(self.chunk_size);
        let len =
            (self.plaintext_len - start.min(self.plaintext_len)).min(u64::from(self.chunk_size));
        usize::try_from(len).map_err(|_| SealError::Chunk {
            index,
            message: "chunk larger than memory".to_owned(),
        })
    }

    /// The byte range of sealed chunk `index` (ciphertext and tag) in the sealed object.
    pub fn sealed_chunk_range(&self, index: u64) -> SealResult<Range<u64>> {
        let len = self.chunk_plain_len(index)? as u64 + TAG_LEN as u64;
        let start = HEADER_LEN as u64 + index * (u64::from(self.chunk_size) + TAG_LEN as u64);
        Ok(start..start + len)
    }

    /// The header of this layout.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0_u8; HEADER_LEN];
        header[0..8].copy_from_slice(&MAGIC);
        header[8..10].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        header[12..16].copy_from_slice(&self.chunk_size.to_be_bytes());
        header[16..24].copy_from_slice(&self.plaintext_len.to_be_bytes());
        header[24..32].copy_from_slice(&self.chunk_count.to_be_bytes());
        header
    }

    /// Parses a header.
    pub fn from_header(header: &[u8]) -> SealResult<Self> {
        if header.len() < HEADER_LEN || header[0..8] != MAGIC {
            return Err(SealError::Header("not a clouddp sealed object".to_owned()));
        }
        let field = |range: Range<usize>| header[range].to_vec();
        let version = u16::from_be_bytes(field(8..10).try_into().expect("2 bytes"));
        if version != FORMAT_VERSION {
            return Err(SealError::Header(format!(
                "format version {version} is not supported"
            )));
        }
        let chunk_size = u32::from_be_bytes(field(12..16).try_into().expect("4 bytes"));
        let plaintext_len = u64::from_be_bytes(field(16..24).try_into().expect("8 bytes"));
        let chunk_count = u64::from_be_bytes(field(24..32).try_into().expect("8 bytes"));
        let layout = Self::new(plaintext_len, chunk_size)?;
        if layout.chunk_count != chunk_count || header[10..12] != [0, 0] {
            return Err(SealError::Header("inconsistent header".to_owned()));
        }
        Ok(layout)
    }
}

/// Seals and opens the chunks of one content version.
pub struct ChunkCipher {
    key: LessSafeKey,
    binding: ContentBinding,
    layout: SealedLayout,
}

impl fmt::Debug for ChunkCipher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ChunkCipher")
            .field("binding", &self.binding)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut bytes = [0_u8; 12];
    bytes[0..8].copy_from_slice(&index.to_be_bytes());
    bytes[11] = u8::from(last);
    Nonce::assume_unique_for_key(bytes)
}

impl ChunkCipher {
    /// A cipher for `binding` with `layout` under `key`.
    pub fn new(key: &DataKey, binding: ContentBinding, layout: SealedLayout) -> SealResult<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, key.as_bytes())
            .map_err(|_| SealError::Crypto("cannot load the data key".to_owned()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            binding,
            layout,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &SealedLayout {
        &self.layout
    }

    fn aad(&self, index: u64) -> Vec<u8> {
        let id = self.binding.content_id.as_bytes();
        let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + id.len() + 36);
        aad.extend_from_slice(AAD_DOMAIN);
        aad.extend_from_slice(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(id);
        aad.extend_from_slice(&self.binding.version.to_be_bytes());
        aad.extend_from_slice(&index.to_be_bytes());
        aad.extend_from_slice(&self.layout.chunk_count.to_be_bytes());
        aad.extend_from_slice(&self.layout.chunk_size.to_be_bytes());
        aad.extend_from_slice(&self.layout.plaintext_len.to_be_bytes());
        aad
    }

    fn is_last(&self, index: u64) -> bool {
        index + 1 == self.layout.chunk_count
    }

    /// Seals chunk `index`: appends its ciphertext and tag to `out`.
    pub fn seal_chunk(&self, index: u64, plaintext: &[u8], out: &mut Vec<u8>) -> SealResult<()> {
        self.seal_chunk_with_flag(index, plaintext, self.is_last(index), out)
    }

    fn seal_chunk_with_flag(
        &self,
        index: u64,
        plaintext: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> SealResult<()> {
        let expected = self.layout.chunk_plain_len(index)?;
        if plaintext.len() != expected {
            return Err(SealError::Chunk {
                index,
                message: format!(
                    "has {} plaintext bytes, expected {expected}",
                    plaintext.len()
                ),
            });
        }
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(index, last),
                Aad::from(self.aad(index)),
                &mut out[start..],
            )
            .map_err(|_| SealError::Crypto("sealing failed".to_owned()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals chunk `index` in place: `in_out` holds its plaintext and receives its ciphertext; returns the tag
    /// that follows it in the sealed object.
    pub fn seal_chunk_in_place(&self, index: u64, in_out: &mut [u8]) -> SealResult<[u8; TAG_LEN]> {
        let expected = self.layout.chunk_plain_len(index)?;
        if in_out.len() != expected {
            return Err(SealError::Chunk {
                index,
                message: format!("has {} plaintext bytes, expected {expected}", in_out.len()),
            });
        }
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(index, self.is_last(index)),
                Aad::from(self.aad(index)),
                in_out,
            )
            .map_err(|_| SealError::Crypto("sealing failed".to_owned()))?;
        let mut out = [0_u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens sealed chunk `index` in place; returns its plaintext (the buffer minus the tag).
    pub fn open_chunk_in_place<'buffer>(
        &self,
        index: u64,
        sealed: &'buffer mut [u8],
    ) -> SealResult<&'buffer [u8]> {
        let expected = self.layout.chunk_plain_len(index)? + TAG_LEN;
        if sealed.len() != expected {
            return Err(SealError::Chunk {
                index,
                message: format!("has {} sealed bytes, expected {expected}", sealed.len()),
            });
        }
        let plaintext = self
            .key
            .open_in_place(
                nonce(index, self.is_last(index)),
                Aad::from(self.aad(index)),
                sealed,
            )
            .map_err(|_| SealError::Authentication { index })?;
        Ok(plaintext)
    }

    /// Seals a whole plaintext into one sealed object (for tests and small contents).
    pub fn seal_all(&self, plaintext: &[u8]) -> SealResult<Vec<u8>> {
        let mut out =
            Vec::with_capacity(usize::try_from(self.layout.sealed_len()).unwrap_or_default());
        out.extend_from_slice(&self.layout.header());
        for index in 0..self.layout.chunk_count {
            let start =
                usize::try_from(index * u64::from(self.layout.chunk_size)).unwrap_or(usize::MAX);
            let len = self.layout.chunk_plain_len(index)?;
            let chunk = plaintext
                .get(start..start + len)
                .ok_or_else(|| SealError::Chunk {
                    index,
                    message: "plaintext shorter than the layout".to_owned(),
                })?;
            self.seal_chunk(index, chunk, &mut out)?;
        }
        Ok(out)
    }

    /// Opens a whole sealed object, checking its header against this cipher's layout.
    pub fn open_all(&self, sealed: &[u8]) -> SealResult<Vec<u8>> {
        let header = sealed
            .get(..HEADER_LEN)
            .ok_or_else(|| SealError::Header("truncated".to_owned()))?;
        if SealedLayout::from_header(header)? != self.layout {
            return Err(SealError::Header("does not match the manifest".to_owned()));
        }
        if sealed.len() as u64 != self.layout.sealed_len() {
            return Err(SealError::Header(format!(
                "object has {} bytes, expected {}",
                sealed.len(),
                self.layout.sealed_len()
            )));
        }
        let mut plaintext =
            Vec::with_capacity(usize::try_from(self.layout.plaintext_len).unwrap_or_default());
        for index in 0..self.layout.chunk_count {
            let range = self.layout.sealed_chunk_range(index)?;
            let mut chunk = sealed[usize::try_from(range.start).unwrap_or(usize::MAX)
                ..usize::try_from(range.end).unwrap_or(usize::MAX)]
                .to_vec();
            plaintext.extend_from_slice(self.open_chunk_in_place(index, &mut chunk)?);
        }
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cipher(key: &DataKey, id: &str, version: u32, len: u64, chunk: u32) -> ChunkCipher {
        ChunkCipher::new(
            key,
            ContentBinding {
                content_id: id.to_owned(),
                version,
            },
            SealedLayout::new(len, chunk).unwrap(),
        )
        .unwrap()
    }

    fn plaintext(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn edge_sizes_round_trip_at_the_real_chunk_size() {
        let key = DataKey::generate().unwrap();
        let chunk = CHUNK_SIZE as usize;
        for len in [0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk + 5] {
            let data = plaintext(len, 7);
            let cipher = cipher(&key, "cnt-a", 1, len as u64, CHUNK_SIZE);
            let sealed = cipher.seal_all(&data).unwrap();
            assert_eq!(sealed.len() as u64, cipher.layout().sealed_len());
            assert_eq!(cipher.open_all(&sealed).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn each_chunk_opens_alone_by_its_range() {
        let key = DataKey::generate().unwrap();
        let data = plaintext(1000, 1);
        let cipher = cipher(&key, "cnt-a", 3, 1000, 64);
        let sealed = cipher.seal_all(&data).unwrap();
        for index in (0..cipher.layout().chunk_count()).rev() {
            let range = cipher.layout().sealed_chunk_range(index).unwrap();
            let mut chunk = sealed[range.start as usize..range.end as usize].to_vec();
            let opened = cipher.open_chunk_in_place(index, &mut chunk).unwrap();
            let start = index as usize * 64;
            assert_eq!(opened, &data[start..start + opened.len()]);
        }
    }

    #[test]
    fn sealing_in_place_matches_sealing_into_a_buffer() {
        let key = DataKey::generate().unwrap();
        let data = plaintext(300, 4);
        let cipher = cipher(&key, "cnt-a", 1, 300, 128);
        let sealed = cipher.seal_all(&data).unwrap();
        for index in 0..cipher.layout().chunk_count() {
            let range = cipher.layout().sealed_chunk_range(index).unwrap();
            let start = index as usize * 128;
            let mut chunk =
                data[start..start + cipher.layout().chunk_plain_len(index).unwrap()].to_vec();
            let tag = cipher.seal_chunk_in_place(index, &mut chunk).unwrap();
            chunk.extend_from_slice(&tag);
            assert_eq!(chunk, sealed[range.start as usize..range.end as usize]);
        }
    }

    #[test]
    fn a_flipped_last_flag_fails() {
        let key = DataKey::generate().unwrap();
        let data = plaintext(200, 2);
        let cipher = cipher(&key, "cnt-a", 1, 200, 64);
        let mut sealed = cipher.layout().header().to_vec();
        let count = cipher.layout().chunk_count();
        for index in 0..count {
            let start = index as usize * 64;
            let len = cipher.layout().chunk_plain_len(index).unwrap();
            // The last chunk sealed as if more followed, and the first as if it were the last.
            let flag = index == 0;
            cipher
                .seal_chunk_with_flag(index, &data[start..start + len], flag, &mut sealed)
                .unwrap();
        }
        assert!(matches!(
            cipher.open_all(&sealed),
            Err(SealError::Authentication { index: 0 })
        ));
    }

    #[test]
    fn headers_parse_and_reject_garbage() {
        let layout = SealedLayout::new(5_000_000, CHUNK_SIZE).unwrap();
        assert_eq!(SealedLayout::from_header(&layout.header()).unwrap(), layout);
        assert_eq!(layout.chunk_count(), 5);
        let mut bad = layout.header();
        bad[0] = b'X';
        assert!(SealedLayout::from_header(&bad).is_err());
        let mut inconsistent = layout.header();
        inconsistent[31] = 9;
        assert!(SealedLayout::from_header(&inconsistent).is_err());
        assert!(format!("{:?}", DataKey::generate().unwrap()).contains(".."));
    }

    /// Sealed object of random length with a small chunk size, and its cipher.
    fn sealed_case() -> impl Strategy<Value = (Vec<u8>, u32)> {
        (1_u32..=64).prop_flat_map(|chunk| {
            let edges = prop_oneof![
                Just(0_usize),
                Just(1),
                Just(chunk as usize - 1),
                Just(chunk as usize),
                Just(chunk as usize + 1),
                0_usize..(chunk as usize * 6)
            ];
            (edges.prop_map(|len| plaintext(len, 9)), Just(chunk))
        })
    }

    /// At least three full chunks.
    fn multi_chunk_case() -> impl Strategy<Value = (Vec<u8>, u32)> {
        (1_u32..=32).prop_flat_map(|chunk| {
            ((chunk as usize * 3)..(chunk as usize * 8))
                .prop_map(move |len| (plaintext(len, 5), chunk))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn open_of_seal_is_identity((data, chunk) in sealed_case()) {
            let key = DataKey::generate().unwrap();
            let cipher = cipher(&key, "cnt-p", 1, data.len() as u64, chunk);
            let sealed = cipher.seal_all(&data).unwrap();
            prop_assert_eq!(cipher.open_all(&sealed).unwrap(), data);
        }

        #[test]
        fn any_flipped_bit_fails((data, chunk) in sealed_case(), position in any::<prop::sample::Index>(), bit in 0_u8..8) {
            let key = DataKey::generate().unwrap();
            let cipher = cipher(&key, "cnt-p", 1, data.len() as u64, chunk);
            let mut sealed = cipher.seal_all(&data).unwrap();
            let at = position.index(sealed.len());
            sealed[at] ^= 1 << bit;
            prop_assert!(cipher.open_all(&sealed).is_err());
        }

        #[test]
        fn any_truncation_fails((data, chunk) in sealed_case(), cut in any::<prop::sample::Index>()) {
            let key = DataKey::generate().unwrap();
            let cipher = cipher(&key, "cnt-p", 1, data.len() as u64, chunk);
            let sealed = cipher.seal_all(&data).unwrap();
            let keep = cut.index(sealed.len());
            prop_assert!(cipher.open_all(&sealed[..keep]).is_err());
            // A shorter header-consistent object (fewer chunks, header rewritten) fails too.
            if cipher.layout().chunk_count() > 1 {
                let shorter = SealedLayout::new(data.len() as u64 - cipher.layout().chunk_plain_len(cipher.layout().chunk_count() - 1).unwrap() as u64, chunk).unwrap();
                let mut forged = shorter.header().to_vec();
                forged.extend_from_slice(&sealed[HEADER_LEN..HEADER_LEN + (shorter.sealed_len() as usize - HEADER_LEN)]);
                let forged_cipher = ChunkCipher::new(&key, ContentBinding { content_id: "cnt-p".to_owned(), version: 1 }, shorter).unwrap();
                prop_assert!(forged_cipher.open_all(&forged).is_err());
            }
        }

        #[test]
        fn reordered_or_duplicated_chunks_fail((data, chunk) in multi_chunk_case(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
            let key = DataKey::generate().unwrap();
            let cipher = cipher(&key, "cnt-p", 1, data.len() as u64, chunk);
            let sealed = cipher.seal_all(&data).unwrap();
            let count = cipher.layout().chunk_count() as usize;
            let full_chunks = if data.len() % chunk as usize == 0 { count } else { count - 1 };
            let first = a.index(full_chunks);
            let second = b.index(full_chunks);
            prop_assume!(first != second);
            let range = |index: usize| cipher.layout().sealed_chunk_range(index as u64).unwrap();
            let (ra, rb) = (range(first), range(second));
            // Swap two equal-length chunks.
            let mut swapped = sealed.clone();
            let chunk_a = sealed[ra.start as usize..ra.end as usize].to_vec();
            let chunk_b = sealed[rb.start as usize..rb.end as usize].to_vec();
            swapped[ra.start as usize..ra.end as usize].copy_from_slice(&chunk_b);
            swapped[rb.start as usize..rb.end as usize].copy_from_slice(&chunk_a);
            prop_assert!(cipher.open_all(&swapped).is_err());
            // Duplicate one chunk over another.
            let mut duplicated = sealed.clone();
            duplicated[rb.start as usize..rb.end as usize].copy_from_slice(&chunk_a);
            prop_assert!(cipher.open_all(&duplicated).is_err());
        }

        #[test]
        fn chunks_do_not_open_under_another_content_or_version((data, chunk) in sealed_case()) {
            let key = DataKey::generate().unwrap();
            let len = data.len() as u64;
            let sealed = cipher(&key, "cnt-p", 1, len, chunk).seal_all(&data).unwrap();
            prop_assert!(cipher(&key, "cnt-q", 1, len, chunk).open_all(&sealed).is_err());
            prop_assert!(cipher(&key, "cnt-p", 2, len, chunk).open_all(&sealed).is_err());
            let other_key = DataKey::generate().unwrap();
            prop_assert!(cipher(&other_key, "cnt-p", 1, len, chunk).open_all(&sealed).is_err());
        }
    }
}
