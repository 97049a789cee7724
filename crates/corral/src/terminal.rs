//! The user's terminal while a command runs on a terminal in a guest (`corral exec --tty` in a
//! VM): its size at the start and whenever it changes.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver};

use anyhow::Context;
use corral_host::terminal::{window_size, WindowSize};
use nix::sys::signal::{SigSet, Signal};

/// The size of the terminal on stdin, else stdout; 0 by 0 when neither is one.
pub fn current_size() -> WindowSize {
    window_size(std::io::stdin().as_fd())
        .or_else(|| window_size(std::io::stdout().as_fd()))
        .unwrap_or(WindowSize { rows: 0, cols: 0 })
}

/// Each new size of the terminal on stdin (`None` when stdin is not one), from a thread that
/// takes SIGWINCH. Call it before starting other threads: they inherit the blocked signal, so
/// the watcher alone receives it.
pub fn watch_resizes() -> anyhow::Result<Option<Receiver<WindowSize>>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGWINCH);
    signals
        .thread_block()
        .context("cannot block SIGWINCH to watch the terminal's size")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        while signals.wait().is_ok() {
            let size = current_size();
            if sender.send(size).is_err() {
                return;
            }
        }
    });
    Ok(Some(receiver))
}
