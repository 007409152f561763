//! Content: types and flags, the reference's placement rules, relative path validation, and the streaming
//! manifest hasher (per-file, per-chunk and whole-plaintext SHA-256).

use aws_lc_rs::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::dp::DpKind;
use crate::validate::{ValidationError, ValidationResult};

/// The kind of software a content version carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentType {
    /// An application's content.
    Application,
    /// A legacy package.
    Package,
    /// A software update package.
    SoftwareUpdatePackage,
    /// A boot image.
    BootImage,
    /// An OS image.
    OsImage,
    /// A task sequence's content.
    TaskSequence,
}

impl ContentType {
    /// The stable name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Package => "package",
            Self::SoftwareUpdatePackage => "software_update_package",
            Self::BootImage => "boot_image",
            Self::OsImage => "os_image",
            Self::TaskSequence => "task_sequence",
        }
    }

    /// Parses [`ContentType::as_str`] output (`-` accepted for `_`).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.replace('-', "_");
        [
            Self::Application,
            Self::Package,
            Self::SoftwareUpdatePackage,
            Self::BootImage,
            Self::OsImage,
            Self::TaskSequence,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == value)
    }
}

/// Flags that restrict where content may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContentFlags {
    /// PXE-enabled boot image.
    pub pxe_enabled: bool,
    /// Multicast-enabled boot image.
    pub multicast_enabled: bool,
    /// Runs from the DP.
    pub run_from_distribution_point: bool,
    /// App-V streaming.
    pub app_v_streaming: bool,
    /// Prestaged.
    pub prestaged: bool,
}

/// A rule of the reference that forbids placing content on a DP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlacementRule {
    /// Software update packages cannot go to a cloud DP.
    #[error("software update packages cannot be hosted on a cloud distribution point")]
    SoftwareUpdatePackage,
    /// PXE-enabled content cannot go to a cloud DP.
    #[error("PXE-enabled content cannot be hosted on a cloud distribution point")]
    Pxe,
    /// Multicast-enabled content cannot go to a cloud DP.
    #[error("multicast-enabled content cannot be hosted on a cloud distribution point")]
    Multicast,
    /// Packages that run from the DP cannot go to a cloud DP.
    #[error(
        "packages that run from the distribution point cannot be hosted on a cloud distribution point: clients must download and run them locally"
    )]
    RunFromDistributionPoint,
    /// App-V streaming cannot go to a cloud DP.
    #[error("App-V streamed applications cannot be hosted on a cloud distribution point")]
    AppVStreaming,
    /// Prestaged content cannot go to a cloud DP.
    #[error(
        "prestaged content cannot be hosted on a cloud distribution point: the site transfers all content to it"
    )]
    Prestaged,
}

/// Checks the reference's placement rules for content of `content_type` with `flags` on a DP of `dp_kind`.
/// On-premises and internet-facing DPs accept everything.
pub fn check_placement(
    content_type: ContentType,
    flags: &ContentFlags,
    dp_kind: DpKind,
) -> Result<(), PlacementRule> {
    if dp_kind != DpKind::Cloud {
        return Ok(());
    }
    if content_type == ContentType::SoftwareUpdatePackage {
        return Err(PlacementRule::SoftwareUpdatePackage);
    }
    if flags.pxe_enabled {
        return Err(PlacementRule::Pxe);
    }
    if flags.multicast_enabled {
        return Err(PlacementRule::Multicast);
    }
    if flags.run_from_distribution_point {
        return Err(PlacementRule::RunFromDistributionPoint);
    }
    if flags.app_v_streaming {
        return Err(PlacementRule::AppVStreaming);
    }
    if flags.prestaged {
        return Err(PlacementRule::Prestaged);
    }
    Ok(())
}

/// A content file's path relative to the content root: `/`-separated, no empty, `.` or `..` component, not
/// absolute, no control characters or backslashes, at most 1024 bytes.
pub fn relative_path(value: &str) -> ValidationResult<String> {
    let field = "path";
    if value.is_empty() || value.len() > 1024 {
        return Err(ValidationError::new(
            field,
            format!("{value:?} must be 1 to 1024 bytes long"),
        ));
    }
    if value
        .chars()
        .any(|character| character.is_control() || character == '\\')
    {
        return Err(ValidationError::new(
            field,
            format!("{value:?} contains a control character or a backslash"),
        ));
    }
    if value.starts_with('/') {
        return Err(ValidationError::new(
            field,
            format!("{value:?} is absolute; content paths are relative"),
        ));
    }
    if value
        .split('/')
        .any(|component| component.is_empty() || component == "." || component == "..")
    {
        return Err(ValidationError::new(
            field,
            format!("{value:?} has an empty, '.' or '..' component"),
        ));
    }
    Ok(value.to_owned())
}

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256.
    pub sha256: [u8; 32],
}

/// The digests of a whole plaintext stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDigests {
    /// Length in bytes.
    pub length: u64,
    /// SHA-256 of the whole stream.
    pub sha256: [u8; 32],
    /// BLAKE3 of the whole stream: what devices check the whole content against (several times faster than
    /// SHA-256 on one core, with the same 128-bit collision resistance).
    pub blake3: [u8; 32],
    /// SHA-256 of each chunk, at least one entry.
    pub chunk_sha256: Vec<[u8; 32]>,
}

