//! What the library-level VMM tests share: a test guest's configuration in a scratch directory,
//! `corral_vmm::run` on its own thread (it confines the thread that calls it with seccomp, so
//! the test's own thread stays free to read files and assert), the console file, and the
//! control socket.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corral_control::{Client, Request, Response, RunState};
use corral_vmm::config::SerialTarget;
use corral_vmm::{RunOptions, VmConfig, VmExit, VmmError};
use tempfile::TempDir;

/// How long any wait on a guest may take: the host may emulate KVM and be busy.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A scratch directory with the console file and control socket a test VM uses.
pub struct Scratch {
    pub dir: TempDir,
    pub console: PathBuf,
    pub socket: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        Scratch {
            console: dir.path().join("console"),
            socket: dir.path().join("control.sock"),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Test guest `guest` with 32 MiB, its console to [`Scratch::console`] and a control socket
    /// at [`Scratch::socket`].
    pub fn config(&self, guest: &str) -> VmConfig {
        VmConfig {
            memory: "32M".parse().unwrap(),
            serial: SerialTarget::File(self.console.clone()),
            control_socket: Some(self.socket.clone()),
            ..VmConfig::new(corral_guests::elf(guest))
        }
    }

    /// Everything the guest printed so far.
    pub fn console(&self) -> String {
        console(&self.console)
    }

    /// Waits until the guest printed `needle` at least `count` times.
    pub fn wait_for_console(&self, needle: &str, count: usize) {
        wait_until(&format!("{needle:?} x{count} on the console"), || {
            self.console().matches(needle).count() >= count
        });
    }

    /// Sends one request over the control socket and returns the answer.
    pub fn control(&self, request: &Request) -> Response {
        let mut client = Client::connect(&self.socket, TIMEOUT).unwrap();
        client.call(request).unwrap()
    }

    /// Sends one request that answers with a run state, and returns that state.
    pub fn control_state(&self, request: &Request) -> RunState {
        match self.control(request) {
            Response::State { state } => state,
            other => panic!("{request:?} answered {other:?}"),
        }
    }
}

/// A VM running on its own thread.
pub type RunningVm = JoinHandle<Result<VmExit, VmmError>>;

/// Starts `config` with [`corral_vmm::run`] on a new thread.
pub fn start(config: &VmConfig) -> RunningVm {
    let config = config.clone();
    spawn(move || corral_vmm::run(&config, &RunOptions::default()))
}

/// Runs `vmm` (a [`corral_vmm::run`] or [`corral_vmm::restore`] call) on a new thread.
pub fn spawn(vmm: impl FnOnce() -> Result<VmExit, VmmError> + Send + 'static) -> RunningVm {
    std::thread::spawn(vmm)
}

/// Waits for the VM to end and returns how it did.
pub fn finish(vm: RunningVm) -> Result<VmExit, VmmError> {
    wait_until("the VM to end", || vm.is_finished());
    vm.join().unwrap()
}

/// Runs `config` to its end.
pub fn run(config: &VmConfig) -> Result<VmExit, VmmError> {
    finish(start(config))
}

/// Polls `done` until it holds; panics naming `what` after [`TIMEOUT`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The console file's text (empty before the guest printed anything).
pub fn console(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The numbers of the counter guest's `count N` lines, in order. A last line without its
/// newline was cut by a pause, a snapshot or the end of the VM, so it is left out.
pub fn counts(console_text: &str) -> Vec<u64> {
    let complete = console_text
        .rfind('\n')
        .map_or("", |end| &console_text[..end]);
    complete
        .lines()
        .filter_map(|line| line.strip_prefix("count "))
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("bad line {n:?} in {console_text}"))
        })
        .collect()
}
