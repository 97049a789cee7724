//! Pausing and resuming a VM run through `corral_vmm::run`, over its control socket, with the
//! counter guest (it prints a line every few thousand steps, so its output stops while paused).

mod common;

use std::time::Duration;

use common::{counts, Scratch};
use corral_control::{Request, Response, RunState};
use corral_testkit::require_kvm;
use corral_vmm::{ExitReason, RunOptions, VmConfig};

/// How long a paused guest is watched for output it must not print.
const PAUSED_FOR: Duration = Duration::from_millis(1500);

fn last_count(console: &str) -> u64 {
    counts(console).into_iter().max().unwrap_or(0)
}

#[test]
fn pause_freezes_a_two_vcpu_guest_and_resume_continues_it() {
    require_kvm!();
    let scratch = Scratch::new();
    let config = VmConfig {
        vcpus: 2,
        ..scratch.config("counter")
    };
    let vm = common::start(&config);
    scratch.wait_for_console("count ", 2);
    assert_eq!(scratch.control_state(&Request::Status), RunState::Running);

    assert_eq!(scratch.control_state(&Request::Pause), RunState::Paused);
    let frozen = scratch.console();
    std::thread::sleep(PAUSED_FOR);
    assert_eq!(scratch.console(), frozen, "the guest ran while paused");
    assert_eq!(scratch.control_state(&Request::Status), RunState::Paused);

    assert_eq!(scratch.control_state(&Request::Resume), RunState::Running);
    let before = last_count(&frozen);
    common::wait_until("the counter to continue", || {
        last_count(&scratch.console()) > before
    });
    // It continued from where it stopped rather than starting over.
    assert_eq!(scratch.console().matches("count 0\n").count(), 1);

    let Response::Info(info) = scratch.control(&Request::Info) else {
        panic!("info answered something else");
    };
    assert_eq!(info.kind, "vm");
    assert_eq!(info.state, RunState::Running);
    assert_eq!(info.vcpus, Some(2));
    assert_eq!(info.memory_bytes, Some(32 << 20));
    assert_eq!(info.restarts, 0);
    assert!(info.counters["exits_io_out"] > 0, "{:?}", info.counters);
    assert!(info.uptime_secs > 0.0);

    scratch.control(&Request::Kill);
    assert_eq!(common::finish(vm).unwrap().reason, ExitReason::Killed);
}

#[test]
fn a_vm_started_paused_runs_nothing_until_resumed() {
    require_kvm!();
    let scratch = Scratch::new();
    let config = scratch.config("counter");
    let options = RunOptions {
        start_paused: true,
        ..RunOptions::default()
    };
    let vm = common::spawn(move || corral_vmm::run(&config, &options));
    common::wait_until("the control socket", || scratch.socket.exists());
    // Paused from the socket's first answer on, even before the vCPUs exist.
    assert_eq!(scratch.control_state(&Request::Status), RunState::Paused);
    std::thread::sleep(PAUSED_FOR);
    assert_eq!(scratch.console(), "", "the guest ran before resume");
    assert_eq!(scratch.control_state(&Request::Status), RunState::Paused);

    assert_eq!(scratch.control_state(&Request::Resume), RunState::Running);
    scratch.wait_for_console("count 1\n", 1);
    scratch.control(&Request::Kill);
    assert_eq!(common::finish(vm).unwrap().reason, ExitReason::Killed);
}
