//! VM snapshots end to end: `corral vmm control SOCKET snapshot --to DIR` on a running counter
//! guest (and on one with virtio devices), the VMM killed, `corral vmm run --restore DIR` in a new
//! process.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::require_kvm;

const TIMEOUT: Duration = Duration::from_secs(60);

fn corral() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corral"))
}

/// A `corral vmm run` process with its console in a file and a control socket.
struct Vmm {
    child: Child,
    console: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    fn start(dir: &Path, tag: &str, args: &[&str]) -> Vmm {
        let console = dir.join(format!("console-{tag}"));
        let socket = dir.join(format!("control-{tag}.sock"));
        let child = corral()
            .args(["vmm", "run"])
            .args(args)
            .arg(format!("--serial=file:{}", console.display()))
            .arg("--control-socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let vmm = Vmm {
            child,
            console,
            socket,
        };
        vmm.wait_until("the control socket exists", || vmm.socket.exists());
        vmm
    }

    fn boot_counter(dir: &Path, tag: &str, extra: &[&str]) -> Vmm {
        Vmm::boot("counter", dir, tag, extra)
    }

    fn boot(guest: &str, dir: &Path, tag: &str, extra: &[&str]) -> Vmm {
        let kernel = corral_guests::elf(guest).display().to_string();
        let mut args = vec!["--memory", "32M", "--kernel", &kernel];
        args.extend_from_slice(extra);
        Vmm::start(dir, tag, &args)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    fn wait_until(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for_counts(&self, lines: usize) {
        self.wait_for_lines("count ", lines);
    }

    fn wait_for_lines(&self, prefix: &str, lines: usize) {
        self.wait_until("the guest to print", || {
            complete_lines(&self.output())
                .filter(|line| line.starts_with(prefix))
                .count()
                >= lines
        });
    }

    fn control(&self, args: &[&str]) -> Output {
        corral()
            .args(["vmm", "control"])
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// SIGKILL, as a crashed host process would end.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A test that fails midway must not leave its VMM running.
impl Drop for Vmm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn snapshot(vmm: &Vmm, to: &Path) -> Output {
    vmm.control(&["snapshot", "--to", to.to_str().unwrap(), "--leave-paused"])
}

/// The numbers of the "count N" lines, in order.
fn counts(console: &str) -> Vec<u64> {
    numbered(console, "count ")
}

/// The console's lines that end in a newline: the last one may still be being printed, as the
/// console is read while the guest runs.
fn complete_lines(console: &str) -> impl Iterator<Item = &str> {
    console
        .split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
}

/// The numbers of the complete lines that start with `prefix`, in order.
fn numbered(console: &str, prefix: &str) -> Vec<u64> {
    complete_lines(console)
        .filter_map(|line| line.strip_prefix(prefix))
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("bad line {n:?} in {console}"))
        })
        .collect()
}

#[test]
fn a_restored_vm_continues_counting_with_no_gap_and_the_same_memory() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let first = Vmm::boot_counter(dir.path(), "first", &[]);
    first.wait_for_counts(3);
    let snap = dir.path().join("snap");
    let answer = snapshot(&first, &snap);
    assert!(answer.status.success(), "{}", text(&answer.stdout));
    assert!(
        text(&answer.stdout).contains("paused"),
        "{}",
        text(&answer.stdout)
    );
    let before = first.output();
    first.kill();

    // Sparse: the guest touched a few pages of its 32 MiB.
    let memory = std::fs::metadata(snap.join("memory")).unwrap();
    assert_eq!(memory.len(), 32 << 20);
    assert!(
        memory.blocks() * 512 < 4 << 20,
        "{} blocks",
        memory.blocks()
    );

    // Restored paused and saved again before any guest instruction: the memory is the same but
    // for the VM generation ID, which every restore replaces (docs/vmm.md).
    let second = Vmm::start(
        dir.path(),
        "second",
        &["--restore", snap.to_str().unwrap(), "--paused"],
    );
    let again = dir.path().join("again");
    let answer = snapshot(&second, &again);
    assert!(answer.status.success(), "{}", text(&answer.stdout));
    let saved = std::fs::read(snap.join("memory")).unwrap();
    let restored = std::fs::read(again.join("memory")).unwrap();
    let id = corral_vmm::arch::x86_64::layout::VM_GENERATION_ID_START as usize;
    let id = id..id + corral_vmm::devices::vm_generation::ID_BYTES;
    assert!(
        saved[..id.start] == restored[..id.start] && saved[id.end..] == restored[id.end..],
        "guest memory differs after the restore"
    );
    assert_ne!(
        saved[id.clone()],
        restored[id],
        "the restore kept the VM generation ID"
    );

