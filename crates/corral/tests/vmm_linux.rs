//! Boots the real Linux guest of `guests/linux/` in `corral vmm run`: PVH entry, two vCPUs, our
//! own init, then a reboot or a power-off through ACPI S5 (CPUs found in the MADT). About a
//! minute each on the emulated-KVM development host, so they are ignored in the fast run;
//! `scripts/test.sh` runs them as their own step with `CORRAL_GUEST_LINUX_DIR` pointing at a
//! `guests/linux/build.sh` output (without it the test builds the guest itself). The guest mounts
//! an ext4 virtio disk and pings a peer over virtio-net, and, in the crash test, writes synced
//! files to ext4 on a qcow2 overlay while the VMM is killed with SIGKILL three times (the
//! freestanding-guest version with 200 kills is `qcow2_crash.rs`). The quickstart's demo VM
//! (busybox init) shuts down through Ctrl-Alt-Del.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::{require_kvm, require_program, require_root, Netns};

mod common;

use common::linux;

/// A boot takes 60-130 s in the instruction emulator, more on a loaded host; nextest ends a test
/// after 8 minutes (.config/nextest.toml).
const BOOT_TIMEOUT: Duration = Duration::from_secs(360);

/// An 8 MiB ext4 image in `work` holding `hello.txt` with the line `greeting` (what the init's
/// `corral_disk` step prints).
fn hello_disk(work: &Path, greeting: &str) -> PathBuf {
    let content = work.join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("hello.txt"), format!("{greeting}\n")).unwrap();
    let disk = work.join("disk.ext4");
    corral_testkit::mkfs_ext4(&content, &disk, "8M");
    disk
}

/// A network namespace `name` with a tap device `tap0` at 10.0.2.1/24, up: the guest's peer.
fn peer_on_tap(name: &str) -> Netns {
    let netns = Netns::new(name);
    netns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    netns.ip(&["addr", "add", "10.0.2.1/24", "dev", "tap0"]);
    netns.ip(&["link", "set", "tap0", "up"]);
    netns
}

/// The content of `path` in the ext4 image `disk` (read by e2fsprogs, never mounted), after
/// checking that e2fsck finds the file system clean.
fn file_on_clean_ext4(disk: &Path, path: &str) -> String {
    let check = Command::new("e2fsck")
        .arg("-fn")
        .arg(disk)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let read = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8_lossy(&read.stdout).into_owned()
}

/// Boots the guest in `dir` with two vCPUs and returns (exit status, console, stderr).
fn boot(dir: &Path, extra_cmdline: &str) -> (Option<i32>, String, String) {
    boot_with(
        Command::new(env!("CARGO_BIN_EXE_corral")),
        dir,
        extra_cmdline,
        &[],
    )
}

/// Boots like [`boot`] through `command` (the corral binary, perhaps inside a network
/// namespace) with extra `vmm run` arguments.
fn boot_with(
    command: Command,
    dir: &Path,
    extra_cmdline: &str,
    extra_args: &[&str],
) -> (Option<i32>, String, String) {
    let mut child = vmm_run(command, dir, extra_cmdline, extra_args)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "Linux did not finish within {BOOT_TIMEOUT:?}; console:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `command` (the corral binary) set up to run the guest in `dir` with two vCPUs, `extra_args`
/// and `extra_cmdline`, its console and log piped.
fn vmm_run(mut command: Command, dir: &Path, extra_cmdline: &str, extra_args: &[&str]) -> Command {
    command
        .args(["vmm", "run", "--vcpus", "2", "--memory", "256M"])
        .args(extra_args)
        .args([
            "--on-reboot",
            "destroy",
            "--cmdline",
            &linux::cmdline(extra_cmdline),
        ])
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The lines init printed (the guest's tty turns "\n" into "\r\n").
fn init_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .map(str::trim_end)
        .filter(|line| line.starts_with("corral-init: "))
        .collect()
}

#[test]
#[ignore = "boots a real Linux kernel (about a minute here); scripts/test.sh runs it"]
fn linux_boots_to_init_with_two_vcpus_and_reboots() {
    require_kvm!();
    require_program!("gcc");
    let (dir, _keep) = linux::guest_linux_dir();
    let (status, console, stderr) = boot(&dir, "");
    assert_eq!(
        init_lines(&console),
        [
            "corral-init: started",
            "corral-init: cpus=2",
            "corral-init: rebooting"
        ],
        "{console}"
    );
    assert_eq!(status, Some(3), "{stderr}");
    assert!(stderr.contains("vm stopped: reboot ("), "{stderr}");
    // The random seed corral-vmm passes in setup_data made the guest's RNG ready while the kernel
    // set itself up, before it even printed its command line (the cmdline hides RDRAND; without
    // the seed the RNG is not ready before init on this guest).
    let seeded = console.find("random: crng init done");
    let cmdline = console.find("Kernel command line:");
    assert!(
        matches!((seeded, cmdline), (Some(seeded), Some(cmdline)) if seeded < cmdline),
        "{console}"
    );
}

#[test]
#[ignore = "boots a real Linux kernel (about a minute here); scripts/test.sh runs it"]
fn linux_with_acpi_finds_its_cpus_in_the_madt_its_devices_in_the_dsdt_and_powers_off_through_s5() {
    require_kvm!();
    require_program!("gcc");
    require_program!("mkfs.ext4");
    let (dir, _keep) = linux::guest_linux_full_dir();
    let work = tempfile::tempdir().unwrap();
    let disk = hello_disk(work.path(), "hello over ACPI");
    let disk_arg = format!("path={},format=raw", disk.display());
    let (status, console, stderr) = boot_with(
        Command::new(env!("CARGO_BIN_EXE_corral")),
        &dir,
        "corral_disk=vda corral_init=poweroff",
        &["--disk", &disk_arg, "--rng"],
    );
    assert!(
        console.contains("Using ACPI (MADT) for SMP configuration"),
        "ACPI was not used: {console}"
    );
    // The i8042 (how Ctrl-Alt-Del reaches the guest) as the DSDT describes it.
    assert!(
        console.contains("i8042: PNP: PS/2 Controller [PNP0303:PS2] at 0x60,0x64"),
        "{console}"
    );
    assert!(console.contains("serio: i8042 KBD port"), "{console}");
    // The disk, found through the DSDT's LNRO0005 device: a hardware-reduced ACPI guest maps
    // no interrupt ACPI does not describe.
    assert_eq!(
        init_lines(&console),
        [
            "corral-init: started",
            "corral-init: cpus=2",
            "corral-init: read hello.txt: hello over ACPI",
            "corral-init: wrote from-guest.txt",
            "corral-init: powering off"
        ],
        "{console}"
    );
    assert!(!console.contains("ACPI Error"), "{console}");
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stderr.contains("vm stopped: poweroff (the guest entered ACPI S5"),
        "{stderr}"
    );
}

/// The host side of the guest's vsock step: answers the guest's connection to port 6000, then
/// connects to the guest's port 5000 (retrying until the guest listens) and sends "ping".
/// Returns what the guest sent on each connection.
fn vsock_host_side(dir: &Path) -> std::thread::JoinHandle<(String, String)> {
    let listener = UnixListener::bind(dir.join("vsock.sock_6000")).unwrap();
    let socket = dir.join("vsock.sock");
    std::thread::spawn(move || {
        let read_line = |stream: &UnixStream| {
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            line
        };
        let (mut from_guest, _) = listener.accept().unwrap();
        let greeting = read_line(&from_guest);
        from_guest.write_all(b"hello linux\n").unwrap();
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            let Ok(mut to_guest) = UnixStream::connect(&socket) else {
                continue;
            };
            to_guest.set_read_timeout(Some(BOOT_TIMEOUT)).unwrap();
            // The guest refuses (the stream closes) until it listens.
            if to_guest.write_all(b"CONNECT 5000\n").is_err()
                || !read_line(&to_guest).starts_with("OK ")
            {
                continue;
            }
            to_guest.write_all(b"ping\n").unwrap();
            return (greeting, read_line(&to_guest));
        }
        (greeting, String::new())
    })
}

