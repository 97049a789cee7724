//! `sysprep`: corral-sysprep's root-filesystem operations, the ones `corral guest sysprep`
//! runs, on the live guest's own root.

use std::path::Path;

use corral_sysprep::{MachineIdMode, Operation, Options};

use crate::message::Reply;

/// The most report lines sent; a longer report ends with a line counting the rest.
pub const MAX_REPORT_LINES: usize = 1000;

/// Runs the operations `list` names (the defaults when `None`) on `root`.
pub fn run(root: &Path, list: Option<&str>, dry_run: bool) -> Reply {
    let operations = match list.map(Operation::parse_list) {
        None => Operation::defaults(),
        Some(Ok(operations)) => operations,
        Some(Err(err)) => return super::error(err.to_string()),
    };
    let options = Options {
        operations,
        // A running system keeps using its id: a new one now, not an empty file that only the
        // next boot fills.
        machine_id: MachineIdMode::New,
        dry_run,
        ..Options::default()
    };
    match corral_sysprep::sysprep_rootfs(root, &options) {
        Ok(report) => {
            let text = report.to_string();
            let lines: Vec<&str> = text.lines().collect();
            let mut changes: Vec<String> = lines
                .iter()
                .take(MAX_REPORT_LINES)
                .map(|line| line.to_string())
                .collect();
            if lines.len() > MAX_REPORT_LINES {
                changes.push(format!(
                    "... and {} more changes",
                    lines.len() - MAX_REPORT_LINES
                ));
            }
            Reply::Sysprep { dry_run, changes }
        }
        Err(err) => super::error_reply(&err),
    }
}
