//! `corral oci`: the container engine behind runc's command line, so podman, conmon and
//! containerd can use corral as their OCI runtime.
//!
//! The same interface answers without the `oci` word when the binary is invoked under a
//! runtime's name: a `corral-oci` (or `runc`) symlink to `corral` behaves as `corral oci`, which is
//! what `podman --runtime /path/to/corral-oci` needs.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use corral_container::spec::validate_process;
use corral_container::state::OCI_VERSION;
use corral_container::user::UserIds;
use corral_container::{
    CheckpointOptions, Container, CreateOptions, ExecOptions, RestoreOptions, DEFAULT_STATE_ROOT,
};
use oci_spec::runtime::{Process, Spec, UserBuilder};

/// Program names under which `corral` speaks the runtime interface directly.
const RUNTIME_NAMES: [&str; 2] = ["corral-oci", "runc"];

/// Global options, named and placed as runc's are (before the command).
#[derive(Args, Debug)]
pub struct OciArgs {
    /// Directory for container state (runc: /run/runc).
    #[arg(long, global = true, default_value = DEFAULT_STATE_ROOT)]
    root: PathBuf,
    /// Also write errors to this file (conmon reads it when a command fails).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of the --log file.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Accepted for runc compatibility: more logging comes from CORRAL_LOG=debug.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for runc compatibility; corral manages cgroupfs paths only.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    /// Print the runtime and spec versions.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<OciCommand>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum ListFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the terminal's master (SCM_RIGHTS), when process.terminal is set.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// File to write the init's host pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Pass descriptors 3..3+N on to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for runc compatibility (corral always uses pivot_root).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for runc compatibility (corral creates no session keyring).
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    id: String,
}

#[derive(Subcommand, Debug)]
enum OciCommand {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Run the user process of a created container.
    Start { id: String },
    /// Print a container's state as the runtime spec's JSON.
    State { id: String },
    /// Send a signal (default TERM) to the container's init, or with --all to all its processes.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a stopped container (--force kills a running one first). What a create killed
    /// midway left behind is deleted too; with --force an unknown id is not an error (as runc).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container; waits for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run another process in a running container.
    Exec(Box<ExecArgs>),
    /// List the processes of a container.
    Ps {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        id: String,
        /// ps(1) options are accepted and ignored; corral prints pids and commands.
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        ps_args: Vec<String>,
    },
    /// Freeze all processes of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List containers.
    List {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a starter config.json into the bundle directory.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Print what this runtime supports (the runtime spec's features document).
    Features,
    /// Checkpoint a running container with CRIU (runc's flags); it is deleted afterwards unless
    /// --leave-running. Refused with CRIU's reason where `criu check` fails.
    Checkpoint(CheckpointArgs),
    /// Restore a container from a checkpoint with CRIU (runc's flags); it runs at once, and
    /// without --detach the command waits for it.
    Restore(RestoreArgs),
    /// Print a container's resource usage once as JSON (runc's `events --stats`).
    Events {
        /// Required: corral reports statistics, not an event stream.
        #[arg(long)]
        stats: bool,
        id: String,
    },
}

#[derive(Args, Debug)]
struct ExecArgs {
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Extra environment, NAME=value.
    #[arg(short, long)]
    env: Vec<String>,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// uid[:gid] to run as.
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// A process.json (the spec's process object) describing what to run.
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long = "process-label")]
    process_label: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long)]
    apparmor: Option<String>,
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    /// Extra capabilities (CAP_NAME).
    #[arg(short, long)]
    cap: Vec<String>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    /// Accepted for runc compatibility; exec joins the container's cgroup.
    #[arg(long)]
    cgroup: Option<String>,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// runc's switches shared by `checkpoint` and `restore`, passed on to CRIU.
#[derive(Args, Debug)]
struct CriuSwitches {
    /// Path for CRIU's image files (runc's default: ./checkpoint).
    #[arg(long = "image-path", default_value = "checkpoint")]
    image_path: PathBuf,
    /// Path for CRIU's work files and log (default: the image path).
    #[arg(long = "work-path")]
    work_path: Option<PathBuf>,
    /// Allow open TCP connections.
    #[arg(long = "tcp-established")]
    tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long = "ext-unix-sk")]
    ext_unix_sk: bool,
    /// Allow shell jobs.
    #[arg(long = "shell-job")]
    shell_job: bool,
    /// Handle file locks.
    #[arg(long = "file-locks")]
    file_locks: bool,
}

