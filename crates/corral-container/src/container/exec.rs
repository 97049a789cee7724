//! Running another process in a running container: a helper joins the container's namespaces
//! and cgroup and starts the process there.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::{exit_code, Container};
use crate::channel::{Channel, Message};
use crate::error::{Error, Result};
use crate::seccomp::Program;
use crate::spec::Bundle;
use crate::state::Status;

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
    /// While waiting for the process (not detached), forward the signals the caller gets to
    /// it, as a foreground runtime does: an interrupted caller does not leave it running.
    pub forward_signals: bool,
}

/// What `exec` started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Host pid of the process.
    pub pid: i32,
    /// Its exit code when not detached (128 + signal for a signal death).
    pub exit_code: Option<i32>,
}

/// A command for a running container, run with the container's own process settings (user,
/// capabilities, environment, ...) as runc's `exec` with a command line does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecCommand {
    pub argv: Vec<String>,
    /// Added to the container's environment.
    pub env: Vec<String>,
    pub cwd: Option<std::path::PathBuf>,
    /// On a new terminal of the container's.
    pub tty: bool,
}

impl Container {
    /// The container's own process with `command` applied: its arguments, terminal and working
    /// directory, its environment appended.
    pub fn process_for(&self, command: &ExecCommand) -> Result<Process> {
        let bundle = Bundle::load(&self.record.bundle)?;
        let mut process = bundle.spec.process().clone().unwrap_or_default();
        process.set_args(Some(command.argv.clone()));
        process.set_terminal(Some(command.tty));
        process.set_console_size(None);
        if let Some(cwd) = &command.cwd {
            process.set_cwd(cwd.clone());
        }
        let mut env = process.env().clone().unwrap_or_default();
        env.extend(command.env.iter().cloned());
        process.set_env(Some(env));
        Ok(process)
    }

    /// Runs `command` in the foreground of the calling program: its terminal relayed to the
    /// caller's stdio (or the caller's stdio inherited), the caller's signals forwarded. Returns
    /// its exit code. With a terminal the process is started detached (its exec helper exits);
    /// the caller becomes a child subreaper first, so the process is re-parented to it and its
    /// exit status collected once the relay ends, as containerd's shim does for `runc exec`.
    pub fn exec_foreground(&self, command: &ExecCommand) -> Result<i32> {
        let process = self.process_for(command)?;
        if command.tty {
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| Error::sys("become a child subreaper", e))?;
        }
        let (console, local) = crate::foreground::console_for(command.tty, None)?;
        let outcome = self.exec(ExecOptions {
            process,
            console,
            detach: local.is_some(),
            preserve_fds: 0,
            ignore_paused: false,
            forward_signals: true,
        })?;
        crate::foreground::forward_signals_to(outcome.pid);
        if let Some(local) = &local {
            let master = crate::foreground::receive_terminal(local)?;
            crate::console::relay(&master)?;
            let pid = nix::unistd::Pid::from_raw(outcome.pid);
            let status = loop {
                match waitpid(pid, None) {
                    Err(nix::Error::EINTR) => continue,
                    other => {
                        break other.map_err(|e| Error::sys("wait for the exec process", e))?
                    }
                }
            };
            return Ok(exit_code(status).unwrap_or(255));
        }
        Ok(outcome.exit_code.unwrap_or(255))
    }
}

impl Container {
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
            .and_then(|l| l.seccomp().as_ref())
            .map(|profile| Program::for_profile(profile, self.record.seccomp_cache.as_deref()))
            .transpose()?;
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
        if options.forward_signals && !options.detach {
            crate::foreground::forward_signals_to(pid);
        }
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

/// The name of a namespace kind under /proc/PID/ns.
pub(super) fn proc_ns_name(kind: LinuxNamespaceType) -> &'static str {
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
    seccomp: Option<&Program>,
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
    // Close our copy so the runtime sees end-of-file once the process has exec'd. The fd
    // belongs to `channel`, which is never used (or dropped) again in this process. Ignored:
    // close(2) frees an open descriptor even when it reports EINTR or EIO.
    let _ = nix::unistd::close(channel.raw_fd());
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
    seccomp: Option<&Program>,
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
