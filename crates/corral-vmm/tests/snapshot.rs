//! Snapshots through the library: `corral_vmm::run` on a thread, `snapshot` and `kill` over its
//! control socket, the saved state inspected, then `corral_vmm::restore` on another thread.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corral_control::{Client, Request, Response, RunState};
use corral_testkit::require_kvm;
use corral_vmm::config::SerialTarget;
use corral_vmm::snapshot::SavedVm;
use corral_vmm::{ExitReason, RunOptions, VmConfig, VmExit, VmmError};
use kvm_bindings::KVM_MP_STATE_UNINITIALIZED;

const MSR_IA32_TSC: u32 = 0x10;
const EFER_LONG_MODE_ACTIVE: u64 = 1 << 10;

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn counts(console: &Path) -> Vec<u64> {
    std::fs::read_to_string(console)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix("count "))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Waits for `lines` counter lines on `console`, then snapshots (or not) and kills the VM.
fn drive(
    vm: JoinHandle<Result<VmExit, VmmError>>,
    socket: &Path,
    console: &Path,
    lines: usize,
    snapshot_to: Option<PathBuf>,
) {
    wait_until("the counter", || counts(console).len() >= lines);
    let mut client = Client::connect(socket, Duration::from_secs(30)).unwrap();
    if let Some(to) = snapshot_to {
        let answer = client
            .call(&Request::Snapshot {
                to,
                leave_paused: true,
            })
            .unwrap();
        assert_eq!(
            answer,
            Response::State {
                state: RunState::Paused
            }
        );
    }
    client.call(&Request::Kill).unwrap();
    assert_eq!(vm.join().unwrap().unwrap().reason, ExitReason::Killed);
}

#[test]
fn a_two_vcpu_vm_saved_and_restored_through_the_library_continues() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let (console, socket) = (dir.path().join("console"), dir.path().join("control.sock"));
    let config = VmConfig {
        vcpus: 2,
        memory: "32M".parse().unwrap(),
        serial: SerialTarget::File(console.clone()),
        control_socket: Some(socket.clone()),
        ..VmConfig::new(corral_guests::elf("counter"))
    };
    let running = config.clone();
    let vm = std::thread::spawn(move || corral_vmm::run(&running, &RunOptions::default()));
    let snap = dir.path().join("snap");
    drive(vm, &socket, &console, 2, Some(snap.clone()));

    let saved = SavedVm::open(&snap).unwrap();
    let state = &saved.snapshot;
    assert_eq!(state.config, config, "the configuration is saved as run");
    assert_eq!(state.vcpus.len(), 2);
    assert_ne!(state.vcpus[0].sregs.efer & EFER_LONG_MODE_ACTIVE, 0);
    // The second vCPU never got its start-up IPI: it waits for one after the restore too.
    assert_eq!(state.vcpus[1].mp_state.mp_state, KVM_MP_STATE_UNINITIALIZED);
    assert!(state.vcpus[0]
        .msrs
        .iter()
        .any(|msr| msr.index == MSR_IA32_TSC));
    assert_eq!(state.devices.com1.in_buffer, Vec::<u8>::new());

    let (console2, socket2) = (
        dir.path().join("console2"),
        dir.path().join("control2.sock"),
    );
    let restored = VmConfig {
        serial: SerialTarget::File(console2.clone()),
        control_socket: Some(socket2.clone()),
        ..state.config.clone()
    };
    let vm =
        std::thread::spawn(move || corral_vmm::restore(&restored, &RunOptions::default(), saved));
    drive(vm, &socket2, &console2, 2, None);

    let mut all = std::fs::read_to_string(&console).unwrap();
    all.push_str(&std::fs::read_to_string(&console2).unwrap());
    let numbers: Vec<u64> = all
        .lines()
        .filter_map(|line| line.strip_prefix("count "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (0..numbers.len() as u64).collect::<Vec<_>>(),
        "{all}"
    );
}