impl CriuSwitches {
    fn flags(&self) -> corral_container::criu::CriuFlags {
        corral_container::criu::CriuFlags {
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            shell_job: self.shell_job,
            file_locks: self.file_locks,
        }
    }
}

#[derive(Args, Debug)]
struct CheckpointArgs {
    #[command(flatten)]
    criu: CriuSwitches,
    /// Leave the processes running after checkpointing.
    #[arg(long = "leave-running")]
    leave_running: bool,
    /// Refused: iterative checkpoints need soft-dirty memory tracking, which corral does not use.
    #[arg(long = "pre-dump")]
    pre_dump: bool,
    /// Refused with --pre-dump: the images of a previous pre-dump.
    #[arg(long = "parent-path")]
    parent_path: Option<PathBuf>,
    id: String,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    #[command(flatten)]
    criu: CriuSwitches,
    /// The bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Return once the container runs instead of waiting for it.
    #[arg(short, long)]
    detach: bool,
    /// File to write the restored init's host pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility; containers with a terminal are not restored.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Accepted for runc compatibility.
    #[arg(long = "no-subreaper")]
    no_subreaper: bool,
    id: String,
}

/// The parser used when the binary runs under a runtime name (`corral-oci`, `runc`).
#[derive(Parser, Debug)]
#[command(
    name = "corral-oci",
    about = "corral's OCI runtime (runc-compatible interface)",
    disable_version_flag = true
)]
struct RuntimeCli {
    #[command(flatten)]
    args: OciArgs,
}

/// True when the program was invoked as `corral-oci` or `runc`.
pub fn invoked_as_runtime() -> bool {
    std::env::args_os().next().is_some_and(|argv0| {
        Path::new(&argv0)
            .file_name()
            .is_some_and(|name| RUNTIME_NAMES.contains(&name.to_string_lossy().as_ref()))
    })
}

/// Runs the runtime interface (see [`invoked_as_runtime`]).
pub fn run_as_runtime() -> ExitCode {
    run(RuntimeCli::parse().args)
}

/// `corral oci ...`: runs the command and renders errors (also into --log, as runc does).
pub fn run(args: OciArgs) -> ExitCode {
    let log = args.log.clone().map(|path| (path, args.log_format));
    match dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            if let Some((path, format)) = log {
                log_error(&path, format, &err);
            }
            crate::output::report_error(&err)
        }
    }
}

fn log_error(path: &Path, format: LogFormat, err: &anyhow::Error) {
    let message = format!("{err:#}");
    let line = match format {
        LogFormat::Json => serde_json::json!({
            "level": "error",
            "msg": message,
            "time": corral_container::state::rfc3339_now(),
        })
        .to_string(),
        LogFormat::Text => format!("level=error msg={message:?}"),
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // The error still goes to stderr; a log write failure must not hide it.
        let _ = writeln!(file, "{line}");
    }
}

