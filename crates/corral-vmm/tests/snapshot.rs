//! Snapshots through the library: `corral_vmm::run` on a thread, `snapshot` and `kill` over its
//! control socket, the saved state inspected, then `corral_vmm::restore` on another thread.

mod common;

use std::path::PathBuf;

use common::{counts, Scratch};
use corral_control::{Request, RunState};
use corral_testkit::require_kvm;
use corral_vmm::config::SerialTarget;
use corral_vmm::snapshot::SavedVm;
use corral_vmm::{ExitReason, RunOptions, VmConfig};
use kvm_bindings::KVM_MP_STATE_UNINITIALIZED;

const MSR_IA32_TSC: u32 = 0x10;
const EFER_LONG_MODE_ACTIVE: u64 = 1 << 10;

/// Waits for `lines` counter lines on `scratch`'s console, then snapshots (or not) and kills the
/// VM.
fn drive(vm: common::RunningVm, scratch: &Scratch, lines: usize, snapshot_to: Option<PathBuf>) {
    common::wait_until("the counter", || counts(&scratch.console()).len() >= lines);
    if let Some(to) = snapshot_to {
        let request = Request::Snapshot {
            to,
            leave_paused: true,
        };
        assert_eq!(scratch.control_state(&request), RunState::Paused);
    }
    scratch.control(&Request::Kill);
    assert_eq!(common::finish(vm).unwrap().reason, ExitReason::Killed);
}

#[test]
fn a_two_vcpu_vm_saved_and_restored_through_the_library_continues() {
    require_kvm!();
    let scratch = Scratch::new();
    let config = VmConfig {
        vcpus: 2,
        ..scratch.config("counter")
    };
    let vm = common::start(&config);
    let snap = scratch.path("snap");
    drive(vm, &scratch, 2, Some(snap.clone()));

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

    let second = Scratch::new();
    let restored = VmConfig {
        serial: SerialTarget::File(second.console.clone()),
        control_socket: Some(second.socket.clone()),
        ..state.config.clone()
    };
    let vm = common::spawn(move || corral_vmm::restore(&restored, &RunOptions::default(), saved));
    drive(vm, &second, 2, None);

    let all = scratch.console() + &second.console();
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
