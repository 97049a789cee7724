//! Helpers shared by corral's test suites.
//!
//! Tests that need a host facility (root, `/dev/kvm`, a network namespace, a tool from apt) must
//! never pass silently where the facility is missing: they call [`skip`] (or the `require_*`
//! macros), which prints the reason and records it in the file named by `CORRAL_TEST_SKIP_LOG`, so
//! the test script can list every skip at the end of the run.

use std::io::Write;
use std::path::Path;

/// Records that the current test was skipped, and why.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    let line = format!("SKIPPED {test}: {reason}");
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("CORRAL_TEST_SKIP_LOG") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            // A lost skip line only weakens the summary, so a failed write is not a test failure.
            let _ = writeln!(file, "{line}");
        }
    }
}

/// True when the test runs as root (uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when `/dev/kvm` can be opened read-write.
pub fn has_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// True when `program` is found on `PATH`.
pub fn has_program(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Returns from the calling test (after recording a skip) unless it runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip("needs root");
            return;
        }
    };
}

/// Returns from the calling test (after recording a skip) unless `/dev/kvm` is usable.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::has_kvm() {
            $crate::skip("needs a read-write /dev/kvm");
            return;
        }
    };
}

/// Returns from the calling test (after recording a skip) unless `program` is on PATH.
#[macro_export]
macro_rules! require_program {
    ($program:expr) => {
        if !$crate::has_program($program) {
            $crate::skip(&format!("needs `{}` on PATH", $program));
            return;
        }
    };
}
