//! The library API: create, start, kill, pause, resume, exec, delete, state, stats of containers
//! recorded under a state root. The CLI (`corral oci`) and corral's instance supervisors both use
//! it; a supervisor that calls [`Container::create`] is the parent of the container's init and
//! can [`Container::wait`] for it.

mod checkpoint;
mod create;
mod exec;
mod restore;

pub use checkpoint::CheckpointOptions;
pub use create::CreateOptions;
pub use exec::{ExecCommand, ExecOptions, ExecOutcome};
pub use restore::RestoreOptions;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cgroups::{Cgroup, Stats};
use crate::error::{Error, Result};
use crate::init::EXEC_FIFO;
use crate::signal::SignalNumber;
use crate::state::{check_id, container_dir, OciState, Record, Status};

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
}

/// An exit status as a shell reports it: the code, or 128 + the signal number.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// kill(2) with any signal number: nix names only the standard signals, and a system
/// container's systemd stops on a real-time one.
fn send_signal(pid: i32, signal: SignalNumber) -> nix::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let result = unsafe { libc::kill(pid, signal.raw()) };
    nix::errno::Errno::result(result).map(drop)
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