#[test]
#[ignore = "boots a real Linux kernel (about a minute here); scripts/test.sh runs it"]
fn linux_uses_virtio_disk_net_and_vsock() {
    require_root!();
    require_kvm!();
    require_program!("gcc");
    require_program!("ip");
    require_program!("mkfs.ext4");
    require_program!("debugfs");
    let (dir, _keep) = linux::guest_linux_dir();
    let work = tempfile::tempdir().unwrap();
    let disk = hello_disk(work.path(), "hello from the host");

    let netns = peer_on_tap("linux");
    let disk_arg = format!("path={},format=raw", disk.display());
    let vsock_arg = format!("cid=3,socket={}", work.path().join("vsock.sock").display());
    let host_side = vsock_host_side(work.path());
    let (status, console, stderr) = boot_with(
        netns.command(env!("CARGO_BIN_EXE_corral")),
        &dir,
        "corral_disk=vda corral_net=10.0.2.2 corral_peer=10.0.2.1 corral_vsock=6000",
        &[
            "--disk", &disk_arg, "--nic", "tap=tap0", "--vsock", &vsock_arg,
        ],
    );
    assert_eq!(
        init_lines(&console),
        [
            "corral-init: started",
            "corral-init: cpus=2",
            "corral-init: read hello.txt: hello from the host",
            "corral-init: wrote from-guest.txt",
            "corral-init: eth0 up with 10.0.2.2",
            "corral-init: ping 10.0.2.1 ok",
            "corral-init: vsock host said: hello linux",
            "corral-init: vsock listening on 5000",
            "corral-init: vsock answered the host",
            "corral-init: rebooting"
        ],
        "{console}"
    );
    assert_eq!(status, Some(3), "{stderr}");
    let (greeting, answer) = host_side.join().unwrap();
    assert_eq!(greeting, "hello from linux\n");
    assert_eq!(answer, "pong\n");

    // The file the guest wrote is on the disk, read by e2fsprogs after the VM ended.
    assert_eq!(
        file_on_clean_ext4(&disk, "/from-guest.txt"),
        "written by the guest over virtio-blk\n"
    );
}

