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
    /// Take a snapshot of a stopped instance: a VM's writable disks become read-only bases the
    /// VM continues on overlays of; a container's root filesystem is copied.
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
    /// as they were); what changed since is discarded, the snapshot stays.
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
            let info = manager.create_snapshot(&name, snapshot.as_deref())?;
            println!("created snapshot {} of {name}", info.name);
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
            manager.restore_snapshot(&name, &snapshot)?;
            println!("restored {name} to snapshot {snapshot}");
        }
        SnapshotCommand::Delete { name, snapshot } => {
            manager.delete_snapshot(&name, &snapshot)?;
            println!("deleted snapshot {snapshot} of {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
