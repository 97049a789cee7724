//! `corral monitor DIR`: the supervisor of one container instance.
//!
//! It is the parent of the container's init: it creates the container with corral's engine,
//! relays the console (a pty, or pipes when the container has no terminal) to `console.log` and
//! to an attached client, serves the control protocol, reaps the init, applies the restart
//! policies and records the exit in `exit.json`.
//!
//! The engine creates a container by cloning the calling process, which must then be
//! single-threaded; so everything that needs threads starts after the create, and a restart
//! re-executes the monitor (same pid, fresh process image) instead of creating again.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_container::{Container, CreateOptions, RestoreOptions};
use corral_control::console::{ConsoleHub, DEFAULT_LOG_LIMIT};
use corral_control::exit::{ExitReason, ExitRecord};
use corral_control::policy::Action;
use corral_control::restart::{monotonic_now, Restarts, Verdict};
use corral_control::{After, Info, Request, Response, RunState, ServerLimits};
use corral_host::error_chain;
use nix::fcntl::{FcntlArg, FdFlag};
use nix::sys::signal::Signal;

use crate::container::ContainerDriver;
use crate::definition::Definition;
use crate::driver::InstancePaths;
use crate::error::CoreError;

/// Environment variables carrying the restart count and history across re-executions.
const RESTARTS_ENV: &str = "CORRAL_MONITOR_RESTARTS";
const RESTART_HISTORY_ENV: &str = "CORRAL_MONITOR_RESTART_HISTORY";
/// Shutdown timeout when the request names none.
const DEFAULT_SHUTDOWN_SECS: u64 = 30;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What happened to the container's init.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// Ended because the host asked (shutdown or kill).
    Stopped,
    Poweroff,
    Reboot,
    /// Ended on its own with a failure.
    Crash,
}

/// Classifies the init's exit. `code` follows the shell convention (128 + signal for a signal
/// death). A pid namespace's init that calls reboot(2) is killed by the kernel with SIGHUP
/// (restart) or SIGINT (power off / halt), which is how a system container reboots.
fn classify(code: i32, requested: bool, system: bool) -> Event {
    let signal = (code > 128).then(|| code - 128);
    match (requested, system, signal) {
        (true, _, _) => Event::Stopped,
        (_, true, Some(s)) if s == Signal::SIGHUP as i32 => Event::Reboot,
        (_, true, Some(s)) if s == Signal::SIGINT as i32 => Event::Poweroff,
        _ if code == 0 => Event::Poweroff,
        _ => Event::Crash,
    }
}

fn signal_name(number: i32) -> String {
    Signal::try_from(number)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {number}"))
}

/// The record of a run that ended with `event`.
fn exit_record(event: &Event, code: i32, system: bool, oom_kills: u64) -> ExitRecord {
    let signal = (code > 128).then(|| code - 128);
    match event {
        Event::Stopped => ExitRecord {
            reason: ExitReason::Stopped,
            code: Some(code),
            detail: None,
        },
        Event::Poweroff => ExitRecord {
            reason: if system {
                ExitReason::Poweroff
            } else {
                ExitReason::Exited
            },
            code: Some(code),
            detail: None,
        },
        Event::Reboot => ExitRecord {
            reason: ExitReason::Reboot,
            code: None,
            detail: None,
        },
        Event::Crash => match signal {
            Some(signal) => ExitRecord {
                reason: ExitReason::Crashed,
                code: Some(code),
                detail: Some(if oom_kills > 0 {
                    format!(
                        "killed by {} after running out of memory",
                        signal_name(signal)
                    )
                } else {
                    format!("killed by {}", signal_name(signal))
                }),
            },
            None => ExitRecord {
                reason: ExitReason::Exited,
                code: Some(code),
                detail: None,
            },
        },
    }
}

/// The policy for `event` from the definition.
fn policy(definition: &Definition, event: &Event) -> Action {
    match event {
        Event::Stopped => Action::Destroy,
        Event::Poweroff => definition.on_poweroff,
        Event::Reboot => definition.on_reboot,
        Event::Crash => definition.on_crash,
    }
}

