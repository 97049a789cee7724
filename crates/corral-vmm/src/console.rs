//! The guest console's host side: where COM1's output goes and where its input comes from.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use corral_control::console::{ConsoleHub, DEFAULT_LOG_LIMIT};

use crate::config::SerialTarget;
use crate::devices::legacy::serial::{feed_input, SerialDevice, SerialOutput};
use crate::seccomp::{self, ThreadClass};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot open console file {path}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on console socket")]
    Socket(#[from] corral_control::ControlError),
}

enum Input {
    Stdin,
    /// The hub serves clients on this bound socket.
    Hub(ConsoleHub, UnixListener),
    Nothing,
}

pub struct Console {
    output: SerialOutput,
    input: Input,
}

impl Console {
    /// Opens the console for `target`; with a socket, `log` (if any) also receives the output.
    pub fn open(target: &SerialTarget, log: Option<&Path>) -> Result<Console, ConsoleError> {
        Ok(match target {
            SerialTarget::Stdout => Console {
                output: SerialOutput::Stdout,
                input: Input::Stdin,
            },
            SerialTarget::File(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ConsoleError::File {
                        path: path.clone(),
                        source,
                    })?;
                Console {
                    output: SerialOutput::File(Arc::new(Mutex::new(file))),
                    input: Input::Nothing,
                }
            }
            SerialTarget::Socket(path) => {
                let listener = corral_control::bind(path)?;
                let hub = ConsoleHub::new(log, DEFAULT_LOG_LIMIT)?;
                Console {
                    output: SerialOutput::Hub(hub.clone()),
                    input: Input::Hub(hub, listener),
                }
            }
            SerialTarget::None => Console {
                output: SerialOutput::Discard,
                input: Input::Nothing,
            },
        })
    }

    pub fn output(&self) -> SerialOutput {
        self.output.clone()
    }

    /// Starts forwarding input to `serial`. Input threads (confined to the console threads'
    /// seccomp filter) block in `read` and end with the process.
    pub fn start_input(self, serial: Arc<Mutex<SerialDevice>>) -> std::io::Result<()> {
        let thread = std::thread::Builder::new().name("console".into());
        match self.input {
            Input::Stdin if stdin_is_background_terminal() => {
                // Reading it would stop the whole VMM with SIGTTIN.
                tracing::info!("stdin is a terminal this process does not own: no console input");
            }
            Input::Stdin => {
                thread.spawn(move || {
                    seccomp::enter(ThreadClass::Console);
                    forward(std::io::stdin().lock(), &serial);
                })?;
            }
            Input::Hub(hub, listener) => {
                thread.spawn(move || {
                    seccomp::enter(ThreadClass::Console);
                    hub.accept_loop(listener, move |bytes| feed_input(&serial, bytes));
                })?;
            }
            Input::Nothing => {}
        }
        Ok(())
    }
}

/// True when stdin is a terminal whose foreground process group is not ours (`corral vmm run &`).
fn stdin_is_background_terminal() -> bool {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return false;
    }
    // A terminal that does not answer is not ours either (as when tcgetpgrp's -1 was compared).
    nix::unistd::tcgetpgrp(std::io::stdin()).map_or(true, |group| group != nix::unistd::getpgrp())
}

fn forward(mut source: impl Read, serial: &Mutex<SerialDevice>) {
    let mut buffer = [0u8; 4096];
    while let Ok(read @ 1..) = source.read(&mut buffer) {
        feed_input(serial, &buffer[..read]);
    }
}

/// Removes the VMM's socket files when the VMM is done with them. Only sockets this process
/// bound go in here.
#[derive(Default)]
pub struct SocketFiles(pub Vec<PathBuf>);

impl Drop for SocketFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}
