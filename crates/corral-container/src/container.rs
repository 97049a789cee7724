//! The library API: create, start, kill, pause, resume, exec, delete, state, stats of containers
//! recorded under a state root. The CLI (`corral oci`) and corral's instance supervisors both use
//! it; a supervisor that calls [`Container::create`] is the parent of the container's init and
//! can [`Container::wait`] for it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use crate::cgroups::{container_cgroup_path, with_default_device_rules, Cgroup, Layout, Stats};
use crate::channel::{Channel, Message};
use crate::error::{Error, Result};
use crate::init::{InitConfig, EXEC_FIFO};
use crate::rootfs::RootfsContext;
use crate::signal::SignalNumber;
use crate::spec::{has_new_namespace, Bundle, NamespacePlan};
use crate::state::{
    check_id, container_dir, process_start_time, rfc3339_now, Creator, Leftover, OciState, Record,
    Status,
};

/// How to create a container.
#[derive(Debug)]
pub struct CreateOptions {
    /// The state root (`/run/corral` by default).
    pub root: PathBuf,
    pub id: String,
    /// The bundle directory holding `config.json`.
    pub bundle: PathBuf,
    /// Where the terminal's master goes when `process.terminal` is true (connected socket).
    pub console: Option<UnixStream>,
    /// Descriptors 3..3+N of the caller that the container inherits (systemd socket activation).
    pub preserve_fds: u32,
}

/// How to run an extra process in a running container.
#[derive(Debug)]
pub struct ExecOptions {
    pub process: Process,
    pub console: Option<UnixStream>,
    /// Return once the process runs instead of waiting for it to exit.
    pub detach: bool,
    pub preserve_fds: u32,
    /// Run even if the container is paused (the process will be frozen too).
    pub ignore_paused: bool,
}

/// What `exec` started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Host pid of the process.
    pub pid: i32,
    /// Its exit code when not detached (128 + signal for a signal death).
    pub exit_code: Option<i32>,
}

/// A container recorded under a state root.
#[derive(Debug)]
pub struct Container {
    root: PathBuf,
    record: Record,
}

