//! The VMM's side of the control socket: the state the requests act on, and the server threads.

use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corral_control::{After, Info, MigrationProgress, Request, Response, RunState, ServerLimits};

use crate::devices::bus::lock;
use crate::devices::legacy::i8042::I8042;
use crate::devices::virtio::block_counters::BlockCounters;
use crate::exit::{ExitReason, StopEvent, StopSender, VmmEvent};
use crate::migration::{Address, MigrateParams, MigrateRequest};
use crate::seccomp::{self, ThreadClass};
use crate::snapshot::SnapshotRequest;
use crate::vstate::vcpu::{ExitCounters, Target, VcpuControl};

/// How long `shutdown` waits for the guest before forcing it off, unless the request says.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

struct Boot {
    started: Instant,
    /// Counts guest boots in this process (1 for the first).
    generation: u64,
}

/// What the control requests act on; lives as long as the VMM.
pub struct Runtime {
    pub vcpu_control: Arc<VcpuControl>,
    pub counters: Arc<ExitCounters>,
    stop: StopSender,
    /// The main thread, which takes snapshots.
    main: Mutex<mpsc::Sender<VmmEvent>>,
    i8042: Arc<Mutex<I8042>>,
    boot: Mutex<Boot>,
    stopping: AtomicBool,
    /// A `kill` arrived: whatever the guest does next, the VM ends as killed.
    killed: AtomicBool,
    /// A snapshot is being written or a migration is stopping the VM: the vCPUs must stay
    /// paused until it ends (for good once migrated).
    snapshotting: AtomicBool,
    vcpus: u8,
    memory_bytes: u64,
    /// Each disk's counters, by device name.
    disk_counters: Vec<(String, Arc<BlockCounters>)>,
    /// Where a migration under way stands (the main thread updates it after each pass).
    pub migration: Arc<Mutex<Option<MigrationProgress>>>,
}

impl Runtime {
    pub fn new(
        stop: StopSender,
        main: mpsc::Sender<VmmEvent>,
        i8042: Arc<Mutex<I8042>>,
        vcpus: u8,
        memory_bytes: u64,
        disk_counters: Vec<(String, Arc<BlockCounters>)>,
    ) -> Runtime {
        Runtime {
            vcpu_control: Arc::new(VcpuControl::default()),
            counters: Arc::new(ExitCounters::default()),
            stop,
            main: Mutex::new(main),
            i8042,
            boot: Mutex::new(Boot {
                started: Instant::now(),
                generation: 0,
            }),
            stopping: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            snapshotting: AtomicBool::new(false),
            vcpus,
            memory_bytes,
            disk_counters,
            migration: Arc::default(),
        }
    }

    /// Records that a new guest boot starts now.
    pub fn boot_started(&self) {
        let mut boot = lock(&self.boot);
        boot.started = Instant::now();
        boot.generation += 1;
    }

