//! corral's container engine on a pure cgroup v2 kernel: this development host is cgroup v1 (its
//! v2 mount holds only hugetlb), so the v2 code would otherwise meet a kernel that enforces
//! memory.max, pids.max, cpu.max, cgroup.freeze, delegation and eBPF device filters only on a
//! user's machine. corral boots its own: the test guest kernel (`guests/linux`) with
//! `cgroup_no_v1=all`, from an ext4 root disk holding busybox, corral with its libraries, a
//! busybox root filesystem for containers and their bundles; `guests/linux/containers-v2.sh` is
//! its init, runs each scenario through `corral oci` or the instance layer and prints one line
//! per scenario, asserted here one by one. Not in `scripts/test.sh`: on this development host
//! every run so far had a guest program killed by the emulator's memory bug (guests/linux/README.md),
//! and a run takes about ten minutes; run it by hand with `CORRAL_GUEST_LINUX_FULL_DIR`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::{require_kvm, require_program, require_root};
use serde_json::{json, Value};

mod common;

use common::linux;

/// Boot (about a minute here) and the scenarios: some twenty corral commands of tens of seconds
/// each in this guest, more on a loaded host.
const RUN_TIMEOUT: Duration = Duration::from_secs(1200);

/// A bundle's config.json for a process running `args` in the guest's `/rootfs`, read-only.
fn bundle_config(args: &[&str]) -> Value {
    let mut config = common::TestBundle::new("v2", "").config.clone();
    config["process"]["args"] = json!(args);
    config["root"] = json!({"path": "/rootfs", "readonly": true});
    config
}

/// The bundles the scenarios run, by name: one container (see `containers-v2.sh`) that prints
/// its cgroup (its own namespace's root), finds the root disk's node bind-mounted but refused by
/// the device filter and /dev/null allowed, forks 20 sleepers under a pids limit of 8, then spins
/// under a CPU quota of 20 ms per 100 ms.
fn bundles() -> Vec<(&'static str, Value)> {
    let mut checks = bundle_config(&[
        "sh",
        "-c",
        "echo \"cgroup $(cat /proc/self/cgroup)\"; \
         test -b /dev/vda && echo vda visible; \
         head -c 1 /dev/vda >/dev/null 2>/tmp/err; cat /tmp/err; \
         echo x >/dev/null && echo null ok; \
         ( i=0; while [ $i -lt 20 ]; do sleep 100 & i=$((i + 1)); done ) 2>/dev/null; \
         echo spinning; while :; do :; done",
    ]);
    checks["linux"]["resources"]["pids"] = json!({"limit": 8});
    checks["linux"]["resources"]["cpu"] = json!({"quota": 20000, "period": 100000});
    let mounts = checks["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/dev/vda", "type": "bind", "source": "/dev/vda", "options": ["bind"]}));
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    let namespaces = checks["linux"]["namespaces"].as_array_mut().unwrap();
    if !namespaces.iter().any(|ns| ns["type"] == "cgroup") {
        namespaces.push(json!({"type": "cgroup"}));
    }
    vec![("checks", checks)]
}

/// The guest's root disk in `dir`: busybox, corral and its libraries, `/rootfs`, `/bundles`,
/// `/init.sh` and `warm` from the guest build in `kernel_dir`.
fn root_disk(dir: &Path, kernel_dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("root");
    common::build_rootfs(&tree);
    std::fs::create_dir_all(tree.join("run")).unwrap();
    linux::stripped_corral(&tree.join("bin/corral"));
    common::install_corral_libraries(&tree);
    // The instance layer copies a root filesystem with GNU cp's options (busybox's lacks them).
    let gnu_cp = Path::new("/bin/cp");
    std::fs::remove_file(tree.join("bin/cp")).unwrap();
    std::fs::copy(gnu_cp, tree.join("bin/cp")).unwrap();
    common::install_libraries_of(gnu_cp, &tree);
    common::build_rootfs(&tree.join("rootfs"));
    for (name, config) in bundles() {
        let bundle = tree.join("bundles").join(name);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
    }
    // The test guest's init, run as `warm`, reads files into the page cache.
    std::fs::copy(kernel_dir.join("init"), tree.join("bin/warm")).unwrap();
    let init = tree.join("init.sh");
    std::fs::copy(
        linux::repo_root().join("guests/linux/containers-v2.sh"),
        &init,
    )
    .unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = dir.join("root.ext4");
    corral_testkit::mkfs_ext4(&tree, &image, "256M");
    image
}

