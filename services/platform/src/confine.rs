//! Paths confined to configured roots: a caller names a path, the service uses it only when it lies under one
//! of its roots, is spelled plainly (absolute, no `.` or `..`) and no part of it below the root is a symbolic
//! link. A file opened by such a path is checked again after opening ([`check_opened`]), so a link swapped
//! in between the check and the open is caught too.

use std::path::{Component, Path, PathBuf};

/// A path refused, with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The directories a service may use for one purpose (content sources, folder stores).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    /// What the roots are for, in messages ("content source", "folder store").
    purpose: &'static str,
    /// The config key that sets them, in messages.
    config_key: &'static str,
    /// Canonical absolute directories.
    roots: Vec<PathBuf>,
    /// Each root as configured, when that differs from its canonical path (a path given in the configured
    /// spelling is read as the canonical one).
    spelled: Vec<(PathBuf, PathBuf)>,
}

impl Roots {
    /// Roots for `purpose`, set by `config_key`; each is resolved to its canonical path (a root may itself be
    /// reached through a link, say `/tmp` on some systems) and must be an existing directory.
    pub fn new(
        purpose: &'static str,
        config_key: &'static str,
        roots: &[PathBuf],
    ) -> Result<Self, Refused> {
        let mut canonical = Vec::with_capacity(roots.len());
        let mut spelled = Vec::new();
        for root in roots {
            if !root.is_absolute() {
                return Err(Refused(format!(
                    "{config_key}: {} is not an absolute path",
                    root.display()
                )));
            }
            let resolved = std::fs::canonicalize(root).map_err(|error| {
                Refused(format!(
                    "{config_key}: {} cannot be used: {error}",
                    root.display()
                ))
            })?;
            if !resolved.is_dir() {
                return Err(Refused(format!(
                    "{config_key}: {} is not a directory",
                    root.display()
                )));
            }
            if &resolved != root {
                spelled.push((root.clone(), resolved.clone()));
            }
            canonical.push(resolved);
        }
        Ok(Self {
            purpose,
            config_key,
            roots: canonical,
            spelled,
        })
    }

    /// The canonical roots.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// `requested` when it is absolute, plainly spelled, strictly below one of the roots, and no existing part of
    /// it below the root is a link. Parts that do not exist yet are allowed when `may_be_missing` (a folder store
    /// is created on first use); the existing ones above them must be directories.
    pub fn confine(&self, requested: &Path, may_be_missing: bool) -> Result<PathBuf, Refused> {
        if self.roots.is_empty() {
            return Err(Refused(format!(
                "no {} roots are configured on this server, so no {} path is accepted; an administrator of the \
                 server sets {} to the directories it may use",
                self.purpose, self.purpose, self.config_key
            )));
        }
        let plain = requested.is_absolute()
            && requested
                .components()
                .all(|part| matches!(part, Component::RootDir | Component::Normal(_)));
        if !plain {
            return Err(Refused(format!(
                "{} must be an absolute path without `.` or `..` parts",
                shown(requested)
            )));
        }
        let respelled = self.spelled.iter().find_map(|(configured, canonical)| {
            let rest = requested.strip_prefix(configured).ok()?;
            Some(canonical.join(rest))
        });
        let requested = respelled.as_deref().unwrap_or(requested);
        let Some(root) = self
            .roots
            .iter()
            .find(|root| requested.starts_with(root) && requested != root.as_path())
        else {
            return Err(Refused(format!(
                "{} is not inside a {} root of this server ({}); use a path below one of them",
                shown(requested),
                self.purpose,
                self.listed()
            )));
        };
        let mut current = root.clone();
        let below: Vec<_> = requested
            .strip_prefix(root)
            .map_err(|_| {
                Refused(format!(
                    "{} is outside {}",
                    shown(requested),
                    root.display()
                ))
            })?
            .components()
            .collect();
        for (index, part) in below.iter().enumerate() {
            current.push(part);
            match std::fs::symlink_metadata(&current) {
                Ok(metadata) if metadata.file_type().is_symlink() => {
                    return Err(Refused(format!(
                        "{} is a symbolic link; links are not followed below a {} root",
                        shown(&current),
                        self.purpose
                    )));
                }
                Ok(metadata) if index + 1 < below.len() && !metadata.is_dir() => {
                    return Err(Refused(format!("{} is not a directory", shown(&current))));
                }
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound && may_be_missing => {
                    break;
                }
                Err(error) => {
                    return Err(Refused(format!(
                        "{} cannot be read on the server: {error}",
                        shown(&current)
                    )));
                }
            }
        }
        Ok(requested.to_path_buf())
    }

