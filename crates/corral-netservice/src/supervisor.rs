//! `corral network-service DIR`: the supervisor of one network's dnsmasq.
//!
//! It starts dnsmasq, waits until it answers, then serves the control socket; dnsmasq is
//! restarted when it dies (with the brakes of instance supervisors' restart policies), SIGHUP
//! is passed on to it (re-read the reservations), and SIGTERM (or `shutdown`/`kill` on the
//! control socket) stops it and the supervisor. `exit.json` says why the supervisor ended.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use corral_control::exit::{ExitReason, ExitRecord};
use corral_control::restart::{monotonic_now, RestartLimit, Restarts, Verdict};
use corral_control::{After, Info, Request, Response, RunState, ServerLimits};
use corral_host::error_chain;
use nix::sys::signal::{SigSet, Signal};

use crate::config::ServiceConfig;
use crate::dnsmasq::{describe, Dnsmasq};
use crate::error::Error;
use crate::paths::StatePaths;

/// The body of `corral network-service STATE_DIR`: runs the service until it is stopped or
/// dnsmasq keeps failing, and records why it ended in `exit.json`.
pub fn run_supervisor(state_dir: &Path) -> Result<(), Error> {
    let paths = StatePaths::new(state_dir);
    let result = supervise(&paths);
    let record = match &result {
        Ok(()) => ExitRecord {
            reason: ExitReason::Stopped,
            code: None,
            detail: None,
        },
        Err(Error::GaveUp { detail, .. }) => ExitRecord {
            reason: ExitReason::RestartLimit,
            code: None,
            detail: Some(detail.clone()),
        },
        Err(err) => ExitRecord {
            reason: ExitReason::Failed,
            code: None,
            detail: Some(error_chain(err)),
        },
    };
    if let Err(err) = record.write(&paths.exit_record()) {
        tracing::warn!(
            "cannot record why the network service ended: {}",
            error_chain(&err)
        );
    }
    let _ = std::fs::remove_file(paths.control_socket());
    result
}

/// What the control connections report.
struct Shared {
    /// When dnsmasq last (re)started.
    started: Mutex<Instant>,
    restarts: AtomicU64,
}

fn supervise(paths: &StatePaths) -> Result<(), Error> {
    let config = ServiceConfig::load(paths)?;
    let program = crate::dnsmasq::find_program()?;
    let hook_exe = std::env::current_exe().map_err(Error::io("find", "the corral executable"))?;
    // Blocked before any thread starts, so every thread inherits the mask and the signals wait
    // for the loop below.
    let mut signals = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .map_err(Error::system("block signals"))?;
    let own_pid_ns = File::open("/proc/self/ns/pid")
        .map_err(Error::io("open", PathBuf::from("/proc/self/ns/pid")))?;

    let start = || Dnsmasq::start(&program, paths, &hook_exe, &own_pid_ns);
    let mut dnsmasq = start()?;
    if let Err(detail) = dnsmasq.wait_ready(config.gateway) {
        dnsmasq.stop();
        return Err(Error::StartFailed {
            dir: paths.dir().to_path_buf(),
            detail,
        });
    }
    let shared = Arc::new(Shared {
        started: Mutex::new(dnsmasq.started),
        restarts: AtomicU64::new(0),
    });
    let listener = match corral_control::bind(&paths.control_socket()) {
        Ok(listener) => listener,
        Err(source) => {
            dnsmasq.stop();
            return Err(Error::Control {
                dir: paths.dir().to_path_buf(),
                source,
            });
        }
    };
    let handler_state = shared.clone();
    corral_control::serve(listener, ServerLimits::default(), move |request| {
        handle(&handler_state, request)
    });
    tracing::info!(
        "network {}: dnsmasq serves {}",
        config.network,
        config.bridge
    );

    let mut restarts = Restarts::default();
    loop {
        let signal = signals.wait().map_err(Error::system("wait for signals"))?;
        match signal {
            Signal::SIGTERM | Signal::SIGINT => {
                dnsmasq.stop();
                return Ok(());
            }
            Signal::SIGHUP => {
                tracing::info!("network {}: re-reading the reservations", config.network);
                dnsmasq.signal(Signal::SIGHUP);
            }
            Signal::SIGCHLD => {
                let Some(status) = dnsmasq.try_wait() else {
                    continue;
                };
                let detail = format!("dnsmasq {}", describe(status));
                let ran_for = dnsmasq.started.elapsed();
                match restarts.next(RestartLimit::default(), monotonic_now(), ran_for) {
                    Verdict::RestartAfter(wait) => {
                        tracing::warn!("{detail}; restarting it in {} ms", wait.as_millis());
                        std::thread::sleep(wait);
                        dnsmasq = start()?;
                        *shared.started.lock().unwrap_or_else(|p| p.into_inner()) = dnsmasq.started;
                        shared.restarts.fetch_add(1, Ordering::SeqCst);
                    }
                    Verdict::GiveUp => {
                        return Err(Error::GaveUp {
                            dir: paths.dir().to_path_buf(),
                            detail: format!("{detail}, restarted too often"),
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// Answers one control request. Stopping is SIGTERM to this process, which the main loop
/// handles once the answer is out.
fn handle(shared: &Shared, request: Request) -> (Response, After) {
    match request {
        Request::Status => (
            Response::State {
                state: RunState::Running,
            },
            After::Continue,
        ),
        Request::Info => {
            let started = *shared.started.lock().unwrap_or_else(|p| p.into_inner());
            let info = Info {
                kind: "network".into(),
                state: RunState::Running,
                pid: std::process::id(),
                uptime_secs: started.elapsed().as_secs_f64(),
                restarts: shared.restarts.load(Ordering::SeqCst),
                vcpus: None,
                memory_bytes: None,
                counters: BTreeMap::new(),
                migration: None,
            };
            (Response::Info(info), After::Continue)
        }
        Request::Shutdown { .. } | Request::Kill => (
            Response::State {
                state: RunState::Stopping,
            },
            After::Then(Box::new(|| {
                // To the process, not this thread: the main loop's sigwait takes it.
                let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGTERM);
            })),
        ),
        Request::Pause | Request::Resume => (
            Response::Error {
                message: "a network service cannot be paused; stop it instead".into(),
            },
            After::Continue,
        ),
        Request::Snapshot { .. } => (
            Response::Error {
                message: "a network service has no state to snapshot; stop and start it instead"
                    .into(),
            },
            After::Continue,
        ),
        Request::Migrate { .. } => (
            Response::Error {
                message: "a network service does not migrate; define the network on the other \
                          host and start it there"
                    .into(),
            },
            After::Continue,
        ),
    }
}