impl Container {
    /// Loads container `id` from `root`. Unknown ids fail with "does not exist".
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        Ok(Container {
            root: root.to_path_buf(),
            record: Record::load(root, id)?,
        })
    }

    /// All containers under `root`, sorted by id. Unreadable entries are skipped with a warning.
    pub fn list(root: &Path) -> Result<Vec<Container>> {
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", root, e)),
        };
        let mut containers = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_id(&name).is_err() {
                continue;
            }
            match Container::load(root, &name) {
                Ok(container) => containers.push(container),
                Err(err) => tracing::warn!("skipping {name}: {err}"),
            }
        }
        containers.sort_by(|a, b| a.id().cmp(b.id()));
        Ok(containers)
    }

    /// Creates a container: namespaces, cgroup, root filesystem, everything but the user's
    /// program, which waits for [`Container::start`]. On failure nothing is left behind.
    ///
    /// The caller must be single-threaded: the init is a raw clone of it (namespaces in the first
    /// clone, as crun does), and locks held by other threads would never be released there.
    pub fn create(options: CreateOptions) -> Result<Container> {
        check_id(&options.id)?;
        let threads = count_threads();
        if threads > 1 {
            return Err(Error::Threaded(threads));
        }
        let bundle = Bundle::load(&options.bundle)?;
        let spec = &bundle.spec;
        let wants_terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
        if wants_terminal && options.console.is_none() {
            return Err(Error::InvalidSpec(
                "process.terminal is true but no console socket was given: pass --console-socket"
                    .into(),
            ));
        }
        let plan = NamespacePlan::from_spec(spec);
        if plan.new_time {
            return Err(Error::InvalidSpec(
                "time namespaces are not supported by corral yet".into(),
            ));
        }

        if !crate::sealed_exe::is_sealed() {
            return Err(Error::UnsealedExe);
        }

        std::fs::create_dir_all(&options.root)
            .map_err(|e| Error::io("create state root", &options.root, e))?;
        // Held until we return: a create killed at any point releases it.
        let (_lock, leftover) = crate::state::claim(&options.root, &options.id)?;
        let dir = container_dir(&options.root, &options.id);
        let mut cleanup = Cleanup {
            dir: dir.clone(),
            cgroup: None,
            child: None,
        };
        match leftover {
            Leftover::None => {}
            Leftover::Record(record) => {
                Container {
                    root: options.root.clone(),
                    record: *record,
                }
                .clean_up_interrupted()?;
                crate::state::empty_dir(&dir)?;
            }
            Leftover::Unrecorded => crate::state::empty_dir(&dir)?,
        }
        let linux = spec.linux().clone().unwrap_or_default();
        let delegated = crate::spec::delegates_systemd_cgroup(spec)?;
        let layout = match delegated {
            true => Layout::detect()?.with_systemd_hierarchy()?,
            false => Layout::detect()?,
        };
        let cgroup_path = container_cgroup_path(linux.cgroups_path().as_deref(), &options.id)?;
        let cgroup = layout.open(&cgroup_path);
        // Recorded before anything exists, so a create killed from here on leaves a record of
        // what to clean up (see the state module).
        let mut record = Record {
            id: options.id.clone(),
            bundle: bundle.path.clone(),
            rootfs: bundle.rootfs.clone(),
            pid: 0,
            pid_start_time: 0,
            created: rfc3339_now(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            cgroup_path: cgroup.path().to_path_buf(),
            cgroup_layout: layout.clone(),
            started: false,
            exit_status: None,
            hooks: spec.hooks().clone(),
            owner: String::new(),
            creator: Some(Creator::current()?),
        };
        record.save(&options.root)?;
        fail::fail_point!("engine.create-recorded");

        cgroup.create()?;
        cleanup.cgroup = Some(layout.open(&cgroup_path));
        let resources = linux.resources().clone().unwrap_or_default();
        let devices = linux.devices().clone().unwrap_or_default();
        cgroup.apply(&with_default_device_rules(&resources, &devices))?;
        if let (true, Some(owner)) = (delegated, container_root_on_host(&linux)) {
            cgroup.delegate(owner)?;
        }
        fail::fail_point!("engine.create-cgroup-made");

        let fifo = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::sys(format!("create {}", fifo.display()), e))?;
        let exec_fifo = nix::fcntl::open(&fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| Error::sys(format!("open {}", fifo.display()), e))?;
        if let Some((uid, gid)) = container_root_on_host(&linux) {
            nix::unistd::chown(&fifo, Some(uid.into()), Some(gid.into())).map_err(|e| {
                Error::sys(
                    format!("hand {} to the container's root", fifo.display()),
                    e,
                )
            })?;
        }
        let (runtime_end, init_end) = Channel::pair()?;
        let rootfs = RootfsContext {
            bundle: bundle.path.clone(),
            in_user_namespace: has_new_namespace(spec, LinuxNamespaceType::User)
                || plan
                    .join
                    .iter()
                    .any(|(kind, _)| *kind == LinuxNamespaceType::User),
            in_cgroup_namespace: plan.creates(CloneFlags::CLONE_NEWCGROUP),
            cgroup_mounts: cgroup.container_mounts(delegated),
        };

        let init_config = InitConfig {
            id: &options.id,
            bundle: &bundle,
            plan: &plan,
            channel: init_end,
            exec_fifo,
            console: options.console,
            rootfs,
            preserve_fds: options.preserve_fds,
        };
        // The init is a clone of this process: until it execs the user's program, other
        // processes must not reach its memory or /proc/PID/exe (CVE-2019-5736). execve resets
        // this for the program.
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| Error::sys("make the runtime non-dumpable", e))?;
        let pid = clone_init(&plan, init_config)?;
        cleanup.child = Some(pid);
        fail::fail_point!("engine.create-cloned");
        record.pid = pid.as_raw();
        record.pid_start_time = process_start_time(pid.as_raw())
            .ok_or_else(|| Error::Setup("the container's init exited during setup".into()))?;
        // Not recorded yet: until the init is in its cgroup it dies with us (parent-death
        // signal, or end-of-file on the channel), and from then on the cgroup finds it.
        run_init_handshake(&bundle, &*cgroup, pid, &runtime_end, &record)?;
        fail::fail_point!("engine.create-ready");
        record.creator = None;
        record.save(&options.root)?;
        cleanup.disarm();
        Ok(Container {
            root: options.root,
            record,
        })
    }

    /// Removes what an interrupted create made: its init and any process in its cgroup, and
    /// the cgroup. The state directory is left to the caller.
    fn clean_up_interrupted(&self) -> Result<()> {
        self.kill_all_and_wait()?;
        self.cgroup().destroy()
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Host pid of the container's init.
    pub fn pid(&self) -> i32 {
        self.record.pid
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    pub fn status(&self) -> Status {
        self.record.status()
    }

    /// The spec's state document.
    pub fn state(&self) -> OciState {
        self.record.oci_state(self.status())
    }

    fn cgroup(&self) -> Box<dyn Cgroup> {
        self.record.cgroup_layout.open(&self.record.cgroup_path)
    }

    fn require(
        &self,
        operation: &'static str,
        needed: &'static str,
        ok: &[Status],
    ) -> Result<Status> {
        let status = self.status();
        if ok.contains(&status) {
            Ok(status)
        } else {
            Err(Error::WrongState {
                id: self.id().to_owned(),
                status: status.to_string(),
                operation,
                needed,
            })
        }
    }

    /// Releases the user's program. Returns once it has been exec'd (or failed to be).
    pub fn start(&mut self) -> Result<()> {
        self.require("start", "created", &[Status::Created])?;
        let fifo_path = container_dir(&self.root, self.id()).join(EXEC_FIFO);
        let fifo = nix::fcntl::open(
            &fifo_path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys(format!("open {}", fifo_path.display()), e))?;
        let message = read_fifo_until_exec(&fifo, self.record.pid, self.record.pid_start_time)?;
        // The fifo has done its job; a second start finds the container running anyway.
        let _ = std::fs::remove_file(&fifo_path);
        match message {
            FifoOutcome::NeverOpened => {
                return Err(Error::Setup(
                    "the container's init exited before start".into(),
                ))
            }
            FifoOutcome::Started(error) => {
                self.record.started = true;
                self.record.save(&self.root)?;
                if let Some(error) = error.filter(|e| !e.is_empty()) {
                    return Err(Error::Init(error));
                }
            }
        }
        if let Some(hooks) = self
            .record
            .hooks
            .as_ref()
            .and_then(|h| h.poststart().clone())
        {
            // The state as of the start, even if a short-lived process has already exited.
            let state = self.record.oci_state(Status::Running);
            crate::hooks::run_hooks_logging_failures("poststart", &hooks, &state);
        }
        Ok(())
    }

    /// Sends `signal` to the init, or with `all` to every process in the container's cgroup.
    pub fn kill(&self, signal: impl Into<SignalNumber>, all: bool) -> Result<()> {
        let signal = signal.into();
        self.require(
            "kill",
            "created, running or paused",
            &[Status::Created, Status::Running, Status::Paused],
        )?;
        if all {
            for pid in self.cgroup().pids()? {
                // A process may exit between listing and signalling.
                let _ = send_signal(pid, signal);
            }
            return Ok(());
        }
        send_signal(self.record.pid, signal)
            .map_err(|e| Error::sys(format!("send {signal} to container {}", self.id()), e))
    }

    /// Freezes every process of the container.
    pub fn pause(&self) -> Result<()> {
        self.require("pause", "running", &[Status::Running])?;
        self.cgroup().set_frozen(true)
    }

    /// Thaws a paused container.
    pub fn resume(&self) -> Result<()> {
        self.require("resume", "paused", &[Status::Paused])?;
        self.cgroup().set_frozen(false)
    }

    /// Host pids of the container's processes.
    pub fn processes(&self) -> Result<Vec<i32>> {
        self.cgroup().pids()
    }

    /// Resource usage from the container's cgroup.
    pub fn stats(&self) -> Result<Stats> {
        self.cgroup().stats()
    }

    /// Waits for the init to exit and records its exit status. Only the init's parent (the
    /// process that called [`Container::create`]) can do this.
    pub fn wait(&mut self) -> Result<i32> {
        let pid = Pid::from_raw(self.record.pid);
        let code = loop {
            match waitpid(pid, None) {
                Ok(status) => {
                    if let Some(code) = exit_code(status) {
                        break code;
                    }
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(Error::sys(format!("wait for container {}", self.id()), e)),
            }
        };
        self.record.exit_status = Some(code);
        self.record.save(&self.root)?;
        Ok(code)
    }

    /// Deletes a stopped container: its cgroup, then poststop hooks, then its state. `force`
    /// kills a created, running or paused one first (the spec forbids deleting those otherwise).
    /// An interrupted create reads as stopped: what it made is removed, without hooks.
    pub fn delete(self, force: bool) -> Result<()> {
        let status = self.status();
        match status {
            Status::Stopped => {}
            _ if force => self.kill_all_and_wait()?,
            Status::Created | Status::Creating | Status::Running | Status::Paused => {
                return Err(Error::WrongState {
                    id: self.id().to_owned(),
                    status: status.to_string(),
                    operation: "delete",
                    needed: "stopped (or use --force)",
                })
            }
        }
        let interrupted = self.record.creator.is_some();
        let cgroup = self.cgroup();
        // Exec'd processes may outlive the init in a shared pid namespace; an interrupted
        // create's init may not have reached its cgroup.
        if interrupted || !cgroup.pids().unwrap_or_default().is_empty() {
            self.kill_all_and_wait()?;
        }
        fail::fail_point!("engine.delete-killed");
        cgroup.destroy()?;
        let poststop = self
            .record
            .hooks
            .as_ref()
            .and_then(|h| h.poststop().clone())
            .filter(|_| !interrupted);
        if let Some(hooks) = poststop {
            crate::hooks::run_hooks_logging_failures(
                "poststop",
                &hooks,
                &self.record.oci_state(Status::Stopped),
            );
        }
        let dir = container_dir(&self.root, self.id());
        match std::fs::remove_dir_all(&dir) {
            // A forced delete racing the failing create it interrupted may find it gone.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", dir, e)),
            _ => Ok(()),
        }
    }

    /// `delete` by id, for the CLI: like [`Container::delete`], and also removes a state
    /// directory that holds no readable record (a create killed before writing one), as runc
    /// does. As with runc, an unknown id is an error only without `force`.
    pub fn delete_by_id(root: &Path, id: &str, force: bool) -> Result<()> {
        match Container::load(root, id) {
            Ok(container) => container.delete(force),
            Err(err @ (Error::NotFound(_) | Error::CorruptState { .. })) => {
                let dir = container_dir(root, id);
                if !dir.is_dir() {
                    return if force { Ok(()) } else { Err(err) };
                }
                // A create at work holds the directory; its record will appear.
                let (_lock, _) = match crate::state::claim(root, id) {
                    Ok(claimed) => claimed,
                    Err(Error::AlreadyExists(_)) => {
                        return Err(Error::WrongState {
                            id: id.to_owned(),
                            status: Status::Creating.to_string(),
                            operation: "delete",
                            needed: "created (wait for the create to finish)",
                        })
                    }
                    Err(other) => return Err(other),
                };
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io("remove", dir, e))
            }
            Err(err) => Err(err),
        }
    }

    fn kill_all_and_wait(&self) -> Result<()> {
        let cgroup = self.cgroup();
        let init = Pid::from_raw(self.record.pid);
        if crate::state::process_alive(self.record.pid, self.record.pid_start_time) {
            let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
        }
        for pid in cgroup.pids().unwrap_or_default() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Frozen tasks only die once thawed.
        if cgroup.is_frozen().unwrap_or(false) {
            cgroup.set_frozen(false)?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Reap the init if we are its parent; otherwise it is someone else's zombie. (No
            // init recorded yet: pid 0 would mean any child of ours.)
            if self.record.pid > 0 {
                let _ = waitpid(init, Some(WaitPidFlag::WNOHANG));
            }
            let init_gone =
                !crate::state::process_alive(self.record.pid, self.record.pid_start_time);
            let empty = cgroup.pids().map(|p| p.is_empty()).unwrap_or(true);
            if init_gone && empty {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Setup(format!(
                    "processes of container {} did not die within 10s",
                    self.id()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs another process in the running container, in its namespaces and cgroup.
    pub fn exec(&self, options: ExecOptions) -> Result<ExecOutcome> {
        let allowed: &[Status] = if options.ignore_paused {
            &[Status::Created, Status::Running, Status::Paused]
        } else {
            &[Status::Created, Status::Running]
        };
        self.require("exec", "running", allowed)?;
        crate::spec::validate_process(&options.process)?;
        if options.process.terminal() == Some(true) && options.console.is_none() {
            return Err(Error::InvalidSpec(
                "exec with a terminal needs a console socket".into(),
            ));
        }
        let bundle_spec = Bundle::load(&self.record.bundle).ok().map(|b| b.spec);
        let seccomp = bundle_spec
            .as_ref()
            .and_then(|s| s.linux().as_ref())
            .and_then(|l| l.seccomp().clone());
        if !crate::sealed_exe::is_sealed() {
            return Err(Error::UnsealedExe);
        }
        let namespaces = ContainerNamespaces::open(self.record.pid)?;
        let (runtime_end, child_end) = Channel::pair()?;
        // The process is a fork of this one until it execs (see create).
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| Error::sys("make the runtime non-dumpable", e))?;

        // SAFETY: the child only runs the exec helper below and exits; it uses no locks held by
        // other threads of this process (the CLI is single-threaded; library callers are told).
        let helper = match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))? {
            nix::unistd::ForkResult::Child => {
                drop(runtime_end);
                exec_helper(&namespaces, &child_end, &options, seccomp.as_ref())
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        drop(child_end);
        let result = (|| {
            // The helper reports the pid, the process reports ready; they may arrive in either order.
            let (mut pid, mut ready) = (None, false);
            while pid.is_none() || !ready {
                match runtime_end.recv()? {
                    Some(Message::Pid(p)) => pid = Some(p),
                    Some(Message::Ready) => ready = true,
                    Some(Message::Failed(reason)) => return Err(Error::Init(reason)),
                    None => {
                        return Err(Error::Setup("the exec process exited during setup".into()))
                    }
                    other => return Err(Error::Setup(format!("exec process sent {other:?}"))),
                }
            }
            let pid = pid.unwrap_or_default();
            self.cgroup().add_process(pid)?;
            runtime_end.send(&Message::Go)?;
            match runtime_end.recv()? {
                None => Ok(pid),
                Some(Message::Failed(reason)) => Err(Error::Init(reason)),
                Some(other) => Err(Error::Setup(format!("exec process sent {other:?}"))),
            }
        })();
        let pid = match result {
            Ok(pid) => pid,
            Err(err) => {
                let _ = nix::sys::signal::kill(helper, Signal::SIGKILL);
                let _ = waitpid(helper, None);
                return Err(err);
            }
        };
        let helper_status = loop {
            match waitpid(helper, None) {
                Err(nix::Error::EINTR) => continue,
                other => break other.map_err(|e| Error::sys("wait for the exec helper", e))?,
            }
        };
        Ok(ExecOutcome {
            pid,
            exit_code: if options.detach {
                None
            } else {
                exit_code(helper_status)
            },
        })
    }
}

/// An exit status as a shell reports it: the code, or 128 + the signal number.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Undoes a failed create: kills the init, removes the cgroup and the state directory.
struct Cleanup {
    dir: PathBuf,
    cgroup: Option<Box<dyn Cgroup>>,
    child: Option<Pid>,
}

impl Cleanup {
    fn disarm(&mut self) {
        self.cgroup = None;
        self.child = None;
        self.dir = PathBuf::new();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = self.child {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
        }
        if let Some(cgroup) = &self.cgroup {
            if let Err(err) = cgroup.destroy() {
                tracing::warn!("cleaning up after a failed create: {err}");
            }
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// kill(2) with any signal number: nix names only the standard signals, and a system
/// container's systemd stops on a real-time one.
fn send_signal(pid: i32, signal: SignalNumber) -> nix::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let result = unsafe { libc::kill(pid, signal.raw()) };
    nix::errno::Errno::result(result).map(drop)
}

/// The host uid and gid that uid 0 and gid 0 of the container map to, when it has id maps.
fn container_root_on_host(linux: &oci_spec::runtime::Linux) -> Option<(u32, u32)> {
    let host_of = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .find_map(|m| (m.container_id() == 0 && m.size() > 0).then_some(m.host_id()))
    };
    Some((
        host_of(linux.uid_mappings())?,
        host_of(linux.gid_mappings())?,
    ))
}

fn count_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Starts the init with one clone into all new namespaces (joining first, and leaving after,
/// those the runtime joins for it: see [`NamespacePlan::joined_before_clone`]).
fn clone_init(plan: &NamespacePlan, config: InitConfig<'_>) -> Result<Pid> {
    let mut restore = Vec::new();
    for (kind, path) in plan.joined_before_clone() {
        let flag = crate::spec::clone_flag(kind);
        let own_path = format!("/proc/self/ns/{}", proc_ns_name(kind));
        let own = nix::fcntl::open(
            own_path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys(format!("open {own_path}"), e))?;
        crate::init::join_namespace(path, flag)?;
        restore.push((flag, own));
    }
    // The cgroup namespace is unshared by the init once it is in its cgroup, so that cgroup
    // becomes the namespace's root.
    let namespaces = plan.clone_flags - CloneFlags::CLONE_NEWCGROUP;
    let flags = namespaces.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone without a new stack behaves like fork: the child continues here on a
    // copy of the stack. The caller is single-threaded (checked in create), so no lock is held.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if rc == 0 {
        crate::init::run(config);
    }
    for (flag, own) in restore {
        nix::sched::setns(own.as_fd(), flag)
            .map_err(|e| Error::sys(format!("return to the runtime's {flag:?} namespace"), e))?;
    }
    if rc < 0 {
        return Err(Error::sys("clone the container's init", nix::Error::last()));
    }
    Ok(Pid::from_raw(rc as i32))
}

/// The runtime's half of create after the clone: id maps, cgroup, oom score, hooks.
fn run_init_handshake(
    bundle: &Bundle,
    cgroup: &dyn Cgroup,
    pid: Pid,
    channel: &Channel,
    record: &Record,
) -> Result<()> {
    let spec = &bundle.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    if has_new_namespace(spec, LinuxNamespaceType::User) {
        write_id_map(
            pid,
            "gid_map",
            linux.gid_mappings().as_deref().unwrap_or_default(),
        )?;
        write_id_map(
            pid,
            "uid_map",
            linux.uid_mappings().as_deref().unwrap_or_default(),
        )?;
    }
    cgroup.add_process(pid.as_raw())?;
    if let Some(score) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        let path = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&path, score.to_string()).map_err(|e| Error::io("write", path, e))?;
    }
    channel.send(&Message::Go)?;
    loop {
        match channel.recv()? {
            Some(Message::Ready) => break,
            Some(Message::RunHooks) => {
                // runtime-tools expects "created" here, as runc reports it.
                let state = record.oci_state(Status::Created);
                let hooks = spec.hooks().clone().unwrap_or_default();
                let result = crate::hooks::run_hooks(
                    "prestart",
                    hooks.prestart().as_deref().unwrap_or_default(),
                    &state,
                )
                .and_then(|_| {
                    crate::hooks::run_hooks(
                        "createRuntime",
                        hooks.create_runtime().as_deref().unwrap_or_default(),
                        &state,
                    )
                });
                if let Err(err) = result {
                    let _ = channel.send(&Message::Failed(corral_host::error_chain(&err)));
                    return Err(err);
                }
                channel.send(&Message::Go)?;
            }
            Some(Message::Failed(reason)) => return Err(Error::Init(reason)),
            Some(other) => return Err(Error::Setup(format!("container init sent {other:?}"))),
            None => {
                return Err(Error::Setup(
                    "the container's init exited during setup".into(),
                ))
            }
        }
    }
    Ok(())
}

fn write_id_map(
    pid: Pid,
    file: &str,
    mappings: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<()> {
    let text: String = mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, text).map_err(|e| Error::io("write", path, e))
}

enum FifoOutcome {
    /// The init never opened the fifo (it died).
    NeverOpened,
    /// The init went ahead; any text after its first byte is an error from before exec.
    Started(Option<String>),
}

/// Reads the exec fifo: the init's first byte means it is going; end-of-file means it exec'd.
fn read_fifo_until_exec(fifo: &OwnedFd, pid: i32, start_time: u64) -> Result<FifoOutcome> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut received = Vec::new();
    let mut started = false;
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::sys("wait on the exec fifo", e)),
            Ok(0) => {
                if !crate::state::process_alive(pid, start_time) {
                    return Ok(if started {
                        FifoOutcome::Started(Some(String::from_utf8_lossy(&received).into_owned()))
                    } else {
                        FifoOutcome::NeverOpened
                    });
                }
                continue;
            }
            Ok(_) => {}
        }
        let mut buffer = [0u8; 4096];
        match nix::unistd::read(fifo, &mut buffer) {
            Ok(0) if started => {
                return Ok(FifoOutcome::Started(Some(
                    String::from_utf8_lossy(&received).into_owned(),
                )))
            }
            // POLLHUP before any writer wrote: the init opened and closed without going ahead.
            Ok(0) => return Ok(FifoOutcome::NeverOpened),
            Ok(n) => {
                let bytes = &buffer[..n];
                let bytes = if started { bytes } else { &bytes[1..] };
                started = true;
                received.extend_from_slice(bytes);
            }
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::sys("read the exec fifo", e)),
        }
    }
}

