//! Copying a root filesystem tree (an image's into a new container, a container's into a new
//! image): owners, modes, links and extended attributes kept, blocks shared with FICLONE where
//! the filesystem can (XFS with reflink, btrfs), copied where it cannot.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::definition::ImageStorage;
use crate::error::CoreError;

/// Copies the content of `source` into `target` (created if missing). Says how: reflinks or
/// copies ([`ImageStorage::Reflink`] or [`ImageStorage::Copy`]).
pub fn copy_tree(source: &Path, target: &Path) -> Result<ImageStorage, CoreError> {
    std::fs::create_dir_all(target).map_err(CoreError::io("create", target))?;
    let storage = if reflink_works(source, target) {
        ImageStorage::Reflink
    } else {
        ImageStorage::Copy
    };
    copy_tree_as(source, target, storage)?;
    Ok(storage)
}

/// Copies the content of `source` into `target` (created if missing) the way a caller decided
/// with [`reflink_works`]: `Reflink` clones every file's blocks, anything else copies them.
pub fn copy_tree_as(source: &Path, target: &Path, storage: ImageStorage) -> Result<(), CoreError> {
    std::fs::create_dir_all(target).map_err(CoreError::io("create", target))?;
    let reflink = match storage {
        ImageStorage::Reflink => "--reflink=always",
        _ => "--reflink=never",
    };
    // `source/.` copies the directory's content, dot-files included.
    run_until_done(
        Command::new("cp")
            .arg("-a")
            .arg(reflink)
            .arg(source.join("."))
            .arg(target),
        source,
    )
}

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Whether a file of `source` can be cloned into the filesystem of directory `dir`: tried on
/// the first regular file found (an empty tree has nothing to share anyway), cloned into an
/// unnamed temporary file (`O_TMPFILE`), so nothing is left behind whatever happens.
pub fn reflink_works(source: &Path, dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut sample = None;
    let _ = corral_host::tree::walk(source, |path, meta| -> Result<(), CoreError> {
        if sample.is_none() && meta.is_file() && meta.len() > 0 {
            sample = Some(path.to_path_buf());
        }
        Ok(())
    });
    let Some(from) = sample.and_then(|path| std::fs::File::open(path).ok()) else {
        return false;
    };
    let Ok(probe) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
    else {
        return false;
    };
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // files owned here for the duration of the call.
    unsafe { ficlone(probe.as_raw_fd(), from.as_raw_fd() as _) }.is_ok()
}

/// Runs a copying command that dies with corral (a killed create must not leave it writing into
/// a staging directory the next command sweeps); its first line of errors becomes the error.
pub fn run_until_done(command: &mut Command, source: &Path) -> Result<(), CoreError> {
    let program = command.get_program().to_string_lossy().into_owned();
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(CoreError::io("run", &program))?;
    fail::fail_point!("create.rootfs-copying");
    let output = child
        .wait_with_output()
        .map_err(CoreError::io("run", &program))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(CoreError::Unsupported(format!(
            "cannot copy the root filesystem from {}: {}",
            source.display(),
            stderr.lines().next().unwrap_or("unknown error")
        )));
    }
    Ok(())
}
