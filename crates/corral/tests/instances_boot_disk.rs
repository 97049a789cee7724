//! VM instances with `[boot] from = "disk"`: the kernel (and initrd) come from the VM's own
//! ext4 disk, found through its grub.cfg at every start (pygrub's way). The fast test puts a
//! freestanding test guest on the disk as its "kernel"; the ignored one the real Linux guest.

mod common;

use std::path::Path;
use std::time::Duration;

use corral_testkit::{require_kvm, require_program};

use common::{ext4_boot_disk, linux_boot_disk, wait_for, CorralRoot as Root};

/// Writes a definition (`top` holds its top-level settings) booting from `disk` and creates the
/// instance from it; its stderr, as the error when the create fails.
fn define(root: &Root, name: &str, disk: &Path, top: &str) -> Result<String, String> {
    let file = root.dir.path().join(format!("{name}.toml"));
    let definition = format!(
        "name = \"{name}\"\ntype = \"vm\"\n{top}\n[boot]\nfrom = \"disk\"\n\n\
         [[disks]]\npath = \"{}\"\nformat = \"raw\"\n",
        disk.display()
    );
    std::fs::write(&file, definition).unwrap();
    let out = root.run(&["create", "--file", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stderr)
    } else {
        assert!(!stderr.contains("panicked"), "{stderr}");
        Err(stderr)
    }
}

#[test]
fn a_vm_boots_the_kernel_its_disk_names() {
    require_kvm!();
    require_program!("mkfs.ext4");
    let root = Root::new();
    let grub = "set default=1\n\
                menuentry 'hello' {\n linux /boot/vmlinuz-hello\n}\n\
                menuentry 'counter' {\n linux /boot/vmlinuz-test console=ttyS0\n}\n";
    let disk = ext4_boot_disk(
        root.dir.path(),
        &[
            ("/boot/vmlinuz-test", &corral_guests::elf("counter")),
            ("/boot/vmlinuz-hello", &corral_guests::elf("hello")),
        ],
        grub,
    );
    define(&root, "fromdisk", &disk, "memory = \"32M\"").unwrap();
    assert!(root
        .ok(&["info", "fromdisk"])
        .contains("from its first disk"));
    root.ok(&["start", "fromdisk"]);
    wait_for(
        "the counter guest from the disk",
        Duration::from_secs(30),
        || root.ok(&["logs", "fromdisk"]).contains("count 2"),
    );
    let run_boot = root.instance_dir("fromdisk").join("run/boot");
    assert_eq!(
        std::fs::read(run_boot.join("kernel")).unwrap(),
        std::fs::read(corral_guests::elf("counter")).unwrap()
    );
    let vm_toml =
        std::fs::read_to_string(root.instance_dir("fromdisk").join("run/vm.toml")).unwrap();
    assert!(vm_toml.contains("run/boot/kernel"), "{vm_toml}");
    assert!(vm_toml.contains("console=ttyS0"), "{vm_toml}");
    root.ok(&["stop", "fromdisk", "--timeout", "1"]);
}

#[test]
fn a_disk_without_a_kernel_is_refused_with_the_reason() {
    require_program!("mkfs.ext4");
    let root = Root::new();
    let disk = ext4_boot_disk(
        root.dir.path(),
        &[],
        "menuentry 'gone' {\n linux /boot/vmlinuz-9\n}\n",
    );
    let err = define(&root, "nokernel", &disk, "memory = \"32M\"").unwrap_err();
    assert!(err.contains("cannot boot from its disk"), "{err}");
    assert!(
        err.contains("names the kernel /boot/vmlinuz-9, which is not a file on the disk"),
        "{err}"
    );
    assert!(root.fails(&["info", "nokernel"]).contains("nokernel"));

    // A kernel given as well as from = "disk" is a contradiction, said as such.
    let file = root.dir.path().join("both.toml");
    std::fs::write(
        &file,
        "name = \"both\"\ntype = \"vm\"\n[boot]\nfrom = \"disk\"\nkernel = \"/vmlinux\"\n\
         [[disks]]\npath = \"/nope.raw\"\nformat = \"raw\"\n",
    )
    .unwrap();
    let err = root.fails(&["create", "--file", file.to_str().unwrap()]);
    assert!(err.contains("remove kernel and initrd"), "{err}");
}

/// The real Linux guest kernel and its initramfs on the disk, found through grub.cfg, booting to
/// its init. About a minute on the emulated-KVM host: run with `--run-ignored only` and
/// `CORRAL_GUEST_LINUX_DIR` (see `vmm_linux.rs`).
#[test]
#[ignore]
fn linux_boots_from_its_disk() {
    require_kvm!();
    require_program!("mkfs.ext4");
    let root = Root::new();
    let disk = linux_boot_disk(root.dir.path());
    define(
        &root,
        "linux",
        &disk,
        "memory = \"256M\"\ncpus = 2\non_reboot = \"destroy\"",
    )
    .unwrap();
    root.ok(&["start", "linux"]);
    wait_for("Linux's init", Duration::from_secs(240), || {
        root.ok(&["logs", "linux"]).contains("corral-init: started")
    });
    wait_for("the reboot", Duration::from_secs(120), || {
        root.status("linux") != "running"
    });
    let logs = root.ok(&["logs", "linux"]);
    assert!(logs.contains("corral-init: cpus=2"), "{logs}");
}
