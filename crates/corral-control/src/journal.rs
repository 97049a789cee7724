//! The systemd journal as a supervisor's output. A supervisor launched by a command whose own
//! output goes to the journal (`corral autostart` under its unit) logs there too, under an
//! identifier of its own (`journalctl -t corral-NAME`); otherwise to its log file.
//!
//! The launcher hands the supervisor a journal stream as its standard output and error, as
//! `sd_journal_stream_fd(3)` makes one: journald fixes the identifier from the stream's header,
//! and the supervisor only writes lines, each marked with its priority (`<3>`, sd-daemon(3)). So
//! a VMM needs no socket of its own: its jail and seccomp filters allow writing to stderr, and a
//! compromised one cannot log under another name. Panics and anything else printed reach the
//! journal too.

use std::fs::File;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use crate::log::{RotatingLog, DEFAULT_LOG_LIMIT};

/// journald's socket for streams (what `sd_journal_stream_fd(3)` connects to).
pub const STDOUT_SOCKET: &str = "/run/systemd/journal/stdout";

/// Set by systemd (systemd.exec(5)) to the device and inode (`DEV:INO`) of the journal stream
/// it gave a service as standard output or error; corral names the streams it hands on the same
/// way.
pub const STREAM_ENV: &str = "JOURNAL_STREAM";

/// The priority of lines without a `<N>` prefix (panics, plain `eprintln!`s): info, systemd's
/// default for a service's output.
const DEFAULT_PRIORITY: u8 = 6;

/// Whether this process's standard error is a journal stream: `JOURNAL_STREAM` names its
/// device and inode. Inheriting the variable is not enough: a process whose stderr was
/// redirected elsewhere writes there, as systemd.exec(5) describes.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os(STREAM_ENV) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(io::stderr().as_fd()) else {
        return false;
    };
    value
        .to_str()
        .is_some_and(|value| names(value, stat.st_dev, stat.st_ino))
}

/// Whether a `JOURNAL_STREAM` value names the file `dev`:`ino`.
fn names(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// The syslog priority of a log record of `level`, as a journal stream line's `<N>` prefix
/// gives it.
pub fn priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// A connection to journald whose lines it logs under one identifier.
#[derive(Debug)]
pub struct JournalStream(UnixStream);

impl JournalStream {
    /// Connects to journald's stream socket at `socket` and says who writes: `identifier`
    /// (`SYSLOG_IDENTIFIER`), lines may start with `<N>` to give their priority, and nothing is
    /// forwarded to syslog, the kernel log or the console.
    pub fn connect(socket: &Path, identifier: &str) -> io::Result<JournalStream> {
        if identifier.is_empty() || identifier.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{identifier:?} cannot be a journal identifier"),
            ));
        }
        let mut stream = UnixStream::connect(socket)?;
        // The header: identifier, unit (none), default priority, level prefix, syslog, kmsg,
        // console.
        let header = format!("{identifier}\n\n{DEFAULT_PRIORITY}\n1\n0\n0\n0\n");
        stream.write_all(header.as_bytes())?;
        stream.shutdown(Shutdown::Read)?;
        Ok(JournalStream(stream))
    }

    /// The `JOURNAL_STREAM` value naming this stream, for the process it is given to.
    pub fn env_value(&self) -> io::Result<String> {
        let stat = nix::sys::stat::fstat(self.0.as_fd())?;
        Ok(format!("{}:{}", stat.st_dev, stat.st_ino))
    }
}

/// Where a supervisor's standard output and error go.
#[derive(Debug)]
pub enum SupervisorOutput {
    /// The journal, under the supervisor's identifier.
    Journal(JournalStream),
    /// Its log file, which it rotates.
    File(File),
}

impl SupervisorOutput {
    /// The journal under `identifier` when this process's own output goes to the journal (it
    /// runs under systemd), else the log file at `log_path`. A journal that cannot be reached
    /// leaves the log file, with a warning. When the journal is chosen the log file gets one
    /// line saying where the log is, for whoever looks there.
    pub fn choose(log_path: &Path, identifier: &str) -> io::Result<SupervisorOutput> {
        let journal = stderr_is_journal().then_some(Path::new(STDOUT_SOCKET));
        Self::choose_between(journal, log_path, identifier)
    }

