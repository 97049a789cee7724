//! Devices of a VM run through `corral_vmm::run`, each driven by its test guest: virtio-blk on raw
//! files (the bytes the guest wrote checked on the host), virtio-rng, virtio-vsock through its
//! unix sockets, console input over the console socket, and timer interrupts.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use common::{Scratch, TIMEOUT};
use corral_control::{Request, Response};
use corral_guests::virtio_blk::{expected_after_guest, host_pattern};
use corral_testkit::require_kvm;
use corral_vmm::config::{DiskConfig, SerialTarget, VsockConfig};
use corral_vmm::{ExitReason, VmConfig, VmExit};

/// Asserts the guest powered off with code 0 and printed `marker`; returns its console.
fn assert_guest_passed(exit: &VmExit, scratch: &Scratch, marker: &str) -> String {
    let console = scratch.console();
    assert_eq!(
        (exit.reason, exit.guest_code),
        (ExitReason::Poweroff, Some(0)),
        "{exit:?}\n{console}"
    );
    assert!(
        console.contains(marker),
        "{marker:?} missing from: {console}"
    );
    console
}

/// Two raw disks of the host pattern the virtio-blk guest checks: its content, and the paths
/// of the one to give read-only and the writable one.
fn raw_disks(scratch: &Scratch) -> (Vec<u8>, PathBuf, PathBuf) {
    let base: Vec<u8> = (0..1 << 20).map(host_pattern).collect();
    let (read_only, writable) = (scratch.path("base.raw"), scratch.path("writable.raw"));
    std::fs::write(&read_only, &base).unwrap();
    std::fs::write(&writable, &base).unwrap();
    (base, read_only, writable)
}

fn raw_disk(path: &Path, readonly: bool) -> DiskConfig {
    DiskConfig {
        path: path.to_owned(),
        format: Some(corral_disk::DiskFormat::Raw),
        allow_backing: None,
        readonly,
        serial: None,
    }
}

#[test]
fn virtio_blk_reads_and_writes_raw_disk_files() {
    require_kvm!();
    let scratch = Scratch::new();
    let (base, read_only, writable) = raw_disks(&scratch);
    let config = VmConfig {
        disks: vec![
            DiskConfig {
                serial: Some("library-disk".into()),
                ..raw_disk(&read_only, true)
            },
            raw_disk(&writable, false),
        ],
        ..scratch.config("virtio-blk")
    };
    let exit = common::run(&config).unwrap();
    let console = assert_guest_passed(&exit, &scratch, "virtio-blk: all checks passed");
    assert!(console.contains("virtio-blk devices: 2\n"), "{console}");
    assert!(
        console.contains("disk 0: capacity 2048 sectors, read-only\n"),
        "{console}"
    );
    assert!(
        console.contains("disk 1: capacity 2048 sectors, writable\n"),
        "{console}"
    );
    assert!(console.contains("serial: library-disk\n"), "{console}");
    assert!(console.contains("ok: device asks for a reset"), "{console}");
    // The read-only disk is untouched; the writable one holds exactly the guest's changes
    // (`assert!`: a mismatch printed by `assert_eq!` would be two megabytes).
    assert!(std::fs::read(&read_only).unwrap() == base);
    assert!(std::fs::read(&writable).unwrap() == expected_after_guest(base));
}

#[test]
fn each_disk_counts_the_requests_and_bytes_the_guest_made_of_it() {
    require_kvm!();
    let scratch = Scratch::new();
    let (_, read_only, writable) = raw_disks(&scratch);
    // Started again when it powers off, so the VMM is still there to ask once it has run.
    let config = VmConfig {
        disks: vec![raw_disk(&read_only, true), raw_disk(&writable, false)],
        on_poweroff: corral_vmm::config::Action::Restart,
        on_crash: corral_vmm::config::Action::Restart,
        ..scratch.config("virtio-blk")
    };
    let vm = common::start(&config);
    scratch.wait_for_console("virtio-blk: all checks passed", 1);
    let Response::Info(info) = scratch.control(&Request::Info) else {
        panic!("info answered something else");
    };
    scratch.control(&Request::Kill);
    let _ = common::finish(vm);
    let counter = |name: &str| {
        (info.counters.get(name).copied())
            .unwrap_or_else(|| panic!("no {name} in {:?}", info.counters))
    };
    for disk in ["virtio-blk0", "virtio-blk1"] {
        assert!(
            counter(&format!("disk.{disk}.reads")) > 0,
            "{:?}",
            info.counters
        );
        let (reads, bytes) = (
            counter(&format!("disk.{disk}.reads")),
            counter(&format!("disk.{disk}.read_bytes")),
        );
        assert!(
            bytes >= reads * 512,
            "whole sectors: {bytes} bytes in {reads} reads"
        );
    }
    assert_eq!(
        counter("disk.virtio-blk0.writes"),
        0,
        "the read-only disk took no write"
    );
    assert!(
        counter("disk.virtio-blk0.errors") > 0,
        "the guest's write to it was refused"
    );
    assert!(counter("disk.virtio-blk1.writes") > 0);
    assert!(counter("disk.virtio-blk1.written_bytes") >= 512);
}

