//! The guest console's host side: where COM1's output goes and where its input comes from.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::SerialTarget;
use crate::devices::bus::lock;
use crate::devices::legacy::serial::{feed_input, SerialDevice, SerialOutput};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot open console file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on console socket: {0}")]
    Socket(#[from] corral_control::ControlError),
}

enum Input {
    Stdin,
    Socket(UnixListener, Arc<Mutex<Option<UnixStream>>>),
    Nothing,
}

pub struct Console {
    output: SerialOutput,
    input: Input,
}

impl Console {
    pub fn open(target: &SerialTarget) -> Result<Console, ConsoleError> {
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
                let client = Arc::new(Mutex::new(None));
                Console {
                    output: SerialOutput::Socket(client.clone()),
                    input: Input::Socket(listener, client),
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

    /// Starts the thread that forwards input to `serial`. Input threads block in `read` and end
    /// with the process.
    pub fn start_input(self, serial: Arc<Mutex<SerialDevice>>) {
        match self.input {
            Input::Stdin => {
                std::thread::spawn(move || forward(std::io::stdin().lock(), &serial));
            }
            Input::Socket(listener, client) => {
                std::thread::spawn(move || {
                    for stream in listener.incoming().flatten() {
                        let Ok(writer) = stream.try_clone() else {
                            continue;
                        };
                        // One client at a time: a new one takes over the console.
                        *lock(&client) = Some(writer);
                        forward(stream, &serial);
                    }
                });
            }
            Input::Nothing => {}
        }
    }
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
