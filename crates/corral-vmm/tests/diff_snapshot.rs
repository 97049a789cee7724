//! Diff snapshots through the library: a VM that tracks dirty pages, a full snapshot, then diffs
//! that hold exactly the pages written since (by the guest, or by a virtio device for it),
//! merged back into a full snapshot identical to one taken at the same point. The
//! `dirty-pages` guest writes the pages it is told to over its console socket.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use common::Scratch;
use corral_control::{Request, Response, RunState};
use corral_testkit::require_kvm;
use corral_vmm::config::{DiskConfig, SerialTarget};
use corral_vmm::snapshot::{self, SavedVm, SnapshotError, SnapshotKind};
use corral_vmm::{RunOptions, VmConfig};
use nix::unistd::{lseek, Whence};

const PAGE: u64 = 4096;
const SECTOR: usize = 512;

/// The byte at `offset` of the test disk's first sector.
fn disk_pattern(offset: usize) -> u8 {
    (offset * 7 + 3) as u8
}

/// The guest addresses of the memory file's data pages (32 MiB of RAM is one region at 0, so a
/// file offset is a guest address).
fn data_pages(path: &Path) -> BTreeSet<u64> {
    let file = File::open(path).unwrap();
    let end = file.metadata().unwrap().len() as i64;
    let mut pages = BTreeSet::new();
    let mut at = 0;
    while at < end {
        let Ok(data) = lseek(&file, at, Whence::SeekData) else {
            break;
        };
        let hole = lseek(&file, data, Whence::SeekHole).unwrap();
        pages.extend((data as u64 / PAGE..(hole as u64).div_ceil(PAGE)).map(|page| page * PAGE));
        at = hole;
    }
    pages
}

fn page_of(path: &Path, address: u64) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    bytes[address as usize..(address + PAGE) as usize].to_vec()
}

/// The `dirty-pages` guest, driven over its console socket (its output also goes to the
/// scratch console file).
struct Guest {
    vm: common::RunningVm,
    console: UnixStream,
    /// Where the guest's `pages`, `blk_buffer` and a stack variable are.
    pages: u64,
    blk: u64,
    stack: u64,
}

fn console_config(scratch: &Scratch) -> (SerialTarget, Option<PathBuf>) {
    (
        SerialTarget::Socket(scratch.path("console.sock")),
        Some(scratch.console.clone()),
    )
}

impl Guest {
    fn attach(vm: common::RunningVm, scratch: &Scratch) -> Guest {
        let socket = scratch.path("console.sock");
        common::wait_until("the console socket", || socket.exists());
        let console = UnixStream::connect(&socket).unwrap();
        let mut guest = Guest {
            vm,
            console,
            pages: 0,
            blk: 0,
            stack: 0,
        };
        if let Some(line) = scratch
            .console()
            .lines()
            .find(|line| line.starts_with("pages "))
        {
            let words: Vec<u64> = line
                .split(' ')
                .filter_map(|word| u64::from_str_radix(word.strip_prefix("0x")?, 16).ok())
                .collect();
            (guest.pages, guest.blk, guest.stack) = (words[0], words[1], words[2]);
        }
        guest
    }

    /// Sends `commands` and waits for the answer to the last one (`expect`, the `count`th time).
    fn command(&mut self, scratch: &Scratch, commands: &str, expect: &str, count: usize) {
        self.console.write_all(commands.as_bytes()).unwrap();
        scratch.wait_for_console(expect, count);
    }

    fn page(&self, index: u64) -> u64 {
        self.pages + index * PAGE
    }

    /// The pages the guest's stack may have been written on.
    fn stack_pages(&self) -> BTreeSet<u64> {
        let page = self.stack & !(PAGE - 1);
        [page - PAGE, page, page + PAGE].into()
    }

    fn kill(self, scratch: &Scratch) {
        scratch.control(&Request::Kill);
        common::finish(self.vm).unwrap();
    }
}