#[test]
fn virtio_rng_hands_out_entropy() {
    require_kvm!();
    let scratch = Scratch::new();
    let config = VmConfig {
        rng: true,
        ..scratch.config("virtio-rng")
    };
    let exit = common::run(&config).unwrap();
    assert_guest_passed(&exit, &scratch, "virtio-rng: entropy ok");
}

fn read_line(stream: &UnixStream) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

#[test]
fn virtio_vsock_connects_both_ways_through_unix_sockets() {
    require_kvm!();
    let scratch = Scratch::new();
    let socket = scratch.path("vsock.sock");
    // Guest-initiated connections to port 6000 land here.
    let listener = UnixListener::bind(scratch.path("vsock.sock_6000")).unwrap();
    let config = VmConfig {
        vsock: Some(VsockConfig {
            cid: 7,
            socket: socket.clone(),
        }),
        ..scratch.config("virtio-vsock")
    };
    let vm = common::start(&config);

    let (from_guest, _) = listener.accept().unwrap();
    from_guest.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(read_line(&from_guest), "hello from guest\n");
    (&from_guest).write_all(b"hello guest\n").unwrap();
    let mut rest = Vec::new();
    (&from_guest).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the guest shut the connection down");

    let to_guest = UnixStream::connect(&socket).unwrap();
    to_guest.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&to_guest).write_all(b"CONNECT 5000\n").unwrap();
    let ok = read_line(&to_guest);
    assert!(ok.starts_with("OK ") && ok.ends_with('\n'), "{ok:?}");
    (&to_guest).write_all(b"ping\n").unwrap();
    assert_eq!(read_line(&to_guest), "pong\n");
    drop(to_guest);

    let exit = common::finish(vm).unwrap();
    let console = assert_guest_passed(
        &exit,
        &scratch,
        "virtio-vsock: host->guest connection answered",
    );
    assert!(console.contains("virtio-vsock: cid 7"), "{console}");
    assert!(!socket.exists(), "the vsock socket is removed on exit");
}

#[test]
fn the_console_socket_carries_output_and_input() {
    require_kvm!();
    let scratch = Scratch::new();
    let socket = scratch.path("console.sock");
    let config = VmConfig {
        serial: SerialTarget::Socket(socket.clone()),
        ..scratch.config("echo")
    };
    let vm = common::start(&config);
    common::wait_until("the console socket", || socket.exists());
    let stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&stream).write_all(b"over-socket\n").unwrap();
    let echoed = BufReader::new(&stream)
        .lines()
        .map(Result::unwrap)
        .find(|line| line.starts_with("echo: "));
    assert_eq!(echoed.as_deref(), Some("echo: over-socket"));
    // The echo guest exits with the length of the line it read.
    let exit = common::finish(vm).unwrap();
    assert_eq!(
        (exit.reason, exit.guest_code),
        (ExitReason::Poweroff, Some(11))
    );
    assert!(!socket.exists(), "the console socket is removed on exit");
}

#[test]
fn the_timer_interrupts_reach_the_guest() {
    require_kvm!();
    let scratch = Scratch::new();
    let vm = common::start(&scratch.config("ticks"));
    // "tick N" every 10 interrupts of the 100 Hz PIT; without interrupts the guest halts silently.
    scratch.wait_for_console("tick ", 3);
    scratch.control(&Request::Kill);
    assert_eq!(common::finish(vm).unwrap().reason, ExitReason::Killed);
}