    /// True once a shutdown or kill was requested for the current boot.
    pub fn stop_requested(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// True once a kill was requested.
    pub fn kill_requested(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    fn state(&self) -> RunState {
        if self.stopping.load(Ordering::SeqCst) {
            return RunState::Stopping;
        }
        match self.vcpu_control.target() {
            Target::Run => RunState::Running,
            Target::Pause => RunState::Paused,
            Target::Stop => RunState::Stopping,
        }
    }

    fn answer_state(&self) -> (Response, After) {
        (
            Response::State {
                state: self.state(),
            },
            After::Continue,
        )
    }

    fn handle(self: &Arc<Self>, request: Request) -> (Response, After) {
        match request {
            Request::Status => self.answer_state(),
            Request::Info => (Response::Info(self.info()), After::Continue),
            Request::Pause => match self.vcpu_control.pause() {
                Ok(()) => self.answer_state(),
                Err(err) => (
                    Response::Error {
                        message: corral_host::error_chain(&err),
                    },
                    After::Continue,
                ),
            },
            Request::Resume if self.snapshotting.load(Ordering::SeqCst) => (
                Response::Error {
                    message: "a snapshot or a migration is under way; resume after it ends".into(),
                },
                After::Continue,
            ),
            Request::Resume => {
                self.vcpu_control.resume();
                self.answer_state()
            }
            Request::Shutdown { timeout_secs } => {
                let timeout = timeout_secs.map_or(DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_secs);
                self.shutdown(timeout);
                self.answer_state()
            }
            Request::Snapshot {
                to,
                leave_paused,
                diff,
            } => (self.snapshot(to, leave_paused, diff), After::Continue),
            Request::Migrate {
                to,
                token,
                downtime_limit_ms,
                max_iterations,
                max_seconds,
            } => {
                let to = match to.parse::<Address>() {
                    Ok(to) => to,
                    Err(err) => return error_answer(&err),
                };
                self.migrate(MigrateParams {
                    to,
                    token,
                    downtime_limit: downtime_limit_ms
                        .map_or(MigrateParams::DEFAULT_DOWNTIME_LIMIT, Duration::from_millis),
                    max_iterations: max_iterations.unwrap_or(MigrateParams::DEFAULT_MAX_ITERATIONS),
                    max_time: max_seconds
                        .map_or(MigrateParams::DEFAULT_MAX_TIME, Duration::from_secs),
                })
            }
            Request::Kill => {
                self.stopping.store(true, Ordering::SeqCst);
                self.killed.store(true, Ordering::SeqCst);
                let stop = self.stop.clone();
                let answer = Response::State {
                    state: RunState::Stopping,
                };
                let kill = move || {
                    stop.send(StopEvent::new(
                        ExitReason::Killed,
                        "killed through the control socket",
                    ))
                };
                (answer, After::Then(Box::new(kill)))
            }
        }
    }

    /// Has the main thread save the VM into `dir`; answers with the state afterwards.
    fn snapshot(&self, dir: std::path::PathBuf, leave_paused: bool, diff: bool) -> Response {
        let (reply, answer) = mpsc::channel();
        let request = SnapshotRequest {
            dir,
            leave_paused,
            diff,
            reply,
        };
        // One at a time: a second one waits here rather than in the main thread's queue.
        let main = lock(&self.main);
        self.snapshotting.store(true, Ordering::SeqCst);
        let done = main
            .send(VmmEvent::Snapshot(request))
            .ok()
            .and_then(|()| answer.recv().ok());
        self.snapshotting.store(false, Ordering::SeqCst);
        drop(main);
        match done {
            Some(Ok(())) => Response::State {
                state: self.state(),
            },
            Some(Err(err)) => Response::Error {
                message: corral_host::error_chain(&err),
            },
            None => Response::Error {
                message: "the VMM is exiting; no snapshot was taken".into(),
            },
        }
    }

    /// Has the main thread migrate the VM; answers with what it measured, after which the VMM
    /// ends, or with why the VM still runs here.
    fn migrate(&self, params: MigrateParams) -> (Response, After) {
        let (reply, answer) = mpsc::channel();
        let (answered, answer_written) = mpsc::channel();
        let request = MigrateRequest {
            params,
            reply,
            answered: answer_written,
        };
        // One at a time, with snapshots.
        let main = lock(&self.main);
        self.snapshotting.store(true, Ordering::SeqCst);
        let done = main
            .send(VmmEvent::Migrate(request))
            .ok()
            .and_then(|()| answer.recv().ok());
        drop(main);
        match done {
            // The VM runs elsewhere now: it never resumes here.
            Some(Ok(report)) => (
                Response::Migrated(report),
                After::Then(Box::new(move || {
                    let _ = answered.send(());
                })),
            ),
            Some(Err(err)) => {
                self.snapshotting.store(false, Ordering::SeqCst);
                error_answer(&err)
            }
            None => {
                self.snapshotting.store(false, Ordering::SeqCst);
                (
                    Response::Error {
                        message: "the VMM is exiting; the VM was not migrated".into(),
                    },
                    After::Continue,
                )
            }
        }
    }

    /// Presses Ctrl-Alt-Del and forces the VM off if it still runs after `timeout`. The request
    /// holds across a guest reboot that raced with it: the run ends either way.
    fn shutdown(self: &Arc<Self>, timeout: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        lock(&self.i8042).press_ctrl_alt_del();
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            // If the VM has ended meanwhile, nobody reads this any more.
            stop.send(StopEvent::new(
                ExitReason::Killed,
                format!("the guest did not shut down within {timeout:?} of Ctrl-Alt-Del"),
            ));
        });
    }

    fn info(&self) -> Info {
        let boot = lock(&self.boot);
        Info {
            kind: "vm".into(),
            state: self.state(),
            pid: std::process::id(),
            uptime_secs: boot.started.elapsed().as_secs_f64(),
            restarts: boot.generation.saturating_sub(1),
            vcpus: Some(u32::from(self.vcpus)),
            memory_bytes: Some(self.memory_bytes),
            counters: {
                let mut counters = self.counters.snapshot();
                for (device, disk) in &self.disk_counters {
                    disk.named(device, &mut counters);
                }
                counters
            },
            migration: lock(&self.migration).clone(),
        }
    }
}

fn error_answer(err: &dyn std::error::Error) -> (Response, After) {
    (
        Response::Error {
            message: corral_host::error_chain(err),
        },
        After::Continue,
    )
}

/// Serves the control socket on a background thread, one thread per connection (all confined
/// to the control threads' seccomp filter, which the connection threads inherit).
pub fn serve(listener: UnixListener, runtime: Arc<Runtime>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            seccomp::enter(ThreadClass::Control);
            corral_control::run_server(listener, ServerLimits::default(), move |request| {
                runtime.handle(request)
            });
        })
        .map(drop)
}
