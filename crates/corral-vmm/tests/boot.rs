//! Booting test guests through `corral_vmm::run`: the boot protocols (PVH and bzImage), the
//! command line and initrd the guest sees, its console, its debug-exit code as the `VmExit`, and
//! the typed errors for configurations that cannot boot.

mod common;

use std::path::Path;

use common::Scratch;
use corral_testkit::require_kvm;
use corral_vmm::config::ConfigError;
use corral_vmm::kernel::{ImageError, KernelError};
use corral_vmm::{ExitReason, VmConfig, VmExit, VmmError};

#[test]
fn the_guests_debug_exit_code_is_the_vm_exit() {
    require_kvm!();
    let scratch = Scratch::new();
    let exit = common::run(&scratch.config("exit")).unwrap();
    assert_eq!(
        exit,
        VmExit {
            reason: ExitReason::Poweroff,
            guest_code: Some(42),
            detail: exit.detail.clone(),
            restarts: 0,
            restart_limited: false,
        }
    );
    assert_eq!(exit.exit_status(), 42);
    assert!(
        !scratch.socket.exists(),
        "the control socket is removed on exit"
    );
}

#[test]
fn hello_sees_its_command_line_and_initrd_with_one_and_two_vcpus() {
    require_kvm!();
    for vcpus in [1, 2] {
        let scratch = Scratch::new();
        let initrd = scratch.path("initrd");
        std::fs::write(&initrd, "initrd-marker\nrest").unwrap();
        let config = VmConfig {
            vcpus,
            cmdline: "console=ttyS0 answer=42".into(),
            initrd: Some(initrd),
            ..scratch.config("hello")
        };
        let exit = common::run(&config).unwrap();
        assert_eq!(exit.reason, ExitReason::Poweroff, "{vcpus} vCPUs: {exit:?}");
        assert_eq!(exit.exit_status(), 0);
        let console = scratch.console();
        assert!(
            console.contains("hello from a corral test guest\n"),
            "{console}"
        );
        assert!(
            console.contains("cmdline: console=ttyS0 answer=42\n"),
            "{console}"
        );
        assert!(
            console.contains("initrd: 18 bytes: initrd-marker\n"),
            "{console}"
        );
    }
}

#[test]
fn a_bzimage_boots_through_the_64_bit_boot_protocol() {
    require_kvm!();
    let scratch = Scratch::new();
    let config = VmConfig {
        kernel: corral_guests::hello_bzimage(),
        cmdline: "via=bzimage".into(),
        ..scratch.config("hello")
    };
    let exit = common::run(&config).unwrap();
    assert_eq!(exit.reason, ExitReason::Poweroff, "{exit:?}");
    let console = scratch.console();
    assert!(console.contains("cmdline: via=bzimage\n"), "{console}");
}

/// The random seed the `hello` guest found in its `setup_data` list (hex), with the console.
fn booted_seed(kernel: &Path) -> (Option<String>, String) {
    let scratch = Scratch::new();
    let config = VmConfig {
        kernel: kernel.to_owned(),
        ..scratch.config("hello")
    };
    let exit = common::run(&config).unwrap();
    assert_eq!(exit.reason, ExitReason::Poweroff, "{exit:?}");
    let console = scratch.console();
    let seed = console
        .lines()
        .find_map(|line| line.strip_prefix("setup_data: type 9, 32 bytes: "))
        .map(str::to_owned);
    (seed, console)
}

#[test]
fn each_boot_protocol_boot_carries_its_own_random_seed() {
    require_kvm!();
    let (first, console) = booted_seed(&corral_guests::hello_bzimage());
    let first = first.unwrap_or_else(|| panic!("no random seed in setup_data:\n{console}"));
    let (second, console) = booted_seed(&corral_guests::hello_bzimage());
    let second = second.unwrap_or_else(|| panic!("no random seed in setup_data:\n{console}"));
    assert_eq!(first.len(), 64, "{first}");
    assert_ne!(first, "0".repeat(64));
    assert_ne!(first, second, "two boots were given the same seed");
    assert_eq!(
        console.matches("setup_data:").count(),
        1,
        "one entry: {console}"
    );
    // PVH has no setup_data: the guest sees no list at all.
    let (pvh_seed, console) = booted_seed(&corral_guests::elf("hello"));
    assert!(!console.contains("setup_data:"), "{pvh_seed:?}: {console}");
}

/// Runs `config` expecting an error before the guest starts.
fn refused(config: &VmConfig) -> VmmError {
    match common::run(config) {
        Ok(exit) => panic!("{} booted: {exit:?}", config.kernel.display()),
        Err(err) => err,
    }
}

#[test]
fn kernels_corral_cannot_boot_are_typed_errors() {
    // Every refusal here comes before /dev/kvm is opened: no KVM needed.
    let scratch = Scratch::new();
    let missing = Path::new("/nonexistent/vmlinux");
    let not_a_kernel = scratch.path("notes.txt");
    std::fs::write(&not_a_kernel, "just text\n").unwrap();
    let mut arm = std::fs::read(corral_guests::elf("hello")).unwrap();
    arm[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine = AArch64
    let arm_kernel = scratch.path("arm.elf");
    std::fs::write(&arm_kernel, arm).unwrap();
    let with_kernel = |kernel: &Path| VmConfig {
        kernel: kernel.to_owned(),
        ..scratch.config("hello")
    };

    let err = refused(&with_kernel(missing));
    assert!(
        matches!(&err, VmmError::Kernel(KernelError::Open { path, .. }) if path == missing),
        "{err:?}"
    );
    let err = refused(&with_kernel(&not_a_kernel));
    assert!(
        matches!(
            err,
            VmmError::Kernel(KernelError::NotAKernel {
                reason: ImageError::UnknownFormat,
                ..
            })
        ),
        "{err:?}"
    );
    let err = refused(&with_kernel(&arm_kernel));
    assert!(
        matches!(
            err,
            VmmError::Kernel(KernelError::NotAKernel {
                reason: ImageError::WrongArchitecture(183),
                ..
            })
        ),
        "{err:?}"
    );
    // A refused VM leaves no control socket behind (it was never bound).
    assert!(!scratch.socket.exists());
}

#[test]
fn memory_and_vcpu_counts_out_of_range_are_refused() {
    // Refused before /dev/kvm is opened, as above.
    let scratch = Scratch::new();
    let big_initrd = scratch.path("initrd");
    std::fs::write(&big_initrd, vec![0u8; 3 << 20]).unwrap();

    let tiny = VmConfig {
        memory: "1M".parse().unwrap(),
        ..scratch.config("hello")
    };
    let err = refused(&tiny);
    assert!(
        matches!(err, VmmError::Config(ConfigError::MemoryTooSmall(_))),
        "{err:?}"
    );
    let crowded = VmConfig {
        memory: "2M".parse().unwrap(),
        initrd: Some(big_initrd),
        ..scratch.config("hello")
    };
    let err = refused(&crowded);
    assert!(
        matches!(err, VmmError::Kernel(KernelError::MemoryTooSmall { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("give more memory"), "{err}");
    let too_many = VmConfig {
        vcpus: 255,
        ..scratch.config("hello")
    };
    let err = refused(&too_many);
    assert!(
        matches!(err, VmmError::Config(ConfigError::Vcpus(255))),
        "{err:?}"
    );
}
