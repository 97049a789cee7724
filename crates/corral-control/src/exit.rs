//! How a supervisor says why it exited: `exit.json` in the instance directory, written atomically
//! just before the supervisor process ends. A supervisor that dies without writing it (killed,
//! crashed) is reported by the instance layer as `supervisor-lost`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why a run ended, as `exit.json` and `state.json` spell it (kebab-case strings). A reason this
/// version does not know (written by a newer supervisor) is kept as [`ExitReason::Other`] rather
/// than making the whole record unreadable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ExitReason {
    /// The guest powered itself off (VM ACPI/PM power-off, system container `poweroff`).
    Poweroff,
    /// The guest rebooted and the policy said not to restart it.
    Reboot,
    /// The guest crashed (triple fault, KVM internal error, container killed by a signal it did
    /// not ask for).
    Crashed,
    /// Stopped by `shutdown` or `kill` from the host.
    Stopped,
    /// The VM was migrated live and runs on another VMM now.
    Migrated,
    /// An application container's process ended on its own; `code` says how.
    Exited,
    /// The supervisor could not start the guest at all.
    Failed,
    /// The policy said to restart the guest once more, but it had been restarted as often as its
    /// restart limit allows; `detail` says how the last run ended.
    RestartLimit,
    /// The supervisor died without recording an exit; never written by a supervisor, recorded
    /// by the instance layer that found it gone.
    SupervisorLost,
    /// A reason this version does not know, kept as written.
    Other(String),
}

impl ExitReason {
    /// The reason as written to disk and printed.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Crashed => "crashed",
            Self::Stopped => "stopped",
            Self::Migrated => "migrated",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::RestartLimit => "restart-limit",
            Self::SupervisorLost => "supervisor-lost",
            Self::Other(text) => text,
        }
    }

    /// True for reasons a supervisor writes that mean the guest failed rather than stopped.
    pub fn is_crash(&self) -> bool {
        matches!(self, Self::Crashed | Self::Failed | Self::RestartLimit)
    }
}

impl From<String> for ExitReason {
    fn from(text: String) -> Self {
        match text.as_str() {
            "poweroff" => Self::Poweroff,
            "reboot" => Self::Reboot,
            "crashed" => Self::Crashed,
            "stopped" => Self::Stopped,
            "migrated" => Self::Migrated,
            "exited" => Self::Exited,
            "failed" => Self::Failed,
            "restart-limit" => Self::RestartLimit,
            "supervisor-lost" => Self::SupervisorLost,
            _ => Self::Other(text),
        }
    }
}

impl From<ExitReason> for String {
    fn from(reason: ExitReason) -> Self {
        match reason {
            ExitReason::Other(text) => text,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most of `exit.json` that is read.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The content of `exit.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub reason: ExitReason,
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
        self.reason.is_crash()
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
            reason: ExitReason::Crashed,
            code: None,
            detail: Some("triple fault".into()),
        };
        record.write(&path).unwrap();
        assert_eq!(ExitRecord::read(&path), Some(record.clone()));
        assert!(record.is_crash());
        let poweroff = ExitRecord {
            reason: ExitReason::Poweroff,
            code: Some(0),
            detail: None,
        };
        assert!(!poweroff.is_crash());
        std::fs::write(&path, "{garbage").unwrap();
        assert_eq!(ExitRecord::read(&path), None);
    }

    /// Every known reason with the text that is on disk and printed for it.
    const KNOWN: [(ExitReason, &str); 8] = [
        (ExitReason::Poweroff, "poweroff"),
        (ExitReason::Reboot, "reboot"),
        (ExitReason::Crashed, "crashed"),
        (ExitReason::Stopped, "stopped"),
        (ExitReason::Exited, "exited"),
        (ExitReason::Failed, "failed"),
        (ExitReason::RestartLimit, "restart-limit"),
        (ExitReason::SupervisorLost, "supervisor-lost"),
    ];

    #[test]
    fn every_reason_is_written_printed_and_read_as_its_text() {
        for (reason, text) in KNOWN {
            assert_eq!(reason.to_string(), text);
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<ExitReason>(&json).unwrap(), reason);
        }
    }

    #[test]
    fn only_failures_are_crashes() {
        let crashes: Vec<&str> = KNOWN
            .iter()
            .filter(|(reason, _)| reason.is_crash())
            .map(|(_, text)| *text)
            .collect();
        assert_eq!(crashes, ["crashed", "failed", "restart-limit"]);
        assert!(!ExitReason::Other("melted".into()).is_crash());
    }

    #[test]
    fn an_unknown_reason_is_kept_as_written() {
        let record: ExitRecord =
            serde_json::from_str(r#"{"reason":"melted","detail":"too hot"}"#).unwrap();
        assert_eq!(record.reason, ExitReason::Other("melted".into()));
        assert_eq!(record.reason.to_string(), "melted");
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(json, r#"{"reason":"melted","detail":"too hot"}"#);
    }

    #[test]
    fn a_file_written_before_the_reason_was_typed_still_reads() {
        // The exact bytes the string-typed record wrote.
        let old = "{\n  \"reason\": \"restart-limit\",\n  \"code\": 3,\n  \"detail\": \"exited with 3\"\n}\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        std::fs::write(&path, old).unwrap();
        let record = ExitRecord::read(&path).unwrap();
        assert_eq!(
            record,
            ExitRecord {
                reason: ExitReason::RestartLimit,
                code: Some(3),
                detail: Some("exited with 3".into()),
            }
        );
        record.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old);
    }

    #[test]
    fn a_record_that_is_a_symlink_or_a_fifo_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        ExitRecord {
            reason: ExitReason::Poweroff,
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