fn snapshot(scratch: &Scratch, to: &Path, diff: bool, leave_paused: bool) -> Response {
    scratch.control(&Request::Snapshot {
        to: to.to_path_buf(),
        leave_paused,
        diff,
    })
}

fn snapshot_ok(scratch: &Scratch, to: &Path, diff: bool, leave_paused: bool) {
    match snapshot(scratch, to, diff, leave_paused) {
        Response::State { .. } => {}
        other => panic!("snapshot to {} answered {other:?}", to.display()),
    }
}

fn refusal(response: Response) -> String {
    match response {
        Response::Error { message } => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn diffs_hold_the_pages_the_guest_and_the_devices_wrote_and_merge_into_the_full_snapshot() {
    require_kvm!();
    let scratch = Scratch::new();
    let disk = scratch.path("disk.raw");
    let mut bytes = vec![0u8; 1 << 20];
    for (offset, byte) in bytes.iter_mut().take(SECTOR).enumerate() {
        *byte = disk_pattern(offset);
    }
    std::fs::write(&disk, bytes).unwrap();
    let (serial, console_log) = console_config(&scratch);
    let config = VmConfig {
        track_dirty_pages: true,
        serial,
        console_log,
        disks: vec![DiskConfig {
            path: disk,
            format: Some(corral_disk::DiskFormat::Raw),
            allow_backing: None,
            readonly: true,
            serial: None,
        }],
        ..scratch.config("dirty-pages")
    };
    let vm = common::start(&config);
    scratch.wait_for_console("ready\n", 1);
    let mut guest = Guest::attach(vm, &scratch);
    assert!(guest.pages != 0 && guest.blk != 0 && guest.stack != 0);

    let full = scratch.path("full");
    snapshot_ok(&scratch, &full, false, false);
    guest.command(&scratch, "cfk", "wrote k\n", 1);
    let written = scratch.path("written");
    snapshot_ok(&scratch, &written, true, false);

    // The guest wrote pages c, f and k of its array, and its stack: nothing else.
    let memory = written.join("memory");
    assert_eq!(std::fs::metadata(&memory).unwrap().len(), 32 << 20);
    let held = data_pages(&memory);
    let beyond_stack: BTreeSet<u64> = held.difference(&guest.stack_pages()).copied().collect();
    let expected: BTreeSet<u64> = [2, 5, 10].map(|index| guest.page(index)).into();
    assert_eq!(beyond_stack, expected, "all pages held: {held:x?}");
    assert_eq!(page_of(&memory, guest.page(5)), vec![b'f'; PAGE as usize]);

    // A device write: the guest only reads `blk_buffer`, the VMM filled it.
    guest.command(&scratch, "r", "read ", 1);
    let read = scratch.path("read");
    snapshot_ok(&scratch, &read, true, true);
    let memory = read.join("memory");
    let held = data_pages(&memory);
    assert!(held.contains(&guest.blk), "{held:x?}");
    let expected: Vec<u8> = (0..SECTOR).map(disk_pattern).collect();
    assert_eq!(page_of(&memory, guest.blk)[..SECTOR], expected[..]);
    assert!(
        !held.contains(&guest.page(2)),
        "the previous diff reset the tracking: {held:x?}"
    );

    // Still paused: a full snapshot at the same point as the last diff.
    let same_point = scratch.path("same-point");
    snapshot_ok(&scratch, &same_point, false, true);
    guest.kill(&scratch);

    let once = scratch.path("merged-once");
    snapshot::merge(&full, &written, &once).unwrap();
    let twice = scratch.path("merged-twice");
    snapshot::merge(&once, &read, &twice).unwrap();
    let merged = std::fs::read(twice.join("memory")).unwrap();
    let reference = std::fs::read(same_point.join("memory")).unwrap();
    assert!(
        merged == reference,
        "full + diff + diff differs from the full snapshot taken at the same point"
    );
    let state = snapshot::read_state(&twice).unwrap();
    assert_eq!(state.kind, SnapshotKind::Full);
    assert_eq!(state.id, snapshot::read_state(&read).unwrap().id);

    // The merged snapshot restores, and the guest carries on from where it was.
    let second = Scratch::new();
    let saved = SavedVm::open(&twice).unwrap();
    let (serial, console_log) = console_config(&second);
    let restored = VmConfig {
        serial,
        console_log,
        control_socket: Some(second.socket.clone()),
        ..saved.snapshot.config.clone()
    };
    let vm = common::spawn(move || corral_vmm::restore(&restored, &RunOptions::default(), saved));
    let mut guest = Guest::attach(vm, &second);
    guest.command(&second, "dr", "read ", 1);
    second.wait_for_console("wrote d\n", 1);
    let all = scratch.console() + &second.console();
    let sums: Vec<&str> = all
        .lines()
        .filter(|line| line.starts_with("read "))
        .collect();
    assert_eq!(sums.len(), 2);
    assert_eq!(
        sums[0], sums[1],
        "the disk reads the same after the restore"
    );
    guest.kill(&second);
}

#[test]
fn diffs_need_tracking_and_a_base_and_restore_only_once_merged() {
    require_kvm!();
    let untracked = Scratch::new();
    let vm = common::start(&untracked.config("counter"));
    untracked.wait_for_console("count ", 1);
    let message = refusal(snapshot(&untracked, &untracked.path("diff"), true, false));
    assert!(message.contains("--track-dirty-pages"), "{message}");
    assert!(!untracked.path("diff").exists());
    untracked.control(&Request::Kill);
    common::finish(vm).unwrap();

    let scratch = Scratch::new();
    let config = VmConfig {
        track_dirty_pages: true,
        ..scratch.config("counter")
    };
    let vm = common::start(&config);
    scratch.wait_for_console("count ", 1);
    let message = refusal(snapshot(&scratch, &scratch.path("early"), true, false));
    assert!(message.contains("take a full snapshot first"), "{message}");
    let full = scratch.path("full");
    snapshot_ok(&scratch, &full, false, false);
    scratch.wait_for_console("count ", 3);
    let diff = scratch.path("diff");
    snapshot_ok(&scratch, &diff, true, true);
    let later = scratch.path("later");
    snapshot_ok(&scratch, &later, false, true);
    scratch.control(&Request::Kill);
    common::finish(vm).unwrap();

    let err = SavedVm::open(&diff).err().expect("a bare diff opened");
    assert!(matches!(err, SnapshotError::BareDiff { .. }), "{err}");
    assert!(err.to_string().contains("merge it onto"), "{err}");

    let bigger = Scratch::new();
    let vm = common::start(&VmConfig {
        memory: "64M".parse().unwrap(),
        track_dirty_pages: true,
        ..bigger.config("counter")
    });
    bigger.wait_for_console("count ", 1);
    let big = bigger.path("full");
    assert_eq!(
        bigger.control_state(&Request::Snapshot {
            to: big.clone(),
            leave_paused: true,
            diff: false,
        }),
        RunState::Paused
    );
    bigger.control(&Request::Kill);
    common::finish(vm).unwrap();

    let to = scratch.path("merged");
    let refused = |base: &Path, diff: &Path| snapshot::merge(base, diff, &to).unwrap_err();
    assert!(matches!(
        refused(&big, &diff),
        SnapshotError::SizeMismatch { .. }
    ));
    assert!(matches!(
        refused(&later, &diff),
        SnapshotError::WrongBase { .. }
    ));
    assert!(matches!(
        refused(&diff, &diff),
        SnapshotError::BaseIsDiff { .. }
    ));
    assert!(matches!(
        refused(&full, &later),
        SnapshotError::NotADiff { .. }
    ));
    assert!(!to.exists(), "a refused merge writes nothing");
    snapshot::merge(&full, &diff, &to).unwrap();
    SavedVm::open(&to).unwrap();
}
