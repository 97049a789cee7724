//! Per-instance locks: every multi-step change to an instance holds its lock, so two commands
//! never interleave. A second command waits for the first, up to a timeout, then says who holds it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use corral_error::PathIoError;

/// How long a command waits for another one holding the lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("instance {name} is busy: {holder} holds its lock; wait for it to finish, then retry")]
    Busy { name: String, holder: String },
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// An exclusive lock on one instance, released on drop (or when the process dies).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock at `path` for instance `name`, waiting up to `timeout`.
    pub fn acquire(path: &Path, name: &str, timeout: Duration) -> Result<Self, LockError> {
        let io = |source| LockError::Io(PathIoError::new("lock", path, source));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(corral_host::atomic::PRIVATE_FILE_MODE)
            .open(path)
            .map_err(io)?;
        let deadline = Instant::now() + timeout;
        loop {
            // flock(2), released when the file is closed.
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
            }
            if Instant::now() >= deadline {
                let mut holder = String::new();
                // The holder's description is best effort; an unreadable one is reported as such.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Busy {
                    name: name.to_string(),
                    holder: if holder.is_empty() {
                        "another corral command".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Say who holds the lock, for the error a waiting command prints.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        let command: Vec<String> = std::env::args().take(3).collect();
        write!(file, "`{}` (pid {})", command.join(" "), std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_fails_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = InstanceLock::acquire(&path, "web", Duration::ZERO).unwrap();
        let err = InstanceLock::acquire(&path, "web", Duration::from_millis(120)).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("instance web is busy"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        InstanceLock::acquire(&path, "web", Duration::ZERO).unwrap();
    }

    #[test]
    fn waiter_gets_the_lock_when_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = InstanceLock::acquire(&path, "web", Duration::ZERO).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        InstanceLock::acquire(&path, "web", Duration::from_secs(5)).unwrap();
        releaser.join().unwrap();
    }
}
