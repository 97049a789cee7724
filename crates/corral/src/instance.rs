//! The instance verbs (virsh/incus style): create, start, stop, list, console, ... They never
//! branch on the instance type; `corral-core`'s manager and drivers do.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use corral_control::console::Detach;
use corral_control::policy::Action;
use corral_control::size::MemorySize;
use corral_core::agent::AgentStatus;
use corral_core::create::{CreateRequest, DefinitionFile};
use corral_core::definition::{Definition, Disk, Kind};
use corral_core::exec::ExecRequest;
use corral_core::lifecycle::{Summary, DEFAULT_STOP_TIMEOUT};
use corral_core::report::InstanceReport;
use corral_core::state::State;
use corral_core::Manager;

use crate::completion;
use crate::output::{self, Format};

/// `corral create`.
#[derive(Args)]
pub struct CreateArgs {
    /// The instance's name (taken from the file with --file when absent).
    name: Option<String>,
    /// Read the definition from this TOML file (flags given too override it).
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// A virtual machine (implied by --kernel).
    #[arg(long, conflicts_with = "container")]
    vm: bool,
    /// A container (implied by --rootfs).
    #[arg(long)]
    container: bool,
    /// vCPUs of a VM, CPU quota of a container.
    #[arg(long)]
    cpus: Option<u8>,
    /// RAM of a VM, memory limit of a container (e.g. 512M, 2G).
    #[arg(long)]
    memory: Option<MemorySize>,
    /// VM kernel: ELF vmlinux (PVH) or bzImage.
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// VM kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Container root filesystem: a directory or a tarball, copied into the instance.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Make it from an image (alias or fingerprint; `corral image list`): a container or a VM,
    /// as the image is, with the image's defaults. A container gets its own copy of the root
    /// filesystem (reflinked where the filesystem can); a VM a linked clone of the image's disk.
    #[arg(long, conflicts_with_all = ["rootfs", "kernel", "initrd"], add = completion::images())]
    image: Option<String>,
    /// With --image: give a VM an independent, flattened copy of the image's disk instead of a
    /// linked clone (the image can then be deleted).
    #[arg(long, requires = "image")]
    full: bool,
    /// A system container: PID 1 is an init system (default command /sbin/init).
    #[arg(long)]
    init: bool,
    /// Environment of the container's PID 1 (NAME=value, repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// The guest's hostname: a container's, and the cloud-init seed's `local-hostname` (a VM
    /// given one gets a seed).
    #[arg(long)]
    hostname: Option<String>,
    /// cloud-init user-data for the guest's first boot (a NoCloud seed: docs/cloud-init.md);
    /// read at every start. With --user/--ssh-key/--password-hash it must be #cloud-config,
    /// and they are merged into a copy of it.
    #[arg(long, alias = "cloud-init", value_name = "FILE")]
    user_data: Option<PathBuf>,
    /// cloud-init: create this user, with sudo rights (and the --ssh-key keys).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// cloud-init: authorize the SSH public keys in FILE for --user, or for the image's
    /// default user without --user (repeatable).
    #[arg(long = "ssh-key", value_name = "FILE")]
    ssh_keys: Vec<PathBuf>,
    /// cloud-init: the --user's password as a crypt(3) hash (`openssl passwd -6`); without it
    /// the user's password is locked.
    #[arg(long, value_name = "HASH", requires = "user")]
    password_hash: Option<String>,
    /// The container's user namespace: auto (its root is an unprivileged host user from corral's
    /// /etc/subuid range, created on first use) or host. Default: auto for an application
    /// container without volumes where the host has user namespaces, host otherwise.
    #[arg(long, value_name = "auto|host")]
    userns: Option<corral_core::definition::UserNs>,
    /// Most processes the container may have.
    #[arg(long)]
    pids_limit: Option<u64>,
    /// A disk: PATH[,ro][,format=raw|qcow2|dir][,serial=ID][,target=/mnt][,allow_backing=PATH]
    /// or vol=NAME[,...]. A VM disk's format is detected from the file now, once, and recorded;
    /// a qcow2 disk's backing files must be in the storage pool or listed with allow_backing.
    #[arg(long = "disk")]
    disks: Vec<Disk>,
    /// A network interface: network=NAME[,ip=ADDRESS][,forward=tcp:8080:80...] (a corral
    /// network), or tap=NAME (VMs) and/or bridge=NAME[,ip=A/N][,gateway=G][,dns=D]; optionally
    /// ,mac=MAC (a stable one is derived from the instance's UUID when none is given) and
    /// ,filter=off (repeatable).
    #[arg(long = "nic")]
    nics: Vec<corral_core::nic::Nic>,
    /// The network an instance made from flags without --nic joins (`default` is created on
    /// first use); `none` for no network.
    #[arg(
        long,
        env = "CORRAL_DEFAULT_NETWORK",
        default_value = corral_core::networks::DEFAULT_NETWORK,
        value_name = "NAME|none",
        add = completion::networks()
    )]
    default_network: String,
    #[arg(long)]
    on_poweroff: Option<Action>,
    #[arg(long)]
    on_reboot: Option<Action>,
    #[arg(long)]
    on_crash: Option<Action>,
    #[arg(long)]
    autostart: bool,
    /// Start the instance once created.
    #[arg(long)]
    start: bool,
    /// The container's command (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// The instances; several stop at once.
    #[arg(required_unless_present = "all", add = completion::instances())]
    pub(crate) names: Vec<String>,
    /// Stop every running instance, all at once (what corral-autostart.service does at host
    /// shutdown).
    #[arg(long, short, conflicts_with = "names")]
    all: bool,
    /// Seconds the guest gets to shut down before it is forced off.
    #[arg(long, short, default_value_t = DEFAULT_STOP_TIMEOUT.as_secs())]
    pub(crate) timeout: u64,
    /// Force it off at once (like `corral kill`).
    #[arg(long, conflicts_with = "all")]
    pub(crate) force: bool,
}