/// Boots the guest in `dir` with `extra_args` and `extra_cmdline`, waits until its init has
/// reported `synced N` for at least `min_synced` files, lets it go on for `linger`, then kills the
/// VMM with SIGKILL. Returns the files it reported synced (None: none), and the console.
fn boot_fill_and_kill(
    dir: &Path,
    extra_cmdline: &str,
    extra_args: &[&str],
    min_synced: u32,
    linger: Duration,
) -> (Option<u32>, String) {
    let command = Command::new(env!("CARGO_BIN_EXE_corral"));
    let mut child = vmm_run(command, dir, extra_cmdline, extra_args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (synced_tx, synced_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut console = String::new();
        // Only whole lines count: the kill can cut one short.
        for line in corral_testkit::whole_lines(stdout) {
            if let Some(n) = line.trim_end().strip_prefix("corral-init: synced ") {
                let _ = synced_tx.send(n.parse::<u32>().unwrap());
            }
            console.push_str(&line);
            console.push('\n');
        }
        console
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut synced = None;
    while synced.is_none_or(|n| n + 1 < min_synced) {
        match synced_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(n) => synced = Some(n),
            Err(_) if child.try_wait().unwrap().is_some() => {
                panic!("the VM ended by itself: {}", reader.join().unwrap())
            }
            Err(_) => assert!(Instant::now() < deadline, "the guest wrote nothing in time"),
        }
    }
    std::thread::sleep(linger);
    child.kill().unwrap();
    child.wait().unwrap();
    let console = reader.join().unwrap();
    synced = synced_rx.try_iter().last().or(synced);
    (synced, console)
}

#[test]
#[ignore = "boots a real Linux kernel three times (about four minutes here); scripts/test.sh runs it"]
fn linux_writing_to_a_qcow2_overlay_survives_sigkill_of_the_vmm() {
    require_kvm!();
    require_program!("gcc");
    require_program!("qemu-img");
    require_program!("mkfs.ext4");
    require_program!("debugfs");
    require_program!("e2fsck");
    let (dir, _keep) = linux::guest_linux_dir();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base.ext4");
    let overlay = work.path().join("overlay.qcow2");
    let flat = work.path().join("flat.raw");
    let run = |program: &str, args: &[&std::ffi::OsStr]| {
        Command::new(program).args(args).output().unwrap()
    };
    let made = run(
        "mkfs.ext4",
        &[
            "-q".as_ref(),
            "-F".as_ref(),
            base.as_os_str(),
            "64M".as_ref(),
        ],
    );
    assert!(made.status.success(), "{made:?}");
    let made = run(
        "qemu-img",
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            "base.ext4".as_ref(),
            "-F".as_ref(),
            "raw".as_ref(),
            overlay.as_os_str(),
        ],
    );
    assert!(made.status.success(), "{made:?}");
    let disk_arg = format!("path={},format=qcow2", overlay.display());
    let mut synced_per_round = Vec::new();
    for round in 0..3u32 {
        // Each boot after the first also proves the VM starts again on the killed image.
        let linger = Duration::from_millis(u64::from(std::process::id() * (round + 7)) % 3000);
        let (synced, console) = boot_fill_and_kill(
            &dir,
            &format!("corral_fill=vda:{round}"),
            &["--disk", &disk_arg],
            2,
            linger,
        );
        assert!(!console.contains("cannot write"), "{console}");
        synced_per_round.push(synced);

        let check = run("qemu-img", &["check".as_ref(), overlay.as_os_str()]);
        assert!(
            matches!(check.status.code(), Some(0) | Some(3)),
            "round {round}: qemu-img check: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        eprintln!(
            "round {round}: killed after file {synced:?} was synced (and {linger:?}); qemu-img \
             check: {}",
            if check.status.code() == Some(3) {
                "leaked clusters only"
            } else {
                "clean"
            }
        );
        // Every file the guest synced, in every round so far, reads back from the file system
        // (its journal replayed on a flat copy).
        let _ = std::fs::remove_file(&flat);
        let converted = run(
            "qemu-img",
            &[
                "convert".as_ref(),
                "-O".as_ref(),
                "raw".as_ref(),
                overlay.as_os_str(),
                flat.as_os_str(),
            ],
        );
        assert!(converted.status.success(), "{converted:?}");
        let repaired = run("e2fsck", &["-fy".as_ref(), flat.as_os_str()]);
        assert!(
            matches!(repaired.status.code(), Some(0) | Some(1)),
            "round {round}: e2fsck: {}",
            String::from_utf8_lossy(&repaired.stdout)
        );
        for (written_in, synced) in synced_per_round.iter().enumerate() {
            let Some(synced) = *synced else {
                continue;
            };
            for n in 0..=synced {
                let request = format!("cat /r{written_in}-{n}");
                let cat = run(
                    "debugfs",
                    &["-R".as_ref(), request.as_ref(), flat.as_os_str()],
                );
                let expected: Vec<u8> = (0..65536usize)
                    .map(|i| (n as usize * 31 + i) as u8)
                    .collect();
                assert!(
                    cat.stdout == expected,
                    "round {round}: /r{written_in}-{n} (synced) reads back {} bytes, not its data",
                    cat.stdout.len()
                );
            }
        }
    }
}

/// The quickstart demo VM's initramfs (busybox init, a shell on the serial console), built in
/// `work` as scripts/quickstart.sh builds it.
fn demo_initramfs(work: &Path) -> PathBuf {
    let rootfs = work.join("busybox-rootfs");
    let initramfs = work.join("demo-initramfs.cpio");
    for (script, args) in [
        ("scripts/busybox-rootfs.sh", vec![&rootfs]),
        ("scripts/demo-initramfs.sh", vec![&rootfs, &initramfs]),
    ] {
        let status = Command::new("bash")
            .arg(linux::repo_root().join(script))
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{script} failed");
    }
    initramfs
}