/// The `v2 NAME: ...` line of scenario `name` (the guest's tty ends lines with "\r\n").
fn scenario_line<'a>(console: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("v2 {name}: ");
    console
        .lines()
        .map(str::trim_end)
        .find_map(|line| line.strip_prefix(&prefix))
}

/// The scenarios that must pass.
const SCENARIOS: [&str; 8] = [
    "lifecycle",
    "cgroupns",
    "devices",
    "pids",
    "cpu",
    "freeze",
    "memory",
    "delegation",
];

/// Boots the guest in `kernel` with the root disk `disk` and returns its console once it ended.
fn run_guest(kernel: &Path, disk: &Path, console_path: &Path) -> String {
    let started = Instant::now();
    let mut vmm = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["vmm", "run", "--vcpus", "1", "--memory", "512M"])
        .args(["--on-reboot", "destroy", "--cmdline"])
        // acpi=off: nothing here needs ACPI, whose interpreter costs boot time in this host's
        // instruction emulator (the guest then takes the MP table and the command line's
        // virtio devices).
        .arg(linux::cmdline(
            "acpi=off root=/dev/vda rw init=/init.sh cgroup_no_v1=all",
        ))
        .arg("--kernel")
        .arg(kernel.join("vmlinux"))
        .arg("--disk")
        .arg(format!("path={},format=raw", disk.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(console_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let console = || std::fs::read_to_string(console_path).unwrap_or_default();
    let mut first_line = None;
    while vmm.try_wait().unwrap().is_none() {
        if first_line.is_none() && console().contains("v2 setup: ") {
            first_line = Some(started.elapsed());
        }
        if started.elapsed() > RUN_TIMEOUT {
            vmm.kill().unwrap();
            vmm.wait().unwrap();
            panic!(
                "the guest did not finish within {RUN_TIMEOUT:?}; console:\n{}",
                console()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "boot to the first scenario: {:.0?}; boot and all scenarios: {:.0?}",
        first_line.unwrap_or_default(),
        started.elapsed()
    );
    console()
}

#[test]
#[ignore = "boots Linux and runs ~60 guest programs (10 minutes here); too many for this host's emulator, \
            which hands a fresh guest program another's memory now and then (guests/linux/README.md); \
            run by hand"]
fn the_container_engine_passes_every_scenario_on_a_pure_cgroup_v2_kernel() {
    require_root!();
    require_kvm!();
    require_program!("mkfs.ext4");
    require_program!("strip");
    if !common::have_busybox() {
        return;
    }
    let (kernel, _keep) = linux::guest_linux_full_dir();
    let scratch = tempfile::tempdir().unwrap();
    let console_path = scratch.path().join("console.log");
    let mut console = run_guest(&kernel, &root_disk(scratch.path(), &kernel), &console_path);
    let failed = |console: &str| {
        SCENARIOS
            .iter()
            .any(|name| !scenario_line(console, name).is_some_and(|line| line.starts_with("ok ")))
    };
    // When the guest kernel reported killing a program for the emulator's fault, the guest runs
    // once more, from a fresh disk.
    if failed(&console) && linux::reports_a_fault(&console) {
        eprintln!("a guest program died of a fault; running the guest once more:\n{console}");
        let again = tempfile::tempdir().unwrap();
        console = run_guest(&kernel, &root_disk(again.path(), &kernel), &console_path);
    }
    assert!(
        console.contains("v2 done"),
        "the guest's init did not finish; console:\n{console}"
    );
    let setup = scenario_line(&console, "setup").unwrap_or_default();
    for controller in ["cpu", "memory", "pids"] {
        assert!(
            setup.split_whitespace().any(|word| word == controller),
            "no {controller} controller: {setup}"
        );
    }
    for name in SCENARIOS {
        let line = scenario_line(&console, name)
            .unwrap_or_else(|| panic!("no result for scenario {name}; console:\n{console}"));
        assert!(
            line.starts_with("ok "),
            "scenario {name}: {line}; console:\n{console}"
        );
    }
    // With corral's memory.max write skipped, the same check catches the missing limit.
    let broken = scenario_line(&console, "memory-without-memory.max").unwrap_or_default();
    assert!(
        broken.starts_with("FAIL not OOM-killed"),
        "the memory scenario passed without memory.max: {broken}"
    );
}
