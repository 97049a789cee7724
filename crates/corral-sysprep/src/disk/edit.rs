//! A plan as debugfs commands, and the check afterwards that every edit is on the staged
//! filesystem as planned.
//!
//! debugfs cannot write into an existing file, so a file given new content is replaced: the old
//! inode removed, a new one written, its mode, owner and extended attributes (SELinux labels)
//! copied from the old one. A file with other hard links is refused, because replacing it would
//! leave the other names with the old content. Truncation keeps the inode (`punch` its blocks,
//! size 0).

use std::path::{Path, PathBuf};

use super::debugfs::{self, parse_stat, Script, Word};
use crate::error::{Result, SysprepError};
use crate::plan::{Edit, Plan};
use crate::view::{GuestView, Kind, MAX_ENTRIES};

/// A removed directory nested deeper than this is refused.
const MAX_DEPTH: usize = 256;

/// The debugfs script of `plan` (all but the UUID change, which tune2fs makes), for the staged
/// filesystem `image` that `view` reads.
pub(crate) fn script(
    plan: &Plan,
    view: &dyn GuestView,
    image: &Path,
    scratch: &Path,
) -> Result<Script> {
    let mut script = Script::new(scratch)?;
    for (step, edit) in plan.edits() {
        let path = step.path.as_path();
        match edit {
            Edit::Truncate => {
                script.line(&[Word::Plain("punch"), Word::Path(path), Word::Plain("0")])?;
                set(&mut script, path, "size", "0")?;
            }
            Edit::Remove => script.line(&[Word::Plain("rm"), Word::Path(path)])?,
            Edit::RemoveTree => {
                for (entry, is_dir) in post_order(view, path)? {
                    let command = if is_dir { "rmdir" } else { "rm" };
                    script.line(&[Word::Plain(command), Word::Path(&entry)])?;
                }
            }
            Edit::Write { content } => {
                let Some(old) = view.lookup(path, false)? else {
                    return Err(SysprepError::Guest {
                        action: "rewrite",
                        path: path.to_path_buf(),
                        source: std::io::ErrorKind::NotFound.into(),
                    });
                };
                let facts = parse_stat(
                    path,
                    &debugfs::request(image, &[Word::Plain("stat"), Word::Path(path)])?,
                )?;
                if facts.links > 1 {
                    return Err(SysprepError::HardLinked {
                        path: path.to_path_buf(),
                        links: facts.links,
                    });
                }
                // The attributes' values are dumped to host files now, set on the new inode
                // by the script.
                let mut xattrs = Vec::new();
                for name in facts.xattrs {
                    let value = script.new_file_path();
                    debugfs::request(
                        image,
                        &[
                            Word::Plain("ea_get"),
                            Word::Plain("-f"),
                            Word::Path(&value),
                            Word::Path(path),
                            Word::Path(Path::new(&name)),
                        ],
                    )?;
                    xattrs.push((name, value));
                }
                script.line(&[Word::Plain("rm"), Word::Path(path)])?;
                write_new(&mut script, path, content, old.mode, old.uid, old.gid)?;
                for (name, value) in &xattrs {
                    script.line(&[
                        Word::Plain("ea_set"),
                        Word::Plain("-f"),
                        Word::Path(value),
                        Word::Path(path),
                        Word::Path(Path::new(name)),
                    ])?;
                }
            }
            Edit::Create {
                content,
                mode,
                uid,
                gid,
            } => write_new(&mut script, path, content, *mode, *uid, *gid)?,
            Edit::SetFsUuid { .. } => {}
        }
    }
    Ok(script)
}

/// Writes a new regular file at `path` (which must not exist) with `content`, mode and owner.
fn write_new(
    script: &mut Script,
    path: &Path,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let source = script.host_file(content)?;
    // `write` names the new file in the current directory (older debugfs took no path there).
    script.line(&[Word::Plain("cd"), Word::Path(dir)])?;
    script.line(&[
        Word::Plain("write"),
        Word::Path(&source),
        Word::Path(Path::new(name)),
    ])?;
    script.line(&[Word::Plain("cd"), Word::Plain("/")])?;
    set(
        script,
        path,
        "mode",
        &format!("0{:o}", 0o100000 | (mode & 0o7777)),
    )?;
    set(script, path, "uid", &uid.to_string())?;
    set(script, path, "gid", &gid.to_string())
}

fn set(script: &mut Script, path: &Path, field: &str, value: &str) -> Result<()> {
    script.line(&[
        Word::Plain("set_inode_field"),
        Word::Path(path),
        Word::Plain(field),
        Word::Plain(value),
    ])
}

/// Everything in the directory `root`, and `root` itself, children before their directory;
/// `true` for directories.
fn post_order(view: &dyn GuestView, root: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    let mut pending = vec![(root.to_path_buf(), false, 0usize)];
    while let Some((dir, listed, depth)) = pending.pop() {
        if listed {
            out.push((dir, true));
            continue;
        }
        pending.push((dir.clone(), true, depth));
        for name in view.list(&dir)? {
            let path = dir.join(name);
            let is_dir = view
                .lookup(&path, false)?
                .is_some_and(|node| node.kind == Kind::Dir);
            if !is_dir {
                out.push((path, false));
            } else if depth + 1 >= MAX_DEPTH {
                return Err(SysprepError::TooDeep {
                    path,
                    limit: MAX_DEPTH,
                });
            } else {
                pending.push((path, false, depth + 1));
            }
            if out.len() + pending.len() > MAX_ENTRIES {
                return Err(SysprepError::TooManyEntries {
                    path: root.to_path_buf(),
                    limit: MAX_ENTRIES,
                });
            }
        }
    }
    Ok(out)
}

/// Checks on the edited filesystem (read afresh) that every edit of `plan` is there.
pub(crate) fn verify(plan: &Plan, view: &dyn GuestView) -> Result<()> {
    for (step, edit) in plan.edits() {
        let path = step.path.as_path();
        let (done, expected) = match edit {
            Edit::Truncate => (
                view.lookup(path, false)?
                    .is_some_and(|n| n.kind == Kind::File && n.size == 0),
                "empty",
            ),
            Edit::Remove | Edit::RemoveTree => (view.lookup(path, false)?.is_none(), "removed"),
            Edit::Write { content } | Edit::Create { content, .. } => {
                let len = content.len() as u64;
                let node = view.lookup(path, false)?;
                let same_size = node.is_some_and(|n| n.kind == Kind::File && n.size == len);
                (same_size && view.read(path, len)? == *content, "written")
            }
            Edit::SetFsUuid { new, .. } => (view.fs_uuid() == Some(*new), "given its new UUID"),
        };
        if !done {
            return Err(SysprepError::EditNotApplied {
                operation: step.operation,
                path: path.to_path_buf(),
                expected,
            });
        }
    }
    Ok(())
}
