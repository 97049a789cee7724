//! Raw terminal mode for `corral console`: keys go to the guest as typed.

use std::os::fd::{AsFd, AsRawFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Restores the terminal's previous mode on drop. Does nothing when stdin is not a terminal.
pub struct RawMode {
    saved: Option<(std::os::fd::RawFd, Termios)>,
}

impl RawMode {
    pub fn enable(input: &impl AsFd) -> anyhow::Result<Self> {
        let fd = input.as_fd();
        let Ok(saved) = termios::tcgetattr(fd) else {
            return Ok(Self { saved: None });
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)?;
        Ok(Self {
            saved: Some((fd.as_raw_fd(), saved)),
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some((fd, saved)) = self.saved.take() {
            // SAFETY: the descriptor is stdin, open for the whole life of the process.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            // Nothing more can be done if restoring fails; the shell's `reset` recovers.
            let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &saved);
        }
    }
}
