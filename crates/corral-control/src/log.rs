//! The supervisors' log files, kept bounded: `console.log` and `supervisor.log` rotate to
//! `<file>.1` at a size limit, and a message that repeats (a guest crashing in a loop) is written
//! a few times per minute at most.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default size at which a log is rotated to `<file>.1`.
pub const DEFAULT_LOG_LIMIT: u64 = 1 << 20;

/// Set by the instance manager on a supervisor it launches: the path of `supervisor.log`, which
/// the supervisor's standard output and error point at and which it rotates ([`StdioLog`]).
pub const SUPERVISOR_LOG_ENV: &str = "CORRAL_SUPERVISOR_LOG";

/// Log files are the owner's alone: guests print secrets, supervisors log paths.
const LOG_MODE: u32 = 0o600;

/// The flags of every open of a log for appending: never through a symlink, never waiting for
/// a FIFO's reader. A log's directory may belong to a jailed (and possibly compromised) VMM,
/// while root opens the log there before the VMM's next jail. A vCPU's seccomp filter allows
/// `openat` with exactly these flags (its console log rotation).
pub const APPEND_FLAGS: libc::c_int = libc::O_WRONLY
    | libc::O_CREAT
    | libc::O_APPEND
    | libc::O_CLOEXEC
    | libc::O_NOFOLLOW
    | libc::O_NONBLOCK;

/// Opens `path` for appending with [`APPEND_FLAGS`] (created with [`LOG_MODE`]).
fn open_append(path: &Path) -> std::io::Result<File> {
    let flags = OFlag::from_bits_retain(APPEND_FLAGS);
    let fd = nix::fcntl::open(path, flags, Mode::from_bits_truncate(LOG_MODE))?;
    Ok(File::from(fd))
}

/// Opens the log at `path` for appending (created if missing), refusing a symlink, a FIFO or
/// anything else that is not a regular file: how a root process opens a log in a directory a
/// jailed VMM owns.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    let file = open_append(path)?;
    require_regular(&file)?;
    Ok(file)
}

/// Opens `path` for reading if it is a regular file, without following a symlink or waiting
/// for a FIFO's writer (see [`open_log`]).
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    require_regular(&file)?;
    Ok(file)
}

fn require_regular(file: &File) -> std::io::Result<()> {
    if file.metadata()?.is_file() {
        Ok(())
    } else {
        Err(std::io::Error::other("not a regular file"))
    }
}

/// Reads the log at `path` if it is a regular file (see [`open_regular`]).
pub fn read_log(path: &Path) -> std::io::Result<Vec<u8>> {
    read_tail(path, u64::MAX)
}

