//! Preparing and starting the user's program, shared by a container's init and `exec`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libseccomp::ScmpFilterContext;
use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::error::{Error, Result};
use crate::spec::{home_from_passwd, process_env, DEFAULT_PATH};

/// Everything execve needs, computed while errors can still reach the caller.
pub struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    seccomp: Option<ScmpFilterContext>,
}

fn cstring(text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::InvalidSpec(format!("{text:?} contains a NUL byte")))
}

/// Changes to the process's cwd, applies its rlimits, resolves the program on its PATH and
/// compiles the seccomp profile. Runs inside the container's root.
pub fn prepare(process: &Process, seccomp: Option<&LinuxSeccomp>) -> Result<Prepared> {
    let cwd = process.cwd();
    if !cwd.is_dir() {
        std::fs::create_dir_all(cwd).map_err(|e| Error::io("create working directory", cwd, e))?;
    }
    nix::unistd::chdir(cwd).map_err(|e| Error::sys(format!("chdir to {}", cwd.display()), e))?;
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
    let seccomp = seccomp.map(crate::seccomp::build_filter).transpose()?;
    Ok(Prepared {
        program: CString::new(program.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidSpec(format!("{first:?} contains a NUL byte")))?,
        argv: args.iter().map(|a| cstring(a)).collect::<Result<_>>()?,
        envp: env.iter().map(|e| cstring(e)).collect::<Result<_>>()?,
        seccomp,
    })
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
    let load_seccomp = || {
        prepared
            .seccomp
            .as_ref()
            .map_or(Ok(()), crate::seccomp::load)
    };
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
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &i32| fd >= first as i32)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number only changes its flags (EBADF if already closed).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
