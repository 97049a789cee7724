//! Copying a root filesystem tree (an image's into a new container, a container's into a new
//! image) and single files (a clone's disks): owners, modes, links and extended attributes kept,
//! blocks shared with FICLONE where the filesystem can (XFS with reflink, btrfs), copied where it
//! cannot, holes kept as holes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use corral_image::progress::{Cancelled, Progress};
use nix::errno::Errno;

use crate::definition::ImageStorage;
use crate::error::CoreError;

/// A sparse copy moves at most this much per call: often enough for a smooth progress bar.
const COPY_CHUNK: u64 = 8 << 20;

/// Copies the content of `source` into `target` (created if missing), stopped when `progress`
/// is cancelled. Says how: reflinks or copies ([`ImageStorage::Reflink`] or
/// [`ImageStorage::Copy`]).
pub fn copy_tree(
    source: &Path,
    target: &Path,
    progress: &dyn Progress,
) -> Result<ImageStorage, CoreError> {
    std::fs::create_dir_all(target).map_err(CoreError::io("create", target))?;
    let storage = if reflink_works(source, target) {
        ImageStorage::Reflink
    } else {
        ImageStorage::Copy
    };
    copy_tree_as(source, target, storage, progress)?;
    Ok(storage)
}

/// Copies the content of `source` into `target` (created if missing) the way a caller decided
/// with [`reflink_works`]: `Reflink` clones every file's blocks, anything else copies them.
/// Stopped when `progress` is cancelled.
pub fn copy_tree_as(
    source: &Path,
    target: &Path,
    storage: ImageStorage,
    progress: &dyn Progress,
) -> Result<(), CoreError> {
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
        progress,
    )
}

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Copies the regular file `source` to the new file `target` with the same permissions,
/// reporting its bytes to `progress` as the phase `what`: its blocks are cloned with FICLONE
/// where the filesystem can (at once, shared until written), else only its data ranges are
/// copied (found with `SEEK_DATA`/`SEEK_HOLE`), so a sparse disk image stays sparse. Says how:
/// [`ImageStorage::Reflink`] or [`ImageStorage::Copy`].
pub fn copy_file(
    source: &Path,
    target: &Path,
    what: &str,
    progress: &dyn Progress,
) -> Result<ImageStorage, CoreError> {
    let from = File::open(source).map_err(CoreError::io("open", source))?;
    let meta = from.metadata().map_err(CoreError::io("inspect", source))?;
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .map_err(CoreError::io("create", target))?;
    let length = meta.len();
    progress.begin(what, Some(length));
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // files owned here for the duration of the call.
    let storage = if unsafe { ficlone(to.as_raw_fd(), from.as_raw_fd() as _) }.is_ok() {
        tracing::info!(
            "{} shares its blocks with {}",
            target.display(),
            source.display()
        );
        progress.advance(length);
        ImageStorage::Reflink
    } else {
        tracing::info!(
            "the filesystem cannot share blocks (reflink); copying the data of {}",
            source.display()
        );
        copy_data(&from, &to, length, progress).map_err(CoreError::io("copy", source))?;
        ImageStorage::Copy
    };
    to.set_permissions(std::fs::Permissions::from_mode(meta.permissions().mode()))
        .map_err(CoreError::io("set the mode of", target))?;
    to.sync_all().map_err(CoreError::io("flush", target))?;
    Ok(storage)
}

/// Copies the data ranges of `from` (`length` bytes) into the empty `to`, leaving holes.
fn copy_data(from: &File, to: &File, length: u64, progress: &dyn Progress) -> std::io::Result<()> {
    to.set_len(length)?;
    let mut done = 0;
    for data in corral_disk::file_data_ranges(from, 0, length)? {
        progress.advance(data.start - done);
        let mut offset = data.start;
        while offset < data.end {
            let chunk = (data.end - offset).min(COPY_CHUNK);
            copy_range(from, to, offset, chunk)?;
            offset += chunk;
            progress.advance(chunk);
            fail::fail_point!("image.copying");
            if progress.cancelled() {
                return Err(Cancelled::io());
            }
        }
        done = data.end;
    }
    progress.advance(length - done);
    Ok(())
}

/// Copies `length` bytes at `offset` from `from` to the same place in `to`: in the kernel
/// (`copy_file_range`, which may share blocks itself), else through a buffer.
fn copy_range(from: &File, to: &File, offset: u64, length: u64) -> std::io::Result<()> {
    let (mut off_in, mut off_out) = (offset as i64, offset as i64);
    let end = (offset + length) as i64;
    while off_in < end {
        let left = (end - off_in) as usize;
        match nix::fcntl::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), left) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            // Not between these files (another filesystem, an old kernel): copied by hand.
            Err(Errno::EXDEV | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS) => {
                let mut buffer = vec![0u8; left];
                from.read_exact_at(&mut buffer, off_in as u64)?;
                to.write_all_at(&buffer, off_out as u64)?;
                off_in = end;
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Whether a file of `source` can be cloned into the filesystem of directory `dir`: tried on
/// the first regular file found (an empty tree has nothing to share anyway), cloned into an
/// unnamed temporary file (`O_TMPFILE`), so nothing is left behind whatever happens.
pub fn reflink_works(source: &Path, dir: &Path) -> bool {
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

/// How often a copying command is checked on (has it ended; is its copy cancelled).
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs a copying command that dies with corral (a killed create must not leave it writing into
/// a staging directory the next command sweeps) and is killed when `progress` is cancelled; its
/// first line of errors becomes the error.
pub fn run_until_done(
    command: &mut Command,
    source: &Path,
    progress: &dyn Progress,
) -> Result<(), CoreError> {
    let program = command.get_program().to_string_lossy().into_owned();
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
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
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Waited for on a thread of its own, which drains the pipes meanwhile.
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let mut cancelled = false;
    let output = loop {
        match ended.recv_timeout(CHECK_EVERY) {
            Ok(output) => break output.map_err(CoreError::io("run", &program))?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if !cancelled && progress.cancelled() {
                    cancelled = true;
                    // Not reaped until its waiter returns: the pid is still this child's.
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(CoreError::Unsupported(format!(
                    "lost track of {program} copying {}",
                    source.display()
                )))
            }
        }
    };
    if cancelled {
        return Err(CoreError::Cancelled {
            what: format!("copying {}", source.display()),
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Cancelled from the start.
    struct Cancelling(AtomicBool);

    impl Progress for Cancelling {
        fn begin(&self, _what: &str, _total: Option<u64>) {}
        fn advance(&self, _bytes: u64) {}
        fn cancelled(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn a_cancelled_copying_command_is_killed_and_a_cancelled_file_copy_stops() {
        let started = std::time::Instant::now();
        let err = run_until_done(
            Command::new("sleep").arg("30"),
            Path::new("/nowhere"),
            &Cancelling(AtomicBool::new(true)),
        )
        .unwrap_err();
        assert!(matches!(err, CoreError::Cancelled { .. }), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        run_until_done(
            &mut Command::new("true"),
            Path::new("/nowhere"),
            &Cancelling(AtomicBool::new(false)),
        )
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let (source, target) = (dir.path().join("source"), dir.path().join("target"));
        std::fs::write(&source, vec![1u8; 1 << 20]).unwrap();
        let err = copy_file(
            &source,
            &target,
            "copying",
            &Cancelling(AtomicBool::new(true)),
        )
        .unwrap_err();
        let chain = corral_host::error_chain(&err);
        assert!(chain.ends_with("cancelled"), "{chain}");
    }
}
