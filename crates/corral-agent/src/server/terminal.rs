//! `exec` with a terminal: the program runs on a new pty as its controlling terminal, in a
//! session of its own (as sshd and `docker exec -t` run it), and the pty's output is relayed
//! until the program has exited and nothing is left to read.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::frame::{FrameError, MAX_CHUNK};
use crate::message::WindowSize;

/// How often the relay looks whether the program has exited while its pty is quiet.
const EXIT_CHECK_MS: u16 = 50;

/// Starts `command` on a new pty of `size` (left at the kernel's 0 by 0 when it is); returns
/// the child and the pty's master side.
pub fn spawn(mut command: Command, size: WindowSize) -> Result<(Child, File), String> {
    corral_host::terminal::spawn_on_pty(&mut command, Some(size))
        .map_err(|e| super::exec::cannot_run(&command, &e))
}

/// Sends what the program writes on the pty through `send`, until every program has closed
/// the pty or, once `exited` is set, the pty has nothing more to read (a daemon the program
/// left on the terminal does not hold the exec open).
pub fn pump(
    pty: &File,
    exited: &AtomicBool,
    mut send: impl FnMut(&[u8]) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    let mut buffer = vec![0u8; MAX_CHUNK];
    loop {
        // Read before polling: a program that exited before the poll had written everything.
        let done = exited.load(Ordering::SeqCst);
        let mut fds = [PollFd::new(pty.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(EXIT_CHECK_MS)) {
            Ok(0) if done => return Ok(()),
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(FrameError::Io(e.into())),
        }
        match (&*pty).read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => send(&buffer[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: no program has the pty open any more.
            Err(_) => return Ok(()),
        }
    }
}