#[derive(Args)]
pub struct RestartArgs {
    #[arg(add = completion::instances())]
    pub(crate) name: String,
    /// Seconds the guest gets to shut down before it is forced off.
    #[arg(long, short, default_value_t = DEFAULT_STOP_TIMEOUT.as_secs())]
    pub(crate) timeout: u64,
    /// Force it off at once (like `corral kill`).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Include instances that are not running.
    #[arg(long, short)]
    pub(crate) all: bool,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

#[derive(Args)]
pub struct InfoArgs {
    #[arg(add = completion::instances())]
    pub(crate) name: String,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// The instances; several are deleted at once.
    #[arg(required = true, add = completion::instances())]
    pub(crate) names: Vec<String>,
    /// Delete a running instance too (it is killed first).
    #[arg(long, short)]
    pub(crate) force: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    #[arg(add = completion::instances())]
    pub(crate) name: String,
    /// Keep printing what the console prints.
    #[arg(long, short)]
    pub(crate) follow: bool,
}

#[derive(Args)]
pub struct ExecArgs {
    #[arg(add = completion::instances())]
    name: String,
    /// Give the command a terminal (default: when stdin is one).
    #[arg(long, short)]
    tty: bool,
    /// Run it through the guest agent, as in a VM, rather than the container engine (a
    /// system container's agent sees the guest as its own processes do).
    #[arg(long)]
    agent: bool,
    /// Environment variables (NAME=value, repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory inside the instance.
    #[arg(long, short = 'w')]
    cwd: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the definition.
    Show {
        #[arg(add = completion::instances())]
        name: String,
    },
    /// Change fields: KEY=VALUE ... (e.g. memory=1G cpus=2 limits.pids=100;
    /// cloud_init.user_data=TEXT or =@PATH, cloud_init.meta_data.KEY=VALUE: docs/cloud-init.md).
    Set {
        name: String,
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// Edit the definition in $EDITOR; it is validated before it replaces the old one.
    Edit {
        #[arg(add = completion::instances())]
        name: String,
    },
}

/// Opens the store and the manager for `root`.
pub fn manager(root: &Path) -> anyhow::Result<Manager> {
    let exe = std::env::current_exe().context("cannot find the corral executable")?;
    let manager = Manager::open(root, &exe)?;
    // How long to wait for another command working on the same instance.
    Ok(match std::env::var("CORRAL_LOCK_TIMEOUT") {
        Ok(secs) => manager.with_lock_timeout(Duration::from_secs_f64(secs.parse().with_context(
            || format!("CORRAL_LOCK_TIMEOUT={secs:?} is not a number of seconds"),
        )?)),
        Err(_) => manager,
    })
}

pub fn create(root: &Path, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    let (request, start) = create_request(args)?;
    let reference = request.image.clone();
    let bars = crate::progress::Bars::new();
    let definition = manager.create_instance(request, &bars)?;
    bars.finish();
    print_created(reference.as_deref(), &definition);
    if start {
        manager.start(&definition.name)?;
        println!("started {}", definition.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `corral create`'s flags ask for (a definition file read, SSH keys read), and whether
/// to start it too.
pub fn create_request(args: CreateArgs) -> anyhow::Result<(CreateRequest, bool)> {
    let start = args.start;
    let file = match args.file {
        Some(path) => Some(DefinitionFile {
            text: std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            path,
        }),
        None => None,
    };
    let kind = if args.vm {
        Some(Kind::Vm)
    } else if args.container {
        Some(Kind::Container)
    } else {
        None
    };
    let request = CreateRequest {
        name: args.name,
        default_network: Some(args.default_network),
        file,
        kind,
        image: args.image,
        full: args.full,
        cpus: args.cpus,
        memory: args.memory,
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        rootfs: args.rootfs,
        init: args.init,
        env: args.env,
        hostname: args.hostname,
        user_data: args.user_data,
        user: args.user,
        ssh_keys: read_ssh_keys(&args.ssh_keys)?,
        password_hash: args.password_hash,
        userns: args.userns,
        pids_limit: args.pids_limit,
        disks: args.disks,
        nics: args.nics,
        on_poweroff: args.on_poweroff,
        on_reboot: args.on_reboot,
        on_crash: args.on_crash,
        autostart: args.autostart,
        command: args.command,
    };
    Ok((request, start))
}

/// What `corral create` says of the instance it made, from image `reference` when given.
pub fn print_created(reference: Option<&str>, definition: &Definition) {
    let name = &definition.name;
    match (reference, &definition.image) {
        (Some(reference), Some(image)) => println!(
            "created {} {name} from image {reference} ({})",
            definition.kind, image.storage
        ),
        _ => println!("created {} {name}", definition.kind),
    }
}

/// `corral define FILE` (virsh): the definition comes from a file alone.
pub fn define(root: &Path, file: PathBuf) -> anyhow::Result<ExitCode> {
    let args = CreateArgs {
        name: None,
        file: Some(file),
        vm: false,
        container: false,
        cpus: None,
        memory: None,
        kernel: None,
        initrd: None,
        cmdline: None,
        rootfs: None,
        image: None,
        full: false,
        init: false,
        env: vec![],
        hostname: None,
        user_data: None,
        user: None,
        ssh_keys: vec![],
        password_hash: None,
        userns: None,
        pids_limit: None,
        disks: vec![],
        nics: vec![],
        // A file says which nics it wants.
        default_network: "none".to_owned(),
        on_poweroff: None,
        on_reboot: None,
        on_crash: None,
        autostart: false,
        start: false,
        command: vec![],
    };
    create(root, args)
}

/// The keys of each `--ssh-key` file.
fn read_ssh_keys(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the --ssh-key file {}", file.display()))?;
        let found = corral_cloudinit::shortcuts::parse_ssh_keys(&text);
        if found.is_empty() {
            bail!(
                "--ssh-key {} holds no key; give a public key file such as ~/.ssh/id_ed25519.pub",
                file.display()
            );
        }
        keys.extend(found);
    }
    Ok(keys)
}

/// `corral start NAME...`: several names start at once (core's `start_many`); each one's outcome
/// is printed in the order given, a failure as an error naming its instance, and the status is
/// a failure if any failed.
pub fn start(root: &Path, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    if let [name] = names.as_slice() {
        let state = manager.start(name)?;
        print_started(name, &state);
        return Ok(ExitCode::SUCCESS);
    }
    Ok(report_each(
        manager.start_many(&names),
        "start",
        print_started,
    ))
}

/// Prints each outcome of a verb over several instances in their order: a success as `done`
/// says, a failure as an error naming its instance (`cannot VERB NAME`). The status is a failure
/// if any failed.
fn report_each<T>(
    outcomes: Vec<(String, Result<T, corral_core::CoreError>)>,
    verb: &str,
    done: impl Fn(&str, &T),
) -> ExitCode {
    let mut failed = false;
    for (name, outcome) in outcomes {
        match outcome {
            Ok(value) => done(&name, &value),
            Err(err) => {
                output::report_error(
                    &anyhow::Error::from(err).context(format!("cannot {verb} {name}")),
                );
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What `corral start` says of `name`, now in `state`.
pub fn print_started(name: &str, state: &State) {
    if state.status.is_active() {
        println!("started {name}");
    } else {
        println!(
            "started {name}; it has already stopped{}",
            describe_exit(state)
        );
    }
}

pub fn autostart(root: &Path) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    let mut failed = 0;
    // Bridges and NAT first: instances on a network attach to its bridge.
    if let Err(err) = manager.network_restore() {
        output::report_error(&err.into());
        failed += 1;
    }
    for summary in manager.list()? {
        let definition = manager.store().definition(&summary.name)?;
        if !definition.autostart || summary.status.is_active() {
            continue;
        }
        match manager.start(&summary.name) {
            Ok(_) => println!("started {}", summary.name),
            Err(err) => {
                // One instance that cannot start must not keep the others down.
                eprintln!("corral: {err}");
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `corral stop NAME...`: several names stop at once (core's `stop_many`, or `kill_many` with
/// `--force`), each one's outcome printed in the order given as `start` does; `--all` stops every
/// running instance, quiet about one that ended by itself meanwhile.
pub fn stop(root: &Path, args: StopArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    let timeout = Duration::from_secs(args.timeout);
    let print_stopped =
        |name: &str, state: &State| println!("stopped {name}{}", describe_exit(state));
    if args.all {
        let outcomes = manager
            .stop_all(timeout)?
            .into_iter()
            .filter(|(_, outcome)| !matches!(outcome, Err(corral_core::CoreError::NotRunning(_))));
        return Ok(report_each(outcomes.collect(), "stop", print_stopped));
    }
    if let [name] = args.names.as_slice() {
        let state = if args.force {
            manager.kill(name)?
        } else {
            manager.stop(name, timeout)?
        };
        print_stopped(name, &state);
        return Ok(ExitCode::SUCCESS);
    }
    let outcomes = if args.force {
        manager.kill_many(&args.names)
    } else {
        manager.stop_many(&args.names, timeout)
    };
    Ok(report_each(outcomes, "stop", print_stopped))
}

/// `corral kill NAME...`: several names are killed at once (core's `kill_many`).
pub fn kill(root: &Path, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    let print_killed =
        |name: &str, state: &State| println!("killed {name}{}", describe_exit(state));
    if let [name] = names.as_slice() {
        print_killed(name, &manager.kill(name)?);
        return Ok(ExitCode::SUCCESS);
    }
    Ok(report_each(manager.kill_many(&names), "kill", print_killed))
}

pub fn restart(root: &Path, args: RestartArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    if args.force {
        manager.force_restart(&args.name)?;
    } else {
        manager.restart(&args.name, Duration::from_secs(args.timeout))?;
    }
    println!("restarted {}", args.name);
    Ok(ExitCode::SUCCESS)
}

pub fn pause(root: &Path, name: String) -> anyhow::Result<ExitCode> {
    manager(root)?.pause(&name)?;
    println!("paused {name}");
    Ok(ExitCode::SUCCESS)
}

pub fn resume(root: &Path, name: String) -> anyhow::Result<ExitCode> {
    manager(root)?.resume(&name)?;
    println!("resumed {name}");
    Ok(ExitCode::SUCCESS)
}

/// `corral delete NAME...`: several names are deleted at once (core's `delete_many`), each one's
/// outcome printed in the order given as `start` does.
pub fn delete(root: &Path, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    if let [name] = args.names.as_slice() {
        manager.delete(name, args.force)?;
        println!("deleted {name}");
        return Ok(ExitCode::SUCCESS);
    }
    let outcomes = manager.delete_many(&args.names, args.force);
    Ok(report_each(outcomes, "delete", |name, ()| {
        println!("deleted {name}")
    }))
}

pub fn describe_exit(state: &State) -> String {
    match &state.last_exit {
        Some(exit) => match exit.code {
            Some(code) => format!(" ({}, code {code})", exit.reason),
            None => format!(" ({})", exit.reason),
        },
        None => String::new(),
    }
}

pub fn list(root: &Path, args: ListArgs) -> anyhow::Result<ExitCode> {
    print_list(manager(root)?.list()?, &args)?;
    Ok(ExitCode::SUCCESS)
}

/// `corral list`'s output of `summaries` (the running ones unless `--all`).
pub fn print_list(summaries: Vec<Summary>, args: &ListArgs) -> anyhow::Result<()> {
    let summaries: Vec<Summary> = (summaries.into_iter())
        .filter(|s| args.all || s.status.is_active())
        .collect();
    if args.output == Format::Json {
        return output::print_json(&summaries);
    }
    let rows: Vec<[String; 7]> = summaries
        .iter()
        .map(|s| {
            let ipv4: Vec<String> = s.ipv4.iter().map(|ip| ip.to_string()).collect();
            [
                s.name.clone(),
                s.kind.to_string(),
                s.status.to_string(),
                if ipv4.is_empty() {
                    "-".into()
                } else {
                    ipv4.join(",")
                },
                s.cpus.to_string(),
                MemorySize(s.memory_bytes).to_string(),
                s.uptime_secs
                    .map(output::duration)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::print_table(
        ["NAME", "TYPE", "STATE", "IPV4", "CPUS", "MEMORY", "UPTIME"],
        &rows,
    );
    Ok(())
}

pub fn info(root: &Path, args: InfoArgs) -> anyhow::Result<ExitCode> {
    let report = manager(root)?.report(&args.name)?;
    print_info(&report, &args)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints an instance's report as `corral info` does (here or from a remote).
pub(crate) fn print_info(report: &InstanceReport, args: &InfoArgs) -> anyhow::Result<()> {
    if args.output == Format::Json {
        return output::print_json(report);
    }
    let InstanceReport {
        definition,
        state,
        live,
        nics,
        agent,
    } = report;
    let line =
        |label: &str, value: &dyn std::fmt::Display| println!("{:<14}{value}", format!("{label}:"));
    line("Name", &definition.name);
    line("UUID", &definition.uuid);
    line("Type", &definition.kind);
    line("State", &state.status);
    if let Some(pid) = state.pid {
        line("Supervisor", &format!("pid {pid}"));
    }
    if let Some(uptime) = state.uptime_secs() {
        line("Uptime", &output::duration(uptime));
    }
    line("CPUs", &definition.cpus);
    line("Memory", &definition.memory);
    line(
        "Autostart",
        &if definition.autostart { "yes" } else { "no" },
    );
    line(
        "On events",
        &format!(
            "poweroff={:?} reboot={:?} crash={:?}",
            definition.on_poweroff, definition.on_reboot, definition.on_crash
        )
        .to_lowercase(),
    );
    line(
        "Restarts",
        &format!("at most {} (restart_limit)", definition.restart_limit),
    );
    if let Some(image) = &definition.image {
        let name = match &image.alias {
            Some(alias) => format!(
                "{alias} ({})",
                corral_image::store::short(&image.fingerprint)
            ),
            None => image.fingerprint.clone(),
        };
        line("Image", &format!("{name}, {}", image.storage));
    }
    if let Some(boot) = &definition.boot {
        match boot.from {
            corral_core::definition::BootFrom::Kernel => line("Kernel", &boot.kernel.display()),
            corral_core::definition::BootFrom::Disk => line("Kernel", &"from its first disk"),
        }
        if let Some(initrd) = &boot.initrd {
            line("Initrd", &initrd.display());
        }
        if let Some(cmdline) = &boot.cmdline {
            line("Cmdline", cmdline);
        }
    }
    if let Some(spec) = &definition.container {
        line("Rootfs", &spec.rootfs.display());
        let userns = match spec.userns {
            Some(corral_core::definition::UserNs::Auto) => "auto (corral's /etc/subuid range)",
            _ => "host",
        };
        line("User namespace", &userns);
        line("Command", &spec.effective_command().join(" "));
        line(
            "Init",
            &if spec.init {
                "yes (system container)"
            } else {
                "no"
            },
        );
    }
    if let Some(pids) = definition.limits.pids {
        line("Pids limit", &pids);
    }
    for (i, disk) in definition.disks.iter().enumerate() {
        let source = disk
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| disk.volume.as_ref().map(|v| format!("volume {v}")))
            .unwrap_or_default();
        line(
            &format!("Disk {i}"),
            &format!("{source}{}", if disk.readonly { " (ro)" } else { "" }),
        );
    }
    for nic in nics {
        let mut text = match (&nic.network, &nic.bridge) {
            (Some(network), Some(bridge)) => format!("network {network} (bridge {bridge})"),
            (Some(network), None) => format!("network {network}"),
            (None, Some(bridge)) => format!("bridge {bridge}"),
            (None, None) => "no bridge".to_owned(),
        };
        text.push_str(&format!(
            ", mac {}, host interface {}",
            nic.mac, nic.host_interface
        ));
        if let (Some(ip), Some(source)) = (nic.ip, nic.ip_source) {
            text.push_str(&format!(", ip {ip} ({source})"));
        }
        if !nic.forwards.is_empty() {
            let forwards: Vec<String> = nic.forwards.iter().map(ToString::to_string).collect();
            text.push_str(&format!(", forwards {}", forwards.join(" ")));
        }
        if !nic.filtered {
            text.push_str(", unfiltered");
        }
        line(&format!("Nic {}", nic.index), &text);
    }
    if let Some(exit) = &state.last_exit {
        let mut text = exit.reason.to_string();
        if let Some(code) = exit.code {
            text.push_str(&format!(", code {code}"));
        }
        if let Some(detail) = &exit.detail {
            text.push_str(&format!(": {detail}"));
        }
        line("Last exit", &text);
    }
    if let Some(live) = live {
        for (counter, value) in &live.counters {
            line(counter, value);
        }
    }
    match agent {
        Some(AgentStatus::Answering { guest }) => {
            line("Agent", &"answering");
            line("Hostname", &guest.hostname);
            if let Some(os) = &guest.os {
                line("OS", os);
            }
            line("Kernel", &guest.kernel);
            line("Guest uptime", &output::duration(guest.uptime_secs));
            for interface in guest.interfaces.iter().filter(|i| i.name != "lo") {
                let addresses: Vec<String> = interface
                    .addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                line(&format!("Addr {}", interface.name), &addresses.join(" "));
            }
        }
        Some(AgentStatus::NotAnswering { reason }) => {
            line("Agent", &format!("not answering ({reason})"))
        }
        None => {}
    }
    Ok(())
}

pub fn console(root: &Path, name: String) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    let socket = manager.console_socket(&name)?;
    attach_console(&name, |input, output, escape| {
        Ok(corral_control::console::attach(
            &socket, input, output, escape,
        )?)
    })
}

/// The user's side of instance `name`'s console, here or on a remote: this terminal raw while
/// `relay` passes it to the console (until the escape byte, given to it), and what the
/// console prints to stdout.
pub(crate) fn attach_console(
    name: &str,
    relay: impl FnOnce(BorrowedFd<'_>, &mut std::io::Stdout, u8) -> anyhow::Result<Detach>,
) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let raw = corral_control::console::RawMode::enable(stdin.as_fd())?;
    eprint!("Connected to {name}; escape character is ^]\r\n");
    let mut stdout = std::io::stdout();
    let end = relay(
        stdin.as_fd(),
        &mut stdout,
        corral_control::console::ESCAPE_BYTE,
    );
    drop(raw);
    stdout.flush()?;
    match end? {
        Detach::Closed => eprintln!("\nconsole of {name} closed"),
        _ => eprintln!(),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(root: &Path, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    let log = manager.paths(&args.name)?.console_log();
    let mut stdout = std::io::stdout();
    stdout.write_all(&manager.console_log(&args.name)?)?;
    if args.follow {
        let mut offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let Ok(bytes) = corral_control::log::read_log(&log) else {
                continue;
            };
            // Rotation starts the file again.
            if (bytes.len() as u64) < offset {
                offset = 0;
            }
            stdout.write_all(&bytes[offset as usize..])?;
            stdout.flush()?;
            offset = bytes.len() as u64;
            if !manager.state(&args.name)?.status.is_active() {
                break;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config(root: &Path, args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    let store = manager.store();
    match args.command {
        ConfigCommand::Show { name } => print!("{}", store.definition(&name)?.to_toml()),
        ConfigCommand::Set { name, settings } => {
            let mut pairs = Vec::new();
            for setting in &settings {
                let Some((key, value)) = setting.split_once('=') else {
                    bail!("{setting:?} is not KEY=VALUE");
                };
                pairs.push((key.to_owned(), value.to_owned()));
            }
            manager.set_config(&name, &pairs)?;
            note_restart_needed(&manager, &name)?;
        }
        ConfigCommand::Edit { name } => {
            let _lock = manager.lock(&name)?;
            let definition = store.definition(&name)?;
            let edited = crate::editor::edit_until_valid(&definition.to_toml(), |text| {
                let new = Definition::from_toml(text, Path::new("instance.toml"))?;
                corral_core::config::check_identity_kept(&definition, &new)?;
                Ok(new)
            })?;
            match edited {
                Some(new) => {
                    manager.save_definition(&new)?;
                    note_restart_needed(&manager, &name)?;
                }
                None => eprintln!("no changes"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn note_restart_needed(manager: &Manager, name: &str) -> anyhow::Result<()> {
    if manager.store().state(name)?.status.is_active() {
        eprintln!("{name} is running: the change takes effect at its next start");
    }
    Ok(())
}

impl ExecArgs {
    /// The instance, and the command as core (and the API's exec) takes it: on a terminal
    /// with `--tty` or when stdin is one, of this terminal's size.
    pub(crate) fn into_request(self) -> (String, ExecRequest) {
        let tty = self.tty || std::io::stdin().is_terminal();
        let request = ExecRequest {
            command: self.command,
            env: self.env,
            cwd: self.cwd,
            tty,
            agent: self.agent,
            window: tty.then(crate::terminal::current_size),
        };
        (self.name, request)
    }
}

/// The exit status of a command that exited with `code` (a shell's 128 + signal included).
pub(crate) fn exit_status(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

/// `corral exec`: runs a command in a running container, in its namespaces and cgroup, or in a
/// VM (or with `--agent`) through its guest agent.
pub fn exec(root: &Path, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    let (name, request) = args.into_request();
    if manager.execs_through_agent(&name, request.agent)? {
        return exec_through_agent(&manager, &name, request);
    }
    let command = corral_container::ExecCommand {
        argv: request.command,
        env: request.env,
        cwd: request.cwd.map(PathBuf::from),
        tty: request.tty,
    };
    Ok(exit_status(manager.exec_in_container(&name, &command)?))
}

/// `corral exec` in a VM (or with `--agent`): the command runs under the guest agent, with this process's stdin,
/// stdout and stderr streamed, or on a terminal in the guest (`--tty`, or stdin a terminal)
/// with this one raw meanwhile and its size followed; the exit status is the command's.
fn exec_through_agent(
    manager: &Manager,
    name: &str,
    request: ExecRequest,
) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let tty = request.tty;
    let mut env = request.env;
    if tty && !env.iter().any(|entry| entry.starts_with("TERM=")) {
        if let Ok(term) = std::env::var("TERM") {
            env.push(format!("TERM={term}"));
        }
    }
    let command = corral_agent::client::Command {
        argv: request.command,
        env,
        cwd: request.cwd,
        // Set exactly when the command is on a terminal (`into_request`).
        tty: request.window,
    };
    let resizes = if tty {
        crate::terminal::watch_resizes()?
    } else {
        None
    };
    let raw = if tty {
        Some(corral_control::console::RawMode::enable(stdin.as_fd())?)
    } else {
        None
    };
    let status = manager.exec_in_guest(
        name,
        &command,
        Some(Box::new(std::io::stdin())),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        resizes,
    );
    // The terminal is the user's again before any error is printed.
    drop(raw);
    Ok(ExitCode::from(status?.shell_code().clamp(0, 255) as u8))
}
