//! What the template's life left behind: logs, histories, temporary files, cloud-init's record
//! of the instance it was.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::Planner;
use crate::error::{Result, SysprepError};
use crate::plan::Edit;
use crate::view::{Kind, MAX_ENTRIES};
use crate::Operation;

const LOG_DIR: &str = "/var/log";
const JOURNAL_DIR: &str = "/var/log/journal";
/// Log trees nested deeper than this are not walked to the bottom (a hostile image's trap).
const MAX_LOG_DEPTH: usize = 32;
/// Shells' and interactive tools' histories in a home directory.
const HISTORIES: [&str; 10] = [
    ".bash_history",
    ".zsh_history",
    ".sh_history",
    ".ash_history",
    ".history",
    ".local/share/fish/fish_history",
    ".python_history",
    ".mysql_history",
    ".psql_history",
    ".sqlite_history",
];
const CLOUD_STATE: &str = "/var/lib/cloud";

/// Every log under `/var/log` truncated in place (daemons keep writing to the same file with
/// its owner and mode; `wtmp`, `btmp` and `lastlog` included), rotated ones removed, and the
/// journal's per-machine directories removed (their names are the template's machine-id).
/// Links are left alone.
pub(super) fn logfiles(p: &mut Planner) -> Result<()> {
    let op = Operation::Logfiles;
    let Some(root) = p.real_dir(op, Path::new(LOG_DIR))? else {
        return Ok(());
    };
    let mut pending: Vec<(PathBuf, usize)> = vec![(root.path, 0)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = pending.pop() {
        if dir == Path::new(JOURNAL_DIR) {
            p.remove_entries(op, &dir, |_| true)?;
            continue;
        }
        for name in p.names(&dir)? {
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(SysprepError::TooManyEntries {
                    path: PathBuf::from(LOG_DIR),
                    limit: MAX_ENTRIES,
                });
            }
            let Some(node) = p.view.lookup(&dir.join(&name), false)? else {
                continue;
            };
            match node.kind {
                Kind::Dir if depth + 1 < MAX_LOG_DEPTH => pending.push((node.path, depth + 1)),
                Kind::Dir => {
                    return Err(SysprepError::TooDeep {
                        path: node.path,
                        limit: MAX_LOG_DEPTH,
                    })
                }
                Kind::File if is_rotated(&name) => p.plan.edit(op, node.path, Edit::Remove),
                Kind::File if node.size > 0 => p.plan.edit(op, node.path, Edit::Truncate),
                Kind::File | Kind::Symlink | Kind::Other => {}
            }
        }
    }
    Ok(())
}

/// Names logrotate and syslog give old logs: `syslog.1`, `syslog.2.gz`, `messages-20240101`,
/// `dpkg.log.old`.
fn is_rotated(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    let stem = [".gz", ".xz", ".bz2", ".zst", ".old"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(&name);
    if stem.len() < name.len() {
        return true;
    }
    let numbered = |sep| {
        stem.rsplit_once(sep).is_some_and(|(base, tail)| {
            !base.is_empty() && !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())
        })
    };
    numbered('.')
        || stem
            .rsplit_once('-')
            .is_some_and(|(_, tail)| tail.len() == 8)
            && numbered('-')
}

/// The histories of root and every user in `/home`.
pub(super) fn bash_history(p: &mut Planner) -> Result<()> {
    for home in p.homes()? {
        for history in HISTORIES {
            p.remove(Operation::BashHistory, &home.join(history))?;
        }
    }
    Ok(())
}

pub(super) fn tmp_files(p: &mut Planner) -> Result<()> {
    for dir in ["/tmp", "/var/tmp"] {
        p.remove_entries(Operation::TmpFiles, Path::new(dir), |_| true)?;
    }
    Ok(())
}

/// Everything cloud-init recorded about the instance the template was (`instance`,
/// `instances/`, `data/`, `sem/`, ...), so it runs as a new instance in the clone. `seed/` is
/// kept: it is configuration given to the guest, not state.
pub(super) fn cloud_init(p: &mut Planner) -> Result<()> {
    p.remove_entries(Operation::CloudInit, Path::new(CLOUD_STATE), |name| {
        name != "seed"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_logs_are_recognised() {
        for rotated in [
            "syslog.1",
            "syslog.2.gz",
            "messages-20240101",
            "dpkg.log.old",
            "auth.log.4.xz",
            "wtmp.1",
        ] {
            assert!(is_rotated(OsStr::new(rotated)), "{rotated}");
        }
        for live in [
            "syslog",
            "wtmp",
            "dpkg.log",
            "cloud-init.log",
            "Xorg.0.log",
            "boot-x",
        ] {
            assert!(!is_rotated(OsStr::new(live)), "{live}");
        }
    }
}