    let answer = second.control(&["resume"]);
    assert!(
        text(&answer.stdout).contains("running"),
        "{}",
        text(&answer.stdout)
    );
    second.wait_for_counts(3);
    let after = second.output();
    second.kill();

    // The console of the first process then the second's: one unbroken sequence.
    let all = counts(&format!("{before}{after}"));
    let expected: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(all, expected, "before: {before:?}\nafter: {after:?}");
    assert!(counts(&before).len() >= 3 && counts(&after).len() >= 3);
}

#[test]
fn timer_interrupts_keep_coming_after_a_restore() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    // 10 PIT interrupts (through the PIC and the local APIC's LINT0) per line.
    let first = Vmm::boot("ticks", dir.path(), "first", &[]);
    first.wait_for_lines("tick ", 2);
    let snap = dir.path().join("snap");
    let answer = snapshot(&first, &snap);
    assert!(answer.status.success(), "{}", text(&answer.stdout));
    let before = first.output();
    first.kill();

    let second = Vmm::start(dir.path(), "second", &["--restore", snap.to_str().unwrap()]);
    second.wait_for_lines("tick ", 3);
    let after = second.output();
    second.kill();
    let all = numbered(&format!("{before}{after}"), "tick ");
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(all, expected, "before: {before:?}\nafter: {after:?}");
}

#[test]
fn console_input_typed_while_a_vm_is_restored_reaches_the_guest() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    // The echo guest reads a line from COM1 (polling its line status) and exits with its length.
    let first = Vmm::boot("echo", dir.path(), "first", &[]);
    first.wait_for_lines("ready", 1);
    let snap = dir.path().join("snap");
    let answer = snapshot(&first, &snap);
    assert!(answer.status.success(), "{}", text(&answer.stdout));
    first.kill();

    // The line is in the pipe before the VMM starts: its console thread reads it at once, while
    // the machine is still being restored. Queued then, it went into the UART the restore
    // replaced, and the guest waited for ever.
    let mut restored = corral()
        .args(["vmm", "run", "--serial=stdout", "--restore"])
        .arg(&snap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut restored.stdin.take().unwrap(), b"hi\n").unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while restored.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            restored.kill().unwrap();
            let output = restored.wait_with_output().unwrap();
            panic!(
                "the restored guest never read the line; console: {}{}",
                text(&output.stdout),
                text(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = restored.wait_with_output().unwrap();
    assert!(
        text(&output.stdout).contains("echo: hi\n"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
}

/// Runs `corral vmm run --restore DIR` expecting it to refuse; returns its stderr.
fn refused_restore(dir: &Path) -> String {
    let output = corral()
        .args(["vmm", "run", "--serial", "none", "--restore"])
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    text(&output.stderr)
}

#[test]
fn damaged_state_files_and_non_empty_directories_are_refused() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let vmm = Vmm::boot_counter(dir.path(), "vm", &[]);
    vmm.wait_for_counts(1);

    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("file"), "").unwrap();
    let answer = snapshot(&vmm, &busy);
    assert!(!answer.status.success());
    assert!(
        text(&answer.stdout).contains("is not empty"),
        "{}",
        text(&answer.stdout)
    );

    let snap = dir.path().join("snap");
    assert!(snapshot(&vmm, &snap).status.success());
    vmm.kill();
    let state = std::fs::read(snap.join("state")).unwrap();
    let damaged = |name: &str, change: &dyn Fn(&mut Vec<u8>)| {
        let copy = dir.path().join(name);
        std::fs::create_dir(&copy).unwrap();
        std::fs::hard_link(snap.join("memory"), copy.join("memory")).unwrap();
        let mut bytes = state.clone();
        change(&mut bytes);
        std::fs::write(copy.join("state"), bytes).unwrap();
        refused_restore(&copy)
    };
    let flipped = damaged("flipped", &|bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
    });
    assert!(flipped.contains("checksum does not match"), "{flipped}");
    let version = damaged("version", &|bytes| bytes[8] = 9);
    assert!(version.contains("snapshot format version 9"), "{version}");
    let magic = damaged("magic", &|bytes| bytes[0] = b'X');
    assert!(magic.contains("not a corral VM state file"), "{magic}");
}

