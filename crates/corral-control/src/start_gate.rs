//! The start gate between the instance manager and a supervisor it launches: the supervisor
//! (`corral`'s monitor, the `corral-vmm` VMM) is given the read end of a pipe as
//! [`START_GATE_OPTION`] and does nothing until the manager, having recorded its pid, writes
//! a byte; a manager that dies first closes the pipe, and the supervisor exits unstarted.

use std::os::fd::{FromRawFd, RawFd};

/// The option that names the gate's descriptor.
pub const START_GATE_OPTION: &str = "--start-gate";

/// Called first thing by every corral process given [`START_GATE_OPTION`]: a supervisor
/// launched by corral-core's `Manager::start` waits here until the manager has recorded it; when the
/// manager died first, the supervisor exits at once without doing anything.
pub fn pass_start_gate(fd: RawFd) {
    // Raw: nix takes a borrowed descriptor, and this number may name none.
    // SAFETY: F_GETFD only asks whether the descriptor is open; an option naming none (or a
    // standard stream) is ignored rather than taken over.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return;
    }
    // SAFETY: the launcher passed this open, inherited descriptor to this process alone, and
    // nothing else here owns it.
    let gate = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&gate, &mut byte) {
            Ok(1) => {
                // Kept open for the process's life, closed on exec: a supervisor that
                // re-executes itself with the same arguments (from a sealed copy) finds the
                // number closed rather than reused by some other file.
                let _ = nix::fcntl::fcntl(
                    &gate,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                );
                std::mem::forget(gate);
                return;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            _ => {
                eprintln!(
                    "corral: the command that started this supervisor ended before recording \
                     it; not starting"
                );
                std::process::exit(1);
            }
        }
    }
}
