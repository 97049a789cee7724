//! Persistent network namespaces bound to a file (as `ip netns add` does under /run/netns, but
//! anywhere), so an instance's namespace outlives the processes that configure it and is found
//! again by its path.

use std::path::Path;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use crate::link::NetnsPath;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot create {0}, the file a network namespace is bound to")]
    File(std::path::PathBuf, #[source] std::io::Error),
    #[error("cannot run `unshare` (install util-linux)")]
    Spawn(#[source] std::io::Error),
    #[error("`unshare --net={0}` failed: {1}")]
    Unshare(std::path::PathBuf, String),
    #[error("cannot unmount the network namespace at {0}")]
    Unmount(std::path::PathBuf, #[source] Errno),
    #[error("cannot remove {0}")]
    Remove(std::path::PathBuf, #[source] std::io::Error),
}

/// Creates a new, empty network namespace (only `lo`, down) bound to `file`.
pub fn create(file: &Path) -> Result<NetnsPath, NetnsError> {
    std::fs::File::create(file).map_err(|e| NetnsError::File(file.to_owned(), e))?;
    let mut option = std::ffi::OsString::from("--net=");
    option.push(file);
    let output = Command::new("unshare")
        .arg(option)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .map_err(NetnsError::Spawn)?;
    if !output.status.success() {
        let _ = std::fs::remove_file(file);
        return Err(NetnsError::Unshare(
            file.to_owned(),
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(NetnsPath(file.to_owned()))
}

/// Unbinds and removes the namespace file; the namespace ends with its last process. A file
/// already gone, or never bound, is not an error.
pub fn remove(file: &Path) -> Result<(), NetnsError> {
    match umount2(file, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(NetnsError::Unmount(file.to_owned(), errno)),
    }
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetnsError::Remove(file.to_owned(), e)),
    }
}
