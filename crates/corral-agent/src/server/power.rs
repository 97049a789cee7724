//! `shutdown`: the guest's own init powers it off or reboots it, so services stop cleanly.
//!
//! The guest's `poweroff`/`reboot` programs know their init (systemd's talk to it, busybox's
//! signal it). Without them, pid 1 is signalled the way its init understands: systemd takes
//! SIGRTMIN+4 (poweroff) and SIGINT (reboot, as Ctrl-Alt-Del); busybox and sysvinit-style inits
//! take SIGUSR2 (poweroff) and SIGTERM (reboot).

use std::path::Path;
use std::process::Command;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Where the power programs are looked for (the agent's PATH may be empty).
const PROGRAM_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

pub fn shut_down(reboot: bool) {
    let name = if reboot { "reboot" } else { "poweroff" };
    let program = PROGRAM_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists());
    if let Some(program) = program {
        match Command::new(&program).status() {
            Ok(status) if status.success() => return,
            Ok(status) => tracing::warn!("{} failed ({status})", program.display()),
            Err(err) => tracing::warn!("cannot run {}: {err}", program.display()),
        }
    }
    let systemd =
        std::fs::read_to_string("/proc/1/comm").is_ok_and(|comm| comm.trim() == "systemd");
    let result = match (systemd, reboot) {
        // SIGRTMIN+4 has no name in nix's Signal; SIGRTMIN is libc's function.
        (true, false) => {
            // SAFETY: kill(2) on pid 1 with a valid real-time signal number.
            let rc = unsafe { libc::kill(1, libc::SIGRTMIN() + 4) };
            if rc == 0 {
                Ok(())
            } else {
                Err(nix::Error::last())
            }
        }
        (true, true) => nix::sys::signal::kill(Pid::from_raw(1), Signal::SIGINT),
        (false, false) => nix::sys::signal::kill(Pid::from_raw(1), Signal::SIGUSR2),
        (false, true) => nix::sys::signal::kill(Pid::from_raw(1), Signal::SIGTERM),
    };
    if let Err(err) = result {
        tracing::warn!("cannot signal init to {name}: {err}");
    }
}
