//! Preparing and starting the user's program, shared by a container's init and `exec`.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::Process;

use crate::error::{Error, Result};
use crate::rootfs::Rootfs;
use crate::seccomp::Program;
use crate::spec::{home_from_passwd, process_env, DEFAULT_PATH};
use crate::syscall::LinuxSyscall;

/// Everything execve needs, computed while errors can still reach the caller.
pub struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    seccomp: Option<Program>,
}

fn cstring(text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::InvalidSpec(format!("{text:?} contains a NUL byte")))
}

/// Closes every descriptor but stdio, the preserved ones below `first_fd` and `keep`, enters the
/// process's cwd, applies its rlimits and resolves the program on its PATH; `seccomp` is loaded
/// just before the exec. Runs inside the container's root.
pub fn prepare(
    process: &Process,
    seccomp: Option<&Program>,
    first_fd: u32,
    keep: &[RawFd],
) -> Result<Prepared> {
    // Nothing from the runtime or the host may be open while the cwd is resolved: a directory
    // descriptor would be reachable as /proc/self/fd/N (CVE-2024-21626).
    close_fds_except(first_fd, keep)?;
    enter_cwd(process.cwd())?;
    crate::security::apply_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let home = home_from_passwd(&passwd, process.user().uid());
    let env = process_env(process, home.as_deref());
    let args = process.args().as_deref().unwrap_or_default();
    let first = args
        .first()
        .ok_or_else(|| Error::InvalidSpec("process.args is empty".into()))?;
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let program = find_program(first, path_var)?;
    Ok(Prepared {
        program: CString::new(program.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidSpec(format!("{first:?} contains a NUL byte")))?,
        argv: args.iter().map(|a| cstring(a)).collect::<Result<_>>()?,
        envp: env.iter().map(|e| cstring(e)).collect::<Result<_>>()?,
        seccomp: seccomp.cloned(),
    })
}

/// Makes `cwd` the working directory, creating it when missing. It is resolved inside the
/// container's root with /proc magic links refused: `/proc/self/fd/N`, `/proc/PID/root` and
/// the like lead wherever the runtime or another process points, including the host.
fn enter_cwd(cwd: &Path) -> Result<()> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root = nix::fcntl::open("/", flags, Mode::empty())
        .map_err(|e| Error::sys("open the container's root", e))?;
    // RESOLVE_IN_ROOT refuses magic links as well; saying so keeps that if the kernel changes.
    let resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    let open = || openat2(&root, cwd, OpenHow::new().flags(flags).resolve(resolve));
    let dir = match open() {
        Ok(dir) => dir,
        Err(nix::Error::ENOENT) => {
            let sys = LinuxSyscall;
            let created = Rootfs::open(&sys, Path::new("/"))
                .and_then(|root| crate::rootfs::create_dirs(&sys, &root, cwd));
            if let Err(err) = created {
                return Err(Error::WorkingDir {
                    path: cwd.to_path_buf(),
                    source: Box::new(err),
                });
            }
            open().map_err(|e| {
                Error::sys(format!("open the working directory {}", cwd.display()), e)
            })?
        }
        // ELOOP is a magic link or a symlink loop; only a magic link opens without the limits.
        Err(nix::Error::ELOOP)
            if openat2(&root, cwd, OpenHow::new().flags(OFlag::O_PATH)).is_ok() =>
        {
            return Err(Error::InvalidSpec(format!(
                "process.cwd {} goes through a /proc magic link, which can lead outside the \
                 container; use a directory inside it",
                cwd.display()
            )))
        }
        Err(e) => {
            return Err(Error::sys(
                format!("open the working directory {}", cwd.display()),
                e,
            ))
        }
    };
    nix::unistd::fchdir(&dir).map_err(|e| Error::sys(format!("chdir to {}", cwd.display()), e))?;
    // The kernel names a cwd outside the process's root "(unreachable)/..." (glibc: ENOENT).
    match nix::unistd::getcwd() {
        Ok(path) if path.is_absolute() => Ok(()),
        _ => Err(Error::Setup(format!(
            "the working directory {} is outside the container's root; refusing to run there",
            cwd.display()
        ))),
    }
}

/// Finds `name` like execvp: paths with a slash as given, others on `path_var`. The messages use
/// the words podman maps to exit codes 127 and 126.
pub fn find_program(name: &str, path_var: &str) -> Result<PathBuf> {
    let check = |candidate: &Path| -> Result<bool> {
        match std::fs::metadata(candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(true),
            Ok(_) => Err(Error::Setup(format!(
                "exec {}: permission denied",
                candidate.display()
            ))),
            Err(_) => Ok(false),
        }
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if check(&path)? {
            Ok(path)
        } else {
            Err(Error::Setup(format!(
                "exec {name}: no such file or directory"
            )))
        };
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if check(&candidate).unwrap_or(false) {
            return Ok(candidate);
        }
    }
    Err(Error::Setup(format!(
        "exec {name:?}: executable file not found in $PATH"
    )))
}

