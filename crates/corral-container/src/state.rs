//! What the engine records about a container under its state root (`/run/corral/<id>/`):
//! `state.json` (replaced atomically and synced, so a crash or a power cut leaves the old record
//! or the new one) and `exec.fifo` while the container is created but not started.
//!
//! The directory is taken by `create` with `mkdir` and held with `flock` for the whole create;
//! the record is written before anything else exists (naming the creator and the cgroup to
//! come) and again when the container is complete (with its init; until then the init dies
//! with its creator or sits in the recorded cgroup). A
//! creator killed at any point thus leaves either nothing, or a record whose dead creator marks
//! it as interrupted: `delete` cleans that up and the next `create` of the id reclaims it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::runtime::Hooks;
use serde::{Deserialize, Serialize};

use crate::cgroups::Layout;
use crate::error::{Error, Result};

/// The default state root, like runc's `/run/runc`.
pub const DEFAULT_STATE_ROOT: &str = "/run/corral";

/// The directory under a state root where the OCI CLI keeps compiled seccomp programs
/// ([`crate::CreateOptions::seccomp_cache`]); no container id starts with a dot.
pub const SECCOMP_CACHE_DIR: &str = ".seccomp-cache";

/// The spec's status values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The record in `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Host pid of the container's init.
    pub pid: i32,
    /// The init's start time (clock ticks since boot), so a reused pid is not mistaken for it.
    pub pid_start_time: u64,
    /// RFC 3339 creation time.
    pub created: String,
    pub annotations: HashMap<String, String>,
    /// The container's cgroup path and the layout it was created on.
    pub cgroup_path: PathBuf,
    pub cgroup_layout: Layout,
    /// True once `start` has released the user process.
    pub started: bool,
    /// The exit status, when the process that reaped the init recorded it.
    pub exit_status: Option<i32>,
    /// Hooks kept for `start` (poststart) and `delete` (poststop): the bundle may be gone by then.
    pub hooks: Option<Hooks>,
    /// Owner of the container (the creating user's name, empty for root as in runc).
    pub owner: String,
    /// The process creating the container, until the create is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<Creator>,
    /// Where compiled seccomp programs are kept (the create's option), for `exec` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_cache: Option<PathBuf>,
}

/// A process identified across pid reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creator {
    pub pid: i32,
    pub start_time: u64,
}

impl Creator {
    /// This process.
    pub fn current() -> Result<Creator> {
        let pid = std::process::id() as i32;
        let start_time = process_start_time(pid).ok_or_else(|| {
            Error::Setup("cannot read this process's start time from /proc".into())
        })?;
        Ok(Creator { pid, start_time })
    }

    pub fn alive(&self) -> bool {
        process_alive(self.pid, self.start_time)
    }
}

/// The spec's state document, as `state` prints it and hooks read it on stdin.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

/// The record's file name in a container's state directory.
const STATE_FILE: &str = "state.json";

/// The spec version corral implements.
pub const OCI_VERSION: &str = "1.0.2";

/// The directory holding one container's state.
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Checks an id names a directory safely (no separators, no hidden or relative names).
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_owned()))
    }
}

/// A container's state directory, held by the process creating the container: an exclusive
/// `flock` that a killed creator releases with its last descriptor.
#[derive(Debug)]
pub struct StateDirLock {
    _lock: nix::fcntl::Flock<File>,
}

/// What [`claim`] found in a state directory that already existed.
#[derive(Debug)]
pub enum Leftover {
    /// The directory is new.
    None,
    /// An interrupted create's record: what it made (cgroup, init) must be cleaned up.
    Record(Box<Record>),
    /// A directory without a readable record (its creator died before writing one).
    Unrecorded,
}

/// Takes the state directory of container `id` for a create: a new directory, or the remains of
/// an interrupted create (held, so they can be cleaned up). A complete container's directory, or
/// one whose creator is still at work, is refused as existing.
pub fn claim(root: &Path, id: &str) -> Result<(StateDirLock, Leftover)> {
    let dir = container_dir(root, id);
    let fresh = match std::fs::create_dir(&dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(Error::io("create state directory", &dir, e)),
    };
    let file = File::open(&dir).map_err(|e| Error::io("open state directory", &dir, e))?;
    let lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => StateDirLock { _lock: lock },
        Err((_, nix::Error::EWOULDBLOCK)) => return Err(Error::AlreadyExists(id.to_owned())),
        Err((_, e)) => return Err(Error::sys(format!("lock {}", dir.display()), e)),
    };
    if fresh {
        return Ok((lock, Leftover::None));
    }
    // We hold the lock, so no creator is at work: a record with a creator is an interrupted one.
    match Record::load(root, id) {
        Ok(record) if record.creator.is_none() => Err(Error::AlreadyExists(id.to_owned())),
        Ok(record) => Ok((lock, Leftover::Record(Box::new(record)))),
        Err(Error::NotFound(_) | Error::CorruptState { .. }) => Ok((lock, Leftover::Unrecorded)),
        Err(e) => Err(e),
    }
}

/// Removes everything in `dir` but the directory itself (whose lock the caller holds).
pub fn empty_dir(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io("remove", &path, e))?;
    }
    Ok(())
}

