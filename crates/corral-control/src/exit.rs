//! How a supervisor says why it exited: `exit.json` in the instance directory, written atomically
//! just before the supervisor process ends. A supervisor that dies without writing it (killed,
//! crashed) is reported by the instance layer as `supervisor-lost`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Reasons a supervisor writes. Anything else is kept as text.
pub mod reason {
    /// The guest powered itself off (VM ACPI/PM power-off, system container `poweroff`).
    pub const POWEROFF: &str = "poweroff";
    /// The guest rebooted and the policy said not to restart it.
    pub const REBOOT: &str = "reboot";
    /// The guest crashed (triple fault, KVM internal error, container killed by a signal it did
    /// not ask for).
    pub const CRASHED: &str = "crashed";
    /// Stopped by `shutdown` or `kill` from the host.
    pub const STOPPED: &str = "stopped";
    /// An application container's process ended on its own; `code` says how.
    pub const EXITED: &str = "exited";
    /// The supervisor could not start the guest at all.
    pub const FAILED: &str = "failed";
    /// The policy said to restart the guest once more, but it had been restarted as often as its
    /// restart limit allows; `detail` says how the last run ended.
    pub const RESTART_LIMIT: &str = "restart-limit";
}

/// The most of `exit.json` that is read.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The content of `exit.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub reason: String,
    /// Exit code of an application container's process, or of a guest's debug-exit write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// One line for humans (the crash summary, the signal name, the start error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ExitRecord {
    /// True for reasons that mean the guest failed rather than stopped.
    pub fn is_crash(&self) -> bool {
        [reason::CRASHED, reason::FAILED, reason::RESTART_LIMIT].contains(&self.reason.as_str())
    }

    /// Writes the record to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<(), corral_host::atomic::AtomicWriteError> {
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        corral_host::atomic::write_file(path, &json, corral_host::atomic::PRIVATE_FILE_MODE)
    }

    /// Reads the record at `path`; `None` when there is none, it is unreadable, or it is not a
    /// regular file (the directory may belong to a jailed VMM: a symlink or a FIFO planted
    /// there is neither followed nor waited on).
    pub fn read(path: &Path) -> Option<ExitRecord> {
        use std::io::Read;
        let file = crate::log::open_regular(path).ok()?;
        let mut bytes = Vec::new();
        file.take(MAX_RECORD_BYTES).read_to_end(&mut bytes).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_crash_classification() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        assert_eq!(ExitRecord::read(&path), None);
        let record = ExitRecord {
            reason: reason::CRASHED.into(),
            code: None,
            detail: Some("triple fault".into()),
        };
        record.write(&path).unwrap();
        assert_eq!(ExitRecord::read(&path), Some(record.clone()));
        assert!(record.is_crash());
        let poweroff = ExitRecord {
            reason: reason::POWEROFF.into(),
            code: Some(0),
            detail: None,
        };
        assert!(!poweroff.is_crash());
        std::fs::write(&path, "{garbage").unwrap();
        assert_eq!(ExitRecord::read(&path), None);
    }

    #[test]
    fn a_record_that_is_a_symlink_or_a_fifo_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        ExitRecord {
            reason: reason::POWEROFF.into(),
            code: Some(0),
            detail: None,
        }
        .write(&real)
        .unwrap();
        let link = dir.path().join("exit.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(ExitRecord::read(&link), None);
        let fifo = dir.path().join("fifo.json");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        // Returns at once instead of waiting for a writer.
        assert_eq!(ExitRecord::read(&fifo), None);
    }
}