/// The name of a namespace kind under /proc/PID/ns.
fn proc_ns_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
        LinuxNamespaceType::Mount => "mnt",
    }
}

/// The namespaces of a running container's init, minus those the caller already shares.
struct ContainerNamespaces {
    /// (kind, fd) in join order: network first (it may be the host's, which the container's
    /// user namespace has no privilege over), then user, mount last.
    entries: Vec<(CloneFlags, OwnedFd)>,
}

impl ContainerNamespaces {
    fn open(pid: i32) -> Result<Self> {
        let order = [
            ("net", CloneFlags::CLONE_NEWNET),
            ("user", CloneFlags::CLONE_NEWUSER),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ];
        let mut entries = Vec::new();
        for (name, kind) in order {
            let theirs = format!("/proc/{pid}/ns/{name}");
            let ours = format!("/proc/self/ns/{name}");
            let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
                (Ok(a), Ok(b)) => {
                    use std::os::unix::fs::MetadataExt;
                    a.ino() == b.ino() && a.dev() == b.dev()
                }
                (Err(e), _) => return Err(Error::io("open namespace", theirs, e)),
                _ => false,
            };
            if same {
                continue;
            }
            let fd = nix::fcntl::open(
                theirs.as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::sys(format!("open {theirs}"), e))?;
            entries.push((kind, fd));
        }
        Ok(ContainerNamespaces { entries })
    }
}

