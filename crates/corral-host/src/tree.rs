//! Walking a tree an image controls (a container's root filesystem, an image being imported):
//! symlinks are never followed, and the walk keeps its own stack so a deep tree cannot overflow
//! the thread's.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

/// A failed step of a walk, or of what the visitor did.
pub type TreeError = corral_error::PathIoError;

/// Visits `root` and everything below it, parents before their entries.
pub fn walk<E: From<TreeError>>(
    root: &Path,
    mut visit: impl FnMut(&Path, &Metadata) -> Result<(), E>,
) -> Result<(), E> {
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(TreeError::at("inspect", &path))?;
        visit(&path, &meta)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(TreeError::at("list", &path))? {
                pending.push(entry.map_err(TreeError::at("list", &path))?.path());
            }
        }
    }
    Ok(())
}
