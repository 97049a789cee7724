//! A process writing to a qcow2 image can be killed (SIGKILL: the OOM killer, `kill -9`) at any
//! instant: afterwards `qemu-img check` finds at worst leaked clusters, corral opens the image
//! for writing again, and every write the process had flushed reads back.
//!
//! The writer is this test binary started again with the image in the environment (see
//! `crash_writer_process`); the workload and the check are corral-testkit's `crash` module.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_disk::{DiskFormat, OpenOptions, Qcow2CreateOptions};
use corral_testkit::crash::{self, Lcg, Model, Op, RoundReport, BLOCK, SECTOR};
use corral_testkit::require_program;

mod common;
use common::path_str;

/// Tells the re-executed test binary to be the writer: `IMAGE ROUND SEED BATCH`.
const WRITER_ENV: &str = "CORRAL_DISK_CRASH_WRITER";
/// The writer flushes after this many operations and reports it.
const BATCH: u32 = 32;
/// The virtual disk: 8 MiB, so each round touches a good part of it and the check reads it whole.
const BLOCKS: u64 = 2048;

/// Not a test of its own: the writer process the crash test starts and kills. Without
/// `CORRAL_DISK_CRASH_WRITER` it returns at once.
#[test]
fn crash_writer_process() {
    let Ok(spec) = std::env::var(WRITER_ENV) else {
        return;
    };
    let fields: Vec<&str> = spec.split(' ').collect();
    let [image, round, seed] = [fields[0], fields[1], fields[2]];
    let (round, seed): (u32, u64) = (round.parse().unwrap(), seed.parse().unwrap());
    let options = OpenOptions::writable().format(DiskFormat::Qcow2);
    let mut disk = corral_disk::open(Path::new(image), options).unwrap();
    let sectors = BLOCK / SECTOR;
    let mut block_bytes = vec![0u8; BLOCK as usize];
    for (index, op) in (0u32..).zip(crash::ops(seed, BLOCKS)) {
        match op {
            Op::Write(block) => {
                for (i, sector) in (block * sectors..(block + 1) * sectors).enumerate() {
                    block_bytes[i * SECTOR as usize..(i + 1) * SECTOR as usize]
                        .copy_from_slice(&crash::written_sector(round, index, sector));
                }
                disk.write_at(&block_bytes, block * BLOCK).unwrap();
            }
            Op::Discard(block) => disk.discard(block * BLOCK, BLOCK).unwrap(),
        }
        if (index + 1) % BATCH == 0 {
            disk.flush().unwrap();
            // The line reaches the pipe before the next operation starts.
            println!("flushed {}", index + 1);
        }
    }
}

/// Runs one writer on `image` for `delay`, kills it with SIGKILL and returns what it reported.
fn run_and_kill(image: &Path, round: u32, seed: u64, delay: Duration) -> RoundReport {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_writer_process", "--nocapture"])
        .env(WRITER_ENV, format!("{} {round} {seed}", path_str(image)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let flushed = Arc::new(AtomicU32::new(0));
    let stdout = child.stdout.take().unwrap();
    let reader = {
        let flushed = Arc::clone(&flushed);
        std::thread::spawn(move || {
            // Only whole lines count: the kill may cut one short.
            for line in corral_testkit::whole_lines(stdout) {
                if let Some(count) = line.strip_prefix("flushed ") {
                    flushed.store(count.parse().unwrap(), Ordering::SeqCst);
                }
            }
        })
    };
    std::thread::sleep(delay);
    // Child::kill sends SIGKILL.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the writer ended before it was killed: {status}"
    );
    let flushed = flushed.load(Ordering::SeqCst);
    RoundReport {
        round,
        seed,
        flushed,
        // At most the batch it was in plus one whose report was lost: generous, never too strict.
        issued: flushed + 2 * BATCH,
    }
}

/// `qemu-img check` finds at most leaks (exit code 0, or 3 for leaks), and corral's check agrees
/// with it. Returns whether there were leaks.
fn assert_only_leaks(image: &Path, round: u32) -> bool {
    let (code, report) = common::qemu_check_json(image);
    assert!(
        matches!(code, Some(0) | Some(3)),
        "round {round}: qemu-img check exited with {code:?}: {report:#}"
    );
    common::assert_check_agrees_with_qemu(image);
    code == Some(3)
}

#[test]
fn a_qcow2_writer_killed_at_random_instants_leaves_only_leaks_and_its_flushed_data() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let bytes: Vec<u8> = (0..BLOCKS * BLOCK / SECTOR)
        .flat_map(crash::base_sector)
        .collect();
    std::fs::write(&base, bytes).unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    let mut choices = Lcg(u64::from(std::process::id()));
    let (mut leaky_rounds, rounds) = (0, 60);
    let mut model = Model::default();
    for round in 0..rounds {
        // A new overlay every 15 rounds, with small clusters (many L2 tables and refcount
        // blocks, so allocations of metadata happen all the time) or qemu's default.
        if round % 15 == 0 {
            let _ = std::fs::remove_file(&overlay);
            let cluster_size = [512, 4096, 65536, 1024][(round / 15) as usize % 4];
            corral_disk::create_qcow2(
                &overlay,
                &Qcow2CreateOptions {
                    cluster_size: Some(cluster_size),
                    backing_file: Some("base.raw".into()),
                    backing_format: Some(DiskFormat::Raw),
                    ..Default::default()
                },
            )
            .unwrap();
            model = Model::default();
        }
        let delay = Duration::from_millis(20 + choices.below(120));
        let seed = choices.below(u64::MAX >> 1);
        let report = run_and_kill(&overlay, round, seed, delay);
        leaky_rounds += u32::from(assert_only_leaks(&overlay, round));
        let disk = corral_disk::open(&overlay, OpenOptions::read_only().format(DiskFormat::Qcow2))
            .unwrap_or_else(|err| panic!("round {round}: the image does not open: {err}"));
        model
            .check_round(report, BLOCKS, |offset: u64, buf: &mut [u8]| {
                disk.read_at(buf, offset).map_err(|err| err.to_string())
            })
            .unwrap_or_else(|err| panic!("{err}"));
        drop(disk);
        // The next writer opens it for writing: leaks do not stop a start.
        corral_disk::open(&overlay, OpenOptions::writable().format(DiskFormat::Qcow2))
            .unwrap_or_else(|err| panic!("round {round}: the image does not open writable: {err}"));
    }
    eprintln!("{rounds} kills, {leaky_rounds} left leaked clusters, none left an error");
}
