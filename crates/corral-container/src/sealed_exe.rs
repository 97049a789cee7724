//! The runtime's own binary, out of the container's reach (CVE-2019-5736).
//!
//! A container's init is a clone of the runtime and an exec'd process a fork of it, so until they
//! exec the user's program their `/proc/PID/exe` is the runtime's binary, and so is what
//! `execve("/proc/self/exe")` runs in them. A container process that opens it (directly, or as
//! the interpreter of its own entry point) could write the host's corral once it is no longer
//! running, and own the next corral command run as root.
//!
//! So the runtime re-executes itself, before it creates or enters a container, from a sealed
//! copy, as runc does: a read-only overlayfs view of the binary's directory that is mounted
//! nowhere (no copy, no memory; the same file contents, but a different file that no write can
//! reach), or where overlayfs cannot be used a memfd copy sealed against writes. Its
//! `/proc/self/exe` is then that copy, and so is the init's and every exec'd process's.
//! [`crate::Container::create`] and [`crate::Container::exec`] refuse to run otherwise.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, OFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// Carries the sealed copy's device and inode across the re-execution; removed from the
/// environment as soon as it is checked, so nothing the runtime starts inherits it.
const MARKER: &str = "_CORRAL_SEALED_EXE";

/// Set once this process image is known to run from its sealed copy.
static SEALED: AtomicBool = AtomicBool::new(false);

/// The empty directory under the state root that overlayfs needs as a second lower layer.
const OVERLAY_SPARE_LAYER: &str = ".sealed-exe-layer";

/// True when this process runs from a sealed copy of its binary ([`ensure`] succeeded).
pub fn is_sealed() -> bool {
    SEALED.load(Ordering::Relaxed)
}

/// Makes sure this process runs from a sealed copy of its binary: returns at once when it does,
/// otherwise re-executes the program (same arguments and environment, same pid) from a new
/// sealed copy and never returns. `scratch` is a directory of the runtime's own (its state
/// root) where an empty directory for the overlay may be made.
///
/// Call it early, before doing anything the re-executed program would repeat (connecting to a
/// console socket, writing files), and while single-threaded.
pub fn ensure(scratch: &Path) -> Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let running = file_id(&std::fs::metadata("/proc/self/exe").map_err(exe_error)?);
    let marker = std::env::var_os(MARKER);
    std::env::remove_var(MARKER);
    if let Some(marker) = marker {
        if marker == OsString::from(&running) {
            SEALED.store(true, Ordering::Relaxed);
            return Ok(());
        }
        return Err(Error::Setup(format!(
            "re-executed from a sealed copy of the corral binary ({}), but /proc/self/exe is \
             {running}",
            marker.to_string_lossy()
        )));
    }
    let sealed = match overlay_view(scratch) {
        Ok(sealed) => sealed,
        Err(err) => {
            tracing::debug!("sealing the binary with overlayfs failed ({err}); copying it");
            memfd_copy(std::fs::File::open("/proc/self/exe").map_err(exe_error)?)?
        }
    };
    let stat = nix::sys::stat::fstat(&sealed)
        .map_err(|e| Error::sys("stat the sealed copy of the binary", e))?;
    let id = format!("{}:{}", stat.st_dev, stat.st_ino);
    let args = std::env::args_os()
        .map(|arg| c_string(arg.as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let mut env = std::env::vars_os()
        .map(|(key, value)| c_string(&[key.as_bytes(), b"=", value.as_bytes()].concat()))
        .collect::<Result<Vec<_>>>()?;
    env.push(c_string(format!("{MARKER}={id}").as_bytes())?);
    let err = nix::unistd::fexecve(sealed.as_fd(), &args, &env).unwrap_err();
    Err(Error::sys(
        "re-execute corral from a sealed copy of its binary",
        err,
    ))
}

/// A command running this program again from its sealed copy, known as sealed there too (for
/// a process that re-executes itself, such as a restarting supervisor).
pub fn self_command() -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("/proc/self/exe");
    if let Some(name) = std::env::args_os().next() {
        command.arg0(name);
    }
    if is_sealed() {
        if let Ok(meta) = std::fs::metadata("/proc/self/exe") {
            command.env(MARKER, file_id(&meta));
        }
    }
    command
}

