//! A terminal's window size: read from the user's terminal, set on a pty (`corral exec --tty`,
//! the guest agent's and the container engine's terminals).

use std::os::fd::{AsRawFd, BorrowedFd};

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
}
