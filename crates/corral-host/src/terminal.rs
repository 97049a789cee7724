//! Terminals: a window size read from the user's terminal and set on a pty (`corral exec --tty`,
//! the guest agent's and the container engine's terminals), and a program started on a new pty
//! (the agent's `exec --tty`, the API's exec).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// A terminal's size in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// The window size of the terminal `fd`; `None` when it is not a terminal or has no size.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<WindowSize> {
    // SAFETY: winsize is plain integers; all zeroes is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize struct, which outlives the call; the fd is borrowed
    // open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0 && size.ws_col > 0).then_some(WindowSize {
        rows: size.ws_row,
        cols: size.ws_col,
    })
}

/// Sets the window size of the terminal `fd` (a pty's master or slave side); the programs on
/// it get SIGWINCH.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> nix::Result<()> {
    let size = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that outlives the call; the fd is borrowed
    // open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}

/// A new pty a command is set to run on ([`attach_new_pty`]): keep it until the command has
/// been spawned, then take its master side.
pub struct Pty {
    master: File,
    slave: OwnedFd,
}

impl Pty {
    /// The master side; our copy of the slave closes, so once the program's side is gone too
    /// the master reads EIO.
    pub fn into_master(self) -> File {
        drop(self.slave);
        self.master
    }
}

/// Sets `command` to run on a new pty as its controlling terminal, in a session of its own (as
/// sshd and `docker exec -t` run a program), the pty sized `size` when given.
pub fn attach_new_pty(command: &mut Command, size: Option<WindowSize>) -> std::io::Result<Pty> {
    let pty = nix::pty::openpty(None, None)?;
    for fd in [&pty.master, &pty.slave] {
        // openpty's descriptors are inherited by default; only the standard streams are the
        // program's.
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
    }
    if let Some(size) = size.filter(|size| size.rows > 0 && size.cols > 0) {
        set_window_size(pty.slave.as_fd(), size)?;
    }
    let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
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
    Ok(Pty {
        master: File::from(pty.master),
        slave: pty.slave,
    })
}

/// Starts `command` on a new pty ([`attach_new_pty`]); returns the child and the pty's master
/// side, which reads EIO once the program and whatever it left on the pty are gone.
pub fn spawn_on_pty(
    command: &mut Command,
    size: Option<WindowSize>,
) -> std::io::Result<(Child, File)> {
    let pty = attach_new_pty(command, size)?;
    let child = command.spawn();
    // The command holds the slave copies the child got: replaced, they close.
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok((child?, pty.into_master()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_size_set_on_a_pty_is_read_back_and_a_file_has_none() {
        let master = nix::fcntl::open(
            "/dev/ptmx",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let size = WindowSize {
            rows: 33,
            cols: 111,
        };
        set_window_size(master.as_fd(), size).unwrap();
        assert_eq!(window_size(master.as_fd()), Some(size));
        let file = tempfile::tempfile().unwrap();
        assert_eq!(window_size(file.as_fd()), None);
        assert!(set_window_size(file.as_fd(), size).is_err());
    }

    #[test]
    fn a_program_on_a_pty_has_it_as_its_sized_controlling_terminal() {
        use std::io::Read;
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "tty; stty size; [ \"$(ps -o sid= $$)\" -eq $$ ] && echo leader",
        ]);
        let size = WindowSize {
            rows: 30,
            cols: 100,
        };
        let (mut child, mut master) = spawn_on_pty(&mut command, Some(size)).unwrap();
        let mut output = Vec::new();
        // Read until EIO: the program and its pty side are gone.
        let _ = master.read_to_end(&mut output);
        assert!(child.wait().unwrap().success());
        let output = String::from_utf8_lossy(&output);
        assert!(output.contains("/dev/pts/"), "{output}");
        assert!(output.contains("30 100"), "{output}");
        assert!(output.contains("leader"), "{output}");
    }
}