/// Reads at most the last `max` bytes of the regular file at `path` (see [`open_regular`]).
pub fn read_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut file = open_regular(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `<path>.1`.
fn rotated_name(path: &Path) -> PathBuf {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    PathBuf::from(rotated)
}

/// Renames `path` to `<path>.1`; a file someone removed is fine (a new one starts).
fn rotate(path: &Path) -> std::io::Result<()> {
    match std::fs::rename(path, rotated_name(path)) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// A log file this process writes, rotated when a write would take it past `limit` bytes.
pub struct RotatingLog {
    file: File,
    path: PathBuf,
    written: u64,
    limit: u64,
}

impl RotatingLog {
    /// Appends to `path` (created if missing), rotating at `limit` bytes.
    pub fn open(path: &Path, limit: u64) -> std::io::Result<RotatingLog> {
        let file = open_log(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingLog {
            file,
            path: path.to_path_buf(),
            written,
            limit: limit.max(1),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`, first rotating if they would not fit under the limit.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.written + bytes.len() as u64 > self.limit {
            rotate(&self.path)?;
            self.file = open_append(&self.path)?;
            self.written = 0;
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// A supervisor's own log: the file its standard output and error point at (the manager opens
/// it), rotated at `limit` bytes. After a rotation both are pointed at the new file, so panics
/// and anything else written to them follow.
///
/// Who rotates depends on the process: the container monitor's log records go through
/// [`StdioLog::writer`] (`tracing`'s writer), which checks the size before each, from whatever
/// thread logs. The VMM cannot do that: its threads' seccomp filters forbid `stat`, `rename`,
/// `open` and `dup2`, and its jail sees only its runtime directory. There only the main thread
/// calls [`StdioLog::rotate_if_full`], every second, and the other threads write to stderr
/// plainly.
pub struct StdioLog {
    path: PathBuf,
    limit: u64,
    rotating: Mutex<()>,
}

impl StdioLog {
    pub fn new(path: impl Into<PathBuf>, limit: u64) -> StdioLog {
        StdioLog {
            path: path.into(),
            limit: limit.max(1),
            rotating: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rotates the log when stderr is that file and has reached the limit; true when it did.
    /// Does nothing when stderr is something else (a terminal, the journal, a file the caller
    /// chose).
    pub fn rotate_if_full(&self) -> std::io::Result<bool> {
        let current = nix::sys::stat::fstat(std::io::stderr().as_fd())?;
        if current.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(false);
        }
        let at_path = std::fs::symlink_metadata(&self.path)?;
        let same_file = (current.st_dev, current.st_ino) == (at_path.dev(), at_path.ino());
        if !same_file || (current.st_size as u64) < self.limit {
            return Ok(false);
        }
        rotate(&self.path)?;
        let file = open_append(&self.path)?;
        nix::unistd::dup2_stdout(&file)?;
        nix::unistd::dup2_stderr(&file)?;
        Ok(true)
    }

    /// A handle that writes one log record to stderr, rotating the file first if it is full.
    pub fn writer(&self) -> StdioLogWriter<'_> {
        StdioLogWriter { log: self }
    }
}

/// See [`StdioLog::writer`].
pub struct StdioLogWriter<'a> {
    log: &'a StdioLog,
}

impl Write for StdioLogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        {
            let _one_at_a_time = self
                .log
                .rotating
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // A log that cannot rotate keeps growing; losing the message would be worse.
            let _ = self.log.rotate_if_full();
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Lets a repeated message through `burst` times per `period`, then counts what it held back.
pub struct RateLimit {
    period: Duration,
    burst: u32,
    started: Option<Instant>,
    passed: u32,
    held: u64,
}

/// What [`RateLimit::check`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Write the message; `held` similar ones were not written since the last one was.
    Yes {
        held: u64,
    },
    No,
}

impl RateLimit {
    pub const fn new(burst: u32, period: Duration) -> RateLimit {
        RateLimit {
            period,
            burst,
            started: None,
            passed: 0,
            held: 0,
        }
    }

    /// Whether the message may be written `now`.
    pub fn check(&mut self, now: Instant) -> Allowed {
        let fresh = self
            .started
            .is_none_or(|started| now.duration_since(started) >= self.period);
        if fresh {
            self.started = Some(now);
            self.passed = 0;
        }
        if self.passed >= self.burst {
            self.held += 1;
            return Allowed::No;
        }
        self.passed += 1;
        let held = std::mem::take(&mut self.held);
        Allowed::Yes { held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rotates_at_the_limit_and_starts_over_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut log = RotatingLog::open(&path, 10).unwrap();
        log.write(b"0123456789").unwrap();
        log.write(b"abc").unwrap();
        assert_eq!(std::fs::read(rotated_name(&path)).unwrap(), b"0123456789");
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, LOG_MODE);
        std::fs::remove_file(&path).unwrap();
        log.write(b"0123456789").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
    }

    #[test]
    fn a_repeated_message_passes_a_burst_per_period_and_reports_what_it_held() {
        let mut limit = RateLimit::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(limit.check(start), Allowed::Yes { held: 0 });
        assert_eq!(limit.check(start), Allowed::Yes { held: 0 });
        for _ in 0..5 {
            assert_eq!(limit.check(start), Allowed::No);
        }
        let later = start + Duration::from_secs(61);
        assert_eq!(limit.check(later), Allowed::Yes { held: 5 });
        assert_eq!(limit.check(later), Allowed::Yes { held: 0 });
    }
}