/// The round numbers of the `snapshot-io` guest's complete lines, each checked to have read
/// back a sector (its sum printed) and entropy.
fn io_rounds(console: &str) -> Vec<u64> {
    complete_lines(console)
        .filter_map(|line| line.strip_prefix("round "))
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            assert!(
                matches!(words[..], [_, "blk", sum, "rng", _] if sum != "-"),
                "bad line {line:?} in {console}"
            );
            words[0].parse().unwrap()
        })
        .collect()
}

#[test]
fn a_vm_with_a_disk_and_rng_goes_on_after_a_snapshot_and_restores() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let disk_arg = format!("path={},format=raw", disk.display());
    let vmm = Vmm::boot(
        "snapshot-io",
        dir.path(),
        "vm",
        &["--rng", "--disk", &disk_arg],
    );
    vmm.wait_for_lines("round ", 5);
    let snap = dir.path().join("snap");
    // Without --leave-paused: the VM and its devices' I/O threads go on.
    let answer = vmm.control(&["snapshot", "--to", snap.to_str().unwrap()]);
    assert!(answer.status.success(), "{}", text(&answer.stdout));
    let rounds = io_rounds(&vmm.output()).len();
    vmm.wait_for_lines("round ", rounds + 5);
    let before = io_rounds(&vmm.output());
    vmm.kill();

    let restored = Vmm::start(
        dir.path(),
        "restored",
        &["--restore", snap.to_str().unwrap()],
    );
    restored.wait_for_lines("round ", 5);
    let after = io_rounds(&restored.output());
    restored.kill();
    // The restored guest goes on from a round the first one had reached, one round at a time.
    let first = after[0];
    assert!(
        first <= before[before.len() - 1] + 1,
        "{before:?} {after:?}"
    );
    let expected: Vec<u64> = (first..first + after.len() as u64).collect();
    assert_eq!(after, expected);
}

#[test]
fn a_diff_merged_onto_its_full_snapshot_restores_and_a_bare_diff_is_refused() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let arg = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let first = Vmm::boot_counter(dir.path(), "first", &["--track-dirty-pages"]);
    first.wait_for_counts(2);
    let answer = first.control(&["snapshot", "--to", &arg("full")]);
    assert!(answer.status.success(), "{}", text(&answer.stdout));
    first.wait_for_counts(5);
    let answer = first.control(&["snapshot", "--to", &arg("diff"), "--diff", "--leave-paused"]);
    assert!(answer.status.success(), "{}", text(&answer.stdout));
    // Still paused: a full snapshot at the same point as the diff.
    let answer = snapshot(&first, Path::new(&arg("same-point")));
    assert!(answer.status.success(), "{}", text(&answer.stdout));
    let before = first.output();
    first.kill();

    let refused = corral()
        .args(["vmm", "run", "--restore", &arg("diff")])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("is a diff snapshot"),
        "{}",
        text(&refused.stderr)
    );

    let merge = |base: &str, to: &str| {
        corral()
            .args(["vmm", "snapshot", "merge", &arg(base), &arg("diff")])
            .args(["--to", &arg(to)])
            .output()
            .unwrap()
    };
    let wrong = merge("same-point", "wrong");
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("merge it onto its own base"),
        "{}",
        text(&wrong.stderr)
    );
    let merged = merge("full", "merged");
    assert!(merged.status.success(), "{}", text(&merged.stderr));
    let memory = std::fs::read(dir.path().join("merged/memory")).unwrap();
    let reference = std::fs::read(dir.path().join("same-point/memory")).unwrap();
    assert!(
        memory == reference,
        "the merged memory differs from the full snapshot's"
    );

    let second = Vmm::start(dir.path(), "second", &["--restore", &arg("merged")]);
    second.wait_for_counts(3);
    let after = second.output();
    second.kill();
    let all = counts(&format!("{before}{after}"));
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>(), "{after}");
}
