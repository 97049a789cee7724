//! virtio devices end to end: the freestanding test guests in `guests/virtio-*.c` drive each
//! device through the real virtio-mmio transport inside `corral vmm run`, and the host checks
//! what they did (image contents with qemu-img, frames in a network namespace, vsock sockets).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_guests::virtio_blk::{expected_after_guest, host_pattern};
use corral_testkit::{require_kvm, require_program, require_root, vmm_run_command, Netns};

const TIMEOUT: Duration = Duration::from_secs(120);

fn guest(name: &str) -> PathBuf {
    corral_guests::elf(name)
}

fn vmm(args: &[&str]) -> Command {
    let (program, run) = vmm_run_command(env!("CARGO_BIN_EXE_corral"));
    let mut command = Command::new(program);
    command
        .args(run)
        .args(["--memory", "32M"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!("the VM did not finish: {}", text(&output.stdout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_guest_passed(output: &Output, marker: &str) -> String {
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&output.stderr)
    );
    assert!(stdout.contains(marker), "{marker:?} missing from: {stdout}");
    stdout
}

fn pattern_image(path: &Path, size: usize) -> Vec<u8> {
    let bytes: Vec<u8> = (0..size).map(host_pattern).collect();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn qemu_img(args: &[&str]) -> Output {
    let output = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "qemu-img {args:?}: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

#[test]
fn virtio_blk_reads_writes_flushes_and_discards_on_raw_and_qcow2_overlays() {
    require_kvm!();
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let size = 1 << 20;
    let base = pattern_image(dir.path().join("base.raw").as_path(), size);
    std::fs::write(path("writable.raw"), &base).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        &path("base.raw"),
        "-F",
        "raw",
        &path("overlay.qcow2"),
    ]);

    let output = finish(
        vmm(&[
            "--kernel",
            guest("virtio-blk").to_str().unwrap(),
            "--disk",
            &format!("path={},readonly", path("base.raw")),
            "--disk",
            &format!(
                "path={},format=qcow2,serial=overlay-disk",
                path("overlay.qcow2")
            ),
            "--disk",
            &path("writable.raw"),
        ])
        .spawn()
        .unwrap(),
    );
    let stdout = assert_guest_passed(&output, "virtio-blk: all checks passed");
    assert!(stdout.contains("virtio-blk devices: 3"), "{stdout}");
    assert!(
        stdout.contains("disk 0: capacity 2048 sectors, read-only"),
        "{stdout}"
    );
    assert!(stdout.contains("serial: overlay-disk\n"), "{stdout}");
    assert!(stdout.contains("ok: device asks for a reset"), "{stdout}");

    // The read-only base is untouched, the raw disk holds exactly the guest's changes, and the
    // qcow2 overlay is consistent and reads the same through qemu.
    assert_eq!(std::fs::read(path("base.raw")).unwrap(), base);
    let expected = expected_after_guest(base);
    assert_eq!(std::fs::read(path("writable.raw")).unwrap(), expected);
    qemu_img(&["check", "-q", &path("overlay.qcow2")]);
    std::fs::write(path("expected.raw"), &expected).unwrap();
    qemu_img(&[
        "compare",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        &path("overlay.qcow2"),
        &path("expected.raw"),
    ]);
}

#[test]
fn virtio_rng_hands_out_entropy() {
    require_kvm!();
    let output = finish(
        vmm(&["--kernel", guest("virtio-rng").to_str().unwrap(), "--rng"])
            .spawn()
            .unwrap(),
    );
    assert_guest_passed(&output, "virtio-rng: entropy ok");
}

/// `corral vmm run ARGS` inside `netns`.
fn vmm_in(netns: &Netns, args: &[&str]) -> Command {
    let (program, run) = vmm_run_command(env!("CARGO_BIN_EXE_corral"));
    let mut command = netns.command(program);
    command
        .args(run)
        .args(["--memory", "32M"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn ping_guest_args(guest_ip: &str, peer_ip: &str) -> String {
    format!("guest_ip={guest_ip} peer_ip={peer_ip}")
}

#[test]
fn virtio_net_exchanges_frames_with_a_peer_over_a_tap() {
    require_root!();
    require_kvm!();
    require_program!("ip");
    let netns = Netns::new("vnet");
    netns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    netns.ip(&["addr", "add", "10.0.0.1/24", "dev", "tap0"]);
    netns.ip(&["link", "set", "tap0", "up"]);
    let mac = "52:54:00:12:34:56";
    let output = finish(
        vmm_in(
            &netns,
            &[
                "--kernel",
                guest("virtio-net").to_str().unwrap(),
                "--nic",
                &format!("tap=tap0,mac={mac}"),
                "--cmdline",
                &ping_guest_args("10.0.0.2", "10.0.0.1"),
            ],
        )
        .spawn()
        .unwrap(),
    );
    let stdout = assert_guest_passed(&output, "virtio-net: echo reply from the peer");
    assert!(stdout.contains(&format!("mac {mac}, link up")), "{stdout}");
    // The host side of the tap counted the guest's ARP request and echo request.
    let stats = netns.ip(&["-s", "link", "show", "tap0"]);
    let received: u64 = stats
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("RX:"))
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|packets| packets.parse().ok())
        .unwrap_or(0);
    assert!(received >= 2, "{stats}");
}

#[test]
fn virtio_net_attaches_a_new_tap_to_a_bridge() {
    require_root!();
    require_kvm!();
    require_program!("ip");
    let netns = Netns::new("vbr");
    netns.ip(&["link", "add", "br0", "type", "bridge"]);
    netns.ip(&["addr", "add", "10.0.1.1/24", "dev", "br0"]);
    netns.ip(&["link", "set", "br0", "up"]);
    let output = finish(
        vmm_in(
            &netns,
            &[
                "--kernel",
                guest("virtio-net").to_str().unwrap(),
                "--nic",
                "bridge=br0",
                "--cmdline",
                &ping_guest_args("10.0.1.2", "10.0.1.1"),
            ],
        )
        .spawn()
        .unwrap(),
    );
    let stdout = assert_guest_passed(&output, "virtio-net: echo reply from the peer");
    // No MAC given: a locally administered unicast one.
    let mac = stdout
        .split("mac ")
        .nth(1)
        .and_then(|rest| rest.get(..17))
        .unwrap();
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first & 0b11, 0b10, "{mac}");
}

fn read_line(stream: &mut UnixStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

#[test]
fn virtio_vsock_connects_both_ways_through_unix_sockets() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock");
    // Guest-initiated connections to port 6000 land here.
    let listener = UnixListener::bind(dir.path().join("vsock.sock_6000")).unwrap();
    let child = vmm(&[
        "--kernel",
        guest("virtio-vsock").to_str().unwrap(),
        "--vsock",
        &format!("cid=7,socket={}", socket.display()),
    ])
    .spawn()
    .unwrap();

    let (mut from_guest, _) = listener.accept().unwrap();
    from_guest.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(read_line(&mut from_guest), "hello from guest\n");
    from_guest.write_all(b"hello guest\n").unwrap();
    let mut rest = Vec::new();
    from_guest.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the guest shut the connection down");

    let mut to_guest = UnixStream::connect(&socket).unwrap();
    to_guest.set_read_timeout(Some(TIMEOUT)).unwrap();
    to_guest.write_all(b"CONNECT 5000\n").unwrap();
    let ok = read_line(&mut to_guest);
    assert!(ok.starts_with("OK ") && ok.ends_with('\n'), "{ok:?}");
    to_guest.write_all(b"ping\n").unwrap();
    assert_eq!(read_line(&mut to_guest), "pong\n");
    drop(to_guest);

    let output = finish(child);
    let stdout = assert_guest_passed(&output, "virtio-vsock: host->guest connection answered");
    assert!(stdout.contains("virtio-vsock: cid 7"), "{stdout}");
    assert!(!socket.exists(), "the vsock socket is removed on exit");
}

#[test]
fn a_vsock_connect_to_a_port_nobody_listens_on_is_closed() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock");
    // The guest finds nobody on port 6000 and fails; the host side must see its connect
    // refused, not hang.
    let child = vmm(&[
        "--kernel",
        guest("virtio-vsock").to_str().unwrap(),
        "--vsock",
        &format!("cid=3,socket={}", socket.display()),
    ])
    .spawn()
    .unwrap();
    let output = finish(child);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains("the host did not accept the connection to port 6000"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn bad_device_configuration_is_one_sentence_before_the_vm_starts() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.qcow2");
    let cases: [(&[&str], &str); 4] = [
        (&["--disk", missing.to_str().unwrap()], "missing.qcow2"),
        (
            &["--nic", "mac=02:00:00:00:00:01"],
            "give `tap`, `bridge` or both",
        ),
        (&["--vsock", "cid=1,socket=v.sock"], "CID 1 is reserved"),
        (
            &["--disk", "path=x,format=vmdk"],
            "unknown disk format `vmdk`",
        ),
    ];
    for (args, message) in cases {
        let output = finish(
            vmm(&[&["--kernel", guest("hello").to_str().unwrap()], args].concat())
                .spawn()
                .unwrap(),
        );
        let stderr = text(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