/// State shared by the control connections.
struct Shared {
    engine_root: std::path::PathBuf,
    id: String,
    /// What a graceful stop sends the init (see [`crate::stop_signal`]).
    stop_signal: corral_container::signal::SignalNumber,
    cpus: u8,
    memory_bytes: u64,
    started: Instant,
    restarts: u64,
    run_state: Mutex<RunState>,
    stop_requested: AtomicBool,
}

impl Shared {
    fn container(&self) -> Result<Container, String> {
        Container::load(&self.engine_root, &self.id).map_err(|e| error_chain(&e))
    }

    fn handle(self: &Arc<Self>, request: Request) -> Response {
        let result = match request {
            Request::Status => Ok(()),
            Request::Info => return Response::Info(self.info()),
            Request::Pause => self
                .container()
                .and_then(|c| c.pause().map_err(|e| error_chain(&e)))
                .map(|()| {
                    *lock(&self.run_state) = RunState::Paused;
                }),
            Request::Resume => self
                .container()
                .and_then(|c| c.resume().map_err(|e| error_chain(&e)))
                .map(|()| {
                    *lock(&self.run_state) = RunState::Running;
                }),
            Request::Shutdown { timeout_secs } => self.stop(
                false,
                Duration::from_secs(timeout_secs.unwrap_or(DEFAULT_SHUTDOWN_SECS)),
            ),
            Request::Kill => self.stop(true, Duration::ZERO),
            Request::Snapshot { .. } => Err("snapshots of containers are not supported yet".into()),
            Request::Migrate { .. } => {
                Err("live migration of containers is not supported yet".into())
            }
        };
        match result {
            Ok(()) => Response::State {
                state: *lock(&self.run_state),
            },
            Err(message) => Response::Error { message },
        }
    }

    /// Asks the init to stop with its stop signal, or kills every
    /// process at once; a graceful stop becomes a kill after `timeout`.
    fn stop(self: &Arc<Self>, force: bool, timeout: Duration) -> Result<(), String> {
        self.stop_requested.store(true, Ordering::SeqCst);
        let Ok(container) = self.container() else {
            // Between two runs (waiting to restart): the flag keeps the next one from starting.
            *lock(&self.run_state) = RunState::Stopping;
            return Ok(());
        };
        // Frozen processes cannot act on a signal.
        if *lock(&self.run_state) == RunState::Paused {
            container.resume().map_err(|e| error_chain(&e))?;
        }
        *lock(&self.run_state) = RunState::Stopping;
        if force {
            return container
                .kill(Signal::SIGKILL, true)
                .map_err(|e| error_chain(&e));
        }
        container
            .kill(self.stop_signal, false)
            .map_err(|e| error_chain(&e))?;
        let shared = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            if let Ok(container) = shared.container() {
                // The container may have ended meanwhile; then there is nothing to kill.
                let _ = container.kill(Signal::SIGKILL, true);
            }
        });
        Ok(())
    }

    fn info(&self) -> Info {
        let mut counters = std::collections::BTreeMap::new();
        if let Ok(stats) = self
            .container()
            .and_then(|c| c.stats().map_err(|e| error_chain(&e)))
        {
            for (name, value) in [
                ("cpu_usage_ns", stats.cpu_usage_ns),
                ("memory_usage_bytes", stats.memory_usage_bytes),
                ("memory_max_usage_bytes", stats.memory_max_usage_bytes),
                ("pids_current", stats.pids_current),
                ("oom_kills", stats.oom_kills),
            ] {
                if let Some(value) = value {
                    counters.insert(name.to_string(), value);
                }
            }
        }
        Info {
            kind: "container".into(),
            state: *lock(&self.run_state),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            restarts: self.restarts,
            vcpus: Some(u32::from(self.cpus)),
            memory_bytes: Some(self.memory_bytes),
            counters,
            migration: None,
        }
    }
}

/// The monitor's option naming its seccomp cache (see [`run`]).
pub const SECCOMP_CACHE_OPTION: &str = "--seccomp-cache";

/// The container's standard streams as seen from the monitor.
struct GuestStreams {
    /// What the container prints.
    output: File,
    /// What the container reads.
    input: File,
}

