//! The lifecycle verbs, identical for VMs and containers: the manager takes the instance lock,
//! reconciles recorded state with reality, launches or talks to the supervisor, and records the
//! new state. Only [`Driver`]s know the instance kinds.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use corral_control::exit::{ExitReason, ExitRecord};
use corral_control::journal::SupervisorOutput;
use corral_control::log::SUPERVISOR_LOG_ENV;
use corral_control::{Client, Info, Request, Response, RunState};
use nix::fcntl::{FcntlArg, FdFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::definition::{Definition, Kind};
use crate::driver::{Driver, InstancePaths};
use crate::error::CoreError;
use crate::lock::{InstanceLock, DEFAULT_LOCK_TIMEOUT};
use crate::state::{now_secs, process_alive, process_start_ticks, LastExit, State, Status};
use crate::store::{Store, StoreError};

/// How long a supervisor may take to serve its control socket after launch.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one control request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time a supervisor gets, after its own shutdown timeout, before it is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
/// The (hidden, global) option naming the descriptor of a supervisor's [`StartGate`]: an
/// argument rather than an environment variable, as a jailed VMM's environment is empty.
use corral_control::start_gate::START_GATE_OPTION;
/// How much of the end of a supervisor's log is read for the line that says why it failed.
const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// The default time a guest gets to shut down before it is forced off.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One line of `corral list`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub status: Status,
    pub cpus: u8,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
    /// The address corral knows for each nic that has one (see [`Manager::nic_status`]):
    /// never asked of the guest, so listing stays fast.
    #[schema(value_type = Vec<String>)]
    pub ipv4: Vec<std::net::Ipv4Addr>,
}

