//! `corral`: one command line for virtual machines and containers.
//!
//! The binary is thin: each subcommand module parses its arguments, calls a library crate and
//! renders the result. Library errors are typed; here they become one readable message on stderr
//! (with its causes) and a non-zero exit status, never a panic.

mod agent;
mod clone;
mod completion;
mod editor;
mod error_report;
mod events;
mod guest;
mod host;
mod image;
mod image_build;
mod instance;
mod migrate;
mod monitor;
mod network;
mod network_attach;
mod network_service;
mod oci;
mod output;
mod ovf_export;
mod ovf_import;
mod progress;
mod remote;
mod serve;
mod snapshot;
mod sysprep;
mod terminal;
mod trust;
mod vmm;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use nix::sys::signal::{signal, SigHandler, Signal};
use tracing_subscriber::Layer;

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
    /// Set by the instance manager on the supervisors it launches: wait for its go-ahead on
    /// this descriptor first.
    #[arg(long, global = true, hide = true, value_name = "FD")]
    start_gate: Option<std::os::fd::RawFd>,
    /// Run the command on this remote server (`corral remote add`) instead of this host: list,
    /// info, create, logs, the lifecycle verbs, exec, console, and snapshot, volume, network
    /// and image verbs.
    #[arg(
        long = "remote",
        id = "remote_server",
        global = true,
        value_name = "NAME"
    )]
    remote: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Validate and describe this host.
    Host(host::HostArgs),
    /// Tools that run inside a guest machine or container.
    Guest(guest::GuestArgs),
    /// The OCI runtime (runc's interface; also reachable as a `corral-oci` symlink).
    Oci(oci::OciArgs),
    /// Define a new VM (--kernel) or container (--rootfs), from flags or a TOML file.
    Create(Box<instance::CreateArgs>),
    /// Make a new instance from a stopped one: its content copied (a VM's disks in full, or
    /// linked with --linked), a new name, UUID, MAC addresses and hostname.
    Clone(clone::CloneArgs),
    /// Import a virtual machine from an OVF package (.ova, or .ovf with its files), as
    /// VirtualBox and VMware export them: CPUs, memory, disks and network adapters are kept.
    Import(ovf_import::ImportArgs),
    /// Export a stopped virtual machine as an OVA (OVF envelope, manifest, streamOptimized
    /// VMDK disks) that VirtualBox, VMware and `corral import` read.
    Export(ovf_export::ExportArgs),
    /// Define an instance from a TOML file (virsh define).
    Define { file: PathBuf },
    /// Start instances.
    Start {
        #[arg(required = true, add = completion::instances())]
        names: Vec<String>,
    },
    /// Shut an instance down gracefully (a VM's guest agent when it answers, else Ctrl-Alt-Del;
    /// the container's stop signal), forcing it off after the timeout.
    #[command(alias = "shutdown")]
    Stop(instance::StopArgs),
    /// Force an instance off at once.
    #[command(alias = "destroy")]
    Kill {
        /// The instances; several are killed at once.
        #[arg(required = true, add = completion::instances())]
        names: Vec<String>,
    },
    /// Stop an instance and start it again.
    #[command(alias = "reboot")]
    Restart(instance::RestartArgs),
    /// Freeze an instance's execution.
    #[command(alias = "suspend")]
    Pause {
        #[arg(add = completion::instances())]
        name: String,
    },
    /// Continue a paused instance.
    Resume {
        #[arg(add = completion::instances())]
        name: String,
    },
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
    Console {
        #[arg(add = completion::instances())]
        name: String,
    },
    /// Print what an instance's console printed.
    Logs(instance::LogsArgs),
    /// Run a command in a running instance: a container's through the container engine, a VM's
    /// through its guest agent.
    Exec(instance::ExecArgs),
    /// Copy files into and out of a running instance (through its guest agent).
    File(agent::FileArgs),
    /// Talk to an instance's guest agent (`corral guest agent` in the guest).
    Agent(agent::AgentArgs),
    /// Show or change an instance's definition.
    Config(instance::ConfigArgs),
    /// Manage the storage pool's volumes.
    Volume(volume::VolumeArgs),
    /// Take, list, restore and delete an instance's snapshots.
    Snapshot(snapshot::SnapshotArgs),
    /// Move a running VM instance live to another host's corral (`corral migrate receive`
    /// there): memory copied while the guest runs, then a short pause; disks on storage both
    /// hosts reach. Anything failing leaves it running here.
    Migrate(migrate::MigrateArgs),
    /// Manage networks: bridges with NAT and port forwards instances attach to.
    Network(network::NetworkArgs),
    /// Manage images: the templates instances are created from.
    Image(image::ImageArgs),
    /// Make an image of a stopped instance (its root filesystem, or its VM disk flattened).
    Publish(image::PublishArgs),
    /// Make a template of a stopped instance: an image with its identity removed (`publish
    /// --seal`): no machine-id, SSH host keys, leases, logs or cloud-init state.
    Template(image::PublishArgs),
    /// Reset the identity of a stopped instance, a disk image or a root directory offline
    /// (machine-id, SSH host keys, hostname, leases, logs ...; virt-sysprep's operations).
    Sysprep(sysprep::SysprepArgs),
    /// Start every instance marked `autostart = true` that is not running (run at host boot).
    Autostart,
    /// Serve the REST API on a unix socket, and over TLS with --listen (docs/api.md).
    Serve(serve::ServeArgs),
    /// Manage the client certificates the API trusts over TLS, and join tokens.
    Trust(trust::TrustArgs),
    /// Manage the remote servers `--remote NAME` runs commands on.
    Remote(remote::RemoteArgs),
    /// Print every instance's lifecycle events as they happen, until interrupted.
    #[command(alias = "event")]
    MonitorEvents(events::MonitorArgs),
    /// Supervise a container instance (started by `corral start`).
    #[command(hide = true)]
    Monitor(monitor::MonitorArgs),
    /// Serve DHCP and DNS on a network from its state directory (started by corral).
    #[command(hide = true)]
    NetworkService { dir: PathBuf },
    /// Move a starting system container's nics into its network namespace (its OCI hook).
    #[command(hide = true)]
    NetworkAttach { dir: PathBuf },
    /// Record a lease change of a network (run by its dnsmasq).
    #[command(hide = true)]
    NetworkLeaseHook {
        dir: PathBuf,
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run a VM in this process, or control a running one (the low-level VMM).
    Vmm {
        #[command(subcommand)]
        command: vmm::VmmCommand,
    },
    /// Write what the package ships beside the binary: shell completion scripts or man pages.
    #[command(name = "__generate", hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generated,
    },
    /// Developers' tools.
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
}

