//! `vmm run`: one VM in this process until it stops. The code of both `corral vmm run` and the
//! VMM-only executable `corral-vmm` (src/main.rs, which holds nothing else of corral and is what
//! the instance manager launches when it is installed beside `corral`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use corral_control::exit::{ExitReason as RecordReason, ExitRecord};
use corral_vmm::config::{
    Action, DiskConfig, MemorySize, NicConfig, RestartLimit, SerialTarget, VmConfig, VsockConfig,
};
use corral_vmm::exit::ExitReason;
use corral_vmm::jail::JailConfig;
use corral_vmm::migration::{destination, Address};
use corral_vmm::snapshot::SavedVm;

#[derive(clap::Args)]
pub struct RunArgs {
    /// A TOML VM config; flags given as well override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Restore the VM saved in DIR by `corral vmm control SOCKET snapshot --to DIR` instead of
    /// booting one: the machine comes from the snapshot; console, sockets and policies may be
    /// given anew. With --config, the config's files (disks moved onto new overlays, say),
    /// sockets and policies are used; it must describe the snapshot's machine (memory, vCPUs,
    /// as many disks and NICs), and each device is checked against the snapshot.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["kernel", "initrd", "cmdline", "vcpus", "memory", "disks", "nics", "rng", "vsock"]
    )]
    restore: Option<PathBuf>,
    /// Wait at ADDR (unix:PATH or tcp:IP:PORT) for one VM migrated live by `corral vmm control
    /// SOCKET migrate --to ADDR`, then run it as --restore does (with --config, as --restore
    /// with --config does); needs --migration-token or --migration-token-file.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with_all = ["restore", "kernel", "initrd", "cmdline", "vcpus", "memory", "disks", "nics", "rng", "vsock"]
    )]
    incoming: Option<Address>,
    /// The token a migration source must present (the same as its `migrate --token`).
    #[arg(
        long,
        value_name = "TOKEN",
        requires = "incoming",
        conflicts_with = "migration_token_file"
    )]
    migration_token: Option<String>,
    /// Read the migration token from this file (its first line).
    #[arg(long, value_name = "PATH", requires = "incoming")]
    migration_token_file: Option<PathBuf>,
    /// Track the pages written to guest memory, so that `snapshot --diff` can save only those
    /// (costs guest performance: off by default).
    #[arg(long)]
    track_dirty_pages: bool,
    /// Start with the vCPUs paused; `corral vmm control SOCKET resume` starts them.
    #[arg(long, requires = "control_socket")]
    paused: bool,
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
    /// At most BURST restarts by the on_* policies within SECONDS, then the VM ends (default
    /// 5/10; SECONDS 0 means no limit).
    #[arg(long, value_name = "BURST/SECONDS")]
    restart_limit: Option<RestartLimit>,
    /// A virtio disk: PATH or path=PATH[,format=raw|qcow2][,readonly][,serial=S]; repeatable,
    /// replaces the config file's disks.
    #[arg(long = "disk")]
    disks: Vec<DiskConfig>,
    /// A virtio network interface: tap=NAME and/or bridge=NAME, optionally ,mac=MAC; repeatable,
    /// replaces the config file's interfaces.
    #[arg(long = "nic")]
    nics: Vec<NicConfig>,
    /// Add a virtio entropy device.
    #[arg(long)]
    rng: bool,
    /// A virtio vsock device: cid=N,socket=PATH.
    #[arg(long)]
    vsock: Option<VsockConfig>,
    /// Confine the VMM (needs root): after opening its files it runs as the `corral` user in
    /// its own namespaces, seeing only DIR, where its sockets, console log, vsock socket and
    /// exit file must be (see docs/vmm.md).
    #[arg(long, value_name = "DIR")]
    jail: Option<PathBuf>,
    /// With --jail: move the VMM into this existing cgroup (a path from the hierarchy roots).
    #[arg(long, value_name = "PATH", requires = "jail")]
    cgroup: Option<PathBuf>,
    /// The file stdout and stderr point at (the caller opens it there): the VMM rotates it to
    /// PATH.1 at 1 MiB, checking every second. With --jail it must be in DIR.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Run without the per-thread seccomp filters (for debugging; see docs/vmm.md).
    #[arg(long)]
    no_seccomp: bool,
    /// Test-only: a guest write to port 0xf8 makes the vCPU thread attempt a system call no
    /// seccomp filter allows.
    #[arg(long, hide = true)]
    test_forbidden_call_port: bool,
}

