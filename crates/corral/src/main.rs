//! `corral`: one command line for virtual machines and containers.
//!
//! The binary is thin: each subcommand module parses its arguments, calls a library crate and
//! renders the result. Library errors are typed; here they become one readable message on stderr
//! (with its causes) and a non-zero exit status, never a panic.

mod editor;
mod guest;
mod host;
mod instance;
mod oci;
mod output;
mod progress;
mod rootfs;
mod vmm;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Virtual machines and containers, one management model"
)]
struct Cli {
    /// corral's state directory (instances, storage).
    #[arg(long, global = true, env = "CORRAL_ROOT", default_value = corral_core::store::DEFAULT_ROOT)]
    root: PathBuf,
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
    /// Define a new VM (--kernel) or container (--rootfs), from flags or a TOML file.
    Create(Box<instance::CreateArgs>),
    /// Define an instance from a TOML file (virsh define).
    Define { file: PathBuf },
    /// Start instances.
    Start {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Shut an instance down gracefully (ACPI/Ctrl-Alt-Del, SIGPWR or SIGTERM), forcing it
    /// off after the timeout.
    #[command(alias = "shutdown")]
    Stop(instance::StopArgs),
    /// Force an instance off at once.
    #[command(alias = "destroy")]
    Kill { name: String },
    /// Stop an instance and start it again.
    #[command(alias = "reboot")]
    Restart(instance::StopArgs),
    /// Freeze an instance's execution.
    #[command(alias = "suspend")]
    Pause { name: String },
    /// Continue a paused instance.
    Resume { name: String },
    /// Delete an instance and its files (refused while it runs, unless --force).
    #[command(aliases = ["undefine", "rm"])]
    Delete(instance::DeleteArgs),
    /// List running instances (--all for every instance).
    #[command(alias = "ls")]
    List(instance::ListArgs),
    /// Show an instance's definition and state.
    #[command(alias = "dominfo")]
    Info(instance::InfoArgs),
    /// Attach to an instance's console; Ctrl-] detaches.
    Console { name: String },
    /// Print what an instance's console printed.
    Logs(instance::LogsArgs),
    /// Run a command in a running container.
    Exec(instance::ExecArgs),
    /// Show or change an instance's definition.
    Config(instance::ConfigArgs),
    /// Manage the storage pool's volumes.
    Volume(volume::VolumeArgs),
    /// Start every instance marked `autostart = true` that is not running (run at host boot).
    Autostart,
    /// Supervise a container instance (started by `corral start`).
    #[command(hide = true)]
    Monitor { dir: PathBuf },
    /// Run a VM in this process, or control a running one (the low-level VMM).
    Vmm {
        #[command(subcommand)]
        command: vmm::VmmCommand,
    },
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
        Command::Create(args) => instance::create(&cli.root, *args),
        Command::Define { file } => instance::define(&cli.root, file),
        Command::Start { names } => instance::start(&cli.root, names),
        Command::Stop(args) => instance::stop(&cli.root, args),
        Command::Kill { name } => instance::kill(&cli.root, name),
        Command::Restart(args) => instance::restart(&cli.root, args),
        Command::Pause { name } => instance::pause(&cli.root, name),
        Command::Resume { name } => instance::resume(&cli.root, name),
        Command::Delete(args) => instance::delete(&cli.root, args),
        Command::List(args) => instance::list(&cli.root, args),
        Command::Info(args) => instance::info(&cli.root, args),
        Command::Console { name } => instance::console(&cli.root, name),
        Command::Logs(args) => instance::logs(&cli.root, args),
        Command::Exec(args) => instance::exec(&cli.root, args),
        Command::Config(args) => instance::config(&cli.root, args),
        Command::Volume(args) => volume::run(&cli.root, args),
        Command::Autostart => instance::autostart(&cli.root),
        Command::Monitor { dir } => corral_core::monitor::run(&dir)
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Vmm { command } => vmm::run(command),
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
