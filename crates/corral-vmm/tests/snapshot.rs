//! Snapshots through the library: `corral_vmm::run` on a thread, `snapshot` and `kill` over its
//! control socket, the saved state inspected, then `corral_vmm::restore` on another thread.
//! The `snapshot-io` guest keeps virtio-blk and virtio-rng requests going across the snapshot.

mod common;

use std::path::PathBuf;

use common::{counts, Scratch};
use corral_control::{Request, RunState};
use corral_testkit::require_kvm;
use corral_vmm::config::{DiskConfig, SerialTarget, VsockConfig};
use corral_vmm::snapshot::SavedVm;
use corral_vmm::{ExitReason, RunOptions, VmConfig};
use kvm_bindings::KVM_MP_STATE_UNINITIALIZED;

const MSR_IA32_TSC: u32 = 0x10;
const EFER_LONG_MODE_ACTIVE: u64 = 1 << 10;

const SECTOR: usize = 512;
const DRIVER_OK: u32 = 4;

/// Waits for `lines` counter lines on `scratch`'s console, then snapshots (or not) and kills the
/// VM.
fn drive(vm: common::RunningVm, scratch: &Scratch, lines: usize, snapshot_to: Option<PathBuf>) {
    common::wait_until("the counter", || counts(&scratch.console()).len() >= lines);
    snapshot_and_kill(vm, scratch, snapshot_to);
}

