//! Terminals: a pty created inside the container, its master handed to the caller over a unix
//! socket with SCM_RIGHTS (runc's `--console-socket` protocol), and receiving it back.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use corral_host::terminal::WindowSize;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{Error, Result};

/// Connects to the caller's console socket (before the container's root changes).
pub fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|source| Error::Console {
        path: path.to_path_buf(),
        source,
    })
}

/// A new pty in the calling process's `/dev/ptmx`; returns (master, slave).
pub fn open_pty(size: Option<(u16, u16)>) -> Result<(OwnedFd, OwnedFd, String)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("open /dev/ptmx", e))?;
    grantpt(&master).map_err(|e| Error::sys("grant pty", e))?;
    unlockpt(&master).map_err(|e| Error::sys("unlock pty", e))?;
    let name = ptsname_r(&master).map_err(|e| Error::sys("name pty", e))?;
    let slave = nix::fcntl::open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open {name}"), e))?;
    if let Some((rows, cols)) = size {
        corral_host::terminal::set_window_size(slave.as_fd(), WindowSize { rows, cols })
            .map_err(|e| Error::sys("set terminal size", e))?;
    }
    let master = OwnedFd::from(master);
    Ok((master, slave, name))
}

/// Makes `slave` the calling process's controlling terminal and its stdin, stdout and stderr.
/// The caller must be a session leader.
pub fn become_terminal(slave: &OwnedFd) -> Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument; the fd is open.
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc != 0 {
        return Err(Error::sys("set controlling terminal", nix::Error::last()));
    }
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; both fds are valid.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::sys("attach terminal to stdio", nix::Error::last()));
        }
    }
    Ok(())
}

/// Sends `fd` over `socket` with SCM_RIGHTS; the payload names the pty, as runc's does.
pub fn send_fd(socket: RawFd, fd: RawFd, name: &str) -> Result<()> {
    let fds = [fd];
    let control = [ControlMessage::ScmRights(&fds)];
    let payload = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(socket, &payload, &control, MsgFlags::empty(), None)
        .map(drop)
        .map_err(|e| Error::sys("send the terminal over the console socket", e))
}

/// Receives one fd sent with [`send_fd`].
pub fn receive_fd(socket: RawFd) -> Result<OwnedFd> {
    let mut buffer = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::sys("receive the terminal", e))?;
    for cmsg in message
        .cmsgs()
        .map_err(|e| Error::sys("read control message", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(Error::Setup(
        "the console socket message carried no terminal".into(),
    ))
}

/// Copies the caller's stdin to the terminal `master` and its output to stdout until the
/// container side closes, with the caller's terminal (if stdin is one) in raw mode meanwhile.
pub fn relay(master: &OwnedFd) -> Result<()> {
    use corral_control::console::RawMode;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::Write;

    let stdin = std::io::stdin();
    let raw = RawMode::enable(stdin.as_fd()).map_err(Error::RawTerminal)?;
    if let Some(size) = corral_host::terminal::window_size(stdin.as_fd()) {
        let _ = corral_host::terminal::set_window_size(master.as_fd(), size);
    }
    let mut stdin_open = true;
    let mut buffer = [0u8; 8192];
    let result = loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => break Err(Error::sys("wait for terminal data", e)),
            Ok(_) => {}
        }
        let master_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let stdin_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        if !master_ready.is_empty() {
            match nix::unistd::read(master, &mut buffer) {
                // EIO: every slave is closed, the container side is done.
                Ok(0) | Err(nix::Error::EIO) => break Ok(()),
                Ok(n) => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&buffer[..n]).and_then(|_| out.flush());
                }
                Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => {}
                Err(e) => break Err(Error::sys("read the terminal", e)),
            }
        }
        if !stdin_ready.is_empty() {
            match nix::unistd::read(&stdin, &mut buffer) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = nix::unistd::write(master, &buffer[..n]);
                }
            }
        }
    };
    drop(raw);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_pty_master_survives_the_trip_over_a_socket() {
        let (left, right) = UnixStream::pair().unwrap();
        let (master, slave, name) = open_pty(Some((24, 80))).unwrap();
        assert!(name.starts_with("/dev/pts/"), "{name}");
        send_fd(left.as_raw_fd(), master.as_raw_fd(), &name).unwrap();
        drop(master);
        let received = receive_fd(right.as_raw_fd()).unwrap();
        let mut slave = std::fs::File::from(slave);
        slave.write_all(b"hello\n").unwrap();
        let mut master = std::fs::File::from(received);
        let mut buffer = [0u8; 64];
        let n = master.read(&mut buffer).unwrap();
        assert!(String::from_utf8_lossy(&buffer[..n]).contains("hello"));
    }
}