/// The forked helper of `exec`: enters the pid namespace, forks the real process, reports its
/// pid and (unless detached) waits to pass on its exit status. Never returns.
fn exec_helper(
    namespaces: &ContainerNamespaces,
    channel: &Channel,
    options: &ExecOptions,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> ! {
    let fail = |err: Error| -> ! {
        let _ = channel.send(&Message::Failed(corral_host::error_chain(&err)));
        // SAFETY: _exit skips the parent's atexit handlers, which belong to the runtime.
        unsafe { libc::_exit(1) }
    };
    for (kind, fd) in &namespaces.entries {
        if *kind == CloneFlags::CLONE_NEWPID {
            if let Err(e) = nix::sched::setns(fd.as_fd(), *kind) {
                fail(Error::sys("join the container's pid namespace", e));
            }
        }
    }
    // SAFETY: this helper is single-threaded (a fork child).
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            exec_in_container(namespaces, channel, options, seccomp)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => fail(Error::sys("fork the exec process", e)),
    };
    if let Err(err) = channel.send(&Message::Pid(child.as_raw())) {
        fail(err);
    }
    // Close our copy so the runtime sees end-of-file once the process has exec'd.
    // SAFETY: the fd belongs to `channel`, which is never used again in this process.
    unsafe { libc::close(channel.raw_fd()) };
    if options.detach {
        // SAFETY: see above; the process is reparented to the nearest subreaper.
        unsafe { libc::_exit(0) }
    }
    let code = loop {
        match waitpid(child, None) {
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    break code;
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(_) => break 255,
        }
    };
    // SAFETY: see above.
    unsafe { libc::_exit(code) }
}

