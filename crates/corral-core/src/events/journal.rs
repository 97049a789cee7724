//! The event journal: `events.jsonl` in the corral root, one [`LifecycleEvent`] per line, appended
//! by every corral process under an exclusive `flock` (so lines never interleave and rotation is
//! never raced) and rotated to `events.jsonl.1` at [`ROTATE_AT`] bytes. A [`Follower`] reads what
//! is appended after it opened, across rotations.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use corral_error::PathIoError;
use nix::fcntl::{Flock, FlockArg};

use super::LifecycleEvent;

/// The journal's file name in the corral root.
pub const JOURNAL_FILE: &str = "events.jsonl";
/// The size at which the journal moves to `events.jsonl.1` (replacing the one before).
pub const ROTATE_AT: u64 = 4 << 20;
/// The longest line a follower takes; longer ones are not events and are skipped.
const MAX_LINE: usize = 64 << 10;

/// The journal of the corral root at `root`.
#[derive(Clone, Debug)]
pub struct EventJournal {
    path: PathBuf,
}

impl EventJournal {
    pub fn in_root(root: &Path) -> EventJournal {
        EventJournal {
            path: root.join(JOURNAL_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event`, rotating first when the journal is full.
    pub fn append(&self, event: &LifecycleEvent) -> Result<(), PathIoError> {
        let failed = |action| {
            let path = self.path.clone();
            move |source| PathIoError::new(action, path, source)
        };
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(failed("open"))?;
        let mut file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| failed("lock")(errno.into()))?;
        // Another process may have rotated it between our open and our lock: append to the file
        // at the path, which is the one it locked last.
        let current = std::fs::metadata(&self.path).map_err(failed("inspect"))?;
        let ours = file.metadata().map_err(failed("inspect"))?;
        if current.ino() != ours.ino() || current.dev() != ours.dev() {
            drop(file);
            return self.append(event);
        }
        if ours.len() >= ROTATE_AT {
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))
                .map_err(failed("rotate"))?;
            drop(file);
            return self.append(event);
        }
        let mut line = serde_json::to_vec(event).map_err(|e| failed("encode")(e.into()))?;
        line.push(b'\n');
        file.write_all(&line).map_err(failed("append to"))
    }

    /// A follower of what is appended from now on.
    pub fn follow(&self) -> Follower {
        let mut follower = Follower {
            path: self.path.clone(),
            file: None,
            pending: Vec::new(),
        };
        follower.open_at_end();
        follower
    }
}

/// Reads the events appended to a journal after it started following.
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// A line read in part (its writer holds the lock meanwhile; the rest comes).
    pending: Vec<u8>,
}

impl Follower {
    fn open_at_end(&mut self) {
        self.file = File::open(&self.path).ok().and_then(|mut file| {
            file.seek(SeekFrom::End(0)).ok()?;
            Some(file)
        });
    }

    /// The events appended since the last call, in order. A journal rotated meanwhile is read
    /// to its end first, then the new one from its start.
    pub fn poll(&mut self) -> Vec<LifecycleEvent> {
        let mut events = Vec::new();
        loop {
            self.read_available(&mut events);
            let current = std::fs::metadata(&self.path).ok();
            let ours = self.file.as_ref().and_then(|file| file.metadata().ok());
            match (current, ours) {
                (Some(current), Some(ours))
                    if current.ino() == ours.ino() && current.dev() == ours.dev() =>
                {
                    return events
                }
                // Made since we looked, or rotated: the new file is read from its start.
                (Some(_), _) => {
                    self.file = File::open(&self.path).ok();
                    self.pending.clear();
                    if self.file.is_none() {
                        return events;
                    }
                }
                (None, _) => return events,
            }
        }
    }

    fn read_available(&mut self, events: &mut Vec<LifecycleEvent>) {
        let Some(file) = &mut self.file else {
            return;
        };
        let mut chunk = [0u8; 8192];
        loop {
            match file.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if let Ok(event) = serde_json::from_slice(&line[..end]) {
                events.push(event);
            }
        }
        if self.pending.len() > MAX_LINE {
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Action;

    #[test]
    fn a_follower_sees_appends_in_order_across_a_rotation() {
        let root = tempfile::tempdir().unwrap();
        let journal = EventJournal::in_root(root.path());
        journal
            .append(&LifecycleEvent::now("before", Action::Created))
            .unwrap();
        let mut follower = journal.follow();
        assert!(
            follower.poll().is_empty(),
            "what came before is not replayed"
        );
        for name in ["a", "b"] {
            journal
                .append(&LifecycleEvent::now(name, Action::Started))
                .unwrap();
        }
        let names = |events: Vec<LifecycleEvent>| -> Vec<String> {
            events.into_iter().map(|event| event.instance).collect()
        };
        assert_eq!(names(follower.poll()), ["a", "b"]);
        // Fill past the rotation size: the follower reads the old file's tail, then the new.
        let filler = LifecycleEvent {
            detail: Some("x".repeat(4000)),
            ..LifecycleEvent::now("filler", Action::Stopped)
        };
        let mut written = 0;
        while std::fs::metadata(journal.path()).unwrap().len() < ROTATE_AT {
            journal.append(&filler).unwrap();
            written += 1;
        }
        journal
            .append(&LifecycleEvent::now("after", Action::Deleted))
            .unwrap();
        assert!(root.path().join("events.jsonl.1").exists());
        let seen = names(follower.poll());
        assert_eq!(seen.len(), written + 1);
        assert_eq!(seen.last().map(String::as_str), Some("after"));
    }

    #[test]
    fn a_follower_of_a_journal_not_yet_made_sees_its_first_event() {
        let root = tempfile::tempdir().unwrap();
        let journal = EventJournal::in_root(root.path());
        let mut follower = journal.follow();
        assert!(follower.poll().is_empty());
        journal
            .append(&LifecycleEvent::now("first", Action::Created))
            .unwrap();
        let events = follower.poll();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, Action::Created);
    }
}