/// Runs the container instance in `dir` until it ends for good. Returns after recording the exit;
/// a restart re-executes the monitor and does not return.
///
/// With `restore`, the container's processes are restored from those CRIU images (a stateful
/// snapshot) instead of being created; a restart after that run creates it afresh. Compiled
/// seccomp programs are kept in `seccomp_cache` when given. `command` is what precedes `DIR` on
/// this executable's command line (`["monitor"]` for corral, nothing for `corral-monitor`): a
/// restart runs it again so.
pub fn run(
    dir: &Path,
    restore: Option<&Path>,
    seccomp_cache: Option<&Path>,
    command: &[&str],
) -> Result<(), CoreError> {
    let paths = InstancePaths::new(dir);
    // The container's init is a clone of this process: run from a sealed copy of the binary
    // (this re-executes the monitor once, before it does anything).
    corral_container::sealed_exe::ensure(&ContainerDriver::engine_root(&paths))?;
    let definition_path = dir.join("instance.toml");
    let text = std::fs::read_to_string(&definition_path)
        .map_err(CoreError::io("read", &definition_path))?;
    let definition =
        Definition::from_toml(&text, &definition_path).map_err(crate::store::StoreError::from)?;
    let record_failure = |detail: String| {
        let record = ExitRecord {
            reason: ExitReason::Failed,
            code: None,
            detail: Some(detail),
        };
        // The error is returned as well; a lost record only loses the detail.
        let _ = record.write(&paths.exit_record());
    };
    match supervise(&definition, &paths, restore, seccomp_cache) {
        Ok(Some(Restart { count, history })) => {
            let mut again = corral_container::sealed_exe::self_command();
            again.args(command);
            if let Some(cache) = seccomp_cache {
                again.arg(SECCOMP_CACHE_OPTION).arg(cache);
            }
            let err = again
                .arg(dir)
                .env(RESTARTS_ENV, count.to_string())
                .env(RESTART_HISTORY_ENV, history.encode())
                .exec();
            record_failure(format!("cannot restart the monitor: {err}"));
            Err(CoreError::io("restart", dir)(err))
        }
        Ok(None) => Ok(()),
        Err(err) => {
            record_failure(error_chain(&err));
            Err(err)
        }
    }
}

/// A restart the policy asked for and the limit allows: the monitor runs again.
struct Restart {
    /// Restarts so far, this one included.
    count: u64,
    history: Restarts,
}

