//! How a VM run through `corral_vmm::run` ends: the guest's reset, triple fault and ACPI power-off
//! as exit reasons, the `on_reboot` policy and its restart limit, and `shutdown` (Ctrl-Alt-Del)
//! and `kill` over the control socket.

mod common;

use common::Scratch;
use corral_control::{Request, RunState};
use corral_testkit::require_kvm;
use corral_vmm::config::{Action, RestartLimit};
use corral_vmm::{ExitReason, VmConfig};

#[test]
fn an_i8042_reset_is_a_reboot_that_ends_the_vm_under_the_destroy_policy() {
    require_kvm!();
    let scratch = Scratch::new();
    let config = VmConfig {
        on_reboot: Action::Destroy,
        ..scratch.config("reset")
    };
    let exit = common::run(&config).unwrap();
    assert_eq!(exit.reason, ExitReason::Reboot, "{exit:?}");
    assert_eq!((exit.restarts, exit.exit_status()), (0, 3));
    assert_eq!(scratch.console().matches("resetting\n").count(), 1);
}

#[test]
fn a_rebooting_guest_is_restarted_until_its_restart_limit() {
    require_kvm!();
    let scratch = Scratch::new();
    let config = VmConfig {
        on_reboot: Action::Restart,
        restart_limit: RestartLimit {
            burst: 2,
            interval_secs: 600,
        },
        ..scratch.config("reset")
    };
    let exit = common::run(&config).unwrap();
    assert_eq!(exit.reason, ExitReason::Reboot, "{exit:?}");
    assert!(exit.restart_limited, "{exit:?}");
    assert_eq!((exit.restarts, exit.exit_status()), (2, 6));
    assert!(exit.detail.contains("restart_limit"), "{}", exit.detail);
    // The same guest booted three times, each from the start.
    assert_eq!(scratch.console().matches("resetting\n").count(), 3);
}

#[test]
fn a_triple_fault_is_a_crash_with_the_registers_in_the_detail() {
    require_kvm!();
    let scratch = Scratch::new();
    let exit = common::run(&scratch.config("triple-fault")).unwrap();
    assert_eq!(exit.reason, ExitReason::Crashed, "{exit:?}");
    assert_eq!(exit.exit_status(), 4);
    assert!(exit.detail.contains("triple fault"), "{}", exit.detail);
    assert!(exit.detail.contains("rip=0x"), "{}", exit.detail);
    // ud2 (0f 0b) is the faulting instruction.
    assert!(
        exit.detail.contains("code at rip: [0f, 0b"),
        "{}",
        exit.detail
    );
}

#[test]
fn the_acpi_tables_lead_the_guest_to_s5_power_off_and_to_the_reset_register() {
    require_kvm!();
    let scratch = Scratch::new();
    let exit = common::run(&scratch.config("acpi")).unwrap();
    assert_eq!(exit.reason, ExitReason::Poweroff, "{exit:?}");
    assert!(exit.detail.contains("ACPI S5"), "{}", exit.detail);
    let console = scratch.console();
    assert!(
        console.contains("acpi: entering S5 (SLP_TYP 5) through port 0x600"),
        "{console}"
    );

    let scratch = Scratch::new();
    let reset = VmConfig {
        cmdline: "acpi=reset".into(),
        on_reboot: Action::Destroy,
        ..scratch.config("acpi")
    };
    let exit = common::run(&reset).unwrap();
    assert_eq!(exit.reason, ExitReason::Reboot, "{exit:?}");
    assert!(
        exit.detail.contains("ACPI reset register"),
        "{}",
        exit.detail
    );
}

#[test]
fn shutdown_presses_ctrl_alt_del_and_the_guest_powers_off() {
    require_kvm!();
    let scratch = Scratch::new();
    let vm = common::start(&scratch.config("ctrl-alt-del"));
    scratch.wait_for_console("waiting for ctrl-alt-del", 1);
    let shutdown = Request::Shutdown { timeout_secs: None };
    assert_eq!(scratch.control_state(&shutdown), RunState::Stopping);
    let exit = common::finish(vm).unwrap();
    assert_eq!(exit.reason, ExitReason::Poweroff, "{exit:?}");
    assert_eq!(exit.guest_code, Some(0));
    assert!(scratch.console().contains("ctrl-alt-del received"));
}

#[test]
fn shutdown_forces_off_a_guest_that_ignores_it() {
    require_kvm!();
    let scratch = Scratch::new();
    let vm = common::start(&scratch.config("counter"));
    scratch.wait_for_console("count ", 1);
    let shutdown = Request::Shutdown {
        timeout_secs: Some(1),
    };
    assert_eq!(scratch.control_state(&shutdown), RunState::Stopping);
    let exit = common::finish(vm).unwrap();
    assert_eq!(exit.reason, ExitReason::Killed, "{exit:?}");
    assert!(
        exit.detail.contains("did not shut down within 1s"),
        "{}",
        exit.detail
    );
}

#[test]
fn a_reboot_after_shutdown_ends_the_vm_even_with_the_restart_policy() {
    require_kvm!();
    // The reset guest reboots at once, as Linux does in answer to Ctrl-Alt-Del.
    let scratch = Scratch::new();
    let config = VmConfig {
        on_reboot: Action::Restart,
        restart_limit: RestartLimit {
            burst: 1000,
            interval_secs: 0,
        },
        ..scratch.config("reset")
    };
    let vm = common::start(&config);
    scratch.wait_for_console("resetting\n", 2);
    let shutdown = Request::Shutdown {
        timeout_secs: Some(30),
    };
    scratch.control(&shutdown);
    let exit = common::finish(vm).unwrap();
    assert_eq!(exit.reason, ExitReason::Reboot, "{exit:?}");
    assert!(!exit.restart_limited);
    assert!(exit.restarts >= 1, "{exit:?}");
}

#[test]
fn kill_stops_the_guest_at_once_and_removes_the_control_socket() {
    require_kvm!();
    let scratch = Scratch::new();
    let vm = common::start(&scratch.config("counter"));
    scratch.wait_for_console("count ", 1);
    assert_eq!(scratch.control_state(&Request::Status), RunState::Running);
    assert_eq!(scratch.control_state(&Request::Kill), RunState::Stopping);
    let exit = common::finish(vm).unwrap();
    assert_eq!(exit.reason, ExitReason::Killed, "{exit:?}");
    assert_eq!(exit.exit_status(), 5);
    assert!(
        !scratch.socket.exists(),
        "the control socket is removed on exit"
    );
}
