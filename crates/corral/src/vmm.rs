//! `corral vmm`: run one VM in this process (`run`), talk to a running one (`control`), or
//! merge snapshots (`snapshot merge`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use corral_control::{Client, Request, Response};
use corral_vmm::migration::Address;

#[derive(clap::Subcommand)]
pub enum VmmCommand {
    /// Boot a kernel and run the VM until it stops; the exit status tells how it stopped
    /// (0 poweroff or the guest's debug-exit byte, 3 reboot, 4 crashed, 5 killed, 6 restart
    /// limit reached, 1 error).
    Run(Box<corral_vmm_cli::RunArgs>),
    /// Send one request to a running VMM's control socket and print the JSON answer.
    Control {
        /// The VMM's control socket.
        socket: PathBuf,
        #[command(subcommand)]
        request: ControlRequest,
    },
    /// Work on snapshot directories.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(clap::Subcommand)]
pub enum SnapshotCommand {
    /// Lay the diff snapshot DIFF over the full snapshot BASE it was taken after, into a new
    /// full snapshot in DIR (BASE and DIFF are left as they are).
    Merge {
        base: PathBuf,
        diff: PathBuf,
        /// Where the merged snapshot goes (a new or empty directory).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
}

#[derive(clap::Subcommand)]
pub enum ControlRequest {
    /// The VM's run state.
    Status,
    /// The run state with the supervisor pid, uptime, restarts and vCPUs.
    Info,
    /// Freeze the vCPUs.
    Pause,
    /// Continue paused vCPUs.
    Resume,
    /// Ctrl-Alt-Del to the guest, forced off after the timeout.
    Shutdown {
        #[arg(long)]
        timeout_secs: Option<u64>,
    },
    /// Force the VM off at once.
    Kill,
    /// Move the VM live to a VMM waiting with `run --incoming ADDR`: memory copied while the
    /// guest runs, then a short pause for the rest; this VMM exits once the destination runs
    /// the VM, and keeps running it if anything fails. Needs --track-dirty-pages.
    Migrate {
        /// unix:PATH or tcp:IP:PORT.
        #[arg(long, value_name = "ADDR")]
        to: Address,
        /// The destination's --migration-token.
        #[arg(
            long,
            conflicts_with = "token_file",
            required_unless_present = "token_file"
        )]
        token: Option<String>,
        /// Read the token from this file (its first line).
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        limits: crate::migrate::PrecopyLimits,
    },
    /// Pause, save the VM into DIR (`state` and `memory`; DIR must be new or empty), resume.
    Snapshot {
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Stay paused after saving (e.g. before killing the VMM to restore elsewhere).
        #[arg(long)]
        leave_paused: bool,
        /// Save only the memory pages written since the last snapshot (needs a VM run with
        /// --track-dirty-pages); `corral vmm snapshot merge` makes it restorable.
        #[arg(long)]
        diff: bool,
    },
}

pub fn run(command: VmmCommand) -> anyhow::Result<ExitCode> {
    match command {
        VmmCommand::Run(args) => corral_vmm_cli::run(*args),
        VmmCommand::Control { socket, request } => control(socket, request),
        VmmCommand::Snapshot(SnapshotCommand::Merge { base, diff, to }) => {
            corral_vmm::snapshot::merge(&base, &diff, &to)?;
            Ok(ExitCode::SUCCESS)
        }
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
        ControlRequest::Migrate {
            to,
            token: inline,
            token_file,
            limits:
                crate::migrate::PrecopyLimits {
                    downtime_limit,
                    max_iterations,
                    max_time,
                },
        } => Request::Migrate {
            to: match to {
                // The VMM may run in another working directory: send a full path.
                Address::Unix(path) => Address::Unix(std::path::absolute(path)?),
                tcp => tcp,
            }
            .to_string(),
            token: corral_vmm_cli::token(inline.as_deref(), token_file.as_deref())?
                .context("migrate needs --token or --token-file")?,
            downtime_limit_ms: downtime_limit.map(|limit| limit.as_millis() as u64),
            max_iterations,
            max_seconds: max_time.map(|time| time.as_secs()),
        },
        ControlRequest::Snapshot {
            to,
            leave_paused,
            diff,
        } => Request::Snapshot {
            // The VMM may run elsewhere (another working directory, a jail): send a full path.
            to: std::path::absolute(&to)?,
            leave_paused,
            diff,
        },
    };
    // A migration answers once it is over, which may take its whole time limit.
    let timeout = match &request {
        Request::Migrate { max_seconds, .. } => {
            Duration::from_secs(max_seconds.unwrap_or(120) + 90)
        }
        _ => Duration::from_secs(30),
    };
    let mut client = Client::connect(&socket, timeout)?;
    let progress = matches!(request, Request::Migrate { .. }).then(|| watch_migration(&socket));
    let response = client.call(&request);
    if let Some((done, watcher)) = progress {
        drop(done);
        let _ = watcher.join();
    }
    let response = response?;
    crate::output::print_json(&response)?;
    Ok(match response {
        Response::Error { .. } => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// Prints a running migration's progress to stderr, from `info` on another connection once a
/// second, until the returned sender is dropped.
fn watch_migration(
    socket: &std::path::Path,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let socket = socket.to_path_buf();
    let watcher = std::thread::spawn(move || {
        let mut last = None;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stop.recv_timeout(Duration::from_secs(1))
        {
            let info = Client::connect(&socket, Duration::from_secs(5))
                .and_then(|mut client| client.call(&Request::Info));
            let Ok(Response::Info(info)) = info else {
                continue;
            };
            let Some(progress) = info.migration else {
                continue;
            };
            if last.as_ref() != Some(&progress) {
                eprintln!("corral: {}", crate::migrate::describe(&progress));
                last = Some(progress);
            }
        }
    });
    (done, watcher)
}
