//! `corral snapshot`: an instance's snapshots (corral-core's `snapshot` module decides and does
//! everything; this parses and renders).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use corral_core::snapshot::SnapshotInfo;

use crate::completion;
use crate::output::{self, Format};

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub(crate) command: SnapshotCommand,
}

#[derive(Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Take a snapshot: a VM's writable disks become read-only bases the VM continues on
    /// overlays of (a running VM's memory and device state are saved too, the guest paused
    /// meanwhile); a container's root filesystem is copied (a running one's processes are
    /// checkpointed with CRIU too, where `criu check` passes; it goes on running).
    Create {
        #[arg(add = completion::instances())]
        name: String,
        /// The snapshot's name (default: the first free snap0, snap1, ...).
        snapshot: Option<String>,
    },
    /// List an instance's snapshots, oldest first.
    #[command(alias = "ls")]
    List {
        #[arg(add = completion::instances())]
        name: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Bring a stopped instance back to a snapshot (its definition and disks or root filesystem
    /// as they were; a VM snapshot taken running runs again from where it was); what changed
    /// since is discarded, the snapshot stays.
    Restore {
        #[arg(add = completion::instances())]
        name: String,
        snapshot: String,
    },
    /// Delete a snapshot; its disk bases stay while later snapshots or the disks build on them.
    #[command(alias = "rm")]
    Delete {
        #[arg(add = completion::instances())]
        name: String,
        snapshot: String,
    },
}

pub fn run(root: &Path, args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    match args.command {
        SnapshotCommand::Create { name, snapshot } => {
            let created = manager.create_snapshot(&name, snapshot.as_deref())?;
            print_created(&name, &created.info.name, created.saved, created.paused);
        }
        SnapshotCommand::List { name, output } => {
            print_list(&manager.list_snapshots(&name)?, output)?;
        }
        SnapshotCommand::Restore { name, snapshot } => {
            let running = manager.restore_snapshot(&name, &snapshot)?;
            print_restored(&name, &snapshot, running);
        }
        SnapshotCommand::Delete { name, snapshot } => {
            manager.delete_snapshot(&name, &snapshot)?;
            print_deleted(&name, &snapshot);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `snapshot create` says: the snapshot, and for a stateful one what it saved and, when
/// known, how long the guest was paused.
pub(crate) fn print_created(name: &str, snapshot: &str, saved: &str, paused: Option<Duration>) {
    match (saved, paused) {
        ("", _) => println!("created snapshot {snapshot} of {name}"),
        (saved, Some(paused)) => println!(
            "created snapshot {snapshot} of {name} with {saved} (it was paused for {} ms)",
            paused.as_millis()
        ),
        (saved, None) => println!("created snapshot {snapshot} of {name} with {saved}"),
    }
}

pub(crate) fn print_list(snapshots: &[SnapshotInfo], output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return output::print_json(&snapshots);
    }
    let rows: Vec<[String; 4]> = snapshots
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                output::timestamp(s.created),
                if s.stateful { "yes" } else { "no" }.to_string(),
                output::human_bytes(s.size),
            ]
        })
        .collect();
    output::print_table(["NAME", "CREATED", "STATEFUL", "SIZE"], &rows);
    Ok(())
}

/// What `snapshot restore` says; `running` when the instance runs again from the snapshot's
/// saved state.
pub(crate) fn print_restored(name: &str, snapshot: &str, running: bool) {
    if running {
        println!("restored {name} to snapshot {snapshot}; it is running from its saved state");
    } else {
        println!("restored {name} to snapshot {snapshot}");
    }
}

pub(crate) fn print_deleted(name: &str, snapshot: &str) {
    println!("deleted snapshot {snapshot} of {name}");
}
