//! `corral`: one command line for virtual machines and containers.
//!
//! The binary is thin: each subcommand module parses its arguments, calls a library crate and
//! renders the result. Library errors are typed; here they become one readable message on stderr
//! (with its causes) and a non-zero exit status, never a panic.

mod guest;
mod host;
mod oci;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Virtual machines and containers, one management model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and describe this host.
    Host(host::HostArgs),
    /// Tools that run inside a guest machine or container.
    Guest(guest::GuestArgs),
    /// The OCI runtime (runc's interface; also reachable as a `corral-oci` symlink).
    Oci(oci::OciArgs),
}

fn main() -> ExitCode {
    init_logging();
    if let Some(code) = oci::run_if_invoked_as_runtime() {
        return code;
    }
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Host(args) => host::run(args),
        Command::Guest(args) => guest::run(args),
        Command::Oci(args) => Ok(oci::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => output::report_error(&err),
    }
}

/// Logs go to stderr, filtered by `CORRAL_LOG` (tracing's env-filter syntax), warnings by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
