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

use corral_image::progress::Progress;
use nix::errno::Errno;

use crate::definition::ImageStorage;
use crate::error::CoreError;

/// A sparse copy moves at most this much per call: often enough for a smooth progress bar.
const COPY_CHUNK: u64 = 8 << 20;

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

/// Runs a copying command that dies with corral (a killed create must not leave it writing into
/// a staging directory the next command sweeps); its first line of errors becomes the error.
pub fn run_until_done(command: &mut Command, source: &Path) -> Result<(), CoreError> {
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
