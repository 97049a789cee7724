//! `corral vmm`: run one VM in this process (`run`), or talk to a running one (`control`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use corral_control::exit::{reason, ExitRecord};
use corral_control::{Client, Request, Response};
use corral_vmm::config::{
    Action, DiskConfig, MemorySize, NicConfig, SerialTarget, VmConfig, VsockConfig,
};
use corral_vmm::exit::ExitReason;

#[derive(clap::Subcommand)]
pub enum VmmCommand {
    /// Boot a kernel and run the VM until it stops; the exit status tells how it stopped
    /// (0 poweroff or the guest's debug-exit byte, 3 reboot, 4 crashed, 5 killed, 1 error).
    Run(Box<RunArgs>),
    /// Send one request to a running VMM's control socket and print the JSON answer.
    Control {
        /// The VMM's control socket.
        socket: PathBuf,
        #[command(subcommand)]
        request: ControlRequest,
    },
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// A TOML VM config; flags given as well override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write why the VM stopped to this file as JSON before exiting (for supervisors).
    #[arg(long)]
    exit_file: Option<PathBuf>,
    /// Kernel: x86_64 ELF vmlinux (PVH entry when present) or bzImage.
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    #[arg(long)]
    vcpus: Option<u8>,
    /// Guest memory, e.g. 256M or 1G.
    #[arg(long)]
    memory: Option<MemorySize>,
    /// Console: stdout, none, file:PATH or socket:PATH.
    #[arg(long)]
    serial: Option<SerialTarget>,
    /// Serve the JSON control protocol on this unix socket.
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// destroy or restart.
    #[arg(long)]
    on_poweroff: Option<Action>,
    #[arg(long)]
    on_reboot: Option<Action>,
    #[arg(long)]
    on_crash: Option<Action>,
    /// A virtio disk: PATH or path=PATH[,format=raw|qcow2][,readonly][,serial=S]; repeatable,
    /// replaces the config file's disks.
    #[arg(long = "disk")]
    disks: Vec<DiskConfig>,
    /// A virtio network interface: tap=NAME or bridge=NAME, optionally ,mac=MAC; repeatable,
    /// replaces the config file's interfaces.
    #[arg(long = "nic")]
    nics: Vec<NicConfig>,
    /// Add a virtio entropy device.
    #[arg(long)]
    rng: bool,
    /// A virtio vsock device: cid=N,socket=PATH.
    #[arg(long)]
    vsock: Option<VsockConfig>,
}

#[derive(clap::Subcommand)]
pub enum ControlRequest {
    Status,
    Info,
    Pause,
    Resume,
    /// Ctrl-Alt-Del to the guest, forced off after the timeout.
    Shutdown {
        #[arg(long)]
        timeout_secs: Option<u64>,
    },
    Kill,
}

pub fn run(command: VmmCommand) -> anyhow::Result<ExitCode> {
    match command {
        VmmCommand::Run(args) => run_vm(*args),
        VmmCommand::Control { socket, request } => control(socket, request),
    }
}

fn config_from(args: RunArgs) -> anyhow::Result<VmConfig> {
    let mut config = match &args.config {
        Some(path) => VmConfig::from_file(path)?,
        None => VmConfig::new(args.kernel.clone().unwrap_or_default()),
    };
    if let Some(kernel) = args.kernel {
        config.kernel = kernel;
    }
    if args.initrd.is_some() {
        config.initrd = args.initrd;
    }
    if let Some(cmdline) = args.cmdline {
        config.cmdline = cmdline;
    }
    if let Some(vcpus) = args.vcpus {
        config.vcpus = vcpus;
    }
    if let Some(memory) = args.memory {
        config.memory = memory;
    }
    if let Some(serial) = args.serial {
        config.serial = serial;
    }
    if args.control_socket.is_some() {
        config.control_socket = args.control_socket;
    }
    if let Some(action) = args.on_poweroff {
        config.on_poweroff = action;
    }
    if let Some(action) = args.on_reboot {
        config.on_reboot = action;
    }
    if let Some(action) = args.on_crash {
        config.on_crash = action;
    }
    if !args.disks.is_empty() {
        config.disks = args.disks;
    }
    if !args.nics.is_empty() {
        config.nics = args.nics;
    }
    config.rng |= args.rng;
    if args.vsock.is_some() {
        config.vsock = args.vsock;
    }
    Ok(config)
}

fn run_vm(args: RunArgs) -> anyhow::Result<ExitCode> {
    let exit_file = args.exit_file.clone();
    let result = config_from(args).and_then(|config| Ok(corral_vmm::run(&config)?));
    if let Some(path) = &exit_file {
        exit_record(&result).write(path)?;
    }
    let exit = result.context("the VM could not run")?;
    eprintln!("corral: vm stopped: {} ({})", exit.reason, exit.detail);
    Ok(ExitCode::from(exit.exit_status()))
}

/// The supervisor exit record for how the VM ended (or failed to start).
fn exit_record(result: &anyhow::Result<corral_vmm::VmExit>) -> ExitRecord {
    let exit = match result {
        Ok(exit) => exit,
        Err(err) => {
            return ExitRecord {
                reason: reason::FAILED.into(),
                code: None,
                detail: Some(format!("{err:#}")),
            }
        }
    };
    // The crash detail carries a register dump; the record keeps its summary line.
    let summary = exit.detail.lines().next().map(str::to_string);
    match exit.reason {
        ExitReason::Poweroff => ExitRecord {
            reason: reason::POWEROFF.into(),
            code: Some(i32::from(exit.guest_code.unwrap_or(0))),
            detail: None,
        },
        ExitReason::Reboot => ExitRecord {
            reason: reason::REBOOT.into(),
            code: None,
            detail: None,
        },
        ExitReason::Crashed => ExitRecord {
            reason: reason::CRASHED.into(),
            code: None,
            detail: summary,
        },
        ExitReason::Killed => ExitRecord {
            reason: reason::STOPPED.into(),
            code: None,
            detail: summary,
        },
    }
}

fn control(socket: PathBuf, request: ControlRequest) -> anyhow::Result<ExitCode> {
    let request = match request {
        ControlRequest::Status => Request::Status,
        ControlRequest::Info => Request::Info,
        ControlRequest::Pause => Request::Pause,
        ControlRequest::Resume => Request::Resume,
        ControlRequest::Shutdown { timeout_secs } => Request::Shutdown { timeout_secs },
        ControlRequest::Kill => Request::Kill,
    };
    let mut client = Client::connect(&socket, Duration::from_secs(30))?;
    let response = client.call(&request)?;
    crate::output::print_json(&response)?;
    Ok(match response {
        Response::Error { .. } => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}