#[test]
#[ignore = "boots a real Linux kernel (about a minute here); scripts/test.sh runs it"]
fn the_quickstart_demo_vm_shuts_down_on_stop() {
    require_kvm!();
    require_program!("gcc");
    require_program!("cpio");
    if !common::have_busybox() {
        return;
    }
    let (dir, _keep) = linux::guest_linux_dir();
    let work = tempfile::tempdir().unwrap();
    let initramfs = demo_initramfs(work.path());
    let cmdline = linux::cmdline("");
    let root = common::CorralRoot::new();
    root.ok(&[
        "create",
        "demo-vm",
        "--kernel",
        dir.join("vmlinux").to_str().unwrap(),
        "--initrd",
        initramfs.to_str().unwrap(),
        "--cmdline",
        &cmdline,
        "--cpus",
        "2",
        "--memory",
        "256M",
    ]);
    let console = root.instance_dir("demo-vm").join("run/console.log");
    let log = || std::fs::read_to_string(&console).unwrap_or_default();
    // Printed by busybox init's sysinit: init has taken Ctrl-Alt-Del over by then.
    // Busybox init's first steps are fork+execs on top of the boot: twice the usual bound.
    // This host's emulator occasionally crashes a guest process (a native ring-3 load reads a
    // page it wrote as zeros; seen once in ten boots under load): a sysinit step that dies that
    // way never prints the line, so such a boot is retried once, saying so.
    for attempt in 1.. {
        let start_of_boot = log().len();
        root.ok(&["start", "demo-vm"]);
        // The whole log if the start began a new one.
        let this_boot = || {
            let text = log();
            text.get(start_of_boot..).map(str::to_owned).unwrap_or(text)
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let crashed = loop {
            let output = this_boot();
            if output.contains("corral stop shuts it down") {
                break false;
            }
            if output.contains("]: segfault at ") {
                break true;
            }
            assert!(
                Instant::now() < deadline,
                "the demo VM's init did not start within {BOOT_TIMEOUT:?}; state: {}\nconsole:\n{output}",
                root.info("demo-vm")["state"],
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        if !crashed {
            break;
        }
        assert!(
            attempt < 2,
            "a guest process crashed in two boots:\n{}",
            log()
        );
        eprintln!(
            "a guest process crashed during boot {attempt}, retrying:\n{}",
            this_boot()
        );
        root.ok(&["kill", "demo-vm"]);
    }
    // A generous timeout: busybox's shutdown takes a few fork+execs, about a second each here
    // (more on a loaded host). What matters is that the guest ends the run itself.
    root.ok(&["stop", "demo-vm", "--timeout", "120"]);
    let state = &root.info("demo-vm")["state"];
    assert_eq!(state["status"], "stopped", "{state}");
    // The guest ended the run itself: not `stopped` (forced off at the timeout) or `killed`.
    let reason = state["last_exit"]["reason"].as_str().unwrap();
    assert!(matches!(reason, "reboot" | "poweroff"), "{state}");
    assert!(log().contains("corral demo: shutting down"), "{}", log());
}

/// A read-only disk image for the guests that run corral: the corral binary (stripped), the
/// shared libraries it loads, under `/lib` (the guest runs it through `/lib`'s dynamic loader),
/// and a static busybox with its applets in `/bin` (the programs the agent test runs).
fn tools_disk(dir: &Path) -> PathBuf {
    let tree = dir.join("tools");
    std::fs::create_dir_all(tree.join("lib")).unwrap();
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy(common::BUSYBOX, tree.join("bin/busybox")).unwrap();
    for applet in ["uname", "sha256sum", "cat", "ls", "tty", "true"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    linux::stripped_corral(&tree.join("corral"));
    let corral = env!("CARGO_BIN_EXE_corral");
    let ldd = Command::new("ldd").arg(corral).output().unwrap();
    assert!(ldd.status.success(), "{ldd:?}");
    for library in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        let name = Path::new(library).file_name().unwrap();
        std::fs::copy(library, tree.join("lib").join(name)).unwrap();
    }
    let image = dir.join("tools.ext4");
    corral_testkit::mkfs_ext4(&tree, &image, "64M");
    image
}

/// What a clone's init printed after `corral_identity`: (machine-id, hostname, MAC).
fn identity_lines(console: &str) -> (String, String, String) {
    let value = |key: &str| {
        init_lines(console)
            .iter()
            .find_map(|line| line.strip_prefix(&format!("corral-init: {key} ")))
            .unwrap_or_else(|| {
                panic!(
                    "no `{key}` line from init: {:#?}\nconsole:\n{console}",
                    init_lines(console)
                )
            })
            .to_string()
    };
    (value("machine-id"), value("hostname"), value("mac"))
}

#[test]
#[ignore = "boots a real Linux kernel twice (minutes here); scripts/test.sh runs it"]
fn two_linux_vm_clones_make_their_own_machine_ids_and_see_their_own_cloud_init_seeds() {
    require_root!();
    require_kvm!();
    require_program!("gcc");
    require_program!("ip");
    require_program!("mkfs.ext4");
    require_program!("ssh-keygen");
    require_program!("strip");
    let (dir, _keep) = linux::guest_linux_dir();
    let root = common::CorralRoot::new();
    let scratch = root.dir.path();
    let tree = scratch.join("template");
    std::fs::create_dir(&tree).unwrap();
    corral_testkit::identity::build_template(&tree, corral_testkit::identity::DbusId::Symlink);
    let template = scratch.join("template.ext4");
    corral_testkit::mkfs_ext4(&tree, &template, "64M");
    let tools = format!("{},format=raw,ro", tools_disk(scratch).display());

    // The seed is the third disk (after the root and tools disks); init finds it by its label.
    let cmdline = linux::cmdline("corral_identity=vda,vdb corral_seed=1");
    let user_data = scratch.join("user-data");
    std::fs::write(&user_data, "#cloud-config\nruncmd: [[touch, /seeded]]\n").unwrap();
    let (kernel, initrd) = (dir.join("vmlinux"), dir.join("initramfs.cpio"));
    root.ok(&[
        "image",
        "import",
        template.to_str().unwrap(),
        "--format",
        "disk",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        &cmdline,
        "--alias",
        "linux-template",
    ]);
    root.ok(&[
        "create",
        "tmpl",
        "--image",
        "linux-template",
        // One vCPU: fewer switches in the middle of a guest program, which this host's emulator
        // does not always survive (guests/linux/README.md); the boot tests cover SMP.
        "--cpus",
        "1",
        "--memory",
        "256M",
        "--on-reboot",
        "destroy",
        "--disk",
        &tools,
        "--nic",
        "bridge=br0",
        "--user-data",
        user_data.to_str().unwrap(),
    ]);
    root.ok(&["clone", "tmpl", "clone1"]);
    root.ok(&["clone", "tmpl", "clone2", "--linked"]);

    let netns = Netns::new("clones");
    netns.ip(&["link", "add", "br0", "type", "bridge"]);
    netns.ip(&["link", "set", "br0", "up"]);
    let mut seen = Vec::new();
    for name in ["clone1", "clone2"] {
        let started = netns
            .command(common::corral_bin())
            .env("CORRAL_ROOT", root.path())
            .args(["start", name])
            .output()
            .unwrap();
        assert!(started.status.success(), "{started:?}");
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while matches!(root.status(name).as_str(), "starting" | "running") {
            assert!(
                Instant::now() < deadline,
                "{name}'s first boot did not end within {BOOT_TIMEOUT:?}; console:\n{}",
                std::fs::read_to_string(root.instance_dir(name).join("run/console.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let console = root.ok(&["logs", name]);
        assert_eq!(root.status(name), "stopped", "{console}");
        let (id, hostname, mac) = identity_lines(&console);
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}: machine-id {id:?}\n{console}"
        );
        assert_ne!(
            id,
            corral_testkit::identity::FIXED_ID,
            "{name} kept the template's id"
        );
        assert_eq!(hostname, name);
        let info = root.ok(&["info", name]);
        assert!(
            info.contains(&format!("mac {mac}")),
            "{name}: {mac} not in\n{info}"
        );
        let definition: toml::Table =
            std::fs::read_to_string(root.instance_dir(name).join("instance.toml"))
                .unwrap()
                .parse()
                .unwrap();
        let uuid = definition["uuid"].as_str().unwrap();
        assert!(
            init_lines(&console)
                .contains(&format!("corral-init: seed instance-id: iid-{uuid}").as_str()),
            "{name} did not read its own seed (instance-id iid-{uuid}):\n{console}"
        );
        seen.push((id, mac));
    }
    assert_ne!(seen[0].0, seen[1].0, "the clones made the same machine-id");
    assert_ne!(seen[0].1, seen[1].1, "the clones have the same MAC");
}

/// How long one `corral` command against the agent test's guest may take before the guest counts
/// as slow (a busybox command answers in seconds; the 10 MiB pushes in well under a minute).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the agent may take to answer a ping again after a command failed or was slow.
const AGENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(90);
/// How often a command is tried when the guest showed this host's emulator at work meanwhile.
const RETRIES: u32 = 3;
/// How many boots the agent test's scenario gets when the guest stops answering altogether.
const BOOTS: u32 = 2;

/// The guest stopped answering (this host's emulator wedged it, guests/linux/README.md): the
/// scenario starts over on a new boot. Carries what was seen, printed when it happens.
#[derive(Debug)]
struct Wedged(String);

/// The agent test's running guest. This host's emulator now and then hands a fresh guest program
/// memory that is not its own (guests/linux/README.md): the command's program, the agent's child
/// before it became that program, or the agent itself dies of a fault, or the guest stalls for
/// minutes. A command that failed with such a sign on the console (a fault report, the agent
/// started again by init) or that did not end within [`COMMAND_TIMEOUT`] is run again, up to
/// [`RETRIES`] times, once the agent answers; each retry is printed. A command that fails without
/// such a sign fails the test.
struct AgentGuest<'a> {
    root: &'a common::CorralRoot,
    name: &'static str,
    /// Where this boot's output starts in the console log (which runs append to).
    boot_starts_at: usize,
}

impl<'a> AgentGuest<'a> {
    /// Starts the instance and waits until its agent answers.
    fn boot(root: &'a common::CorralRoot, name: &'static str) -> Result<AgentGuest<'a>, Wedged> {
        let log = root.instance_dir(name).join("run/console.log");
        let boot_starts_at = std::fs::metadata(&log).map_or(0, |meta| meta.len() as usize);
        let guest = AgentGuest {
            root,
            name,
            boot_starts_at,
        };
        root.ok(&["start", name]);
        // Init runs the agent with CORRAL_LOG=info, so it says when it listens.
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while !guest
            .console()
            .contains("the guest agent listens on vsock port 1024")
        {
            if Instant::now() > deadline || guest.console().contains("corral-init: rebooting") {
                return Err(guest.wedged("the agent did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        guest.wait_for_answer()?;
        Ok(guest)
    }

    /// What the guest printed in this boot.
    fn console(&self) -> String {
        let log = self.root.instance_dir(self.name).join("run/console.log");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.get(self.boot_starts_at..)
            .unwrap_or_default()
            .to_owned()
    }

    /// A [`Wedged`] with `what`, the console of this boot and the supervisor's log.
    fn wedged(&self, what: &str) -> Wedged {
        let supervisor = self.root.instance_dir(self.name).join("run/supervisor.log");
        Wedged(format!(
            "{what}; console of this boot:\n{}\nsupervisor log:\n{}",
            self.console(),
            std::fs::read_to_string(supervisor).unwrap_or_default()
        ))
    }

    /// Waits until `corral agent ping` succeeds, at most [`AGENT_ANSWER_TIMEOUT`].
    fn wait_for_answer(&self) -> Result<(), Wedged> {
        let deadline = Instant::now() + AGENT_ANSWER_TIMEOUT;
        while !self
            .run(&["agent", "ping", self.name])
            .is_some_and(|out| out.status.success())
        {
            if Instant::now() > deadline {
                return Err(self.wedged("the agent did not answer a ping"));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(())
    }

    /// Runs `corral ARGS`; None when it did not end within [`COMMAND_TIMEOUT`] (it is killed).
    fn run(&self, args: &[&str]) -> Option<Output> {
        let mut child = self
            .root
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read both pipes meanwhile, so a large output cannot fill one and stall the command.
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let read = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                pipe.read_to_end(&mut bytes).unwrap();
                bytes
            })
        };
        let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
        status.map(|status| Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Runs `corral ARGS` until it succeeds (see [`AgentGuest`]); fails the test when it fails
    /// without a sign of the emulator, or [`RETRIES`] times with one.
    fn ok(&self, args: &[&str]) -> Result<Output, Wedged> {
        for attempt in 1..=RETRIES {
            let before = self.console().len();
            let out = self.run(args);
            if let Some(out) = &out {
                if out.status.success() {
                    return Ok(out.clone());
                }
            }
            let during = self.console().get(before..).unwrap_or_default().to_owned();
            let sign = if out.is_none() {
                format!("did not end within {COMMAND_TIMEOUT:?}")
            } else if linux::reports_a_fault(&during) {
                "failed while a guest program died of a fault".to_owned()
            } else if during.contains("corral-init: the agent ended") {
                "failed while the agent died and init started it again".to_owned()
            } else {
                panic!(
                    "corral {args:?} failed: {out:?}; console of this boot:\n{}",
                    self.console()
                );
            };
            eprintln!("corral {args:?} {sign} (attempt {attempt} of {RETRIES}): {out:?}\n{during}");
            self.wait_for_answer()?;
        }
        Err(self.wedged(&format!("corral {args:?} never succeeded")))
    }
}

/// The agent test's scenario on one boot of its guest.
fn agent_scenario(guest: &AgentGuest, scratch: &Path) -> Result<(), Wedged> {
    let release = guest.ok(&["exec", "agentvm", "--", "uname", "-r"])?;
    let release = String::from_utf8_lossy(&release.stdout);
    let release = release.trim();
    assert!(
        !release.is_empty()
            && guest
                .console()
                .contains(&format!("Linux version {release} ")),
        "uname -r said {release:?}; console:\n{}",
        guest.console()
    );

    // With a terminal, the command runs on a pty of the guest's.
    let tty = guest.ok(&["exec", "--tty", "agentvm", "--", "tty"])?;
    assert!(tty.stdout.starts_with(b"/dev/pts/"), "exec --tty: {tty:?}");

    let blob = scratch.join("blob");
    let data: Vec<u8> = (0..10u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&blob, &data).unwrap();
    let sha = |path: &Path| {
        let out = Command::new("sha256sum").arg(path).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let expected = sha(&blob);
    guest.ok(&[
        "file",
        "push",
        "agentvm",
        blob.to_str().unwrap(),
        "/tmp/blob",
    ])?;
    let inside = guest.ok(&["exec", "agentvm", "--", "sha256sum", "/tmp/blob"])?;
    let inside = String::from_utf8_lossy(&inside.stdout);
    assert!(inside.starts_with(&expected), "{inside} vs {expected}");
    let back = scratch.join("back");
    guest.ok(&[
        "file",
        "pull",
        "agentvm",
        "/tmp/blob",
        back.to_str().unwrap(),
    ])?;
    assert_eq!(sha(&back), expected);

    let info = guest.root.ok(&["info", "agentvm"]);
    assert!(
        info.contains("Agent:") && info.contains("10.0.2.2"),
        "{info}"
    );

    guest.root.ok(&["stop", "agentvm", "--timeout", "120"]);
    let state = &guest.root.info("agentvm")["state"];
    assert_eq!(state["status"], "stopped", "{state}");
    // Forced off at the timeout: the guest never acted on the agent's power-off.
    if state["last_exit"]["reason"] == "stopped" && !guest.console().contains("power-off asked") {
        return Err(guest.wedged("the guest did not power off within 120 s"));
    }
    // The guest ended the run itself: init, told by the agent, rebooted (this kernel has no
    // ACPI to power off with), which ends a run with `--on-reboot destroy`.
    assert_eq!(state["last_exit"]["reason"], "reboot", "{state}");
    assert!(
        guest.console().contains("corral-init: power-off asked"),
        "{}",
        guest.console()
    );
    Ok(())
}

#[test]
#[ignore = "boots a real Linux kernel (minutes here); scripts/test.sh runs it"]
fn the_guest_agent_in_linux_runs_commands_moves_files_reports_its_address_and_powers_it_off() {
    require_root!();
    require_kvm!();
    require_program!("ip");
    require_program!("mkfs.ext4");
    require_program!("strip");
    require_program!("sha256sum");
    if !common::have_busybox() {
        return;
    }
    let (dir, _keep) = linux::guest_linux_dir();
    let netns = Netns::new("agent");
    netns.ip(&["link", "add", "br0", "type", "bridge"]);
    netns.ip(&["address", "add", "10.0.2.1/24", "dev", "br0"]);
    netns.ip(&["link", "set", "br0", "up"]);
    let root = common::CorralRoot::in_netns(&netns);
    let scratch = root.dir.path();
    let tools = format!("{},format=raw,ro", tools_disk(scratch).display());
    let cmdline = linux::cmdline("corral_net=10.0.2.2 corral_peer=10.0.2.1 corral_agent=vda");
    root.ok(&[
        "create",
        "agentvm",
        "--kernel",
        dir.join("vmlinux").to_str().unwrap(),
        "--initrd",
        dir.join("initramfs.cpio").to_str().unwrap(),
        "--cmdline",
        &cmdline,
        // One vCPU, as in the clone test (guests/linux/README.md).
        "--cpus",
        "1",
        "--memory",
        "256M",
        "--on-reboot",
        "destroy",
        "--disk",
        &tools,
        "--nic",
        "bridge=br0,ip=10.0.2.2/24",
    ]);
    for boot in 1..=BOOTS {
        let wedged = match AgentGuest::boot(&root, "agentvm") {
            Ok(guest) => match agent_scenario(&guest, scratch) {
                Ok(()) => return,
                Err(wedged) => wedged,
            },
            Err(wedged) => wedged,
        };
        // The next boot starts clean.
        if root.status("agentvm") != "stopped" {
            root.ok(&["kill", "agentvm"]);
        }
        assert!(boot < BOOTS, "boot {boot} of {BOOTS}: {}", wedged.0);
        eprintln!("boot {boot} of {BOOTS}: {}\nbooting again", wedged.0);
    }
}

/// The client end of a VM's serial console socket: what the guest printed since connecting, and
/// lines typed into its shell.
struct SerialConsole {
    stream: UnixStream,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl SerialConsole {
    /// Connects to the console socket at `path` (waiting for the VMM to make it).
    fn connect(path: &Path) -> SerialConsole {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(err) => panic!("console socket {} never appeared: {err}", path.display()),
            }
        };
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut reader = stream.try_clone().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read @ 1..) = std::io::Read::read(&mut reader, &mut buffer) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        SerialConsole { stream, output }
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the console shows `text`; false at `timeout`.
    fn wait_for(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.text().contains(text) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// Types `command` into the guest's shell followed by `echo done-N` with N computed by the
    /// shell (so the typed line itself never matches), and waits for it: the command succeeded.
    /// A command that a fault of this host's emulator killed (guests/linux/README.md) is typed
    /// once more, saying so.
    fn run(&self, command: &str, n: u32) {
        let line = format!("{command} && echo done-$(({n}+0))\n");
        let marker = format!("done-{n}");
        for attempt in 1..=2 {
            let before = self.text().len();
            (&self.stream).write_all(line.as_bytes()).unwrap();
            if self.wait_for(&marker, Duration::from_secs(120)) {
                return;
            }
            let during = self.text().get(before..).unwrap_or_default().to_owned();
            assert!(
                attempt == 1 && linux::reports_a_fault(&during),
                "`{command}` did not succeed; console:\n{}",
                self.text()
            );
            eprintln!("`{command}`: a guest program died of a fault, typing it again:\n{during}");
        }
    }
}

#[test]
#[ignore = "boots a real Linux kernel (about a minute here); scripts/test.sh runs it"]
fn linux_restored_from_a_snapshot_answers_on_its_console_and_uses_its_disk_and_network() {
    require_root!();
    require_kvm!();
    require_program!("gcc");
    require_program!("cpio");
    require_program!("ip");
    require_program!("mkfs.ext4");
    require_program!("debugfs");
    if !common::have_busybox() {
        return;
    }
    let (dir, _keep) = linux::guest_linux_dir();
    let work = tempfile::tempdir().unwrap();
    let initramfs = demo_initramfs(work.path());
    let disk = hello_disk(work.path(), "hello from the host");
    let netns = peer_on_tap("snaplinux");

    let corral = || netns.command(env!("CARGO_BIN_EXE_corral"));
    let rig = SnapshotRig {
        dir: work.path(),
        corral: &corral,
    };
    let disk_arg = format!("path={},format=raw", disk.display());
    let (mut first, console) = rig.boot_demo(
        &dir,
        &initramfs,
        &["--disk", &disk_arg, "--nic", "tap=tap0"],
    );
    console.run(
        "mkdir -p /mnt && mount /dev/vda /mnt && ip addr add 10.0.2.2/24 dev eth0 && ip link set eth0 up",
        1,
    );
    console.run("ping -c 1 -W 10 10.0.2.1 > /dev/null", 2);

    let snapshot = rig.snapshot();
    let log = first.kill_and_read_log();
    assert!(!log.contains("panicked"), "the first VMM: {log}");
    drop(console);

    let mut restored = rig.vmm(&["--restore", snapshot.to_str().unwrap()], "restored");
    let console = SerialConsole::connect(&rig.serial("restored"));
    // The shell that was waiting for a line when the VM was saved reads this one.
    console.run("cat /mnt/hello.txt", 3);
    assert!(
        console.text().contains("hello from the host"),
        "{}",
        console.text()
    );
    console.run("test $(grep -c ^processor /proc/cpuinfo) = 2", 4);
    console.run("ping -c 1 -W 10 10.0.2.1 > /dev/null", 5);
    console.run(
        "echo written after the restore > /mnt/after.txt && umount /mnt",
        6,
    );
    let log = restored.kill_and_read_log();
    assert!(!log.contains("panicked"), "the restored VMM: {log}");

    // What the restored guest wrote reached the disk file.
    assert_eq!(
        file_on_clean_ext4(&disk, "/after.txt"),
        "written after the restore\n"
    );
}

/// The files of a test that snapshots a VM and restores it, in `dir`: each VMM's console socket
/// and log by tag, one control socket, the snapshot directory; `corral` makes the command each
/// VMM runs as (maybe inside a network namespace).
struct SnapshotRig<'a> {
    dir: &'a Path,
    corral: &'a dyn Fn() -> Command,
}

impl SnapshotRig<'_> {
    fn serial(&self, tag: &str) -> PathBuf {
        self.dir.join(format!("console-{tag}.sock"))
    }

    fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// corral running `vmm run ARGS` with its console on [`SnapshotRig::serial`] and its stderr
    /// in `vmm-TAG.log`.
    fn vmm(&self, args: &[&str], tag: &str) -> KillOnDrop {
        let log = self.dir.join(format!("vmm-{tag}.log"));
        let mut command = (self.corral)();
        command
            .args(["vmm", "run"])
            .args(args)
            .arg(format!("--serial=socket:{}", self.serial(tag).display()))
            .arg("--control-socket")
            .arg(self.control())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        KillOnDrop(command.spawn().unwrap(), log)
    }

    /// Boots the demo initramfs on `kernel_dir`'s vmlinux (2 vCPUs, 256 MiB, `extra` arguments)
    /// (tag "boot") and waits for its shell.
    fn boot_demo(
        &self,
        kernel_dir: &Path,
        initramfs: &Path,
        extra: &[&str],
    ) -> (KillOnDrop, SerialConsole) {
        let kernel = kernel_dir.join("vmlinux");
        let cmdline = linux::cmdline("");
        let mut args = vec![
            "--vcpus",
            "2",
            "--memory",
            "256M",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initramfs.to_str().unwrap(),
            "--cmdline",
            &cmdline,
        ];
        args.extend_from_slice(extra);
        let child = self.vmm(&args, "boot");
        let console = SerialConsole::connect(&self.serial("boot"));
        assert!(
            console.wait_for("2 vCPUs; corral stop shuts it down", BOOT_TIMEOUT),
            "the demo VM's shell did not come up; console:\n{}",
            console.text()
        );
        (child, console)
    }

    /// Snapshots the running VM (which goes on running) and returns the snapshot's directory.
    fn snapshot(&self) -> PathBuf {
        let snapshot = self.dir.join("snapshot");
        let saved = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["vmm", "control"])
            .arg(self.control())
            .args(["snapshot", "--to"])
            .arg(&snapshot)
            .output()
            .unwrap();
        assert!(saved.status.success(), "{saved:?}");
        snapshot
    }
}

/// What the guest's `/dev/urandom` gives, printed by `console` as `rnd-HEX-end` (the last one).
fn random_bytes_shown(console: &SerialConsole, n: u32) -> String {
    console.run(
        "echo rnd-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')-end",
        n,
    );
    let text = console.text();
    let shown = text
        .match_indices("rnd-")
        .filter_map(|(at, _)| {
            let hex = text[at + 4..].split("-end").next()?;
            (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
        })
        .last();
    shown
        .unwrap_or_else(|| panic!("no random bytes on the console:\n{text}"))
        .to_owned()
}

#[test]
#[ignore = "boots a real Linux kernel with ACPI (about two minutes here); scripts/test.sh runs it"]
fn linux_restored_twice_from_one_snapshot_reseeds_its_rng_each_time() {
    require_kvm!();
    require_program!("gcc");
    require_program!("cpio");
    if !common::have_busybox() {
        return;
    }
    // The VM generation ID is an ACPI device: the guest kernel with ACPI and Linux's vmgenid.
    let (dir, _keep) = linux::guest_linux_full_dir();
    let work = tempfile::tempdir().unwrap();
    let initramfs = demo_initramfs(work.path());
    let corral = || Command::new(env!("CARGO_BIN_EXE_corral"));
    let rig = SnapshotRig {
        dir: work.path(),
        corral: &corral,
    };
    let (mut first, console) = rig.boot_demo(&dir, &initramfs, &[]);
    // vmgenid bound to the DSDT's VGEN device: it found the ID where ADDR says.
    console.run("ls /sys/bus/acpi/drivers/vmgenid | grep -q VMGENCTR", 1);
    let snapshot = rig.snapshot();
    let log = first.kill_and_read_log();
    assert!(!log.contains("panicked"), "the first VMM: {log}");
    const RESEEDED: &str = "crng reseeded due to virtual machine fork";
    assert!(!console.text().contains(RESEEDED), "{}", console.text());
    drop(console);

    let mut drawn = Vec::new();
    for tag in ["restored-a", "restored-b"] {
        let mut restored = rig.vmm(&["--restore", snapshot.to_str().unwrap()], tag);
        let console = SerialConsole::connect(&rig.serial(tag));
        assert!(
            console.wait_for(RESEEDED, BOOT_TIMEOUT),
            "{tag}: the guest did not reseed its RNG; console:\n{}",
            console.text()
        );
        drawn.push(random_bytes_shown(&console, 2));
        let log = restored.kill_and_read_log();
        assert!(!log.contains("panicked"), "{tag}'s VMM: {log}");
    }
    assert_ne!(
        drawn[0], drawn[1],
        "two copies of one VM drew the same random bytes"
    );
}

/// A VMM process that is killed (SIGKILL, by its pid) when a test ends early, and the file its
/// stderr goes to.
struct KillOnDrop(std::process::Child, PathBuf);

impl KillOnDrop {
    /// Kills the VMM and returns what it wrote to stderr.
    fn kill_and_read_log(&mut self) -> String {
        let _ = self.0.kill();
        let _ = self.0.wait();
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            eprintln!("{} said:\n{log}", self.1.display());
        }
    }
}
