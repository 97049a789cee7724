//! A VM disk's identity reset, in userspace: the root filesystem is found (`probe.rs`, the
//! partition table from corral-disk), staged into a sparse host file (`stage.rs`), read with
//! ext4-view (`ext4.rs`) to plan, edited by e2fsprogs' debugfs (`debugfs.rs`, `edit.rs`) and
//! tune2fs, checked (every edit read back, `e2fsck -fn` clean), and only then written back,
//! block by changed block. Anything failing before the write-back leaves the disk as it was.

mod debugfs;
mod edit;
mod ext4;
mod probe;
mod stage;

use std::path::Path;

use corral_disk::{partition, Disk};

use crate::command::{quote, Output, E2FSCK, TUNE2FS};
use crate::error::{Result, SysprepError};
use crate::plan::{uuid_text, Edit};
use crate::view::{GuestView, Kind};
use crate::{ops, Options, Report};
use ext4::Ext4View;
use probe::Found;
use stage::Staged;

pub(crate) fn sysprep(disk: &mut dyn Disk, options: &Options) -> Result<Report> {
    if disk.read_only() && !options.dry_run {
        return Err(SysprepError::ReadOnlyDisk);
    }
    let scratch = options
        .scratch_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let root = find_root(disk, &scratch)?;
    let image = root.staged.path();
    // e2fsck checks the staged filesystem while the plan is made (new SSH host keys take the
    // longest): on two cores the check costs no time. Its verdict still comes first.
    let (checked, plan) = std::thread::scope(|scope| {
        let check = scope.spawn(|| fsck(image));
        let plan = ops::plan(&root.view, options);
        let checked = check
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (checked, plan)
    });
    if let Some(report) = checked? {
        return Err(SysprepError::NotClean {
            place: root.place,
            report,
        });
    }
    let plan = plan?;
    if options.dry_run {
        return Ok(plan.report(true));
    }
    edit::script(&plan, &root.view, image, &scratch)?.run(image)?;
    if let Some(report) = fsck(image)? {
        return Err(SysprepError::EditInconsistent {
            place: root.place,
            report,
        });
    }
    let new_uuid = plan.edits().find_map(|(_, edit)| match edit {
        Edit::SetFsUuid { new, .. } => Some(*new),
        _ => None,
    });
    if let Some(uuid) = new_uuid {
        set_uuid(image, &uuid)?;
    }
    // Read afresh: the planning view's caches hold the filesystem as it was.
    edit::verify(&plan, &Ext4View::load(image, &root.place)?)?;
    root.staged.write_back(disk)?;
    Ok(plan.report(false))
}

/// The root filesystem, staged.
struct Root {
    staged: Staged,
    view: Ext4View,
    /// "partition 2" or "the whole disk", for messages.
    place: String,
}

/// The first ext2/3/4 filesystem with `/etc`, in partition order (the whole disk when it has
/// no partition table).
fn find_root(disk: &dyn Disk, scratch: &Path) -> Result<Root> {
    let partitions = partition::partitions(disk)?;
    let candidates: Vec<(String, u64, u64)> = if partitions.is_empty() {
        vec![("the whole disk".to_string(), 0, disk.virtual_size())]
    } else {
        partitions
            .iter()
            .map(|p| (format!("partition {}", p.number), p.start, p.size))
            .collect()
    };
    let mut found = Vec::new();
    let mut unrecovered = None;
    for (place, start, size) in candidates {
        match probe::probe(disk, start, size)? {
            Found::Other(name) => {
                found.push(format!("{place}: {name}"));
                continue;
            }
            // Its files cannot be read as the guest would see them until the journal is
            // replayed; if no other filesystem is the root, this one likely is.
            Found::Ext {
                needs_recovery: true,
            } => {
                unrecovered.get_or_insert(place);
                continue;
            }
            Found::Ext {
                needs_recovery: false,
            } => {}
        }
        let staged = Staged::stage(disk, start, size, scratch)?;
        let view = match Ext4View::load(staged.path(), &place) {
            Ok(view) => view,
            Err(error) => {
                found.push(format!(
                    "{place}: an ext filesystem corral cannot read ({})",
                    source_text(&error)
                ));
                continue;
            }
        };
        let has_etc = view
            .lookup(Path::new("/etc"), true)?
            .is_some_and(|node| node.kind == Kind::Dir);
        if !has_etc {
            found.push(format!("{place}: an ext filesystem without /etc"));
            continue;
        }
        return Ok(Root {
            staged,
            view,
            place,
        });
    }
    if let Some(place) = unrecovered {
        return Err(SysprepError::NeedsRecovery { place });
    }
    if found.is_empty() {
        found.push("no filesystem".to_string());
    }
    Err(SysprepError::NoEditableRoot {
        found: found.join("; "),
    })
}

/// The innermost cause of an error, in words.
fn source_text(error: &SysprepError) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// `None` when `e2fsck -fn` finds the filesystem image clean, else what it reported.
fn fsck(image: &Path) -> Result<Option<String>> {
    let output = E2FSCK.run(["-fn".as_ref(), image.as_os_str()])?;
    Ok((!output.success).then(|| findings(&output)))
}

/// e2fsck's findings without its banner and progress lines.
fn findings(output: &Output) -> String {
    let text = format!("{}\n{}", output.stdout, output.stderr);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("Pass ") && !line.starts_with("e2fsck "))
        .collect();
    quote(&lines.join("\n"))
}

/// Gives the filesystem image the UUID `uuid`. On a filesystem with metadata checksums
/// (without the checksum seed) tune2fs rewrites every checksum and wants a fresh check first;
/// the image was just found clean, so `e2fsck -fp` only records that check.
fn set_uuid(image: &Path, uuid: &[u8; 16]) -> Result<()> {
    let checked = E2FSCK.run(["-fp".as_ref(), image.as_os_str()])?;
    if !checked.success {
        return Err(E2FSCK.failed(&checked));
    }
    TUNE2FS.run_ok(["-U".as_ref(), uuid_text(uuid).as_ref(), image.as_os_str()])?;
    Ok(())
}
