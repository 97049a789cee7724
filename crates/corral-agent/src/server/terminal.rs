//! `exec` with a terminal: the program runs on a new pty as its controlling terminal, in a
//! session of its own (as sshd and `docker exec -t` run it), and the pty's output is relayed
//! until the program has exited and nothing is left to read.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::frame::{FrameError, MAX_CHUNK};
use crate::message::WindowSize;

/// How often the relay looks whether the program has exited while its pty is quiet.
const EXIT_CHECK_MS: u16 = 50;

/// Starts `command` on a new pty of `size` (left at the kernel's 0 by 0 when it is); returns
/// the child and the pty's master side.
pub fn spawn(mut command: Command, size: WindowSize) -> Result<(Child, File), String> {
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("cannot open a pty: {e}"))?;
    for fd in [&pty.master, &pty.slave] {
        // openpty's descriptors are inherited by default; only the standard streams are the
        // program's.
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|e| format!("cannot open a pty: {e}"))?;
    }
    if size.rows > 0 && size.cols > 0 {
        corral_host::terminal::set_window_size(pty.slave.as_fd(), size)
            .map_err(|e| format!("cannot size the pty: {e}"))?;
    }
    let stdio = |fd: &OwnedFd| -> Result<Stdio, String> {
        fd.try_clone()
            .map(Stdio::from)
            .map_err(|e| format!("cannot open a pty: {e}"))
    };
    command
        .stdin(stdio(&pty.slave)?)
        .stdout(stdio(&pty.slave)?)
        .stderr(stdio(&pty.slave)?);
    // SAFETY: between fork and exec the child only calls setsid(2) and ioctl(2), both
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()?;
            // The pty is stdin by now: make it the new session's controlling terminal.
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| super::exec::cannot_run(&command, &e))?;
    // The command holds the slave copies the child got; with them and ours closed, the master
    // reads EIO once the program and whatever it left on the pty are gone.
    drop(command);
    drop(pty.slave);
    Ok((child, File::from(pty.master)))
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