/// Snapshots the VM (leaving it paused) when asked, then kills it.
fn snapshot_and_kill(vm: common::RunningVm, scratch: &Scratch, snapshot_to: Option<PathBuf>) {
    if let Some(to) = snapshot_to {
        let request = Request::Snapshot {
            to,
            leave_paused: true,
            diff: false,
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
    let numbers = common::counts(&all);
    assert_eq!(
        numbers,
        (0..numbers.len() as u64).collect::<Vec<_>>(),
        "{all}"
    );
}

/// Restores `saved` with its console, control socket and any vsock socket in `scratch`.
fn restore(saved: SavedVm, scratch: &Scratch) -> common::RunningVm {
    let config = VmConfig {
        serial: SerialTarget::File(scratch.console.clone()),
        control_socket: Some(scratch.socket.clone()),
        vsock: saved
            .snapshot
            .config
            .vsock
            .clone()
            .map(|vsock| VsockConfig {
                socket: scratch.path("vsock.sock"),
                ..vsock
            }),
        ..saved.snapshot.config.clone()
    };
    common::spawn(move || corral_vmm::restore(&config, &RunOptions::default(), saved))
}

/// One `snapshot-io` line: the round, the sum of the sector read back, the entropy.
#[derive(Debug)]
struct Round {
    number: u64,
    blk: String,
    rng: String,
}

/// The complete `round` lines of `text` (a VM killed mid-line leaves a partial last one).
fn parse_rounds(text: &str) -> Vec<Round> {
    text.split_inclusive('\n')
        .filter_map(|line| {
            let line = line.strip_suffix('\n')?.strip_prefix("round ")?;
            let mut words = line.split(' ');
            let number = words.next()?.parse().ok()?;
            let (Some("blk"), Some(blk), Some("rng"), Some(rng)) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return None;
            };
            Some(Round {
                number,
                blk: blk.to_owned(),
                rng: rng.to_owned(),
            })
        })
        .collect()
}

/// Runs `vm` until `scratch`'s console has `count` rounds, then snapshots it into `to` (or not)
/// and kills it.
fn run_rounds(vm: common::RunningVm, scratch: &Scratch, count: usize, to: Option<PathBuf>) {
    common::wait_until("snapshot-io rounds", || {
        parse_rounds(&scratch.console()).len() >= count
    });
    snapshot_and_kill(vm, scratch, to);
}

/// The rounds of both consoles, checked to count up from 0 with no gap and no repeat.
fn continued_rounds(before: &Scratch, after: &Scratch) -> Vec<Round> {
    let all = before.console() + &after.console();
    let rounds = parse_rounds(&all);
    let numbers: Vec<u64> = rounds.iter().map(|round| round.number).collect();
    assert_eq!(
        numbers,
        (0..numbers.len() as u64).collect::<Vec<_>>(),
        "{all}"
    );
    assert!(parse_rounds(&after.console()).len() > 5, "{all}");
    rounds
}

/// The byte `snapshot-io` writes at `offset` of its sector in round `round`.
fn round_pattern(round: u64, offset: usize) -> u8 {
    let offset = offset as u64;
    round.wrapping_add(offset).wrapping_mul(offset + 1) as u8
}

#[test]
fn a_virtio_blk_guest_continues_its_requests_after_a_restore_and_a_resized_disk_is_refused() {
    require_kvm!();
    let scratch = Scratch::new();
    let disk = scratch.path("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let config = VmConfig {
        disks: vec![DiskConfig {
            path: disk.clone(),
            format: Some(corral_disk::DiskFormat::Raw),
            allow_backing: None,
            readonly: false,
            serial: None,
        }],
        ..scratch.config("snapshot-io")
    };
    let snap = scratch.path("snap");
    run_rounds(common::start(&config), &scratch, 30, Some(snap.clone()));

    let saved = SavedVm::open(&snap).unwrap();
    let blk = &saved.snapshot.devices.virtio[0];
    assert_eq!(blk.name, "virtio-blk0");
    assert_eq!(blk.registers.status & DRIVER_OK, DRIVER_OK);
    // Two requests a round, each used once: the device's position is past the first 60.
    assert!(blk.positions[0].next_used >= 60, "{blk:?}");
    // The guest polls and never acknowledges: the used-buffer interrupt is pending.
    assert_eq!(blk.interrupt_status & 1, 1);
    let second = Scratch::new();
    run_rounds(restore(saved, &second), &second, 30, None);

    let rounds = continued_rounds(&scratch, &second);
    for round in &rounds {
        let sum: u64 = (0..SECTOR)
            .map(|offset| u64::from(round_pattern(round.number, offset)))
            .sum();
        assert_eq!(round.blk, sum.to_string(), "round {}", round.number);
    }
    // The last 7 printed rounds' sectors hold what they wrote (the round after them may have
    // written over the eighth before the kill).
    let contents = std::fs::read(&disk).unwrap();
    let last = rounds.last().unwrap().number;
    for number in last - 6..=last {
        let sector = (number % 8) as usize * SECTOR;
        let expected: Vec<u8> = (0..SECTOR).map(|o| round_pattern(number, o)).collect();
        assert_eq!(
            contents[sector..sector + SECTOR],
            expected,
            "round {number}"
        );
    }

    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let third = Scratch::new();
    let error = common::finish(restore(SavedVm::open(&snap).unwrap(), &third)).unwrap_err();
    let message = corral_host::error_chain(&error);
    assert!(
        message.contains("virtio-blk0") && message.contains("changed size"),
        "{message}"
    );
}

#[test]
fn a_restored_virtio_rng_device_still_answers() {
    require_kvm!();
    let scratch = Scratch::new();
    let config = VmConfig {
        rng: true,
        ..scratch.config("snapshot-io")
    };
    let snap = scratch.path("snap");
    run_rounds(common::start(&config), &scratch, 10, Some(snap.clone()));
    let saved = SavedVm::open(&snap).unwrap();
    assert_eq!(saved.snapshot.devices.virtio.len(), 1);
    let second = Scratch::new();
    run_rounds(restore(saved, &second), &second, 10, None);

    let rounds = continued_rounds(&scratch, &second);
    let restored = parse_rounds(&second.console());
    let values: std::collections::HashSet<&str> =
        restored.iter().map(|round| round.rng.as_str()).collect();
    assert!(
        values.len() > 1 && !values.contains("-") && !values.contains("0"),
        "{rounds:?}"
    );
}

#[test]
fn a_restored_vsock_device_tells_the_guest_its_connections_are_gone() {
    require_kvm!();
    let scratch = Scratch::new();
    let config = VmConfig {
        vsock: Some(VsockConfig {
            cid: 7,
            socket: scratch.path("vsock.sock"),
        }),
        ..scratch.config("snapshot-io")
    };
    let snap = scratch.path("snap");
    run_rounds(common::start(&config), &scratch, 10, Some(snap.clone()));
    assert!(!scratch.console().contains("vsock event"));
    let saved = SavedVm::open(&snap).unwrap();
    assert_eq!(saved.snapshot.devices.virtio[0].config, 7u64.to_le_bytes());
    let second = Scratch::new();
    let vm = restore(saved, &second);
    // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET is event 0.
    second.wait_for_console("vsock event 0\n", 1);
    run_rounds(vm, &second, 10, None);
    continued_rounds(&scratch, &second);
    assert_eq!(second.console().matches("vsock event").count(), 1);
}