/// Where a start takes its guest from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StartFrom<'a> {
    /// A fresh boot.
    Boot,
    /// The guest state saved in this directory (a VM snapshot's).
    Saved(&'a Path),
    /// A live migration's source, through the VMM's incoming socket.
    Incoming(&'a crate::driver::Incoming),
}

/// One instance's name and how [`Manager::stop_many`] stopping, or [`Manager::kill_many`]
/// killing, it went.
pub type StopOutcome = (String, Result<State, CoreError>);

/// One instance's name and how [`Manager::start_many`] starting it went.
pub type StartOutcome = (String, Result<State, CoreError>);

/// One instance's name and how [`Manager::delete_many`] deleting it went.
pub type DeleteOutcome = (String, Result<(), CoreError>);

/// How many instances [`Manager::start_many`] starts, [`Manager::kill_many`] kills,
/// [`Manager::delete_many`] deletes and [`Manager::list`] reads, at once: each
/// mostly waits (for its lock, its supervisor's setup or answer), so more than the CPUs, but
/// bounded so a thousand names do not become a thousand threads and supervisors at work together.
const PARALLEL_INSTANCES: usize = 16;

/// Runs instances of both kinds.
pub struct Manager {
    store: Store,
    vm: Box<dyn Driver>,
    container: Box<dyn Driver>,
    lock_timeout: Duration,
    /// The corral binary, which runs the networks' DHCP/DNS supervisors.
    exe: PathBuf,
}

impl Manager {
    pub fn new(store: Store, vm: Box<dyn Driver>, container: Box<dyn Driver>) -> Self {
        Self {
            store,
            vm,
            container,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            exe: PathBuf::from("corral"),
        }
    }

    /// The manager of the corral root `root` with both drivers, whose supervisors are `exe`
    /// (the corral binary: `corral vmm run` and `corral monitor`), their disks in the root's
    /// default storage pool and their nics on its networks.
    pub fn open(root: &std::path::Path, exe: &std::path::Path) -> Result<Self, CoreError> {
        let store = Store::open(root)?;
        let pool = crate::volume::Pool::default_in(root);
        let networks = || crate::networks::networks_in(root);
        Ok(Self::new(
            store,
            Box::new(crate::vm::VmDriver::new(exe, pool.clone(), networks())),
            Box::new(
                crate::container::ContainerDriver::new(exe, pool, networks())
                    .with_seccomp_cache(root.join("cache").join("seccomp")),
            ),
        )
        .with_exe(exe))
    }

    /// Names the corral binary that provides `network-service` (`corral` on `PATH` otherwise).
    pub fn with_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.exe = exe.into();
        self
    }

    pub(crate) fn exe(&self) -> &Path {
        &self.exe
    }

    /// Changes how long a command waits for another one holding an instance's lock.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn driver(&self, kind: Kind) -> &dyn Driver {
        match kind {
            Kind::Vm => self.vm.as_ref(),
            Kind::Container => self.container.as_ref(),
        }
    }

    /// The shared files of instance `name` (which must exist).
    pub fn paths(&self, name: &str) -> Result<InstancePaths, CoreError> {
        Ok(InstancePaths::new(self.store.require(name)?))
    }

    /// Takes instance `name`'s lock, waiting as long as this manager is configured to.
    pub fn lock(&self, name: &str) -> Result<InstanceLock, CoreError> {
        Ok(self.store.lock(name, self.lock_timeout)?)
    }

    /// Defines a new instance; `populate` fills its directory first (e.g. copies a rootfs). What
    /// must be decided once (a VM disk's format) is recorded in the saved definition.
    pub fn create(
        &self,
        definition: &Definition,
        populate: impl FnOnce(&std::path::Path) -> Result<(), CoreError>,
    ) -> Result<(), CoreError> {
        let mut definition = definition.clone();
        let paths = InstancePaths::new(self.store.instance_dir(&definition.name));
        self.driver(definition.kind)
            .settle_definition(&mut definition, &paths)?;
        let driver = self.driver(definition.kind);
        self.store.create(&definition, |staging| {
            populate(staging)?;
            // Checked before the instance appears: one pointing at something missing is never
            // made, not even by a create killed on the way.
            driver.check_resources(&definition, &InstancePaths::new(staging))
        })?;
        Ok(())
    }

    /// Replaces the definition of an existing instance (the caller holds its lock), recording
    /// what must be decided once, like [`Manager::create`].
    pub fn save_definition(&self, definition: &Definition) -> Result<Definition, CoreError> {
        let mut definition = definition.clone();
        let paths = self.paths(&definition.name)?;
        self.driver(definition.kind)
            .settle_definition(&mut definition, &paths)?;
        self.store.save_definition(&definition)?;
        Ok(definition)
    }

    /// The instance's state with reality reconciled in (a dead supervisor is noticed and its exit
    /// recorded). Never waits: while another command holds the lock, the recorded state is shown.
    pub fn state(&self, name: &str) -> Result<State, CoreError> {
        match self.store.lock(name, Duration::ZERO) {
            Ok(_lock) => self.reconciled(name),
            Err(StoreError::Lock(_)) => Ok(self.store.state(name)?),
            Err(err) => Err(err.into()),
        }
    }

    /// Reads and reconciles the state; the caller holds the lock. What it finds happened by
    /// itself, so its events are attributed to nobody.
    pub(crate) fn reconciled(&self, name: &str) -> Result<State, CoreError> {
        crate::events::unattributed(|| self.reconcile(name))
    }

    fn reconcile(&self, name: &str) -> Result<State, CoreError> {
        let mut state = self.store.state(name)?;
        if !state.status.is_active() {
            return Ok(state);
        }
        let paths = self.paths(name)?;
        match state.pid {
            Some(pid) if process_alive(pid, state.pid_start_ticks) => {
                // Another client (or the guest) may have paused or resumed it, or a stop was
                // interrupted (no command is stopping it now: we hold the lock) before it asked.
                // (A supervisor restarting its guest says `stopping` for a moment: not adopted.)
                if let Ok(Response::State { state: run }) = self.call(&paths, &Request::Status) {
                    let status = status_of(run);
                    let adoptable = matches!(status, Status::Running | Status::Paused);
                    if adoptable && status != state.status {
                        state.status = status;
                        self.store.save_state(name, &state)?;
                    }
                }
            }
            Some(pid) => {
                let definition = self.store.definition(name)?;
                self.clean_up_run(&definition, &paths);
                let (status, exit) = exit_of(&paths, Some(pid));
                state.end(status, exit);
                self.store.save_state(name, &state)?;
            }
            None => {
                // A start interrupted before its supervisor was recorded: that supervisor never
                // ran (see `launch`), but the driver may have prepared for it (a VM's cgroup).
                let definition = self.store.definition(name)?;
                self.clean_up_run(&definition, &paths);
                state.end(
                    Status::Stopped,
                    LastExit {
                        reason: ExitReason::Failed,
                        code: None,
                        detail: Some("the start was interrupted".to_string()),
                        at: now_secs(),
                    },
                );
                self.store.save_state(name, &state)?;
            }
        }
        Ok(state)
    }

    pub(crate) fn call(
        &self,
        paths: &InstancePaths,
        request: &Request,
    ) -> Result<Response, CoreError> {
        let mut client = Client::connect(&paths.control_socket(), CONTROL_TIMEOUT)?;
        Ok(client.call(request)?)
    }

    /// Starts instance `name` and returns once its supervisor serves its control socket.
    pub fn start(&self, name: &str) -> Result<State, CoreError> {
        let _lock = self.lock(name)?;
        self.start_locked(name, None)
    }

    /// Starts every instance in `names` (up to [`PARALLEL_INSTANCES`] at a time), as
    /// [`Manager::start`] each; returns every outcome in the order of `names`. One that cannot
    /// start keeps none of the others from starting. A name given twice is started once, its
    /// outcome reported at its first place.
    pub fn start_many(&self, names: &[String]) -> Vec<StartOutcome> {
        crate::parallel::map(&first_of_each(names), PARALLEL_INSTANCES, |name| {
            (name.to_string(), self.start(name))
        })
    }

    /// Starts instance `name` (the caller holds its lock), from the guest state saved in
    /// `saved` when given (a VM snapshot's), else by booting it.
    pub(crate) fn start_locked(
        &self,
        name: &str,
        saved: Option<&Path>,
    ) -> Result<State, CoreError> {
        let from = match saved {
            Some(saved) => StartFrom::Saved(saved),
            None => StartFrom::Boot,
        };
        self.start_from(name, from)
    }

    /// Starts instance `name` (the caller holds its lock) as `from` says.
    pub(crate) fn start_from(&self, name: &str, from: StartFrom<'_>) -> Result<State, CoreError> {
        let mut state = self.reconciled(name)?;
        if state.status.is_active() {
            return Err(CoreError::AlreadyRunning(name.to_string()));
        }
        let definition = self.store.definition(name)?;
        let paths = self.paths(name)?;
        let driver = self.driver(definition.kind);
        driver.check_resources(&definition, &paths)?;
        let exit_path = paths.exit_record();
        match std::fs::remove_file(&exit_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CoreError::io("remove", exit_path)(e)),
        }
        // Before the state says `starting`: a host port in use refuses the start, changing
        // nothing; from here on every way a run ends releases them.
        self.check_unique_macs(&definition)?;
        self.apply_forwards(&definition)?;
        let reserved = self.reserve_fixed_addresses(&definition);
        state.status = Status::Starting;
        state.pid = None;
        if let Err(err) = reserved.and_then(|()| Ok(self.store.save_state(name, &state)?)) {
            self.release_forwards(&definition);
            self.release_fixed_addresses(&definition);
            return Err(err);
        }
        fail::fail_point!("start.state-starting");

        let command = match from {
            StartFrom::Boot => driver.supervisor_command(&definition, &paths),
            StartFrom::Saved(saved) => driver.restore_command(&definition, &paths, saved),
            StartFrom::Incoming(incoming) => driver.incoming_command(&definition, &paths, incoming),
        };
        let ready_timeout = match from {
            StartFrom::Incoming(incoming) => incoming.wait,
            _ => READY_TIMEOUT,
        };
        let launched = command
            .and_then(|command| launch(command, name, &paths, driver.log_path_in_environment()))
            .and_then(|(child, gate)| {
                fail::fail_point!("start.spawned");
                // Recorded before it may run: a start interrupted from here on (Ctrl-C,
                // kill -9) leaves a supervisor the next command finds and adopts or cleans up,
                // and one interrupted before never runs.
                state.pid = Some(child.id());
                state.pid_start_ticks = process_start_ticks(child.id());
                state.started_at = Some(now_secs());
                self.store.save_state(name, &state)?;
                gate.open()
                    .map_err(CoreError::io("start the supervisor", paths.dir.clone()))?;
                fail::fail_point!("start.pid-recorded");
                wait_ready(name, child, &paths, ready_timeout)
            });
        match launched {
            Ok(Launch::Ended(record)) => {
                // The guest ran and ended before the supervisor was seen serving (a guest that
                // powers off at once): a start that worked, and a run that is over.
                self.clean_up_run(&definition, &paths);
                let (status, exit) = exit_of(&paths, None);
                tracing::info!("instance {name} ended at once: {}", record.reason);
                state.end(status, exit);
                self.store.save_state(name, &state)?;
                Ok(state)
            }
            Ok(Launch::Running) => {
                state.status = Status::Running;
                self.store.save_state(name, &state)?;
                Ok(state)
            }
            Err(err) => {
                // A supervisor given up on may have left its guest's processes behind.
                self.clean_up_run(&definition, &paths);
                state.end(
                    Status::Stopped,
                    LastExit {
                        reason: ExitReason::Failed,
                        code: None,
                        detail: Some(corral_host::error_chain(&err)),
                        at: now_secs(),
                    },
                );
                self.store.save_state(name, &state)?;
                Err(err)
            }
        }
    }

    /// Asks the guest to shut down: through its agent when one answers at once (a VM's own
    /// init then stops its services), else through the supervisor (ACPI, Ctrl-Alt-Del, the
    /// stop signal); forces it off after `timeout`.
    pub fn stop(&self, name: &str, timeout: Duration) -> Result<State, CoreError> {
        let shutdown = Request::Shutdown {
            timeout_secs: Some(timeout.as_secs()),
        };
        if self.shut_down_through_agent(name) {
            // The guest is on its way down; past the timeout it is forced off.
            return self.end_run(name, Request::Kill, STOP_GRACE, Some(timeout));
        }
        self.end_run(name, shutdown, timeout + STOP_GRACE, None)
    }

    /// Stops every active instance gracefully, as [`Manager::stop_many`] (host shutdown:
    /// corral-autostart.service's stop).
    pub fn stop_all(&self, timeout: Duration) -> Result<Vec<StopOutcome>, CoreError> {
        let active: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|summary| summary.status.is_active())
            .map(|summary| summary.name)
            .collect();
        Ok(self.stop_many(&active, timeout))
    }

    /// Stops every instance in `names` gracefully, all at once so that the whole takes one
    /// `timeout` rather than one per instance. Returns each outcome in the order of `names` (a
    /// name given twice is stopped once); one that cannot be stopped does not keep the others up.
    pub fn stop_many(&self, names: &[String], timeout: Duration) -> Vec<StopOutcome> {
        let names = first_of_each(names);
        crate::parallel::map(&names, names.len(), |name| {
            (name.to_string(), self.stop(name, timeout))
        })
    }

    /// Forces every instance in `names` off, as [`Manager::kill`] each, up to
    /// [`PARALLEL_INSTANCES`] at a time; each outcome in the order of `names`, a name given twice
    /// killed once.
    pub fn kill_many(&self, names: &[String]) -> Vec<StopOutcome> {
        crate::parallel::map(&first_of_each(names), PARALLEL_INSTANCES, |name| {
            (name.to_string(), self.kill(name))
        })
    }

    /// Stops the guest at once (virsh destroy).
    pub fn kill(&self, name: &str) -> Result<State, CoreError> {
        self.end_run(name, Request::Kill, STOP_GRACE, None)
    }

    /// Ends the run with `request` to the supervisor, waiting `wait` for it to end; when the
    /// guest was already asked to end itself, `request` is sent only if it has not ended within
    /// `guest_ending`.
    fn end_run(
        &self,
        name: &str,
        request: Request,
        wait: Duration,
        guest_ending: Option<Duration>,
    ) -> Result<State, CoreError> {
        let _lock = self.lock(name)?;
        self.end_run_locked(name, request, wait, guest_ending)
    }

    /// [`Manager::end_run`] for a caller that holds the lock.
    pub(crate) fn end_run_locked(
        &self,
        name: &str,
        request: Request,
        wait: Duration,
        guest_ending: Option<Duration>,
    ) -> Result<State, CoreError> {
        let mut state = self.reconciled(name)?;
        if !state.status.is_active() {
            return Err(CoreError::NotRunning(name.to_string()));
        }
        let paths = self.paths(name)?;
        let definition = self.store.definition(name)?;
        state.status = Status::Stopping;
        self.store.save_state(name, &state)?;
        fail::fail_point!("stop.state-stopping");
        let pid = state.pid;
        let ended =
            guest_ending.is_some_and(|within| wait_for_exit(pid, state.pid_start_ticks, within));
        if !ended {
            // A supervisor that cannot be reached is killed below.
            let _ = self.call(&paths, &request);
        }
        fail::fail_point!("stop.requested");
        if !wait_for_exit(pid, state.pid_start_ticks, wait) {
            let _ = self.call(&paths, &Request::Kill);
            if !wait_for_exit(pid, state.pid_start_ticks, STOP_GRACE) {
                if let Some(pid) = pid {
                    // The pid was verified to be this instance's supervisor; it may have just
                    // exited (ESRCH), which is what the wait below finds out.
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    wait_for_exit(Some(pid), state.pid_start_ticks, STOP_GRACE);
                }
            }
        }
        // What the supervisor ran must not outlive it, whether it ended cleanly (a VMM cannot
        // remove its own cgroup) or was killed, or died on its way out.
        self.clean_up_run(&definition, &paths);
        let (status, exit) = exit_of(&paths, pid);
        // The host asked for the end: a guest that crashed on the way out is still stopped (the
        // exit record keeps saying it crashed).
        let status = if status == Status::Crashed && exit.reason != ExitReason::SupervisorLost {
            Status::Stopped
        } else {
            status
        };
        state.end(status, exit);
        self.store.save_state(name, &state)?;
        Ok(state)
    }

    /// Stops (gracefully, up to `timeout`) and starts again.
    pub fn restart(&self, name: &str, timeout: Duration) -> Result<State, CoreError> {
        match self.stop(name, timeout) {
            Ok(_) | Err(CoreError::NotRunning(_)) => {
                fail::fail_point!("restart.stopped");
                self.start(name)
            }
            Err(err) => Err(err),
        }
    }

    /// Forces instance `name` off (when it runs) and starts it again.
    pub fn force_restart(&self, name: &str) -> Result<State, CoreError> {
        match self.kill(name) {
            Ok(_) | Err(CoreError::NotRunning(_)) => {}
            Err(err) => return Err(err),
        }
        self.start(name)
    }

    /// Freezes all guest execution.
    pub fn pause(&self, name: &str) -> Result<State, CoreError> {
        self.set_run_state(name, Request::Pause)
    }

    /// Continues after `pause`.
    pub fn resume(&self, name: &str) -> Result<State, CoreError> {
        self.set_run_state(name, Request::Resume)
    }

    fn set_run_state(&self, name: &str, request: Request) -> Result<State, CoreError> {
        let _lock = self.lock(name)?;
        let mut state = self.reconciled(name)?;
        match (state.status, &request) {
            (Status::Running | Status::Paused, _) => {}
            (Status::Starting | Status::Stopping, _) => {
                return Err(CoreError::Unsupported(format!(
                    "instance {name} is {}; wait for it to finish",
                    state.status
                )))
            }
            _ => return Err(CoreError::NotRunning(name.to_string())),
        }
        if state.status == Status::Running && request == Request::Resume {
            return Err(CoreError::NotPaused(name.to_string()));
        }
        if state.status == Status::Paused && request == Request::Pause {
            return Err(CoreError::AlreadyPaused(name.to_string()));
        }
        let paths = self.paths(name)?;
        match self.call(&paths, &request)? {
            Response::State { state: run } => {
                state.status = status_of(run);
                self.store.save_state(name, &state)?;
                Ok(state)
            }
            Response::Error { message } => Err(CoreError::Refused {
                name: name.to_string(),
                request: format!("{request:?}").to_lowercase(),
                message,
            }),
            Response::Info(_) | Response::Migrated(_) => Err(CoreError::Refused {
                name: name.to_string(),
                request: format!("{request:?}").to_lowercase(),
                message: "unexpected answer".to_string(),
            }),
        }
    }

    /// Deletes the instance and its directory; a running one only with `force` (it is killed).
    pub fn delete(&self, name: &str, force: bool) -> Result<(), CoreError> {
        self.delete_instance(name, force)?;
        self.remove_unused_bases();
        Ok(())
    }

    /// Deletes every instance in `names` (up to [`PARALLEL_INSTANCES`] at a time), as
    /// [`Manager::delete`] each; returns every outcome in the order of `names`. One that cannot
    /// be deleted keeps none of the others. A name given twice is deleted once, its outcome
    /// reported at its first place.
    pub fn delete_many(&self, names: &[String], force: bool) -> Vec<DeleteOutcome> {
        let outcomes = crate::parallel::map(&first_of_each(names), PARALLEL_INSTANCES, |name| {
            (name.to_string(), self.delete_instance(name, force))
        });
        // Once, after all: each delete's own sweep would skip while another holds the bases'
        // lock, and could keep a base that the instances deleted together all used.
        self.remove_unused_bases();
        outcomes
    }

    /// [`Manager::delete`] without the sweep of unused bases.
    fn delete_instance(&self, name: &str, force: bool) -> Result<(), CoreError> {
        {
            let _lock = self.lock(name)?;
            let state = self.reconciled(name)?;
            if state.status.is_active() && !force {
                return Err(CoreError::Running(name.to_string()));
            }
        }
        if force {
            match self.kill(name) {
                Ok(_) | Err(CoreError::NotRunning(_)) => {}
                Err(err) => return Err(err),
            }
            fail::fail_point!("delete.killed");
        }
        let _lock = self.lock(name)?;
        if self.reconciled(name)?.status.is_active() {
            return Err(CoreError::Running(name.to_string()));
        }
        // What an earlier run left (a stopped VM's empty cgroup) goes with the instance.
        let definition = self.store.definition(name)?;
        self.clean_up_run(&definition, &self.paths(name)?);
        self.store.remove(name)?;
        Ok(())
    }

    /// Removes the bases of linked clones no instance uses any more (the last user was deleted).
    fn remove_unused_bases(&self) {
        crate::bases::Bases::in_root(self.store.root()).remove_unused(&self.store);
    }

    /// All instances, reconciled, sorted by name.
    pub fn list(&self) -> Result<Vec<Summary>, CoreError> {
        self.sweep_unreceived();
        // Each running instance's supervisor is asked how it is (`reconcile`): on a busy host
        // an answer waits for its thread to be scheduled, so the instances are asked together.
        let names = self.store.names()?;
        let summaries = crate::parallel::map(&names, PARALLEL_INSTANCES, |name| self.summary(name));
        summaries
            .into_iter()
            .filter_map(Result::transpose)
            .collect()
    }

    /// The summary of instance `name`, `None` if it is being deleted right now.
    fn summary(&self, name: &str) -> Result<Option<Summary>, CoreError> {
        let definition = match self.store.definition(name) {
            Ok(d) => d,
            // An instance being deleted right now is simply gone.
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let state = match self.state(name) {
            Ok(s) => s,
            Err(CoreError::Store(StoreError::NotFound(_))) => return Ok(None),
            Err(err) => return Err(err),
        };
        // A nic whose network went away has no address to show; the rest still list.
        let ipv4 = self
            .nic_status(name)
            .map(|nics| nics.into_iter().filter_map(|nic| nic.ip).collect())
            .unwrap_or_default();
        Ok(Some(Summary {
            name: name.to_string(),
            kind: definition.kind,
            status: state.status,
            cpus: definition.cpus,
            memory_bytes: definition.memory.0,
            uptime_secs: state.uptime_secs(),
            pid: state.pid,
            last_exit: state.last_exit,
            ipv4,
        }))
    }

    /// Live facts from the supervisor (counters, uptime), when the instance runs.
    pub fn live_info(&self, name: &str) -> Option<Info> {
        let paths = self.paths(name).ok()?;
        match self.call(&paths, &Request::Info) {
            Ok(Response::Info(info)) => Some(info),
            _ => None,
        }
    }
}