#[derive(Subcommand)]
enum Generated {
    /// The scripts registering completion with bash (`corral`), zsh (`_corral`) and fish
    /// (`corral.fish`).
    Completions { dir: PathBuf },
    /// A section 1 man page for corral and for each of its subcommands.
    Man { dir: PathBuf },
}

#[derive(Subcommand)]
enum DebugCommand {
    /// List the failpoints compiled into this binary (only a test build has them), one
    /// `NAME<TAB>STATE` a line.
    Failpoints,
}

/// corral's command line as clap sees it (completion, man pages).
fn cli_command() -> clap::Command {
    Cli::command()
}

fn main() -> ExitCode {
    completion::answer_if_asked();
    let cli = (!oci::invoked_as_runtime()).then(Cli::parse);
    // A supervisor waits here until the command that launched it has recorded it.
    if let Some(fd) = cli.as_ref().and_then(|cli| cli.start_gate) {
        corral_control::start_gate::pass_start_gate(fd);
    }
    // The VMM rotates its log from its main thread alone (`--log-file`): its other threads'
    // seccomp filters forbid what rotating takes.
    let vmm_run = matches!(
        cli.as_ref().map(|cli| &cli.command),
        Some(Command::Vmm {
            command: vmm::VmmCommand::Run(_)
        })
    );
    // `corral serve`'s event feed takes the log records too, from the start.
    let serve_events = matches!(
        cli.as_ref().map(|cli| &cli.command),
        Some(Command::Serve(_))
    )
    .then(std::sync::Arc::<corral_api::EventHub>::default);
    corral_control::logging::init(
        !vmm_run,
        serve_events.as_ref().map(|hub| hub.log_layer().boxed()),
    );
    if let Err(err) = corral_core::failpoints::arm_from_env() {
        return output::report_error(&err.into());
    }
    let Some(cli) = cli else {
        return oci::run_as_runtime();
    };
    if matches!(
        cli.command,
        Command::List(_) | Command::Info(_) | Command::Logs(_) | Command::Network(_)
    ) {
        // Output piped into `head` ends the command quietly when the reader goes, as for
        // other command-line tools, instead of a failed write (Rust ignores SIGPIPE).
        // SAFETY: restoring a signal's default action; no handler is involved.
        let restored = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
        // Only an invalid signal fails, and SIGPIPE is valid.
        debug_assert!(restored.is_ok());
    }
    if let Some(remote) = &cli.remote {
        return match remote::run_on(remote, cli.command) {
            Ok(code) => code,
            Err(err) => output::report_error(&err),
        };
    }
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Host(args) => host::run(&cli.root, args),
        Command::Guest(args) => guest::run(args),
        Command::Oci(args) => Ok(oci::run(args)),
        Command::Create(args) => instance::create(&cli.root, *args),
        Command::Clone(args) => clone::run(&cli.root, args),
        Command::Import(args) => ovf_import::run(&cli.root, args),
        Command::Export(args) => ovf_export::run(&cli.root, args),
        Command::Define { file } => instance::define(&cli.root, file),
        Command::Start { names } => instance::start(&cli.root, names),
        Command::Stop(args) => instance::stop(&cli.root, args),
        Command::Kill { names } => instance::kill(&cli.root, names),
        Command::Restart(args) => instance::restart(&cli.root, args),
        Command::Pause { name } => instance::pause(&cli.root, name),
        Command::Resume { name } => instance::resume(&cli.root, name),
        Command::Delete(args) => instance::delete(&cli.root, args),
        Command::List(args) => instance::list(&cli.root, args),
        Command::Info(args) => instance::info(&cli.root, args),
        Command::Console { name } => instance::console(&cli.root, name),
        Command::Logs(args) => instance::logs(&cli.root, args),
        Command::Exec(args) => instance::exec(&cli.root, args),
        Command::File(args) => agent::file(&cli.root, args),
        Command::Agent(args) => agent::agent(&cli.root, args),
        Command::Config(args) => instance::config(&cli.root, args),
        Command::Volume(args) => volume::run(&cli.root, args),
        Command::Snapshot(args) => snapshot::run(&cli.root, args),
        Command::Migrate(args) => migrate::run(&cli.root, args),
        Command::Network(args) => network::run(&cli.root, args),
        Command::Image(args) => image::run(&cli.root, args),
        Command::Publish(args) => image::publish(&cli.root, args),
        Command::Template(args) => image::publish(&cli.root, args.sealed()),
        Command::Sysprep(args) => sysprep::run(&cli.root, args),
        Command::Autostart => instance::autostart(&cli.root),
        Command::Serve(args) => serve::run(&cli.root, args, serve_events.unwrap_or_default()),
        Command::Trust(args) => trust::run(&cli.root, args),
        Command::Remote(args) => remote::run(args),
        Command::MonitorEvents(args) => events::monitor(&cli.root, args),
        // A restart runs `corral monitor DIR` again.
        Command::Monitor(args) => monitor::supervise(args, &["monitor"]),
        Command::NetworkService { dir } => network_service::supervise(&dir),
        Command::NetworkAttach { dir } => network_attach::run(&dir),
        Command::NetworkLeaseHook { dir, args } => network_service::lease_hook(&dir, &args),
        Command::Vmm { command } => vmm::run(command),
        Command::Generate { what } => generate(what),
        Command::Debug {
            command: DebugCommand::Failpoints,
        } => list_failpoints(),
    };
    match result {
        Ok(code) => code,
        Err(err) => output::report_error(&err),
    }
}

fn generate(what: Generated) -> anyhow::Result<ExitCode> {
    match what {
        Generated::Completions { dir } => completion::write_scripts(&dir)?,
        Generated::Man { dir } => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(cli_command(), &dir)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_failpoints() -> anyhow::Result<ExitCode> {
    let points = corral_core::failpoints::compiled();
    if points.is_empty() {
        anyhow::bail!("this corral was built without failpoints (cargo's test build has them)");
    }
    for point in points {
        println!("{}\t{}", point.name, point.state);
    }
    Ok(ExitCode::SUCCESS)
}