    fn choose_between(
        journal: Option<&Path>,
        log_path: &Path,
        identifier: &str,
    ) -> io::Result<SupervisorOutput> {
        if let Some(socket) = journal {
            match JournalStream::connect(socket, identifier) {
                Ok(stream) => {
                    let note = format!(
                        "corral: this supervisor logs to the systemd journal: \
                         journalctl -t {identifier}\n"
                    );
                    RotatingLog::open(log_path, DEFAULT_LOG_LIMIT)?.write(note.as_bytes())?;
                    return Ok(SupervisorOutput::Journal(stream));
                }
                Err(err) => tracing::warn!(
                    "cannot reach the journal at {}, so {identifier} logs to {}: {err}",
                    socket.display(),
                    log_path.display()
                ),
            }
        }
        crate::log::open_log(log_path).map(SupervisorOutput::File)
    }

    pub fn is_journal(&self) -> bool {
        matches!(self, SupervisorOutput::Journal(_))
    }

    /// Points `command`'s standard output and error here. A journal stream is named in its
    /// environment, as systemd names a service's, so the supervisor marks its lines' priority.
    pub fn attach(self, command: &mut Command) -> io::Result<()> {
        let file = match self {
            SupervisorOutput::Journal(stream) => {
                command.env(STREAM_ENV, stream.env_value()?);
                File::from(std::os::fd::OwnedFd::from(stream.0))
            }
            SupervisorOutput::File(file) => file,
        };
        let (out, err) = (file.try_clone()?, file);
        command.stdout(out).stderr(err);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_journal_stream_value_must_name_the_file_itself() {
        assert!(names("64769:1234", 64769, 1234));
        assert!(!names("64769:1235", 64769, 1234));
        assert!(!names("64770:1234", 64769, 1234));
        assert!(!names("64769", 64769, 1234));
        assert!(!names("", 64769, 1234));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&tracing::Level::ERROR), 3);
        assert_eq!(priority(&tracing::Level::WARN), 4);
        assert_eq!(priority(&tracing::Level::INFO), 6);
        assert_eq!(priority(&tracing::Level::DEBUG), 7);
        assert_eq!(priority(&tracing::Level::TRACE), 7);
    }

    #[test]
    fn a_supervisor_gets_a_journal_stream_under_its_identifier_and_a_note_in_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("stdout");
        let listener = UnixListener::bind(&socket).unwrap();
        let log = dir.path().join("supervisor.log");
        let output = SupervisorOutput::choose_between(Some(&socket), &log, "corral-web").unwrap();
        assert!(output.is_journal());
        let mut child = Command::new("sh");
        // The child is told which stream is the journal: the one its stderr is.
        child.args([
            "-c",
            "[ \"$JOURNAL_STREAM\" = \"$(stat -L -c %d:%i /proc/self/fd/2)\" ] && \
             echo '<4>low disk'; echo plain >&2",
        ]);
        output.attach(&mut child).unwrap();
        let (mut journald, _) = listener.accept().unwrap();
        assert!(child.status().unwrap().success());
        drop(child);
        let mut received = String::new();
        journald.read_to_string(&mut received).unwrap();
        assert_eq!(
            received,
            "corral-web\n\n6\n1\n0\n0\n0\n<4>low disk\nplain\n"
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "corral: this supervisor logs to the systemd journal: journalctl -t corral-web\n"
        );
    }

    #[test]
    fn an_unreachable_journal_leaves_the_log_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("supervisor.log");
        let missing = dir.path().join("no-journal");
        let output = SupervisorOutput::choose_between(Some(&missing), &log, "corral-web").unwrap();
        assert!(!output.is_journal());
        let mut child = Command::new("sh");
        child.args(["-c", "echo \"to the file ${JOURNAL_STREAM:-unset}\" >&2"]);
        child.env_remove(STREAM_ENV);
        output.attach(&mut child).unwrap();
        assert!(child.status().unwrap().success());
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "to the file unset\n"
        );
    }

    #[test]
    fn an_identifier_cannot_break_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("stdout");
        let _listener = UnixListener::bind(&socket).unwrap();
        let err = JournalStream::connect(&socket, "corral-a\nb").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
