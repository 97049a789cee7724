//! One run of dnsmasq, tied to the supervisor's life.
//!
//! dnsmasq drops its privileges after binding its ports, and changing credentials clears
//! `PR_SET_PDEATHSIG`: dnsmasq itself cannot be told to die with the supervisor. So it runs in a
//! pid namespace of its own whose init is a shell that keeps root and the death signal: when the
//! supervisor dies, even by SIGKILL, the kernel kills the shell, and with the namespace's init
//! every process in it (dnsmasq and its lease-script helper), so no dnsmasq is left holding the
//! network's ports.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

use crate::error::Error;
use crate::paths::StatePaths;
use crate::render::{HOOK_EXE_ENV, HOOK_STATE_ENV};

/// How long dnsmasq may take to answer on the gateway's DNS port.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dnsmasq may take to exit after SIGTERM before its namespace is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(50);

/// The init of dnsmasq's pid namespace: runs dnsmasq (`$@`) as its child and exits with its
/// status. As a namespace init it reaps whatever dnsmasq leaves behind.
const INIT_SCRIPT: &str = "\"$@\" & wait $!";

/// dnsmasq on PATH (or in /usr/sbin, which a non-root PATH may lack).
pub(crate) fn find_program() -> Result<PathBuf, Error> {
    corral_host::program::find("dnsmasq").ok_or(Error::DnsmasqMissing)
}

/// A running dnsmasq (through the init of its namespace).
pub(crate) struct Dnsmasq {
    init: Child,
    pub(crate) started: Instant,
}

impl Dnsmasq {
    /// Starts `program` with the configuration in `paths`, in a new pid namespace; `hook_exe`
    /// runs the lease hook. `own_pid_ns` is the supervisor's pid namespace
    /// (`/proc/self/ns/pid`), which the calling thread returns to after the start.
    pub(crate) fn start(
        program: &Path,
        paths: &StatePaths,
        hook_exe: &Path,
        own_pid_ns: &File,
    ) -> Result<Dnsmasq, Error> {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(INIT_SCRIPT)
            .arg("dnsmasq")
            .arg(program)
            .arg(format!("--conf-file={}", paths.dnsmasq_conf().display()))
            .env(HOOK_EXE_ENV, hook_exe)
            .env(HOOK_STATE_ENV, paths.dir())
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2) and
        // sigprocmask(2), which are async-signal-safe. The supervisor could die between the fork
        // and the prctl; the child would then outlive it, a window of a few instructions.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The supervisor's blocked signals would stay blocked in dnsmasq.
                SigSet::empty().thread_set_mask()?;
                Ok(())
            });
        }
        // The next child of this thread is the init of a new pid namespace. The thread goes
        // back to its own namespace at once: it could start no thread while its children's
        // namespace differs from its own.
        nix::sched::unshare(CloneFlags::CLONE_NEWPID)
            .map_err(Error::system("make a pid namespace for dnsmasq"))?;
        let spawned = command.spawn();
        nix::sched::setns(own_pid_ns, CloneFlags::CLONE_NEWPID)
            .map_err(Error::system("return to the supervisor's pid namespace"))?;
        let init = spawned.map_err(Error::io("start dnsmasq through", "/bin/sh"))?;
        Ok(Dnsmasq {
            init,
            started: Instant::now(),
        })
    }

    /// dnsmasq's pid: the only child of its namespace's init, once that has started it.
    fn pid(&self) -> Option<Pid> {
        let init = self.init.id();
        let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"));
        children
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
            .map(Pid::from_raw)
    }

    /// Sends `signal` to dnsmasq (none when it is not running).
    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
        }
    }

    /// How dnsmasq ended, once it has.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.init.try_wait().ok().flatten()
    }

    /// Waits until dnsmasq answers on `gateway`'s DNS port; how it failed otherwise.
    pub(crate) fn wait_ready(&mut self, gateway: Ipv4Addr) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let address = SocketAddr::from((gateway, 53));
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!("dnsmasq {}", describe(status)));
            }
            if TcpStream::connect_timeout(&address, POLL).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "dnsmasq did not answer on {address} within {} s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Asks dnsmasq to exit, kills its namespace if it does not in time, and reaps it.
    pub(crate) fn stop(mut self) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while self.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let _ = self.init.kill();
        let _ = self.init.wait();
    }
}

/// How dnsmasq ended, from its namespace init's status (the shell reports a death by signal
/// N as exit status 128 + N).
pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) if code > 128 => Signal::try_from(code - 128).map_or_else(
            |_| format!("exited with status {code}"),
            |s| format!("was killed by {s}"),
        ),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed with its namespace by signal {signal}"),
        (None, None) => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn the_shells_status_is_told_as_dnsmasqs() {
        let exited = |code: i32| describe(ExitStatus::from_raw(code << 8));
        assert_eq!(exited(2), "exited with status 2");
        assert_eq!(exited(128 + 9), "was killed by SIGKILL");
        assert_eq!(
            describe(ExitStatus::from_raw(9)),
            "was killed with its namespace by signal 9"
        );
    }
}