    fn listed(&self) -> String {
        self.roots
            .iter()
            .map(|root| root.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Checks that `file`, opened by the confined path `expected`, is that path: a link swapped into the path after
/// [`Roots::confine`] makes the open land elsewhere, which this sees through `/proc/self/fd`.
pub fn check_opened(file: &impl std::os::fd::AsRawFd, expected: &Path) -> Result<(), Refused> {
    let link = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let Ok(actual) = std::fs::read_link(&link) else {
        // Without /proc the check above is all there is.
        return Ok(());
    };
    if actual != expected {
        return Err(Refused(format!(
            "{} changed into a link while it was being opened",
            shown(expected)
        )));
    }
    Ok(())
}

/// A path for a message: at most 200 characters of it.
fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(dir: &Path) -> Roots {
        Roots::new(
            "content source",
            "[content] source_roots",
            &[dir.to_path_buf()],
        )
        .unwrap()
    }

    #[test]
    fn a_path_below_a_root_is_accepted_and_the_root_itself_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(base.join("app/bin")).unwrap();
        std::fs::write(base.join("app/bin/x"), b"x").unwrap();
        let roots = roots(&base);
        assert_eq!(
            roots.confine(&base.join("app/bin/x"), false).unwrap(),
            base.join("app/bin/x")
        );
        assert!(roots.confine(&base, false).is_err());
        assert!(
            roots
                .confine(Path::new("/etc/passwd"), false)
                .unwrap_err()
                .0
                .contains("not inside")
        );
    }

    #[test]
    fn dot_dot_and_relative_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let roots = roots(&base);
        let escape = base.join("../../etc/passwd");
        assert!(
            roots
                .confine(&escape, false)
                .unwrap_err()
                .0
                .contains("`..`")
        );
        assert!(roots.confine(Path::new("app"), false).is_err());
    }

    #[test]
    fn a_link_at_any_depth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", base.join("a/b/etc")).unwrap();
        std::os::unix::fs::symlink(base.join("a"), base.join("alias")).unwrap();
        let roots = roots(&base);
        assert!(
            roots
                .confine(&base.join("a/b/etc/passwd"), false)
                .unwrap_err()
                .0
                .contains("symbolic link")
        );
        assert!(
            roots
                .confine(&base.join("alias/b"), false)
                .unwrap_err()
                .0
                .contains("symbolic link")
        );
        assert!(roots.confine(&base.join("a/b/etc"), true).is_err());
    }

    #[test]
    fn missing_tails_are_allowed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let roots = roots(&base);
        assert!(roots.confine(&base.join("new/store"), true).is_ok());
        assert!(roots.confine(&base.join("new/store"), false).is_err());
    }

    #[test]
    fn no_roots_refuses_everything_and_names_the_setting() {
        let roots = Roots::new("folder store", "[storage] store_roots", &[]).unwrap();
        let refused = roots.confine(Path::new("/srv/store"), true).unwrap_err();
        assert!(refused.0.contains("[storage] store_roots"), "{refused}");
    }

    #[test]
    fn a_root_configured_through_a_link_takes_paths_in_either_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(base.join("real/app")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("configured")).unwrap();
        let roots = roots(&base.join("configured"));
        assert_eq!(
            roots.confine(&base.join("configured/app"), false).unwrap(),
            base.join("real/app")
        );
        assert_eq!(
            roots.confine(&base.join("real/app"), false).unwrap(),
            base.join("real/app")
        );
    }

    #[test]
    fn an_open_through_a_swapped_link_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(base.join("real"), b"x").unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("swapped")).unwrap();
        let opened = std::fs::File::open(base.join("swapped")).unwrap();
        assert!(check_opened(&opened, &base.join("swapped")).is_err());
        let opened = std::fs::File::open(base.join("real")).unwrap();
        check_opened(&opened, &base.join("real")).unwrap();
    }
}
