//! Paths inside a root directory that may be an offline guest filesystem.
//!
//! An image's symlinks are not trusted: `/var/lib/dbus/machine-id -> /etc/machine-id` must resolve
//! to `<root>/etc/machine-id`, never to the host's `/etc`, and `..` never climbs above the root.

use std::path::{Component, Path, PathBuf};

use corral_error::PathIoError;

/// How many symlinks one resolution may follow (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// Errors resolving a path inside a root.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{path}: too many levels of symbolic links (more than {MAX_SYMLINKS})")]
    SymlinkLoop { path: PathBuf },
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// A directory treated as `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsRoot {
    root: PathBuf,
}

impl FsRoot {
    /// The root at `root` (`/` for the running system).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `guest_path` (absolute inside the root) as a host path, without following symlinks.
    pub fn join(&self, guest_path: &str) -> PathBuf {
        self.root.join(guest_path.trim_start_matches('/'))
    }

    /// Resolves every symlink in `guest_path` inside the root and returns the guest path it names
    /// (which need not exist). Absolute link targets are taken relative to the root.
    pub fn resolve(&self, guest_path: &str) -> Result<String, ResolveError> {
        let mut resolved: Vec<String> = Vec::new();
        let mut pending: Vec<String> = components(guest_path).into_iter().rev().collect();
        let mut links_followed = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(part);
            let current = format!("/{}", resolved.join("/"));
            let host_path = self.join(&current);
            let target = match std::fs::symlink_metadata(&host_path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    std::fs::read_link(&host_path).map_err(PathIoError::at("read", &host_path))?
                }
                _ => continue,
            };
            links_followed += 1;
            if links_followed > MAX_SYMLINKS {
                return Err(ResolveError::SymlinkLoop { path: host_path });
            }
            resolved.pop();
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(components(&target).into_iter().rev());
        }
        Ok(format!("/{}", resolved.join("/")))
    }
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = FsRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("var/lib/dbus")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        symlink(
            "/etc/machine-id",
            dir.path().join("var/lib/dbus/machine-id"),
        )
        .unwrap();
        assert_eq!(
            root.resolve("/var/lib/dbus/machine-id").unwrap(),
            "/etc/machine-id"
        );
    }

    #[test]
    fn dot_dot_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root = FsRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        symlink("../../../../etc/shadow", dir.path().join("etc/machine-id")).unwrap();
        assert_eq!(root.resolve("/etc/machine-id").unwrap(), "/etc/shadow");
        assert_eq!(root.join("/etc/shadow"), dir.path().join("etc/shadow"));
    }

    #[test]
    fn relative_links_and_directory_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = FsRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("real/etc")).unwrap();
        symlink("real/etc", dir.path().join("etc")).unwrap();
        symlink("machine-id.real", dir.path().join("real/etc/machine-id")).unwrap();
        assert_eq!(
            root.resolve("/etc/machine-id").unwrap(),
            "/real/etc/machine-id.real"
        );
    }

    #[test]
    fn loops_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = FsRoot::new(dir.path());
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        assert!(matches!(
            root.resolve("/a"),
            Err(ResolveError::SymlinkLoop { .. })
        ));
    }
}