/// Device and inode as `dev:ino`.
fn file_id(meta: &std::fs::Metadata) -> String {
    format!("{}:{}", meta.dev(), meta.ino())
}

fn exe_error(source: std::io::Error) -> Error {
    Error::io("open", "/proc/self/exe", source)
}

fn c_string(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::Setup("an argument or variable holds a NUL byte".into()))
}

/// The binary through a read-only overlayfs of its directory that is mounted nowhere: the
/// kernel offers no way from that file back to the writable one beneath (runc's zero-copy way).
fn overlay_view(scratch: &Path) -> Result<OwnedFd> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
        MountAttrFlags,
    };
    let binary = std::fs::read_link("/proc/self/exe").map_err(exe_error)?;
    let (Some(dir), Some(name)) = (binary.parent(), binary.file_name()) else {
        return Err(Error::Setup(format!(
            "{} has no directory",
            binary.display()
        )));
    };
    // overlayfs refuses a single lower layer without an upper one.
    let spare = scratch.join(OVERLAY_SPARE_LAYER);
    std::fs::create_dir_all(&spare).map_err(|e| Error::io("create", &spare, e))?;
    let lower = format!("{}:{}", escape_layer(dir), escape_layer(&spare));
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: rustix::io::Errno| Error::sys(what, nix::Error::from_raw(e.raw_os_error()))
    };
    let context = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(io("open overlayfs"))?;
    fsconfig_set_string(&context, "lowerdir", &lower)
        .map_err(io(&format!("use {lower} as overlayfs layers")))?;
    // Only a hint; some kernels log noise about it otherwise.
    let _ = fsconfig_set_string(&context, "xino", "off");
    fsconfig_create(&context).map_err(io("create the overlayfs"))?;
    let attributes = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOSUID;
    let mount = fsmount(&context, FsMountFlags::FSMOUNT_CLOEXEC, attributes)
        .map_err(io("mount the overlayfs"))?;
    nix::fcntl::openat(
        &mount,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::sys(
            format!("open {} in the overlayfs", PathBuf::from(name).display()),
            e,
        )
    })
}

/// A path as one overlayfs `lowerdir` entry (`:` separates layers, `\` escapes).
fn escape_layer(path: &Path) -> String {
    path.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
}

/// A copy of `source` in a memfd, sealed so nobody can change it (runc's fallback).
fn memfd_copy(mut source: std::fs::File) -> Result<OwnedFd> {
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    // Hosts with vm.memfd_noexec want executable memfds asked for by name (Linux 6.3+).
    let exec = MFdFlags::from_bits_retain(libc::MFD_EXEC);
    let memfd = memfd_create("corral-sealed-exe", flags | exec)
        .or_else(|_| memfd_create("corral-sealed-exe", flags))
        .map_err(|e| Error::sys("create a memfd for the sealed binary", e))?;
    let mut copy = std::fs::File::from(memfd);
    std::io::copy(&mut source, &mut copy).map_err(|e| Error::io("copy", "/proc/self/exe", e))?;
    let memfd = OwnedFd::from(copy);
    nix::sys::stat::fchmod(&memfd, Mode::from_bits_truncate(0o555))
        .map_err(|e| Error::sys("make the sealed binary read-only", e))?;
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    nix::fcntl::fcntl(&memfd, FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| Error::sys("seal the copy of the binary", e))?;
    Ok(memfd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_memfd_copy_has_the_contents_and_refuses_every_write() {
        let mut source = tempfile::tempfile().unwrap();
        source.write_all(b"\x7fELF and the rest").unwrap();
        std::io::Seek::rewind(&mut source).unwrap();
        let sealed = memfd_copy(source).unwrap();
        let seals = nix::fcntl::fcntl(&sealed, FcntlArg::F_GET_SEALS).unwrap();
        let wanted = SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW;
        assert_eq!(seals & wanted.bits(), wanted.bits());
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&sealed));
        assert_eq!(std::fs::read(&path).unwrap(), b"\x7fELF and the rest");
        let write = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"x"));
        assert!(write.is_err(), "a sealed copy must not take writes");
    }

    #[test]
    fn overlay_layers_escape_separators() {
        assert_eq!(escape_layer(Path::new("/a:b\\c")), "/a\\:b\\\\c");
    }
}