/// One run of the container; `Some` asks for a restart.
fn supervise(
    definition: &Definition,
    paths: &InstancePaths,
    restore: Option<&Path>,
    seccomp_cache: Option<&Path>,
) -> Result<Option<Restart>, CoreError> {
    let spec = definition.container.as_ref().ok_or_else(|| {
        CoreError::Unsupported(format!("instance {} is not a container", definition.name))
    })?;
    let restarts: u64 = std::env::var(RESTARTS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut history = std::env::var(RESTART_HISTORY_ENV)
        .map(|text| Restarts::decode(&text))
        .unwrap_or_default();
    let stop_signal = crate::stop_signal::for_container(spec, &paths.resolve(&spec.rootfs))?;
    let engine_root = ContainerDriver::engine_root(paths);
    // A monitor killed earlier may have left its container behind.
    if let Ok(stale) = Container::load(&engine_root, &definition.name) {
        stale.delete(true).map_err(CoreError::from)?;
    }

    // Single-threaded until the container exists (see the module documentation).
    let (mut container, streams) = if let Some(images) = restore {
        // The restored init's stdio that were pipes become these new pipes (see
        // `Container::restore`); a container with a terminal is refused by the engine.
        let pipes = StdioPipes::install()?;
        let restored = Container::restore(RestoreOptions {
            root: engine_root.clone(),
            id: definition.name.clone(),
            bundle: ContainerDriver::bundle_dir(paths),
            image_path: images.to_path_buf(),
            work_path: Some(
                paths
                    .runtime_dir()
                    .join(crate::snapshot::CRIU_RESTORE_WORK_DIR),
            ),
            flags: crate::snapshot::INSTANCE_CRIU_FLAGS,
        });
        let streams = pipes.restore()?;
        (restored.map_err(CoreError::from)?, streams)
    } else if spec.tty {
        let (engine_end, our_end) =
            UnixStream::pair().map_err(CoreError::io("create", "the console socket pair"))?;
        let container = Container::create(CreateOptions {
            root: engine_root.clone(),
            id: definition.name.clone(),
            bundle: ContainerDriver::bundle_dir(paths),
            console: Some(engine_end),
            preserve_fds: 0,
            seccomp_cache: seccomp_cache.map(Path::to_path_buf),
        })
        .map_err(CoreError::from)?;
        let master =
            corral_container::console::receive_fd(our_end.as_raw_fd()).map_err(CoreError::from)?;
        let input = File::from(
            master
                .try_clone()
                .map_err(CoreError::io("duplicate", "the terminal"))?,
        );
        (
            container,
            GuestStreams {
                output: File::from(master),
                input,
            },
        )
    } else {
        let pipes = StdioPipes::install()?;
        let created = Container::create(CreateOptions {
            root: engine_root.clone(),
            id: definition.name.clone(),
            bundle: ContainerDriver::bundle_dir(paths),
            console: None,
            preserve_fds: 0,
            seccomp_cache: seccomp_cache.map(Path::to_path_buf),
        });
        let streams = pipes.restore()?;
        (created.map_err(CoreError::from)?, streams)
    };

    fail::fail_point!("monitor.container-created");
    let hub = ConsoleHub::new(Some(&paths.console_log()), DEFAULT_LOG_LIMIT)?;
    let mut input = streams.input;
    hub.serve(&paths.console_socket(), move |bytes| {
        // The container may have closed its input; typing then goes nowhere, as on a console.
        let _ = input.write_all(bytes);
    })?;
    let mut output = streams.output;
    let mut sink = hub.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        // A pty master reads EIO once the last process holding the terminal has gone.
        while let Ok(read @ 1..) = output.read(&mut buffer) {
            let _ = sink.write_all(&buffer[..read]);
        }
    });

    let shared = Arc::new(Shared {
        engine_root,
        id: definition.name.clone(),
        stop_signal,
        cpus: definition.cpus,
        memory_bytes: definition.memory.0,
        started: Instant::now(),
        restarts,
        run_state: Mutex::new(RunState::Running),
        stop_requested: AtomicBool::new(false),
    });
    // Started before the control socket is served: `corral start` returns once the socket
    // answers, and what it started must then be running (a pause right after must find it so).
    if restore.is_none() {
        container.start().map_err(CoreError::from)?;
    }
    let listener = corral_control::bind(&paths.control_socket())?;
    let server = shared.clone();
    corral_control::serve(listener, ServerLimits::default(), move |request| {
        (server.handle(request), After::Continue)
    });

    let started = Instant::now();
    let code = container.wait().map_err(CoreError::from)?;
    let oom_kills = container
        .stats()
        .ok()
        .and_then(|s| s.oom_kills)
        .unwrap_or(0);
    let event = classify(
        code,
        shared.stop_requested.load(Ordering::SeqCst),
        spec.init,
    );
    tracing::info!(
        "container {} ended: {event:?} (code {code})",
        definition.name
    );
    container.delete(true).map_err(CoreError::from)?;
    let mut record = exit_record(&event, code, spec.init, oom_kills);
    if policy(definition, &event) == Action::Restart {
        let limit = definition.restart_limit;
        match history.next(limit, monotonic_now(), started.elapsed()) {
            Verdict::RestartAfter(wait) => {
                if !stop_requested_within(&shared, wait) {
                    return Ok(Some(Restart {
                        count: restarts + 1,
                        history,
                    }));
                }
                record = exit_record(&Event::Stopped, code, spec.init, oom_kills);
            }
            Verdict::GiveUp => {
                tracing::warn!(
                    "container {} ended ({}) again; not restarting it: its restart limit is {limit}",
                    definition.name,
                    record.reason
                );
                record = ExitRecord {
                    reason: ExitReason::RestartLimit,
                    detail: Some(format!(
                        "{limit} reached (restart_limit); the last run: {}",
                        record.detail.unwrap_or_else(|| describe_exit(code))
                    )),
                    code: record.code,
                };
            }
        }
    }
    // The run is over for good: its nics go now, not when a command next looks.
    crate::container_net::tear_down(paths);
    record.write(&paths.exit_record())?;
    for socket in [paths.control_socket(), paths.console_socket()] {
        let _ = std::fs::remove_file(socket);
    }
    Ok(None)
}

