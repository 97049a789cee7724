//! The build log: every command a build runs writes its output here (and to stderr when the
//! caller wants to watch), so a failure can show the log's last lines and keep the whole.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use super::BuildError;

/// How many lines of the log a failure shows.
const TAIL_LINES: usize = 15;

pub struct BuildLog {
    path: PathBuf,
    file: File,
    echo: bool,
}

impl BuildLog {
    /// Creates (truncating) the log at `path`; `echo` copies what is logged to stderr.
    pub fn create(path: &Path, echo: bool) -> Result<Self, BuildError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(BuildError::io("create", parent))?;
        }
        let file = File::create(path).map_err(BuildError::io("create", path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            echo,
        })
    }

    /// A line of the build's own (`==> what`), always shown on stderr when echoing.
    pub fn note(&mut self, line: &str) {
        // The log is a record for people; a full disk must not fail the build.
        let _ = writeln!(self.file, "==> {line}");
        if self.echo {
            eprintln!("==> {line}");
        }
    }

    /// Runs `command` with its stdout and stderr appended to the log (and echoed), stdin empty.
    pub fn run(&mut self, mut command: Command) -> Result<ExitStatus, BuildError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let spawn_error = |source| BuildError::Spawn {
            program: program.clone(),
            source,
        };
        // Close-on-exec: a command sees the pipe only as its stdout and stderr (mmdebstrap's
        // dash scripts cannot redirect descriptors above 9, so leaked ones break it).
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| spawn_error(errno.into()))?;
        let writer_err = writer.try_clone().map_err(spawn_error)?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer_err));
        let mut child = command.spawn().map_err(spawn_error)?;
        // `command` holds our copies of the pipe's write end: without them the read loop ends
        // when the command and its children are gone.
        drop(command);
        let mut reader = BufReader::new(File::from(reader));
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = self.file.write_all(&line);
                    if self.echo {
                        let _ = std::io::stderr().write_all(&line);
                    }
                }
            }
        }
        child.wait().map_err(spawn_error)
    }

    /// The log's last lines, for an error message.
    pub fn tail(&mut self) -> String {
        let mut text = String::new();
        let _ = self.file.flush();
        if let Ok(mut file) = File::open(&self.path) {
            let length = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(length.saturating_sub(16 << 10)));
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    /// Runs `command` and fails with the log's tail unless it succeeds; `what` names it.
    pub fn run_checked(&mut self, what: &str, command: Command) -> Result<(), BuildError> {
        let status = self.run(command)?;
        if status.success() {
            return Ok(());
        }
        Err(BuildError::CommandFailed {
            what: what.to_string(),
            status: describe_status(status),
            tail: self.tail(),
        })
    }
}

/// `exit status 3` or `signal 9`.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}
