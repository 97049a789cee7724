//! `corral migrate`: move a running VM instance live to another corral root (corral-core's
//! `migrate` module decides and does everything; this parses and renders).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use corral_control::MigrationProgress;
use corral_core::migrate::{MigrateOptions, ReceiveOptions};
use corral_vmm::migration::Address;

use crate::completion;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MigrateArgs {
    #[command(subcommand)]
    receive: Option<MigrateCommand>,
    /// The running VM instance to move.
    #[arg(required = true, add = completion::instances())]
    name: Option<String>,
    /// Where `corral migrate receive` waits: tcp:IP:PORT or unix:PATH.
    #[arg(required = true, value_name = "DEST_ADDR")]
    to: Option<Address>,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    limits: PrecopyLimits,
    /// Copy the read-only raw disks of the instance's directory to the destination (while the
    /// guest runs: they cannot change). Disks the guest writes are not copied (refused with the
    /// reason): they must be on storage both hosts reach at the same path.
    #[arg(long)]
    copy_storage: bool,
    /// Delete the instance here once it runs on the destination (virsh's --undefinesource);
    /// by default it stays, stopped, its last exit `migrated`.
    #[arg(long)]
    undefine_source: bool,
}

/// When a pre-copy migration gives up (`corral migrate`, `corral vmm control ... migrate`).
#[derive(Args)]
pub(crate) struct PrecopyLimits {
    /// The longest pause allowed for the last copy, e.g. 300ms (the default) or 1s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub downtime_limit: Option<Duration>,
    /// Give up after this many passes over memory (default 30).
    #[arg(long)]
    pub max_iterations: Option<u32>,
    /// Give up after this long copying, e.g. 2min (the default).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_time: Option<Duration>,
}

#[derive(Args)]
struct TokenArgs {
    /// The secret both ends share.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the token from this file (its first line).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

impl TokenArgs {
    fn token(&self) -> anyhow::Result<String> {
        corral_vmm_cli::token(self.token.as_deref(), self.token_file.as_deref())?
            .context("give the migration token with --token or --token-file")
    }
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Wait for one instance from `corral migrate` on another host (or corral root): make it
    /// here and run its VM from the source's; nothing is left here if that fails.
    Receive {
        /// Where to wait: tcp:IP:PORT or unix:PATH.
        #[arg(long, value_name = "ADDR", default_value = "tcp:0.0.0.0:7400")]
        listen: Address,
        #[command(flatten)]
        token: TokenArgs,
    },
}

pub fn run(root: &Path, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    if let Some(MigrateCommand::Receive { listen, token }) = args.receive {
        let options = ReceiveOptions {
            listen: listen.clone(),
            token: token.token()?,
        };
        eprintln!("corral: waiting for an instance at {listen}");
        let received = manager.receive_migration(&options, &|| {
            eprintln!("corral: a source connected; receiving its instance");
        })?;
        println!("instance {} runs here", received.name);
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(name), Some(to)) = (args.name, args.to) else {
        anyhow::bail!("give the instance and the destination: corral migrate NAME DEST_ADDR");
    };
    let options = MigrateOptions {
        to: to.clone(),
        token: args.token.token()?,
        downtime_limit: args.limits.downtime_limit,
        max_iterations: args.limits.max_iterations,
        max_time: args.limits.max_time,
        copy_storage: args.copy_storage,
        undefine_source: args.undefine_source,
    };
    let terminal = std::io::stderr().is_terminal();
    let progress = move |progress: &MigrationProgress| {
        if terminal {
            eprintln!("corral: {}", describe(progress));
        }
    };
    let migrated = manager.migrate(&name, &options, &progress)?;
    let report = &migrated.report;
    println!(
        "instance {name} migrated to {to} in {:.1} s: downtime {:.0} ms, {:.1} MiB in {} passes",
        report.total_ms / 1000.0,
        report.downtime_ms,
        report.bytes as f64 / (1 << 20) as f64,
        report.iterations
    );
    Ok(ExitCode::SUCCESS)
}

/// One line on where a migration stands.
pub(crate) fn describe(progress: &MigrationProgress) -> String {
    const MIB: f64 = (1 << 20) as f64;
    format!(
        "migration pass {}: {:.1} MiB sent, {:.1} MiB dirty, {:.1} MB/s, estimated downtime \
         {:.0} ms",
        progress.iterations,
        progress.bytes as f64 / MIB,
        progress.dirty_bytes as f64 / MIB,
        progress.bandwidth as f64 / 1e6,
        progress.estimated_downtime_ms
    )
}
