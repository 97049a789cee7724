//! `corral snapshot`: an instance's snapshots (corral-core's `snapshot` module decides and does
//! everything; this parses and renders).

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::completion;
use crate::output::{self, Format};

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
enum SnapshotCommand {
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
            match created.paused {
                Some(paused) => println!(
                    "created snapshot {} of {name} with {} (it was paused for {} ms)",
                    created.info.name,
                    created.saved,
                    paused.as_millis()
                ),
                None => println!("created snapshot {} of {name}", created.info.name),
            }
        }
        SnapshotCommand::List { name, output } => {
            let snapshots = manager.list_snapshots(&name)?;
            if output == Format::Json {
                output::print_json(&snapshots)?;
            } else {
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
            }
        }
        SnapshotCommand::Restore { name, snapshot } => {
            if manager.restore_snapshot(&name, &snapshot)? {
                println!(
                    "restored {name} to snapshot {snapshot}; it is running from its saved state"
                );
            } else {
                println!("restored {name} to snapshot {snapshot}");
            }
        }
        SnapshotCommand::Delete { name, snapshot } => {
            manager.delete_snapshot(&name, &snapshot)?;
            println!("deleted snapshot {snapshot} of {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