impl Record {
    /// Reads the record of container `id` under `root`.
    pub fn load(root: &Path, id: &str) -> Result<Record> {
        check_id(id)?;
        let path = container_dir(root, id).join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_owned()))
            }
            Err(e) => return Err(Error::io("read", path, e)),
        };
        serde_json::from_str(&text).map_err(|source| Error::CorruptState {
            id: id.to_owned(),
            source,
        })
    }

    /// Writes the record atomically: a temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, root: &Path) -> Result<()> {
        let dir = container_dir(root, &self.id);
        let json = serde_json::to_vec_pretty(self).map_err(|source| Error::EncodeState {
            id: self.id.clone(),
            source,
        })?;
        corral_host::atomic::write_file(&dir.join(STATE_FILE), &json, 0o600)?;
        Ok(())
    }

    /// True when the create that wrote this record died before completing it.
    pub fn interrupted(&self) -> bool {
        self.creator.is_some_and(|c| !c.alive())
    }

    /// The status now: the recorded lifecycle checked against the live process and cgroup. An
    /// interrupted create reads as stopped, so it can be deleted.
    pub fn status(&self) -> Status {
        if let Some(creator) = self.creator {
            return if creator.alive() {
                Status::Creating
            } else {
                Status::Stopped
            };
        }
        if self.pid <= 0 || !process_alive(self.pid, self.pid_start_time) {
            return Status::Stopped;
        }
        if !self.started {
            return Status::Created;
        }
        let frozen = self
            .cgroup_layout
            .open(&self.cgroup_path)
            .is_frozen()
            .unwrap_or(false);
        if frozen {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// The spec's state document for this container.
    pub fn oci_state(&self, status: Status) -> OciState {
        OciState {
            oci_version: OCI_VERSION.to_owned(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// The start time of a process (field 22 of `/proc/PID/stat`), or `None` if it is gone.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // `after` starts at field 3 (state); field 22 is index 19. A zombie has exited.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// True when `pid` is alive and is the process that started at `start_time`.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}

/// Now as an RFC 3339 UTC timestamp with nanoseconds, as runc writes `created`.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_nanos())
}

/// Formats seconds since the epoch (UTC) as RFC 3339.
pub fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_709_251_199, 5), "2024-02-29T23:59:59.000000005Z");
    }

    #[test]
    fn ids_that_could_escape_the_root_are_rejected() {
        for bad in ["", "..", ".hidden", "a/b", "a b", "x\0"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        for good in ["web", "c-1_2.3", "a1b2c3d4e5"] {
            check_id(good).unwrap();
        }
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id() as i32;
        let start = process_start_time(pid).unwrap();
        assert!(process_alive(pid, start));
        assert!(!process_alive(pid, start + 1));
    }

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            pid: 0,
            pid_start_time: 0,
            created: rfc3339_now(),
            annotations: HashMap::from([("k".into(), "v".into())]),
            cgroup_path: format!("/corral/{id}").into(),
            cgroup_layout: Layout::V2 {
                hierarchy: crate::cgroups::Hierarchy {
                    mount_point: "/sys/fs/cgroup".into(),
                    root: "/".into(),
                    controllers: vec![],
                },
            },
            started: false,
            exit_status: None,
            hooks: None,
            owner: String::new(),
            seccomp_cache: None,
            creator: None,
        }
    }

    #[test]
    fn records_round_trip_and_unknown_ids_say_does_not_exist() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("c1")).unwrap();
        let record = record("c1");
        record.save(root.path()).unwrap();
        let loaded = Record::load(root.path(), "c1").unwrap();
        assert_eq!(loaded.annotations, record.annotations);
        assert_eq!(loaded.status(), Status::Stopped);
        let state = serde_json::to_value(loaded.oci_state(Status::Stopped)).unwrap();
        assert_eq!(state["ociVersion"], "1.0.2");
        assert_eq!(state["status"], "stopped");
        assert_eq!(state["annotations"]["k"], "v");
        let err = Record::load(root.path(), "nope").unwrap_err();
        assert_eq!(err.to_string(), "container nope does not exist");
    }

    #[test]
    fn a_record_with_a_creator_is_creating_while_it_lives_then_interrupted() {
        let mut record = record("c1");
        let this = Creator::current().unwrap();
        record.creator = Some(this);
        assert_eq!(record.status(), Status::Creating);
        assert!(!record.interrupted());
        record.creator = Some(Creator {
            start_time: this.start_time + 1,
            ..this
        });
        assert_eq!(record.status(), Status::Stopped);
        assert!(record.interrupted());
    }

    #[test]
    fn a_claim_holds_the_directory_and_tells_leftovers_apart() {
        let root = tempfile::tempdir().unwrap();
        let (lock, leftover) = claim(root.path(), "c1").unwrap();
        assert!(matches!(leftover, Leftover::None));
        let busy = claim(root.path(), "c1").unwrap_err();
        assert!(matches!(busy, Error::AlreadyExists(_)), "{busy}");
        drop(lock);

        // Its creator died before writing a record.
        let (lock, leftover) = claim(root.path(), "c1").unwrap();
        assert!(matches!(leftover, Leftover::Unrecorded));
        drop(lock);

        // ... or after writing one but before completing.
        let mut interrupted = record("c1");
        let this = Creator::current().unwrap();
        interrupted.creator = Some(Creator {
            start_time: this.start_time + 1,
            ..this
        });
        interrupted.save(root.path()).unwrap();
        let (lock, leftover) = claim(root.path(), "c1").unwrap();
        assert!(matches!(leftover, Leftover::Record(r) if r.id == "c1"));
        drop(lock);

        record("c1").save(root.path()).unwrap();
        let complete = claim(root.path(), "c1").unwrap_err();
        assert!(matches!(complete, Error::AlreadyExists(_)), "{complete}");
    }

    #[test]
    fn records_are_private_and_leave_no_temp_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("c1")).unwrap();
        record("c1").save(root.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(root.path().join("c1/state.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(root.path().join("c1")).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_corrupt_record_says_how_to_remove_it() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("c1")).unwrap();
        std::fs::write(root.path().join("c1/state.json"), "{").unwrap();
        let err = Record::load(root.path(), "c1").unwrap_err();
        assert!(err.to_string().contains("delete --force"), "{err}");
    }
}