/// Takes on the process's identity, loads seccomp and execs; returns only on failure.
///
/// Without no_new_privs the kernel only lets a process holding CAP_SYS_ADMIN load a filter, so
/// the filter goes on before capabilities are dropped (and must allow the calls that drop them,
/// as runc requires too); with no_new_privs it goes on last, as late as possible.
pub fn exec(process: &Process, prepared: &Prepared) -> Error {
    let load_seccomp = || prepared.seccomp.as_ref().map_or(Ok(()), Program::load);
    let steps = if process.no_new_privileges() == Some(true) {
        crate::security::become_process_identity(process)
            .and_then(|_| crate::security::set_no_new_privs())
            .and_then(|_| load_seccomp())
    } else {
        load_seccomp().and_then(|_| crate::security::become_process_identity(process))
    };
    if let Err(err) = steps {
        return err;
    }
    match nix::unistd::execve(&prepared.program, &prepared.argv, &prepared.envp) {
        Err(nix::Error::EACCES) => Error::Setup(format!(
            "exec {}: permission denied",
            prepared.program.to_string_lossy()
        )),
        Err(nix::Error::ENOENT) => Error::Setup(format!(
            "exec {}: no such file or directory (is its interpreter or loader missing?)",
            prepared.program.to_string_lossy()
        )),
        Err(e) => Error::sys(format!("exec {}", prepared.program.to_string_lossy()), e),
    }
}

/// Marks every descriptor from `first` up close-on-exec, so the container inherits only stdio and
/// the fds the caller asked to preserve.
pub fn close_fds_on_exec(first: u32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors; no memory is
    // touched. Failure (old kernel) leaves fds open, as the fallback below then handles.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    for fd in open_fds(first) {
        // Raw: nix takes a borrowed descriptor, and a number read from /proc may already be
        // closed (the listing's own descriptor): that EBADF is expected and ignored.
        // SAFETY: F_SETFD on a descriptor number only changes its flags (EBADF if already closed).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Closes every descriptor from `first` up except those in `keep`.
///
/// Called in a process that never returns to its caller's frames (the container's init, an
/// exec'd process), whose descriptors may belong to Rust objects that are then never dropped.
pub fn close_fds_except(first: u32, keep: &[RawFd]) -> Result<()> {
    for (low, high) in ranges_to_close(first, keep) {
        // SAFETY: close_range only closes descriptors in the range; see the note above about
        // the objects that owned them.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, low, high, 0) };
        if rc == 0 {
            continue;
        }
        // Before Linux 5.9: close what /proc lists (the init still sees the host's /proc).
        let listed = open_fds(low);
        if listed.is_empty() && std::fs::metadata("/proc/self/fd").is_err() {
            return Err(Error::sys(
                "close inherited descriptors (no close_range and no /proc)",
                nix::Error::last(),
            ));
        }
        for fd in listed.into_iter().filter(|&fd| fd as u32 <= high) {
            // Ignored: EBADF means the listing's own descriptor, already closed, and close(2)
            // frees the descriptor even when it reports EINTR or EIO.
            let _ = nix::unistd::close(fd);
        }
    }
    Ok(())
}

/// The inclusive ranges of descriptors from `first` up that are not in `keep`.
fn ranges_to_close(first: u32, keep: &[RawFd]) -> Vec<(u32, u32)> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd >= first)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut ranges = Vec::new();
    let mut start = first;
    for fd in keep {
        if fd > start {
            ranges.push((start, fd - 1));
        }
        start = fd + 1;
    }
    ranges.push((start, u32::MAX));
    ranges
}

/// Open descriptors from `first` up, as /proc lists them (empty without /proc).
fn open_fds(first: u32) -> Vec<RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let fds: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &RawFd| fd >= 0 && fd as u32 >= first)
        .collect();
    fds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_but_the_kept_descriptors_is_closed() {
        assert_eq!(ranges_to_close(3, &[]), [(3, u32::MAX)]);
        assert_eq!(
            ranges_to_close(3, &[9, 4, 5, 2, 9]),
            [(3, 3), (6, 8), (10, u32::MAX)]
        );
        // Preserved descriptors below `first` stay whatever `keep` says.
        assert_eq!(ranges_to_close(6, &[3, 6]), [(7, u32::MAX)]);
    }

    #[test]
    fn programs_are_found_on_path_or_reported_in_podmans_words() {
        assert_eq!(
            find_program("sh", "/nonexistent:/bin").unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(find_program("/bin/sh", "").unwrap(), Path::new("/bin/sh"));
        let err = find_program("no-such-program-here", "/bin:/usr/bin").unwrap_err();
        assert!(
            err.to_string()
                .contains("executable file not found in $PATH"),
            "{err}"
        );
        let err = find_program("/no/such/file", "").unwrap_err();
        assert!(
            err.to_string().contains("no such file or directory"),
            "{err}"
        );
        let err = find_program("/etc/passwd", "").unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
    }
}