fn dispatch(args: OciArgs) -> anyhow::Result<ExitCode> {
    if args.version {
        println!(
            "corral version {}\nspec: {OCI_VERSION}",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let root = args.root;
    let Some(command) = args.command else {
        bail!("no command given; try `corral oci --help`");
    };
    match command {
        OciCommand::Create(create) => {
            corral_container::sealed_exe::ensure(&root)?;
            let container = create_container(&root, &create)?;
            drop(container);
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Start { id } => {
            Container::load(&root, &id)?.start()?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::State { id } => {
            crate::output::print_json(&Container::load(&root, &id)?.state())?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Kill { all, id, signal } => {
            let signal = corral_container::signal::parse_signal(&signal)?;
            Container::load(&root, &id)?.kill(signal, all)?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Delete { force, id } => {
            Container::delete_by_id(&root, &id, force)?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Run {
            create,
            detach,
            keep,
        } => {
            corral_container::sealed_exe::ensure(&root)?;
            run_container(&root, &create, detach, keep)
        }
        OciCommand::Exec(exec) => exec_container(&root, *exec),
        OciCommand::Ps {
            format,
            id,
            ps_args: _,
        } => {
            let pids = Container::load(&root, &id)?.processes()?;
            if format == ListFormat::Json {
                crate::output::print_json(&pids)?;
            } else {
                println!("{:>8} CMD", "PID");
                for pid in pids {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let command = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    println!("{pid:>8} {}", command.trim_end());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Pause { id } => {
            Container::load(&root, &id)?.pause()?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Resume { id } => {
            Container::load(&root, &id)?.resume()?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::List { format, quiet } => {
            list(&root, format, quiet)?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Spec { bundle } => {
            write_starter_spec(&bundle)?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Events { stats, id } => {
            if !stats {
                bail!("corral reports statistics only: use `events --stats {id}`");
            }
            let container = Container::load(&root, &id)?;
            let stats = container.stats()?;
            crate::output::print_json(
                &serde_json::json!({"type": "stats", "id": id, "data": stats}),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Features => {
            crate::output::print_json(&features())?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Checkpoint(args) => {
            let container = Container::load(&root, &args.id)?;
            container.checkpoint(&CheckpointOptions {
                image_path: args.criu.image_path.clone(),
                work_path: args.criu.work_path.clone(),
                leave_running: args.leave_running,
                pre_dump: args.pre_dump || args.parent_path.is_some(),
                flags: args.criu.flags(),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        OciCommand::Restore(args) => restore_container(&root, &args),
    }
}

/// `restore`: with --detach the container is left to the caller's subreaper (conmon), as after
/// `create`; otherwise this process waits for it, like `run`, and deletes it when it ends.
fn restore_container(root: &Path, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let mut container = Container::restore(RestoreOptions {
        root: root.to_path_buf(),
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        image_path: args.criu.image_path.clone(),
        work_path: args.criu.work_path.clone(),
        flags: args.criu.flags(),
    })?;
    if let Err(err) = write_pid_file(args.pid_file.as_deref(), container.pid()) {
        let _ = container.delete(true);
        return Err(err);
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    corral_container::foreground::forward_signals_to(container.pid());
    let code = container.wait()?;
    container.delete(true)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}

fn connect_console(path: Option<&Path>) -> anyhow::Result<Option<UnixStream>> {
    path.map(|p| corral_container::console::connect(p).map_err(anyhow::Error::from))
        .transpose()
}

fn write_pid_file(path: Option<&Path>, pid: i32) -> anyhow::Result<()> {
    if let Some(path) = path {
        corral_host::atomic::write_file(path, pid.to_string().as_bytes(), 0o644)
            .with_context(|| format!("cannot write the pid file {}", path.display()))?;
    }
    Ok(())
}

fn create_container(root: &Path, args: &CreateArgs) -> anyhow::Result<Container> {
    create_with_console(root, args, connect_console(args.console_socket.as_deref())?)
}

fn create_with_console(
    root: &Path,
    args: &CreateArgs,
    console: Option<UnixStream>,
) -> anyhow::Result<Container> {
    let container = Container::create(CreateOptions {
        root: root.to_path_buf(),
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        console,
        preserve_fds: args.preserve_fds,
        seccomp_cache: Some(root.join(corral_container::SECCOMP_CACHE_DIR)),
    })?;
    if let Err(err) = write_pid_file(args.pid_file.as_deref(), container.pid()) {
        // A container the caller cannot find by pid is of no use to it: undo.
        let _ = container.delete(true);
        return Err(err);
    }
    Ok(container)
}

fn run_container(
    root: &Path,
    args: &CreateArgs,
    detach: bool,
    keep: bool,
) -> anyhow::Result<ExitCode> {
    let bundle_spec = corral_container::spec::Bundle::load(&args.bundle)?.spec;
    let wants_terminal = bundle_spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    if detach && wants_terminal && args.console_socket.is_none() {
        bail!("a detached container with a terminal needs --console-socket");
    }
    let (console, local) =
        corral_container::foreground::console_for(wants_terminal, args.console_socket.as_deref())?;
    let mut container = create_with_console(root, args, console)?;
    let master = local
        .as_ref()
        .map(corral_container::foreground::receive_terminal)
        .transpose()?;
    if let Err(err) = container.start() {
        let _ = container.delete(true);
        return Err(err.into());
    }
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    corral_container::foreground::forward_signals_to(container.pid());
    if let Some(master) = &master {
        corral_container::console::relay(master)?;
    }
    let code = container.wait()?;
    if !keep {
        container.delete(true)?;
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}

fn exec_container(root: &Path, args: ExecArgs) -> anyhow::Result<ExitCode> {
    corral_container::sealed_exe::ensure(root)?;
    let container = Container::load(root, &args.id)?;
    let process = exec_process(&container, &args)?;
    let wants_terminal = process.terminal() == Some(true);
    let (console, local) =
        corral_container::foreground::console_for(wants_terminal, args.console_socket.as_deref())?;
    if args.detach && local.is_some() {
        bail!("a detached exec with a terminal needs --console-socket");
    }
    let options = ExecOptions {
        process,
        console,
        detach: args.detach || local.is_some(),
        preserve_fds: args.preserve_fds,
        ignore_paused: args.ignore_paused,
        forward_signals: !args.detach,
    };
    let outcome = container.exec(options)?;
    write_pid_file(args.pid_file.as_deref(), outcome.pid)?;
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(local) = &local {
        // With our own terminal the process was started detached; relay, then reap it through
        // /proc since it is no longer our child.
        let master = corral_container::foreground::receive_terminal(local)?;
        corral_container::foreground::forward_signals_to(outcome.pid);
        corral_container::console::relay(&master)?;
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ExitCode::from(
        u8::try_from(outcome.exit_code.unwrap_or(255)).unwrap_or(255),
    ))
}

/// The process `exec` runs: `--process` as given, or the container's own process with the
/// command line and flags applied (runc's behaviour).
fn exec_process(container: &Container, args: &ExecArgs) -> anyhow::Result<Process> {
    if let Some(path) = &args.process {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let process: Process = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid process description", path.display()))?;
        validate_process(&process)?;
        return Ok(process);
    }
    if args.command.is_empty() {
        bail!("exec needs a command to run (or --process FILE)");
    }
    let mut process = container.process_for(&corral_container::ExecCommand {
        argv: args.command.clone(),
        env: args.env.clone(),
        cwd: args.cwd.clone(),
        tty: args.tty,
    })?;
    if let Some(user) = &args.user {
        let ids: UserIds = user.parse().context("invalid --user")?;
        let built = UserBuilder::default()
            .uid(ids.uid)
            .gid(ids.gid)
            .additional_gids(args.additional_gids.clone())
            .build()?;
        process.set_user(built);
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if !args.cap.is_empty() {
        let mut capabilities = process.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            let cap: oci_spec::runtime::Capability = name
                .trim_start_matches("CAP_")
                .parse()
                .with_context(|| format!("unknown capability {name}"))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            capabilities.set_bounding(add(capabilities.bounding()));
            capabilities.set_effective(add(capabilities.effective()));
            capabilities.set_permitted(add(capabilities.permitted()));
        }
        process.set_capabilities(Some(capabilities));
    }
    Ok(process)
}

fn list(root: &Path, format: ListFormat, quiet: bool) -> anyhow::Result<()> {
    let containers = Container::list(root)?;
    if quiet {
        for container in &containers {
            println!("{}", container.id());
        }
        return Ok(());
    }
    let states: Vec<_> = containers.iter().map(Container::state).collect();
    if format == ListFormat::Json {
        return crate::output::print_json(&states);
    }
    let width = states.iter().map(|s| s.id.len()).max().unwrap_or(2).max(2);
    println!(
        "{:width$}   {:>8}   {:<8}   {:<40}   {:<30}   OWNER",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED"
    );
    for state in states {
        println!(
            "{:width$}   {:>8}   {:<8}   {:<40}   {:<30}   {}",
            state.id,
            state.pid,
            state.status.to_string(),
            state.bundle.display(),
            state.created,
            if state.owner.is_empty() {
                "root"
            } else {
                &state.owner
            }
        );
    }
    Ok(())
}

fn write_starter_spec(bundle: &Path) -> anyhow::Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists; remove it first", path.display());
    }
    let mut spec = Spec::default();
    spec.set_hostname(Some("corral".into()));
    spec.set_version(OCI_VERSION.into());
    let json = serde_json::to_vec_pretty(&spec)?;
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The runtime spec's features document for this build.
fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime",
            "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro",
            "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave",
            "strictatime", "suid", "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {"org.corral.version": env!("CARGO_PKG_VERSION")},
    })
}
