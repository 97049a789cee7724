//! Starting, asking and stopping a network's supervisor from outside it, through its process
//! and its control socket.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_control::exit::ExitRecord;
use corral_control::journal::SupervisorOutput;
use corral_control::{Client, Request, Response};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::ServiceConfig;
use crate::error::Error;
use crate::paths::StatePaths;

/// How long a started supervisor may take to answer (it waits for dnsmasq first).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a supervisor may take to stop after `shutdown`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one control call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// The journal's `SYSLOG_IDENTIFIER` of network `name`'s supervisor (`journalctl -t`), apart
/// from the instances' `corral-NAME`.
fn journal_identifier(name: &str) -> String {
    format!("corral-network-{name}")
}

/// Starts `EXE network-service STATE_DIR` in a session of its own (it outlives the caller) and
/// waits until it serves: dnsmasq answers and the control socket is up. `state_dir` must hold
/// a [`crate::write_config`]; the bridge must exist in the caller's network namespace, where
/// the service runs. The supervisor's output goes to the journal under `corral-network-NAME` when
/// the caller's goes there (under systemd), else to `service.log`. The supervisor is the
/// caller's child: a caller that outlives it may reap it (waitpid) once it has ended.
pub fn spawn_supervisor(exe: &Path, state_dir: &Path) -> Result<Pid, Error> {
    let paths = StatePaths::new(state_dir);
    let config = ServiceConfig::load(&paths)?;
    if is_running(state_dir) {
        return Err(Error::StartFailed {
            dir: state_dir.to_path_buf(),
            detail: "it is running already".into(),
        });
    }
    match std::fs::remove_file(paths.exit_record()) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("remove", paths.exit_record())(err));
        }
        _ => {}
    }
    let log_path = paths.log();
    let mut command = Command::new(exe);
    command
        .arg("network-service")
        .arg(state_dir)
        .stdin(Stdio::null());
    SupervisorOutput::choose(&log_path, &journal_identifier(&config.network))
        .and_then(|output| output.attach(&mut command))
        .map_err(Error::io("open", &log_path))?;
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which
    // is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().map_err(Error::io("start", exe))?;
    let pid = Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let detail = ExitRecord::read(&paths.exit_record())
                .and_then(|record| record.detail)
                .unwrap_or_else(|| format!("the supervisor ended ({status})"));
            return Err(Error::StartFailed {
                dir: state_dir.to_path_buf(),
                detail,
            });
        }
        if is_running(state_dir) {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::StartFailed {
                dir: state_dir.to_path_buf(),
                detail: format!("it did not answer within {} s", START_TIMEOUT.as_secs()),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// True when the supervisor of `state_dir` answers on its control socket.
pub fn is_running(state_dir: &Path) -> bool {
    matches!(
        call(&StatePaths::new(state_dir), &Request::Status),
        Ok(Response::State { .. })
    )
}

/// Stops the service of `state_dir` (dnsmasq, then the supervisor) and waits until it has
/// ended; nothing to do when it does not run. Its files stay: they are the network's state.
pub fn stop(state_dir: &Path) -> Result<(), Error> {
    let paths = StatePaths::new(state_dir);
    if !is_running(state_dir) {
        return Ok(());
    }
    match call(&paths, &Request::Shutdown { timeout_secs: None })? {
        Response::Error { message } => {
            return Err(Error::Refused {
                dir: state_dir.to_path_buf(),
                message,
            })
        }
        Response::State { .. } | Response::Info(_) | Response::Migrated(_) => {}
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    // The supervisor writes its exit record and removes its socket last.
    while paths.control_socket().exists() || !paths.exit_record().exists() {
        if Instant::now() > deadline {
            return Err(Error::StopTimeout {
                dir: state_dir.to_path_buf(),
                secs: STOP_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Stops the service of `state_dir` and removes the directory with every file in it: what
/// deleting the network leaves of its service is nothing.
pub fn remove(state_dir: &Path) -> Result<(), Error> {
    stop(state_dir)?;
    match std::fs::remove_dir_all(state_dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("remove", state_dir)(err))
        }
        _ => Ok(()),
    }
}

/// Has a running service's dnsmasq re-read its reservation files; nothing to do when the
/// service does not run (it reads them when it starts).
pub(crate) fn reload(paths: &StatePaths) -> Result<(), Error> {
    if !is_running(paths.dir()) {
        return Ok(());
    }
    let Response::Info(info) = call(paths, &Request::Info)? else {
        return Err(Error::Refused {
            dir: paths.dir().to_path_buf(),
            message: "it did not say its pid".into(),
        });
    };
    let pid = Pid::from_raw(info.pid as i32);
    kill(pid, Signal::SIGHUP).map_err(Error::system("signal the network service"))
}

fn call(paths: &StatePaths, request: &Request) -> Result<Response, Error> {
    let control = |source| Error::Control {
        dir: paths.dir().to_path_buf(),
        source,
    };
    Client::connect(&paths.control_socket(), CALL_TIMEOUT)
        .and_then(|mut client| client.call(request))
        .map_err(control)
}
