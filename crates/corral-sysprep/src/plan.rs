//! The edits the operations decide on, before anything is changed: a dry run reports them, a real
//! run hands them to the target (`rootfs.rs` applies them with system calls, `disk/` turns them
//! into a debugfs script). Planning everything first is what keeps a disk unchanged when any
//! part fails.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::report::{Action, Change, Report};
use crate::Operation;

/// One change to one resolved guest path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Edit {
    /// Empty the regular file in place.
    Truncate,
    /// Remove the file, link or special file (never what a link points to).
    Remove,
    /// Remove the directory and everything below it, following no link.
    RemoveTree,
    /// Give the existing regular file this content, keeping its owner and mode.
    Write { content: Vec<u8> },
    /// Create the file, which does not exist, in an existing directory.
    Create {
        content: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Give the filesystem this UUID (disks only; the path is `/`).
    SetFsUuid { old: [u8; 16], new: [u8; 16] },
}

/// A planned edit, or a path an operation left alone and why.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub operation: Operation,
    pub path: PathBuf,
    /// `None` for a skip.
    pub edit: Option<Edit>,
    pub action: Action,
}

/// The steps of one run, in order.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    /// Paths some step already edits: a second operation reaching the same file (through a
    /// link, or two globs) leaves it to the first.
    edited: HashSet<PathBuf>,
    /// Directories removed whole: nothing below them is edited.
    removed_trees: HashSet<PathBuf>,
}

impl Plan {
    /// Adds an edit of `path` unless an earlier step already covers it.
    pub fn edit(&mut self, operation: Operation, path: PathBuf, edit: Edit) {
        if self.covers(&path) {
            return;
        }
        let action = match &edit {
            Edit::Truncate => Action::Truncated,
            Edit::Remove => Action::Removed,
            Edit::RemoveTree => Action::RemovedTree,
            Edit::Write { .. } => Action::Written,
            Edit::Create { .. } => Action::Created,
            Edit::SetFsUuid { old, new } => Action::NewUuid {
                old: uuid_text(old),
                new: uuid_text(new),
            },
        };
        match edit {
            Edit::RemoveTree => self.removed_trees.insert(path.clone()),
            Edit::SetFsUuid { .. } => false,
            _ => self.edited.insert(path.clone()),
        };
        self.steps.push(Step {
            operation,
            path,
            edit: Some(edit),
            action,
        });
    }

    /// Records that `operation` left `path` alone.
    pub fn skip(&mut self, operation: Operation, path: &Path, reason: impl Into<String>) {
        self.steps.push(Step {
            operation,
            path: path.to_path_buf(),
            edit: None,
            action: Action::Skipped {
                reason: reason.into(),
            },
        });
    }

    /// True when `path` is already edited or removed with a directory above it.
    pub fn covers(&self, path: &Path) -> bool {
        self.edited.contains(path)
            || path
                .ancestors()
                .any(|above| self.removed_trees.contains(above))
    }

    /// The planned edits, with their paths.
    pub fn edits(&self) -> impl Iterator<Item = (&Step, &Edit)> {
        self.steps
            .iter()
            .filter_map(|step| step.edit.as_ref().map(|edit| (step, edit)))
    }

    /// The report of this plan: what was done, or with `dry_run` what would be.
    pub fn report(&self, dry_run: bool) -> Report {
        Report {
            dry_run,
            changes: self
                .steps
                .iter()
                .map(|step| Change {
                    operation: step.operation,
                    path: step.path.clone(),
                    action: step.action.clone(),
                })
                .collect(),
        }
    }
}

/// A UUID in its usual text form (`8-4-4-4-12` lower-case hex digits), as fstab names it.
pub(crate) fn uuid_text(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_under_a_removed_tree_is_not_edited_again() {
        let mut plan = Plan::default();
        plan.edit(Operation::TmpFiles, "/tmp/a".into(), Edit::RemoveTree);
        plan.edit(Operation::Logfiles, "/tmp/a/b.log".into(), Edit::Truncate);
        plan.edit(Operation::Logfiles, "/tmp/ab".into(), Edit::Truncate);
        plan.edit(Operation::Logfiles, "/tmp/ab".into(), Edit::Remove);
        let paths: Vec<_> = plan.edits().map(|(step, _)| step.path.clone()).collect();
        assert_eq!(paths, [PathBuf::from("/tmp/a"), PathBuf::from("/tmp/ab")]);
    }

    #[test]
    fn a_uuid_change_or_a_file_edit_covers_nothing_below() {
        let mut plan = Plan::default();
        let uuid = Edit::SetFsUuid {
            old: [0; 16],
            new: [1; 16],
        };
        plan.edit(Operation::FsUuids, "/".into(), uuid);
        plan.edit(Operation::FsUuids, "/etc/fstab".into(), Edit::Truncate);
        plan.edit(Operation::Logfiles, "/var/log/x".into(), Edit::Truncate);
        plan.edit(Operation::Logfiles, "/var/log/x/y".into(), Edit::Truncate);
        assert_eq!(plan.edits().count(), 4);
    }

    #[test]
    fn uuids_print_like_blkid() {
        let uuid = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(uuid_text(&uuid), "12345678-9abc-def0-0123-456789abcdef");
    }
}