fn exec_in_container(
    namespaces: &ContainerNamespaces,
    channel: &Channel,
    options: &ExecOptions,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> ! {
    let result = (|| -> Result<Error> {
        for (kind, fd) in &namespaces.entries {
            if *kind != CloneFlags::CLONE_NEWPID {
                nix::sched::setns(fd.as_fd(), *kind).map_err(|e| {
                    Error::sys(format!("join the container's {kind:?} namespace"), e)
                })?;
            }
        }
        nix::unistd::setsid().map_err(|e| Error::sys("start a session", e))?;
        if let Some(console) = &options.console {
            let size = options.process.console_size().as_ref().map(|b| {
                (
                    u16::try_from(b.height()).unwrap_or(u16::MAX),
                    u16::try_from(b.width()).unwrap_or(u16::MAX),
                )
            });
            let (master, slave, name) = crate::console::open_pty(size)?;
            crate::console::become_terminal(&slave)?;
            crate::console::send_fd(console.as_raw_fd(), master.as_raw_fd(), &name)?;
        }
        let first_fd = 3 + options.preserve_fds;
        let prepared =
            crate::process::prepare(&options.process, seccomp, first_fd, &[channel.raw_fd()])?;
        crate::process::close_fds_on_exec(first_fd);
        channel.send(&Message::Ready)?;
        match channel.recv()? {
            Some(Message::Go) => {}
            other => {
                return Err(Error::Setup(format!(
                    "runtime sent {other:?} instead of go"
                )))
            }
        }
        Ok(crate::process::exec(&options.process, &prepared))
    })();
    let err = result.unwrap_or_else(|e| e);
    let _ = channel.send(&Message::Failed(corral_host::error_chain(&err)));
    // SAFETY: _exit skips the runtime's atexit handlers.
    unsafe { libc::_exit(127) }
}
