//! A staged ext filesystem as a guest filesystem, read with the ext4-view crate (a reader that
//! treats the filesystem as untrusted: bounded path resolution, checked metadata). Its
//! resolution is the guest's own: absolute link targets start at the filesystem's root.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ext4_view::{Ext4, Ext4Error};

use crate::error::{Result, SysprepError};
use crate::view::{GuestView, Kind, Node, MAX_ENTRIES};

pub(crate) struct Ext4View {
    fs: Ext4,
    /// Where the filesystem is on the disk, for errors ("partition 2").
    place: String,
}

impl Ext4View {
    pub fn load(image: &Path, place: &str) -> Result<Self> {
        let fs = Ext4::load_from_path(image).map_err(|source| SysprepError::Filesystem {
            place: place.to_string(),
            source,
        })?;
        Ok(Ext4View {
            fs,
            place: place.to_string(),
        })
    }

    fn error(&self, source: Ext4Error) -> SysprepError {
        SysprepError::Filesystem {
            place: self.place.clone(),
            source,
        }
    }
}

fn bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

fn host_path(path: ext4_view::PathBuf) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(path.as_ref()))
}

/// Errors that mean "nothing there" for a lookup: a missing component, a file where a
/// directory was expected, a link loop.
fn is_absent(error: &Ext4Error) -> bool {
    matches!(
        error,
        Ext4Error::NotFound
            | Ext4Error::NotADirectory
            | Ext4Error::TooManySymlinks
            | Ext4Error::PathTooLong
            | Ext4Error::MalformedPath
    )
}

impl GuestView for Ext4View {
    fn lookup(&self, path: &Path, follow: bool) -> Result<Option<Node>> {
        let found = if follow {
            self.fs.canonicalize(bytes(path)).map(host_path)
        } else {
            match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => self
                    .fs
                    .canonicalize(bytes(parent))
                    .map(|dir| host_path(dir).join(name)),
                _ => Ok(PathBuf::from("/")),
            }
        };
        let real = match found {
            Ok(real) => real,
            Err(error) if is_absent(&error) => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        let metadata = match self.fs.symlink_metadata(bytes(&real)) {
            Ok(metadata) => metadata,
            Err(error) if is_absent(&error) => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        let file_type = metadata.file_type();
        let kind = if file_type.is_regular_file() {
            Kind::File
        } else if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        Ok(Some(Node {
            path: real,
            kind,
            size: metadata.len(),
            mode: u32::from(metadata.mode()),
            uid: metadata.uid(),
            gid: metadata.gid(),
        }))
    }

    fn list(&self, dir: &Path) -> Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in self.fs.read_dir(bytes(dir)).map_err(|e| self.error(e))? {
            let entry = entry.map_err(|e| self.error(e))?;
            let name = entry.file_name();
            let name: &[u8] = name.as_ref();
            if name == b"." || name == b".." {
                continue;
            }
            if names.len() == MAX_ENTRIES {
                return Err(SysprepError::TooManyEntries {
                    path: dir.to_path_buf(),
                    limit: MAX_ENTRIES,
                });
            }
            names.push(OsStr::from_bytes(name).to_os_string());
        }
        Ok(names)
    }

    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>> {
        let size = self
            .fs
            .symlink_metadata(bytes(path))
            .map_err(|e| self.error(e))?
            .len();
        if size > limit {
            return Err(SysprepError::TooLarge {
                path: path.to_path_buf(),
                size,
                limit,
            });
        }
        self.fs.read(bytes(path)).map_err(|e| self.error(e))
    }

    fn fs_uuid(&self) -> Option<[u8; 16]> {
        Some(*self.fs.uuid().as_bytes())
    }
}