/// `names` without repeats, each at its first place.
fn first_of_each(names: &[String]) -> Vec<&String> {
    let mut unique: Vec<&String> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

fn status_of(run: RunState) -> Status {
    match run {
        RunState::Running => Status::Running,
        RunState::Paused => Status::Paused,
        RunState::Stopping => Status::Stopping,
    }
}

/// The state and exit a finished run ends in, from the supervisor's `exit.json`.
fn exit_of(paths: &InstancePaths, pid: Option<u32>) -> (Status, LastExit) {
    match ExitRecord::read(&paths.exit_record()) {
        Some(record) => (
            if record.is_crash() {
                Status::Crashed
            } else {
                Status::Stopped
            },
            LastExit {
                reason: record.reason,
                code: record.code,
                detail: record.detail,
                at: now_secs(),
            },
        ),
        None => (
            Status::Crashed,
            LastExit {
                reason: ExitReason::SupervisorLost,
                code: None,
                detail: Some(match pid {
                    Some(pid) => {
                        format!("the supervisor (pid {pid}) died without recording an exit")
                    }
                    None => "the supervisor died without recording an exit".to_string(),
                }),
                at: now_secs(),
            },
        ),
    }
}

/// Runs `command` detached: its own session, stdin from /dev/null, output to the journal under
/// `corral-NAME` when this process runs under systemd, else to the supervisor log (which the
/// supervisor rotates; it finds the log's path in its environment when
/// `log_path_in_environment`). The log is in `run/`, which a jailed VMM owns: it is opened
/// without following a link or waiting on a FIFO planted there. The supervisor waits at its
/// [`StartGate`] until the caller has recorded it.
fn launch(
    mut command: std::process::Command,
    name: &str,
    paths: &InstancePaths,
    log_path_in_environment: bool,
) -> Result<(Child, StartGate), CoreError> {
    let log_path = paths.supervisor_log();
    let output = SupervisorOutput::choose(&log_path, &journal_identifier(name))
        .map_err(CoreError::io("open", &log_path))?;
    if log_path_in_environment && !output.is_journal() {
        command.env(SUPERVISOR_LOG_ENV, &log_path);
    }
    output
        .attach(&mut command)
        .map_err(CoreError::io("open", &log_path))?;
    let (gate_read, gate_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| CoreError::io("create", "the supervisor's start gate")(e.into()))?;
    let gate_fd = gate_read.as_raw_fd();
    command
        .stdin(Stdio::null())
        .arg(START_GATE_OPTION)
        .arg(gate_fd.to_string());
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2) and
    // fcntl(2), which are async-signal-safe; `gate_fd` stays open in the parent until spawn
    // returns, so the child's copy is open while the closure borrows it.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid()?;
            let gate = std::os::fd::BorrowedFd::borrow_raw(gate_fd);
            nix::fcntl::fcntl(gate, FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(CoreError::io("start the supervisor", command.get_program()))?;
    drop(gate_read);
    Ok((child, StartGate(gate_write)))
}

/// The journal's `SYSLOG_IDENTIFIER` of instance `name`'s supervisor (`journalctl -t`).
fn journal_identifier(name: &str) -> String {
    format!("corral-{name}")
}

/// What a supervisor waits for before it does anything: the write end of a pipe whose read end
/// it inherits. The launching command writes one byte once it has recorded the supervisor's
/// pid; if that command dies first, the supervisor reads end-of-file and exits, so no
/// supervisor ever runs without being recorded.
struct StartGate(std::os::fd::OwnedFd);

impl StartGate {
    fn open(self) -> std::io::Result<()> {
        nix::unistd::write(&self.0, b"1")
            .map(drop)
            .map_err(std::io::Error::from)
    }
}

/// How a launch turned out.
enum Launch {
    /// The supervisor serves its control socket.
    Running,
    /// The guest already ran and ended, as its exit record says.
    Ended(ExitRecord),
}

/// Waits until the supervisor answers on its control socket. If it ends first, its exit record
/// says whether the guest ran (and ended at once) or could not start; the error then says why
/// (the record's detail or the last line of its log). Between tries it sleeps until a file
/// appears in the runtime directory (the socket) or the supervisor ends ([`ReadyWatch`]).
fn wait_ready(
    name: &str,
    mut child: Child,
    paths: &InstancePaths,
    timeout: Duration,
) -> Result<Launch, CoreError> {
    let deadline = Instant::now() + timeout;
    let pid = child.id();
    let watch = ReadyWatch::new(&paths.runtime_dir(), pid);
    let socket = paths.control_socket();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let record = ExitRecord::read(&paths.exit_record());
            if let Some(record) = record.clone().filter(|r| r.reason != ExitReason::Failed) {
                return Ok(Launch::Ended(record));
            }
            let detail = record
                .and_then(|r| r.detail)
                .or_else(|| last_log_line(paths))
                .unwrap_or_else(|| format!("the supervisor exited with {status}"));
            return Err(CoreError::StartFailed {
                name: name.to_string(),
                detail,
            });
        }
        let ready = Client::connect(&socket, CONTROL_TIMEOUT)
            .and_then(|mut c| c.call(&Request::Status))
            .is_ok();
        if ready {
            // Reap the supervisor if it ends while this process still lives (e.g. the API server).
            std::thread::spawn(move || child.wait());
            return Ok(Launch::Running);
        }
        let now = Instant::now();
        if now >= deadline {
            // Our own child, not reaped yet: the pid cannot be anyone else's.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = child.wait();
            return Err(CoreError::StartFailed {
                name: name.to_string(),
                detail: format!(
                    "the supervisor did not answer within {}s; see {}",
                    timeout.as_secs(),
                    paths.supervisor_log().display()
                ),
            });
        }
        // A socket already there is bound but not listening yet: that lasts microseconds.
        let pause = if socket.exists() {
            READY_RETRY
        } else {
            READY_POLL
        };
        watch.wait(pause.min(deadline - now));
    }
}

