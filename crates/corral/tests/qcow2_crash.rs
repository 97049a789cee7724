//! Fault injection: the VMM is killed with SIGKILL at random instants while a guest writes to a
//! qcow2 overlay allocation-heavily. After every kill `qemu-img check` finds no error (leaked
//! clusters are allowed), the VM starts again on the same image, and every write the guest had
//! flushed before the kill reads back.
//!
//! The guest is `guests/virtio-blk-crash.c`; the workload and the check are corral-testkit's
//! `crash` module. The real-Linux variant is in `vmm_linux.rs`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corral_disk::{DiskFormat, OpenOptions};
use corral_testkit::crash::{self, Lcg, Model, RoundReport, BLOCK, SECTOR};
use corral_testkit::{require_kvm, require_program};

/// Kills per run. Each takes well under a second on the development host.
const ROUNDS: u32 = 200;
/// The guest flushes after this many operations.
const BATCH: u32 = 16;
/// A 16 MiB disk.
const BLOCKS: u64 = 4096;
/// A new overlay (with the next cluster size) after this many rounds.
const ROUNDS_PER_IMAGE: u32 = 25;
/// Small clusters put metadata allocation (L2 tables, refcount blocks, table growth) on almost
/// every write; 64 KiB is qemu's default and makes every allocation copy from the backing image.
const CLUSTER_SIZES: [u64; 4] = [512, 4096, 65536, 1024];
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img").args(args).output().unwrap()
}

enum Event {
    Ready,
    Flushed(u32),
}

/// Starts the VM on `image`, waits until the guest works, lets it write for `delay`, kills the
/// VMM with SIGKILL and returns what the guest had reported, and the VMM's log.
fn run_and_kill(image: &Path, round: u32, seed: u64, delay: Duration) -> (RoundReport, String) {
    let cmdline = format!("crash_round={round} crash_seed={seed} crash_batch={BATCH}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["vmm", "run", "--memory", "32M", "--kernel"])
        .arg(corral_guests::elf("virtio-blk-crash"))
        .args(["--cmdline", &cmdline, "--disk"])
        .arg(format!("path={},format=qcow2", image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (events, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut console = String::new();
        // Only whole lines count: the kill can cut "flushed 48" short after "flushed 4".
        for line in corral_testkit::whole_lines(stdout) {
            if line == "crash: ready" {
                let _ = events.send(Event::Ready);
            } else if let Some(count) = line.strip_prefix("flushed ") {
                let _ = events.send(Event::Flushed(count.parse().unwrap()));
            }
            console.push_str(&line);
            console.push('\n');
        }
        console
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut flushed = 0;
    let mut ready = false;
    while !ready {
        match received.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Ready) => ready = true,
            Ok(Event::Flushed(_)) => {}
            Err(_) => {
                if let Some(status) = child.try_wait().unwrap() {
                    let console = reader.join().unwrap();
                    let mut stderr = String::new();
                    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                        .unwrap();
                    panic!(
                        "round {round}: the VM did not start again ({status}):\n{console}{stderr}"
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the guest did not become ready"
                );
            }
        }
    }
    std::thread::sleep(delay);
    // Child::kill sends SIGKILL.
    child.kill().unwrap();
    child.wait().unwrap();
    let console = reader.join().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    for event in received.try_iter() {
        if let Event::Flushed(count) = event {
            flushed = count;
        }
    }
    assert!(
        !console.contains("request failed"),
        "round {round}: a request failed:\n{console}"
    );
    let report = RoundReport {
        round,
        seed,
        flushed,
        // The batch under way plus one whose report may not have left the guest.
        issued: flushed + 2 * BATCH,
    };
    (report, log)
}

#[test]
fn sigkill_of_the_vmm_during_qcow2_allocations_leaves_only_leaks_and_keeps_flushed_data() {
    require_kvm!();
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let pattern: Vec<u8> = (0..BLOCKS * BLOCK / SECTOR)
        .flat_map(crash::base_sector)
        .collect();
    std::fs::write(&base, pattern).unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    let overlay_text = overlay.to_str().unwrap();
    let mut choices = Lcg(u64::from(std::process::id()));
    let mut model = Model::default();
    let (mut leaky, mut flushed_ops) = (0, 0u64);
    let mut leaks_left = false;
    for round in 0..ROUNDS {
        if round % ROUNDS_PER_IMAGE == 0 {
            let _ = std::fs::remove_file(&overlay);
            let cluster_size = CLUSTER_SIZES[(round / ROUNDS_PER_IMAGE) as usize % 4];
            let output = qemu_img(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("cluster_size={cluster_size}"),
                "-b",
                "base.raw",
                "-F",
                "raw",
                overlay_text,
            ]);
            assert!(output.status.success(), "{output:?}");
            model = Model::default();
            leaks_left = false;
        }
        // Most kills land while the guest writes; some right after it starts.
        let delay = Duration::from_millis(choices.below(150));
        let seed = choices.below(1 << 62);
        let (report, log) = run_and_kill(&overlay, round, seed, delay);
        flushed_ops += u64::from(report.flushed);
        // A start after a crash that leaked clusters works, and says so in the VMM's log.
        assert!(
            !leaks_left || log.contains("leaked clusters"),
            "round {round}: no warning about the leaked clusters in:\n{log}"
        );

        let check = qemu_img(&["check", overlay_text]);
        let code = check.status.code();
        assert!(
            matches!(code, Some(0) | Some(3)),
            "round {round} (killed after {delay:?}): qemu-img check exited with {code:?}:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        leaks_left = code == Some(3);
        leaky += u32::from(leaks_left);

        let disk = corral_disk::open(&overlay, OpenOptions::read_only().format(DiskFormat::Qcow2))
            .unwrap_or_else(|err| panic!("round {round}: {err}"));
        model
            .check_round(report, BLOCKS, |offset: u64, buf: &mut [u8]| {
                disk.read_at(buf, offset).map_err(|err| err.to_string())
            })
            .unwrap_or_else(|err| panic!("{err}"));
    }
    eprintln!(
        "{ROUNDS} SIGKILLs of the VMM: no qemu-img check error, {leaky} rounds left leaked \
         clusters, {flushed_ops} flushed operations read back"
    );
}