/// Hashes a plaintext stream as it passes: each chunk, the whole, and the current file.
pub struct ManifestHasher {
    chunk_size: usize,
    whole: Context,
    whole_blake3: blake3::Hasher,
    chunk: Context,
    chunk_filled: usize,
    chunk_hashes: Vec<[u8; 32]>,
    file: Option<Context>,
    length: u64,
}

impl std::fmt::Debug for ManifestHasher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ManifestHasher")
            .field("chunk_size", &self.chunk_size)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

fn finish(context: Context) -> [u8; 32] {
    let mut out = [0_u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

impl ManifestHasher {
    /// A hasher cutting chunks of `chunk_size` bytes.
    pub fn new(chunk_size: u32) -> Self {
        Self {
            chunk_size: chunk_size.max(1) as usize,
            whole: Context::new(&SHA256),
            whole_blake3: blake3::Hasher::new(),
            chunk: Context::new(&SHA256),
            chunk_filled: 0,
            chunk_hashes: Vec::new(),
            file: None,
            length: 0,
        }
    }

    /// Starts a new file.
    pub fn start_file(&mut self) {
        self.file = Some(Context::new(&SHA256));
    }

    /// Feeds bytes of the current file.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        self.whole_blake3.update(bytes);
        if let Some(file) = self.file.as_mut() {
            file.update(bytes);
        }
        self.length += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = self.chunk_size - self.chunk_filled;
            let (head, tail) = bytes.split_at(room.min(bytes.len()));
            self.chunk.update(head);
            self.chunk_filled += head.len();
            bytes = tail;
            if self.chunk_filled == self.chunk_size {
                let done = std::mem::replace(&mut self.chunk, Context::new(&SHA256));
                self.chunk_hashes.push(finish(done));
                self.chunk_filled = 0;
            }
        }
    }

    /// Ends the current file; returns its SHA-256.
    pub fn finish_file(&mut self) -> [u8; 32] {
        self.file
            .take()
            .map(finish)
            .unwrap_or_else(|| finish(Context::new(&SHA256)))
    }

    /// Ends the stream.
    pub fn finish(mut self) -> StreamDigests {
        if self.chunk_filled > 0 || self.chunk_hashes.is_empty() {
            self.chunk_hashes.push(finish(self.chunk));
        }
        StreamDigests {
            length: self.length,
            sha256: finish(self.whole),
            blake3: *self.whole_blake3.finalize().as_bytes(),
            chunk_sha256: self.chunk_hashes,
        }
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    context.update(bytes);
    finish(context)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_five_rules_hold_on_cloud_dps_only() {
        let none = ContentFlags::default();
        let cases = [
            (
                ContentType::SoftwareUpdatePackage,
                none,
                PlacementRule::SoftwareUpdatePackage,
            ),
            (
                ContentType::BootImage,
                ContentFlags {
                    pxe_enabled: true,
                    ..none
                },
                PlacementRule::Pxe,
            ),
            (
                ContentType::BootImage,
                ContentFlags {
                    multicast_enabled: true,
                    ..none
                },
                PlacementRule::Multicast,
            ),
            (
                ContentType::Package,
                ContentFlags {
                    run_from_distribution_point: true,
                    ..none
                },
                PlacementRule::RunFromDistributionPoint,
            ),
            (
                ContentType::Application,
                ContentFlags {
                    app_v_streaming: true,
                    ..none
                },
                PlacementRule::AppVStreaming,
            ),
            (
                ContentType::Package,
                ContentFlags {
                    prestaged: true,
                    ..none
                },
                PlacementRule::Prestaged,
            ),
        ];
        for (content_type, flags, rule) in cases {
            assert_eq!(
                check_placement(content_type, &flags, DpKind::Cloud),
                Err(rule)
            );
            assert_eq!(
                check_placement(content_type, &flags, DpKind::OnPremises),
                Ok(())
            );
            assert_eq!(
                check_placement(content_type, &flags, DpKind::InternetFacing),
                Ok(())
            );
        }
        assert_eq!(
            check_placement(ContentType::OsImage, &none, DpKind::Cloud),
            Ok(())
        );
        assert_eq!(
            check_placement(ContentType::BootImage, &none, DpKind::Cloud),
            Ok(())
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path("setup/x64/app.msi").unwrap(),
            "setup/x64/app.msi"
        );
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "./a",
            "a\\b",
            "a\u{1}b",
        ] {
            assert!(relative_path(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn hasher_matches_one_shot_hashes(pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 0..8), chunk in 1_u32..40) {
            let mut hasher = ManifestHasher::new(chunk);
            let mut all = Vec::new();
            for piece in &pieces {
                hasher.start_file();
                for part in piece.chunks(7) {
                    hasher.update(part);
                }
                prop_assert_eq!(hasher.finish_file(), sha256(piece));
                all.extend_from_slice(piece);
            }
            let digests = hasher.finish();
            prop_assert_eq!(digests.length, all.len() as u64);
            prop_assert_eq!(digests.sha256, sha256(&all));
            prop_assert_eq!(digests.blake3, *blake3::hash(&all).as_bytes());
            let expected: Vec<[u8; 32]> = if all.is_empty() { vec![sha256(&[])] } else { all.chunks(chunk as usize).map(sha256).collect() };
            prop_assert_eq!(digests.chunk_sha256, expected);
        }
    }
}