/// The VM's configuration: `saved` (a snapshot's) or the config file or defaults, with the
/// flags applied.
fn config_from(args: RunArgs, saved: Option<VmConfig>) -> anyhow::Result<VmConfig> {
    let mut config = match (saved, &args.config) {
        (Some(saved), Some(path)) => same_machine(saved, VmConfig::from_file(path)?)?,
        (Some(saved), None) => saved,
        (None, Some(path)) => VmConfig::from_file(path)?,
        (None, None) => VmConfig::new(args.kernel.clone().unwrap_or_default()),
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
    if let Some(limit) = args.restart_limit {
        config.restart_limit = limit;
    }
    if !args.disks.is_empty() {
        config.disks = args.disks;
    }
    if !args.nics.is_empty() {
        config.nics = args.nics;
    }
    config.rng |= args.rng;
    config.track_dirty_pages |= args.track_dirty_pages;
    if args.no_seccomp {
        config.seccomp = false;
    }
    if args.vsock.is_some() {
        config.vsock = args.vsock;
    }
    Ok(config)
}

/// Runs the VM `args` describe until it stops; the exit status tells how.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut exit_file = args.exit_file.clone();
    let jail = match &args.jail {
        Some(dir) => Some(JailConfig::new(dir, args.cgroup.clone())?),
        None => None,
    };
    let mut options = corral_vmm::RunOptions {
        jail,
        forbidden_call_port: args.test_forbidden_call_port,
        log_file: args.log_file.clone(),
        start_paused: args.paused,
    };
    let result = receive_or_open(&args).and_then(|(saved, incoming)| {
        let saved_config = saved
            .as_ref()
            .or(incoming.as_ref().map(|incoming| &incoming.saved))
            .map(|saved| saved.snapshot.config.clone());
        let mut config = config_from(args, saved_config)?;
        if let Some(jail) = &options.jail {
            jail.place_config(&mut config)?;
            if let Some(path) = &mut exit_file {
                *path = jail.place("exit file", path)?;
            }
            if let Some(path) = &mut options.log_file {
                *path = jail.place("log file", path)?;
            }
        }
        Ok(match (saved, incoming) {
            (Some(saved), _) => corral_vmm::restore(&config, &options, saved)?,
            (None, Some(incoming)) => corral_vmm::restore_incoming(&config, &options, incoming)?,
            (None, None) => corral_vmm::run(&config, &options)?,
        })
    });
    if let Some(path) = &exit_file {
        exit_record(&result).write(path)?;
    }
    let exit = result.context("the VM could not run")?;
    let reason = match exit.restart_limited {
        true => RecordReason::RestartLimit.to_string(),
        false => exit.reason.to_string(),
    };
    eprintln!("corral: vm stopped: {reason} ({})", exit.detail);
    Ok(ExitCode::from(exit.exit_status()))
}

/// The config file's VM, to run from a snapshot whose machine (`saved`) it must describe:
/// memory, vCPUs and the number of disks and NICs (each device is checked against the snapshot
/// as it opens). Dirty-page tracking stays on when the snapshot had it.
fn same_machine(saved: VmConfig, mut config: VmConfig) -> anyhow::Result<VmConfig> {
    let shape = |c: &VmConfig| (c.memory, c.vcpus, c.disks.len(), c.nics.len());
    if shape(&config) != shape(&saved) {
        let describe = |c: &VmConfig| {
            format!(
                "{} of memory, {} vCPUs, {} disks and {} NICs",
                c.memory,
                c.vcpus,
                c.disks.len(),
                c.nics.len()
            )
        };
        anyhow::bail!(
            "the config describes a VM with {}, but the snapshot holds one with {}; restore \
             with a config of the snapshot's machine",
            describe(&config),
            describe(&saved)
        );
    }
    config.track_dirty_pages |= saved.track_dirty_pages;
    Ok(config)
}

/// The snapshot to restore (`--restore`), or the VM received from a migration source
/// (`--incoming`, waited for here), if either.
fn receive_or_open(
    args: &RunArgs,
) -> anyhow::Result<(Option<SavedVm>, Option<destination::Incoming>)> {
    if let Some(dir) = &args.restore {
        return Ok((Some(SavedVm::open(dir)?), None));
    }
    let Some(address) = &args.incoming else {
        return Ok((None, None));
    };
    let token = token(
        args.migration_token.as_deref(),
        args.migration_token_file.as_deref(),
    )?
    .context("--incoming needs --migration-token or --migration-token-file")?;
    Ok((None, Some(destination::receive(address, &token)?)))
}

/// A migration token given inline or as a file (its first line).
pub fn token(
    inline: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = inline {
        return Ok(Some(token.to_owned()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the migration token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "the migration token file {} is empty; put the token on its first line",
        path.display()
    );
    Ok(Some(token))
}

/// The supervisor exit record for how the VM ended (or failed to start).
fn exit_record(result: &anyhow::Result<corral_vmm::VmExit>) -> ExitRecord {
    let exit = match result {
        Ok(exit) => exit,
        Err(err) => {
            return ExitRecord {
                reason: RecordReason::Failed,
                code: None,
                detail: Some(format!("{err:#}")),
            }
        }
    };
    // The crash detail carries a register dump; the record keeps its summary line.
    let summary = exit.detail.lines().next().map(str::to_string);
    if exit.restart_limited {
        return ExitRecord {
            reason: RecordReason::RestartLimit,
            code: exit.guest_code.map(i32::from),
            detail: summary,
        };
    }
    match exit.reason {
        ExitReason::Poweroff => ExitRecord {
            reason: RecordReason::Poweroff,
            code: Some(i32::from(exit.guest_code.unwrap_or(0))),
            detail: None,
        },
        ExitReason::Reboot => ExitRecord {
            reason: RecordReason::Reboot,
            code: None,
            detail: None,
        },
        ExitReason::Crashed => ExitRecord {
            reason: RecordReason::Crashed,
            code: None,
            detail: summary,
        },
        ExitReason::Killed => ExitRecord {
            reason: RecordReason::Stopped,
            code: None,
            detail: summary,
        },
        ExitReason::Migrated => ExitRecord {
            reason: RecordReason::Migrated,
            code: None,
            detail: None,
        },
    }
}
