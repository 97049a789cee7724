//! What a run changed (or, for a dry run, would change), one line per guest path.

use std::fmt;
use std::path::PathBuf;

use crate::Operation;

/// Everything one run did, in the order it was done.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// True when nothing was changed: the changes are what a real run would do.
    pub dry_run: bool,
    pub changes: Vec<Change>,
}

/// One change to one guest path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub operation: Operation,
    /// The path inside the guest, with the links before its last component resolved.
    #[serde(serialize_with = "lossy")]
    pub path: PathBuf,
    pub action: Action,
}

/// What was done to a path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// A file, link or empty directory removed.
    Removed,
    /// A directory removed with everything in it.
    RemovedTree,
    /// A file emptied in place (owner, mode, links and attributes kept).
    Truncated,
    /// A file given new content in place.
    Written,
    /// A new file created.
    Created,
    /// The filesystem's UUID changed.
    NewUuid { old: String, new: String },
    /// The operation left the path alone, for the reason given.
    Skipped { reason: String },
}

fn lossy<S: serde::Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&path.display())
}

impl Report {
    /// The changes of one operation.
    pub fn of(&self, operation: Operation) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(move |change| change.operation == operation)
    }
}

impl fmt::Display for Report {
    /// One line per change: `machine-id: truncated /etc/machine-id`, or `would truncate` for a
    /// dry run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            let path = change.path.display();
            let op = change.operation;
            let verb =
                |done: &str, planned: &str| if self.dry_run { planned } else { done }.to_string();
            let what = match &change.action {
                Action::Removed => verb("removed", "would remove"),
                Action::RemovedTree => verb(
                    "removed with its contents",
                    "would remove with its contents",
                ),
                Action::Truncated => verb("truncated", "would truncate"),
                Action::Written => verb("wrote", "would write"),
                Action::Created => verb("created", "would create"),
                Action::NewUuid { old, new } => {
                    let verb = verb("changed", "would change");
                    writeln!(
                        f,
                        "{op}: {verb} the UUID of the filesystem from {old} to {new}"
                    )?;
                    continue;
                }
                Action::Skipped { reason } => {
                    writeln!(f, "{op}: skipped {path}: {reason}")?;
                    continue;
                }
            };
            writeln!(f, "{op}: {what} {path}")?;
        }
        Ok(())
    }
}
