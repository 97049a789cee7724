//! `corral guest`: tools that run inside a machine (systemd-detect-virt, dbus-uuidgen, the
//! guest agent).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use corral_host::detect::{self, NativeCpuid};
use corral_host::fsroot::FsRoot;
use corral_host::machine_id::{self, Change};

use crate::output::{self, Format};

#[derive(Args)]
pub struct GuestArgs {
    #[command(subcommand)]
    command: GuestCommand,
}

#[derive(Subcommand)]
enum GuestCommand {
    /// Tell which hypervisor and container technology this machine runs in.
    ///
    /// Prints one id as systemd-detect-virt does (the container if any, else the hypervisor,
    /// else `none`) and exits 0 when virtualization was found, 1 when not.
    Detect {
        /// Only detect a hypervisor.
        #[arg(long, conflicts_with = "container")]
        vm: bool,
        /// Only detect a container.
        #[arg(long)]
        container: bool,
        /// Print nothing; only the exit status answers.
        #[arg(long, short)]
        quiet: bool,
        /// `json` also shows the evidence behind the answer.
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Show the machine-id; --ensure creates one, --regenerate replaces it.
    #[command(name = "machine-id")]
    MachineId {
        /// Create an id if /etc/machine-id or /var/lib/dbus/machine-id is missing or invalid.
        #[arg(long, conflicts_with = "regenerate")]
        ensure: bool,
        /// Write a new random id (what a clone needs).
        #[arg(long)]
        regenerate: bool,
        /// Work on the root filesystem at DIR instead of this machine's.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Reset this machine's identity before it is made a template (`corral sysprep`'s
    /// operations, run inside: for filesystems corral cannot edit offline).
    Sysprep {
        /// Work on the root filesystem at DIR instead of this machine's.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        #[command(flatten)]
        reset: crate::sysprep::ResetArgs,
    },
    /// Serve the host: corral's guest agent (exec, file push/pull, info, shutdown).
    ///
    /// Without options it listens where the host looks: on /run/corral-agent/agent.sock when
    /// /run/corral-agent exists (a system container, where corral bind-mounts that directory),
    /// else on vsock port 1024 (a VM). It runs with this process's rights and answers only the
    /// host. See docs/agent.md.
    Agent {
        /// Listen on this vsock port.
        #[arg(long, value_name = "PORT", conflicts_with = "unix")]
        vsock_port: Option<u32>,
        /// Listen on this unix socket.
        #[arg(long, value_name = "PATH")]
        unix: Option<PathBuf>,
    },
    /// Install this corral into a guest's root filesystem as /usr/local/bin/corral, started
    /// by the guest's init as `corral guest agent` (a systemd unit, or an /etc/inittab line).
    ///
    /// The binary is this one: it runs in the guest if the guest has the libraries it was
    /// linked with (none for a static build).
    #[command(name = "install-agent")]
    InstallAgent {
        /// The guest's root filesystem.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
    },
}

pub fn run(args: GuestArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        GuestCommand::Detect {
            vm,
            container,
            quiet,
            output,
        } => detect(vm, container, quiet, output),
        GuestCommand::MachineId {
            ensure,
            regenerate,
            root,
        } => machine_id(ensure, regenerate, &root),
        GuestCommand::Sysprep { root, reset } => {
            reset.run(|options| Ok(corral_sysprep::sysprep_rootfs(&root, options)?))
        }
        GuestCommand::Agent { vsock_port, unix } => agent(vsock_port, unix),
        GuestCommand::InstallAgent { root } => install_agent(&root),
    }
}

fn agent(vsock_port: Option<u32>, unix: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use corral_agent::server::{self, Listener};
    let container_socket = std::path::Path::new(corral_agent::CONTAINER_SOCKET);
    let (listener, address) = match (unix, vsock_port) {
        (Some(path), _) => (Listener::unix(&path)?, path.display().to_string()),
        (None, Some(port)) => (Listener::vsock(port)?, format!("vsock port {port}")),
        (None, None) if container_socket.parent().is_some_and(|dir| dir.is_dir()) => (
            Listener::unix(container_socket)?,
            container_socket.display().to_string(),
        ),
        (None, None) => (
            Listener::vsock(corral_agent::DEFAULT_VSOCK_PORT)?,
            format!("vsock port {}", corral_agent::DEFAULT_VSOCK_PORT),
        ),
    };
    tracing::info!("the guest agent listens on {address}");
    let agent = server::Agent::new();
    thaw_at_termination(&agent)?;
    server::serve(&listener, &agent)?;
    Ok(ExitCode::SUCCESS)
}

/// A freeze must not outlive the agent: SIGTERM, SIGINT and SIGHUP are taken by a thread that
/// thaws, then exits as the signal would have ended the agent.
fn thaw_at_termination(agent: &std::sync::Arc<corral_agent::server::Agent>) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(signal);
    }
    // Blocked before any other thread starts, so every thread inherits the mask and only
    // sigwait takes them.
    signals
        .thread_block()
        .context("cannot block the termination signals")?;
    let agent = std::sync::Arc::clone(agent);
    std::thread::spawn(move || {
        let signal = signals.wait();
        agent.thaw();
        let code = signal.map_or(1, |signal| 128 + signal as i32);
        std::process::exit(code);
    });
    Ok(())
}

fn detect(vm: bool, container: bool, quiet: bool, format: Format) -> anyhow::Result<ExitCode> {
    let detection = detect::detect(&FsRoot::new("/"), &NativeCpuid);
    let answer = if vm {
        detection.vm.as_deref()
    } else if container {
        detection.container.as_deref()
    } else {
        detection.primary()
    };
    if !quiet {
        match format {
            Format::Text => println!("{}", answer.unwrap_or("none")),
            Format::Json => output::print_json(&detection)?,
        }
    }
    Ok(if answer.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn machine_id(ensure: bool, regenerate: bool, root: &std::path::Path) -> anyhow::Result<ExitCode> {
    let root = FsRoot::new(root);
    if !ensure && !regenerate {
        println!("{}", machine_id::show(&root)?);
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = if regenerate {
        machine_id::regenerate(&root)?
    } else {
        machine_id::ensure(&root)?
    };
    for change in &outcome.changes {
        match change {
            Change::Created { path } => eprintln!("created {path}"),
            Change::Replaced { path, previous } => {
                eprintln!("replaced {previous:?} in {path}")
            }
            Change::Linked { path, target } => eprintln!("linked {path} -> {target}"),
        }
    }
    println!("{}", outcome.id);
    Ok(ExitCode::SUCCESS)
}

fn install_agent(root: &std::path::Path) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let (init, written) = corral_agent::install::install(root, &exe)?;
    for path in written {
        eprintln!("wrote {path}");
    }
    if !corral_agent::install::is_static(&exe)? {
        eprintln!(
            "note: this corral is not a static executable: the agent runs in the guest only if \
             it has the libraries this corral was linked with (glibc, libseccomp, liblzma); \
             scripts/build-static.sh builds a static one"
        );
    }
    println!(
        "installed the guest agent in {}: {}",
        root.display(),
        init.describe()
    );
    Ok(ExitCode::SUCCESS)
}
