//! A container process in the foreground of the calling program (`corral oci run`, `corral oci
//! exec`, `corral exec`): the terminal it asked for comes back to the caller over a socket pair
//! and is relayed to the caller's own stdio, and the signals the caller receives are forwarded to
//! it, as runc does.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};

/// Host pid of the process that terminal signals are forwarded to while the caller waits.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // Raw: any signal number arrives here, real-time ones included, which nix's Signal cannot
        // name; and a handler has no one to report a failure to.
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Forwards the signals a foreground runtime receives (INT, TERM, HUP, QUIT, USR1, USR2) to
/// `pid`.
pub fn forward_signals_to(pid: i32) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    FORWARD_TO.store(pid, Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(forward_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: the handler only reads an atomic and calls kill, both async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// The console socket a process gets: the caller's `socket` when given (runc's
/// --console-socket), else, when the process wants a terminal, one end of a socket pair whose
/// other end (returned second) receives the terminal's master for [`relay_terminal`].
pub fn console_for(
    wants_terminal: bool,
    socket: Option<&Path>,
) -> Result<(Option<UnixStream>, Option<UnixStream>)> {
    match (wants_terminal, socket) {
        (true, None) => {
            let (ours, theirs) = UnixStream::pair().map_err(|e| {
                let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                Error::sys("create a console socket pair", errno)
            })?;
            Ok((Some(theirs), Some(ours)))
        }
        (_, socket) => Ok((socket.map(crate::console::connect).transpose()?, None)),
    }
}

/// The terminal master the container sent over `local` (see [`console_for`]).
pub fn receive_terminal(local: &UnixStream) -> Result<OwnedFd> {
    crate::console::receive_fd(local.as_raw_fd())
}