/// Waits `wait` before a restart; true when a shutdown or kill arrived meanwhile.
fn stop_requested_within(shared: &Shared, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if shared.stop_requested.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20).min(wait));
    }
    shared.stop_requested.load(Ordering::SeqCst)
}

/// How the init ended, for a detail line: its exit status, or the signal that killed it.
fn describe_exit(code: i32) -> String {
    match code {
        signalled if signalled > 128 => format!("killed by {}", signal_name(signalled - 128)),
        code => format!("exited with status {code}"),
    }
}

/// Pipes temporarily installed as the monitor's stdin/stdout/stderr, so the container's init
/// (cloned from the monitor) inherits them.
struct StdioPipes {
    saved: [OwnedFd; 3],
    input_write: OwnedFd,
    output_read: OwnedFd,
}

fn dup2(from: RawFd, to: RawFd) -> Result<(), CoreError> {
    // SAFETY: dup2 on descriptors this process owns; it only replaces `to`.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(CoreError::io("redirect", "standard streams")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

impl StdioPipes {
    fn install() -> Result<Self, CoreError> {
        let io = CoreError::io("set up", "the container's standard streams");
        // A copy numbered 3 or above, closed on exec (F_DUPFD_CLOEXEC).
        let dup = |fd: BorrowedFd<'_>| -> Result<OwnedFd, CoreError> {
            fd.try_clone_to_owned()
                .map_err(CoreError::io("save", "standard streams"))
        };
        let saved = [
            dup(std::io::stdin().as_fd())?,
            dup(std::io::stdout().as_fd())?,
            dup(std::io::stderr().as_fd())?,
        ];
        let (input_read, input_write) = nix::unistd::pipe().map_err(|e| io(e.into()))?;
        let (output_read, output_write) =
            nix::unistd::pipe().map_err(|e| CoreError::io("create", "a pipe")(e.into()))?;
        // Our own pipe ends stay out of the container.
        for fd in [&input_write, &output_read] {
            nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| {
                CoreError::io("set up", "the container's standard streams")(e.into())
            })?;
        }
        dup2(input_read.as_raw_fd(), 0)?;
        dup2(output_write.as_raw_fd(), 1)?;
        dup2(output_write.as_raw_fd(), 2)?;
        Ok(Self {
            saved,
            input_write,
            output_read,
        })
    }

    /// Puts the monitor's own streams back; returns the monitor's ends of the pipes.
    fn restore(self) -> Result<GuestStreams, CoreError> {
        for (fd, saved) in self.saved.iter().enumerate() {
            dup2(saved.as_raw_fd(), fd as RawFd)?;
        }
        Ok(GuestStreams {
            output: File::from(self.output_read),
            input: File::from(self.input_write),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_classified_like_a_machine() {
        assert_eq!(classify(0, false, false), Event::Poweroff);
        assert_eq!(classify(3, false, false), Event::Crash);
        assert_eq!(classify(128 + 9, false, false), Event::Crash);
        assert_eq!(classify(128 + 15, true, false), Event::Stopped);
        // reboot(2) in a pid namespace: SIGHUP restarts, SIGINT powers off.
        assert_eq!(classify(128 + 1, false, true), Event::Reboot);
        assert_eq!(classify(128 + 2, false, true), Event::Poweroff);
        assert_eq!(
            classify(128 + 1, false, false),
            Event::Crash,
            "only an init system reboots"
        );
    }

    #[test]
    fn records_name_the_signal_and_out_of_memory() {
        let crash = exit_record(&Event::Crash, 128 + 9, false, 1);
        assert_eq!(crash.reason, ExitReason::Crashed);
        assert_eq!(
            crash.detail.as_deref(),
            Some("killed by SIGKILL after running out of memory")
        );
        assert!(crash.is_crash());
        let exited = exit_record(&Event::Crash, 3, false, 0);
        assert_eq!(
            (exited.reason.clone(), exited.code),
            (ExitReason::Exited, Some(3))
        );
        assert!(!exited.is_crash());
        let poweroff = exit_record(&Event::Poweroff, 0, true, 0);
        assert_eq!(poweroff.reason, ExitReason::Poweroff);
    }
}
