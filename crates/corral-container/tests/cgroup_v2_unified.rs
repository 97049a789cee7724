//! The v2 code against a real cgroup2 hierarchy. On hybrid hosts (like corral's development
//! hosts) the controllers live on v1, but the cgroup2 mount at /sys/fs/cgroup/unified still
//! offers the core v2 features: creating groups, moving processes, freezing, removing.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_container::cgroups::{with_default_device_rules, Cgroup, Hierarchy, Layout, V2Cgroup};
use corral_testkit::{require_root, skip};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxResourcesBuilder};

/// The cgroup2 mount, if the host has one.
fn cgroup2_mount() -> Option<Hierarchy> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if !after.starts_with("cgroup2 ") {
            return None;
        }
        let fields: Vec<&str> = before.split(' ').collect();
        Some(Hierarchy {
            mount_point: fields.get(4)?.into(),
            root: fields.get(3)?.into(),
            controllers: vec![],
        })
    })
}

fn process_state(child: &Child) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

#[test]
fn v2_group_holds_freezes_thaws_and_is_removed() {
    require_root!();
    let Some(hierarchy) = cgroup2_mount() else {
        skip("needs a cgroup2 mount");
        return;
    };
    let path = format!("/corral-test/v2-{}", std::process::id());
    let cgroup = V2Cgroup::new(hierarchy.clone(), Path::new(&path));
    cgroup.create().unwrap();
    let dir = hierarchy.mount_point.join(path.trim_start_matches('/'));
    assert!(dir.join("cgroup.procs").exists(), "a real cgroup directory");

    // A busy loop, so "not running" can only mean frozen.
    let mut child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    cgroup.add_process(child.id() as i32).unwrap();
    assert_eq!(cgroup.pids().unwrap(), [child.id() as i32]);

    cgroup.set_frozen(true).unwrap();
    assert!(cgroup.is_frozen().unwrap());
    std::thread::sleep(Duration::from_millis(50));
    assert_ne!(
        process_state(&child),
        'R',
        "the frozen busy loop does not run"
    );
    cgroup.set_frozen(false).unwrap();
    assert!(!cgroup.is_frozen().unwrap());
    let deadline = Instant::now() + Duration::from_secs(2);
    while process_state(&child) != 'R' {
        assert!(Instant::now() < deadline, "the thawed task runs again");
        std::thread::sleep(Duration::from_millis(5));
    }

    child.kill().unwrap();
    child.wait().unwrap();
    cgroup.destroy().unwrap();
    assert!(!dir.exists());
    let _ = std::fs::remove_dir(hierarchy.mount_point.join("corral-test"));
}

/// Tries each device in a shell moved into `cgroup` first; returns its report.
fn try_devices_in(cgroup: &V2Cgroup, script: &str) -> String {
    let mut child = Command::new("sh")
        .args(["-c", &format!("read go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cgroup.add_process(child.id() as i32).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn v2_device_filter_opens_allowed_devices_only() {
    require_root!();
    let Some(hierarchy) = cgroup2_mount() else {
        skip("needs a cgroup2 mount");
        return;
    };
    // A node for a host block device, as an image might ship it (the first loop device: this
    // host's sandbox keeps even root from opening its real disk), and one for /dev/kmsg
    // (c 1:11), which no default rule allows.
    let nodes = tempfile::tempdir().unwrap();
    let disk = nodes.path().join("disk");
    let kmsg = nodes.path().join("kmsg");
    mknod(
        &disk,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(7, 0),
    )
    .unwrap();
    mknod(
        &kmsg,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 11),
    )
    .unwrap();
    std::fs::File::open(&disk).expect("outside the cgroup the disk node opens");

    let path = format!("/corral-test/devices-{}", std::process::id());
    let cgroup = V2Cgroup::new(hierarchy.clone(), Path::new(&path));
    cgroup.create().unwrap();
    // podman's list: deny all, then corral's defaults.
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .unwrap();
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![deny_all])
        .build()
        .unwrap();
    cgroup
        .apply(&with_default_device_rules(&resources, &[]))
        .unwrap();

    let script = format!(
        "for dev in /dev/null /dev/zero {disk} {kmsg}; do \
           if head -c 1 $dev >/dev/null 2>/dev/null; then echo \"$dev opens\"; else echo \"$dev refused\"; fi; \
         done; \
         mknod {dir}/null c 1 3 && echo 'mknod allowed'; \
         echo x > {dir}/null && echo 'new null writable'; \
         head -c 1 {disk}",
        disk = disk.display(),
        kmsg = kmsg.display(),
        dir = nodes.path().display(),
    );
    let report = try_devices_in(&cgroup, &script);
    for expected in [
        "/dev/null opens".to_string(),
        "/dev/zero opens".to_string(),
        format!("{} refused", disk.display()),
        format!("{} refused", kmsg.display()),
        "mknod allowed".to_string(),
        "new null writable".to_string(),
        "Operation not permitted".to_string(),
    ] {
        assert!(report.contains(&expected), "{expected:?} in {report}");
    }
    cgroup.destroy().unwrap();
    let _ = std::fs::remove_dir(hierarchy.mount_point.join("corral-test"));
}

#[test]
fn the_hosts_layout_is_detected() {
    let layout = Layout::detect().unwrap();
    let has_memory = match &layout {
        Layout::V1 { hierarchies, .. } => hierarchies
            .iter()
            .any(|h| h.controllers.iter().any(|c| c == "memory")),
        Layout::V2 { hierarchy } => {
            std::fs::read_to_string(hierarchy.mount_point.join("cgroup.controllers"))
                .unwrap_or_default()
                .contains("memory")
        }
    };
    assert!(
        has_memory,
        "every supported layout offers the memory controller: {layout:?}"
    );
}