/// The longest [`wait_ready`] sleeps without news from its [`ReadyWatch`].
const READY_POLL: Duration = Duration::from_millis(20);
/// How soon [`wait_ready`] tries again a socket that exists but refused it.
const READY_RETRY: Duration = Duration::from_millis(1);

/// What wakes [`wait_ready`] as soon as there may be news: an inotify watch on the runtime
/// directory (the control socket appears there) and the supervisor's pidfd (readable once it
/// ends). Either may be missing (a kernel without pidfds, a directory that cannot be watched);
/// then the wait is a sleep, and the loop polls as it would without them.
struct ReadyWatch {
    inotify: Option<std::os::fd::OwnedFd>,
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl ReadyWatch {
    fn new(runtime_dir: &Path, pid: u32) -> Self {
        use rustix::fs::inotify;
        let inotify = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .ok()
            .filter(|fd| {
                let events = inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO;
                inotify::add_watch(fd, runtime_dir, events).is_ok()
            });
        let pidfd = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            });
        Self { inotify, pidfd }
    }

    /// Returns when a file appeared in the runtime directory or the supervisor ended, at the
    /// latest after `timeout`.
    fn wait(&self, timeout: Duration) {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds: Vec<PollFd<'_>> = [&self.inotify, &self.pidfd]
            .into_iter()
            .flatten()
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        match Timespec::try_from(timeout) {
            Ok(timespec) if !fds.is_empty() => {
                // An error (EINTR) only ends this wait early; the caller looks again.
                let _ = poll(&mut fds, Some(&timespec));
            }
            _ => std::thread::sleep(timeout),
        }
        if let Some(inotify) = &self.inotify {
            // Drained, so the next wait sleeps until something new happens.
            let mut events = [0u8; 4096];
            while matches!(rustix::io::read(inotify, &mut events), Ok(1..)) {}
        }
    }
}

fn last_log_line(paths: &InstancePaths) -> Option<String> {
    let tail = corral_control::log::read_tail(&paths.supervisor_log(), LOG_TAIL_BYTES).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    // The supervisor is `corral` or `corral-vmm`, whose errors start with their name.
    let line = line.trim_start_matches("corral-vmm: ");
    Some(line.trim_start_matches("corral: ").to_string())
}

/// Waits up to `timeout` for the supervisor to end; true when it has.
pub(crate) fn wait_for_exit(pid: Option<u32>, start_ticks: Option<u64>, timeout: Duration) -> bool {
    let Some(pid) = pid else {
        return true;
    };
    let deadline = Instant::now() + timeout;
    while process_alive(pid, start_ticks) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
mod tests;
