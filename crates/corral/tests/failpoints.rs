//! The crash-consistency harness (issue 18): corral's multi-step operations are SIGKILLed at
//! every failpoint compiled into the test build (`corral debug failpoints`; the list is checked
//! against the `fail_point!`s in the source), for a container and a VM instance wherever the
//! operation applies, and for the storage pool's volumes. After each kill the harness checks
//! that `corral list` tells the truth (a listed instance is running only with a live supervisor
//! that answers, stopped or crashed only without one, never left `starting`/`stopping`; an
//! instance directory is never unlisted), that the instance starts again or is cleanly absent
//! (then a second create of the name works), that no half-made file is visible once the next
//! command has swept (no `.creating-*`, `.deleting-*` or temp file; no half image under a
//! volume name), and that no process, mount, cgroup, tap or nftables table is left behind. A
//! killed `clone` must leave its source whole and working and no half clone, and the next clone
//! or delete must collect what it left (an unused base, the old name of a frozen disk).
//!
//! How the build gets its failpoints, and how to run this alone: DEVELOPERS.md, "Failpoints".

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{build_rootfs, output_via_files, CorralRoot as Root};

/// What an instance round's instance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Container,
    Vm,
}

/// The command a round kills, and what runs before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `create` (of an absent instance).
    Create,
    /// `start` of a created one.
    Start,
    /// `stop` of a running one.
    Stop,
    /// `stop` of a running one whose supervisor was started with the failpoint armed (the
    /// point is in the supervisor's teardown).
    StopInSupervisor,
    /// `restart` of a running one.
    Restart,
    /// `delete` of a stopped one.
    Delete,
    /// `delete --force` of a running one.
    DeleteForce,
    /// `config set` of a stopped one.
    ConfigSet,
}

/// Volume commands a round kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VolumeOp {
    CreateRaw,
    CreateQcow2,
    Import,
    ResizeQcow2,
    DeleteDir,
}

const BOTH: &[Kind] = &[Kind::Container, Kind::Vm];
const CONTAINER: &[Kind] = &[Kind::Container];
const VM: &[Kind] = &[Kind::Vm];

/// Every failpoint's instance rounds: the operation that reaches it and the kinds it applies to.
const INSTANCE_ROUNDS: &[(&str, Op, &[Kind])] = &[
    ("create.staging-made", Op::Create, BOTH),
    ("create.rootfs-copying", Op::Create, CONTAINER),
    ("create.populated", Op::Create, BOTH),
    ("create.definition-written", Op::Create, BOTH),
    ("atomic.temp-written", Op::ConfigSet, BOTH),
    ("start.state-starting", Op::Start, BOTH),
    ("start.userns-shifting", Op::Start, CONTAINER),
    ("start.cgroup-created", Op::Start, VM),
    ("start.spawned", Op::Start, BOTH),
    ("start.pid-recorded", Op::Start, BOTH),
    ("monitor.container-created", Op::Start, CONTAINER),
    ("engine.create-recorded", Op::Start, CONTAINER),
    ("engine.create-cgroup-made", Op::Start, CONTAINER),
    ("engine.create-cloned", Op::Start, CONTAINER),
    ("engine.create-ready", Op::Start, CONTAINER),
    ("engine.delete-killed", Op::StopInSupervisor, CONTAINER),
    ("stop.state-stopping", Op::Stop, BOTH),
    ("stop.requested", Op::Stop, BOTH),
    ("restart.stopped", Op::Restart, BOTH),
    ("delete.killed", Op::DeleteForce, BOTH),
    ("delete.renamed-aside", Op::Delete, BOTH),
];

/// Every failpoint's volume rounds.
const VOLUME_ROUNDS: &[(&str, VolumeOp)] = &[
    ("image.temp-written", VolumeOp::CreateRaw),
    ("image.temp-written", VolumeOp::CreateQcow2),
    ("image.temp-written", VolumeOp::Import),
    ("image.copying", VolumeOp::Import),
    ("image.grown", VolumeOp::ResizeQcow2),
    ("volume.delete-renamed-aside", VolumeOp::DeleteDir),
];

/// Image commands a round kills. They share one corral root holding a container image `bb` (a
/// busybox tarball), a VM image `vm` (a qcow2 with its own kernel) and a stopped instance of
/// each (`pc`, `pv`, for publish); a round that makes or removes images restores that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImageOp {
    /// `image import` of a second tarball, with an alias.
    Import,
    /// `image delete` of that second image.
    Delete,
    /// `image alias set` of a new alias.
    AliasSet,
    /// `image export` of `bb` (an Incus unified tarball).
    Export,
    /// `create --image bb`.
    CreateContainer,
    /// `create --image vm` (a linked clone).
    CreateVm,
    /// `create --image vm --full` (a flattened copy).
    CreateVmFull,
    /// `publish pc --alias`.
    PublishContainer,
    /// `publish pv --alias`.
    PublishVm,
    /// `delete --force` of a VM linked to `vm`, then `image delete vm`.
    DeleteLinkedVm,
}

/// Every failpoint's image rounds.
const IMAGE_ROUNDS: &[(&str, ImageOp)] = &[
    ("images.commit-staged", ImageOp::Import),
    ("images.committed", ImageOp::Import),
    ("images.delete-renamed-aside", ImageOp::Delete),
    ("images.delete-aliases-saved", ImageOp::Delete),
    ("atomic.temp-written", ImageOp::AliasSet),
    ("images.export-temp-written", ImageOp::Export),
    ("create.staging-made", ImageOp::CreateContainer),
    ("create.rootfs-copying", ImageOp::CreateContainer),
    ("create.populated", ImageOp::CreateContainer),
    ("create.definition-written", ImageOp::CreateContainer),
    ("create.staging-made", ImageOp::CreateVm),
    ("image.temp-written", ImageOp::CreateVm),
    ("create.populated", ImageOp::CreateVm),
    ("create.definition-written", ImageOp::CreateVm),
    ("image.copying", ImageOp::CreateVmFull),
    ("create.rootfs-copying", ImageOp::PublishContainer),
    ("images.commit-staged", ImageOp::PublishContainer),
    ("images.committed", ImageOp::PublishContainer),
    ("image.copying", ImageOp::PublishVm),
    ("image.temp-written", ImageOp::PublishVm),
    ("images.commit-staged", ImageOp::PublishVm),
    ("images.committed", ImageOp::PublishVm),
    ("delete.killed", ImageOp::DeleteLinkedVm),
    ("delete.renamed-aside", ImageOp::DeleteLinkedVm),
];

/// Clone commands a round kills, each in a root of its own holding the stopped source `src`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CloneOp {
    /// `clone src dst` of a container.
    Container,
    /// `clone src dst` of a VM whose disk stands alone: the disk copied.
    VmFull,
    /// `clone src dst --linked` of that VM: its disk frozen into a base, the source switched
    /// onto an overlay of it.
    VmLinked,
}

/// Every failpoint's clone rounds.
const CLONE_ROUNDS: &[(&str, CloneOp)] = &[
    ("create.staging-made", CloneOp::Container),
    ("create.rootfs-copying", CloneOp::Container),
    ("create.definition-written", CloneOp::Container),
    ("create.staging-made", CloneOp::VmFull),
    ("create.populated", CloneOp::VmFull),
    ("clone.base-linked", CloneOp::VmLinked),
    ("image.temp-written", CloneOp::VmLinked),
    ("atomic.temp-written", CloneOp::VmLinked),
    ("clone.source-switched", CloneOp::VmLinked),
    ("create.definition-written", CloneOp::VmLinked),
];

/// Snapshot commands a round kills, each in a root of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SnapshotOp {
    /// `snapshot create src s` of a stopped VM whose disk is an overlay on an image.
    VmCreate,
    /// `snapshot restore src s` of a stopped container whose root filesystem changed since.
    ContainerRestore,
    /// `snapshot create src s` of the running counter VM (no disk).
    VmRunning,
}

/// Every failpoint's snapshot rounds.
const SNAPSHOT_ROUNDS: &[(&str, SnapshotOp)] = &[
    ("snapshot.vm-saved", SnapshotOp::VmRunning),
    ("snapshot.bases-linked", SnapshotOp::VmCreate),
    ("snapshot.recorded", SnapshotOp::VmCreate),
    ("snapshot.switched", SnapshotOp::VmCreate),
    ("snapshot.rootfs-swapped", SnapshotOp::ContainerRestore),
];

/// How long a listed instance may stay `starting` or `stopping` after a kill (a supervisor
/// coming up, or shutting down as it was asked).
const SETTLE: Duration = Duration::from_secs(30);

/// Runs only the rounds of failpoints whose names contain this (for debugging one round).
const ONLY_ENV: &str = "CORRAL_FAILPOINT_ROUNDS";

fn selected(point: &str) -> bool {
    std::env::var(ONLY_ENV).map_or(true, |only| point.contains(&only))
}

/// The failpoints of this build, from the binary itself.
fn compiled_failpoints() -> Vec<(String, String)> {
    let out = std::process::Command::new(common::corral_bin())
        .args(["debug", "failpoints"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the test build of corral must have failpoints (corral-core's `failpoints` feature, \
         enabled by corral's dev-dependency): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, state)| (name.to_string(), state.to_string()))
        .collect()
}

/// The names of every `fail_point!` in the workspace's source.
fn failpoints_in_source() -> BTreeSet<String> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = BTreeSet::new();
    let mut pending: Vec<PathBuf> = std::fs::read_dir(&crates)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("src"))
        .collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("fail_point!(\"").skip(1) {
                found.insert(piece.split('"').next().unwrap().to_string());
            }
        }
    }
    found
}

#[test]
fn every_failpoint_in_the_source_is_compiled_listed_and_has_a_round() {
    let compiled = compiled_failpoints();
    let listed: BTreeSet<String> = compiled.iter().map(|(name, _)| name.clone()).collect();
    let injected: BTreeSet<String> = corral_core::failpoints::INJECTED
        .iter()
        .map(|point| point.name.to_string())
        .collect();
    assert_eq!(
        listed.union(&injected).cloned().collect::<BTreeSet<_>>(),
        failpoints_in_source(),
        "corral_core::failpoints::ALL and INJECTED must name exactly the fail_point!s in the source"
    );
    let rounds: BTreeSet<String> = INSTANCE_ROUNDS
        .iter()
        .map(|(name, ..)| name.to_string())
        .chain(VOLUME_ROUNDS.iter().map(|(name, _)| name.to_string()))
        .chain(IMAGE_ROUNDS.iter().map(|(name, _)| name.to_string()))
        .chain(CLONE_ROUNDS.iter().map(|(name, _)| name.to_string()))
        .chain(SNAPSHOT_ROUNDS.iter().map(|(name, _)| name.to_string()))
        .collect();
    assert_eq!(
        listed, rounds,
        "every failpoint needs a round in this harness (and only those)"
    );
    println!(
        "{} failpoints compiled into the test build:",
        compiled.len()
    );
    for (name, state) in &compiled {
        let kinds: Vec<String> = INSTANCE_ROUNDS
            .iter()
            .filter(|(n, ..)| n == name)
            .flat_map(|(_, op, kinds)| kinds.iter().map(move |k| format!("{op:?} {k:?}")))
            .chain(
                VOLUME_ROUNDS
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, op)| format!("volume {op:?}")),
            )
            .chain(
                IMAGE_ROUNDS
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, op)| format!("image {op:?}")),
            )
            .chain(
                CLONE_ROUNDS
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, op)| format!("clone {op:?}")),
            )
            .chain(
                SNAPSHOT_ROUNDS
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, op)| format!("snapshot {op:?}")),
            )
            .collect();
        println!(
            "  {name:28} {state}\n  {:28} rounds: {}",
            "",
            kinds.join(", ")
        );
    }
}

/// A test's instance rounds and what they share: a busybox rootfs (with a setuid file, which
/// the user namespace shift must keep) and the instance name.
struct Harness {
    _scratch: tempfile::TempDir,
    rootfs: PathBuf,
    tag: String,
    /// corral's nftables tables before the first round: the host's own networks and nic
    /// filters (a quickstart's `default` network) are not this test's to account for.
    nft_tables_before: Vec<String>,
}

impl Harness {
    fn new() -> Option<Harness> {
        if !corral_testkit::is_root() {
            corral_testkit::skip("needs root for namespaces, cgroups and taps");
            return None;
        }
        if !common::have_busybox() {
            return None;
        }
        let scratch = tempfile::tempdir().unwrap();
        let rootfs = scratch.path().join("rootfs");
        build_rootfs(&rootfs);
        let setuid = rootfs.join("bin/setuid-tool");
        std::fs::write(&setuid, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        Some(Harness {
            _scratch: scratch,
            rootfs,
            tag: std::process::id().to_string(),
            nft_tables_before: corral_nft_tables(),
        })
    }

    fn name(&self, kind: Kind) -> String {
        match kind {
            Kind::Container => format!("fpc{}", self.tag),
            Kind::Vm => format!("fpv{}", self.tag),
        }
    }

    /// The tap of the VM instance (at most 15 characters).
    fn tap(&self) -> String {
        format!("fpt{}", self.tag)
    }

    /// `corral create` of the instance; a container gets a user namespace (`--userns auto`)
    /// only with `userns`.
    fn create_args(&self, kind: Kind, name: &str, userns: bool) -> Vec<String> {
        let mut args: Vec<String> = vec!["create".into(), name.into()];
        match kind {
            Kind::Container => {
                args.extend(["--rootfs".into(), self.rootfs.display().to_string()]);
                args.extend([
                    "--userns".into(),
                    if userns { "auto" } else { "host" }.into(),
                ]);
                args.extend(
                    [
                        "--",
                        "/bin/sh",
                        "-c",
                        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
                    ]
                    .map(String::from),
                );
            }
            Kind::Vm => {
                let kernel = corral_guests::elf("ctrl-alt-del");
                args.extend([
                    "--kernel".into(),
                    kernel.display().to_string(),
                    "--memory".into(),
                    "32M".into(),
                    "--nic".into(),
                    format!("tap={}", self.tap()),
                ]);
            }
        }
        args
    }
}

fn stop_args(verb: &str, name: &str) -> Vec<String> {
    [verb, name, "--timeout", "2"].map(String::from).to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Runs corral with `point` armed to kill; returns its output and the failpoint hits it (or a
/// supervisor it started) logged.
fn armed(root: &Root, point: &str, args: &[&str]) -> (Output, Vec<String>) {
    let log = root.dir.path().join(format!("hits-{point}"));
    let _ = std::fs::remove_file(&log);
    let mut command = root.command(args);
    command
        .env("FAILPOINTS", format!("{point}=kill"))
        .env("CORRAL_FAILPOINTS_LOG", &log);
    let out = output_via_files(&mut command);
    (out, hits(&log))
}

fn hits(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// The instance as `corral list --all` shows it, once it is neither starting nor stopping.
fn settled(root: &Root, name: &str, notes: &mut Vec<String>) -> Option<Value> {
    let deadline = Instant::now() + SETTLE;
    let first = Instant::now();
    loop {
        let list: Value = serde_json::from_str(&root.ok(&["list", "--all", "-o", "json"])).unwrap();
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned();
        let status = entry
            .as_ref()
            .map(|e| e["status"].as_str().unwrap().to_string());
        match status.as_deref() {
            Some("starting" | "stopping") if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Some(transient @ ("starting" | "stopping")) => {
                panic!("{name} is still listed {transient} {SETTLE:?} after the kill: {entry:?}")
            }
            _ => {
                if first.elapsed() > Duration::from_millis(200) {
                    notes.push(format!("settled after {:?}", first.elapsed()));
                }
                return entry;
            }
        }
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if cmdline.contains(needle) && !zombie {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// The cgroup directories of instance `name` in every hierarchy.
fn cgroups_of(name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.");
    let mut found = Vec::new();
    let mut bases = vec![PathBuf::from("/sys/fs/cgroup/corral-instances")];
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        bases.extend(
            hierarchies
                .flatten()
                .map(|h| h.path().join("corral-instances")),
        );
    }
    for base in bases {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                found.push(entry.path());
            }
        }
    }
    found
}

/// nftables tables named after corral, when nft is installed.
fn corral_nft_tables() -> Vec<String> {
    match std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("corral"))
            .map(String::from)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits (bounded) until `what` finds nothing; fails the round with what it found.
fn nothing_left(round: &str, what: &str, mut find: impl FnMut() -> Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = find();
        if found.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{round}: {what} left behind: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Hidden litter visible in `dir` (entries starting with a dot), recursively one level for
/// instance directories and their `run/`.
fn litter(root: &Root) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![
        root.path().join("instances"),
        root.path().join("storage/default"),
    ];
    if let Ok(entries) = std::fs::read_dir(root.path().join("instances")) {
        for entry in entries.flatten() {
            dirs.push(entry.path());
            dirs.push(entry.path().join("run"));
        }
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".creating-")
                || name.starts_with(".deleting-")
                || name.contains(".tmp-")
                || name.contains(".corral-tmp-")
            {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

/// A live, answering supervisor for a `running`/`paused` entry; none (and no cgroup, no tap)
/// for a `stopped`/`crashed` one. Returns what it checked.
fn check_truth(root: &Root, h: &Harness, kind: Kind, round: &str, entry: &Value) -> String {
    let name = entry["name"].as_str().unwrap();
    let dir = root.instance_dir(name).display().to_string();
    match entry["status"].as_str().unwrap() {
        "running" | "paused" => {
            let pid = entry["pid"].as_u64().expect("a running instance has a pid");
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(
                String::from_utf8_lossy(&cmdline).contains(&dir),
                "{round}: listed running with supervisor pid {pid}, which is not its supervisor"
            );
            assert!(
                !root.info(name)["live"].is_null(),
                "{round}: listed running, but its supervisor does not answer"
            );
            "running with a live, answering supervisor".into()
        }
        status @ ("stopped" | "crashed") => {
            nothing_left(round, "a supervisor of a stopped instance", || {
                processes_mentioning(&dir)
            });
            nothing_left(round, "the cgroup of a stopped instance", || {
                cgroups_of(name)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect()
            });
            if kind == Kind::Vm {
                assert!(
                    !Path::new("/sys/class/net").join(h.tap()).exists(),
                    "{round}: the tap of a stopped VM is left"
                );
            }
            format!("{status} without supervisor, cgroup or tap")
        }
        other => panic!("{round}: unexpected status {other}"),
    }
}

/// Runs one instance round; returns what it checked.
fn instance_round(h: &Harness, kind: Kind, point: &str, op: Op) -> String {
    let root = Root::new();
    let name = h.name(kind);
    let round = format!("{point} ({op:?} {kind:?})");
    let userns = point == "start.userns-shifting";
    let create = h.create_args(kind, &name, userns);
    let mut notes = Vec::new();

    // Setup.
    if op != Op::Create {
        root.ok(&strs(&create));
    }
    let start_armed = op == Op::StopInSupervisor;
    let mut supervisor_hits = Vec::new();
    if matches!(
        op,
        Op::Stop | Op::Restart | Op::DeleteForce | Op::StopInSupervisor
    ) {
        if start_armed {
            let (out, hit) = armed(&root, point, &["start", &name]);
            assert!(out.status.success(), "{round}: the armed start failed");
            assert!(hit.is_empty(), "{round}: start reached {hit:?}");
            supervisor_hits.push(root.dir.path().join(format!("hits-{point}")));
        } else {
            root.ok(&["start", &name]);
        }
    }

    // The kill.
    let args: Vec<String> = match op {
        Op::Create => create.clone(),
        Op::Start => vec!["start".into(), name.clone()],
        // A guest that does not shut down within the timeout is forced off by its supervisor.
        Op::Stop | Op::StopInSupervisor => stop_args("stop", &name),
        Op::Restart => stop_args("restart", &name),
        Op::Delete => vec!["delete".into(), name.clone()],
        Op::DeleteForce => vec!["delete".into(), "--force".into(), name.clone()],
        Op::ConfigSet => vec!["config".into(), "set".into(), name.clone(), "cpus=2".into()],
    };
    let (out, hit) = if start_armed {
        let out = root.run(&strs(&args));
        (out, hits(&supervisor_hits[0]))
    } else {
        armed(&root, point, &strs(&args))
    };
    assert_eq!(
        hit,
        [point],
        "{round}: the failpoint was not reached (stderr: {})",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.signal() == Some(libc::SIGKILL) {
        notes.push("corral killed".into());
    } else {
        notes.push(format!(
            "supervisor killed; corral said: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }

    // The truth after the kill (`list` is the next command: it reconciles and sweeps).
    let entry = settled(&root, &name, &mut notes);
    let exists = root.instance_dir(&name).join("instance.toml").exists();
    assert_eq!(
        entry.is_some(),
        exists,
        "{round}: listed {entry:?} while its directory exists: {exists}"
    );
    nothing_left(&round, "litter", || litter(&root));
    match &entry {
        Some(entry) => notes.push(check_truth(&root, h, kind, &round, entry)),
        None => {
            assert!(
                matches!(op, Op::Create | Op::Delete | Op::DeleteForce),
                "{round}: the instance disappeared"
            );
            notes.push("cleanly absent".into());
            nothing_left(&round, "processes", || {
                processes_mentioning(&root.path().display().to_string())
            });
        }
    }

    // It starts again, or is created again.
    if entry.is_none() {
        if op == Op::Create {
            root.ok(&strs(&create));
            notes.push("created again".into());
        } else {
            return finish(&root, h, kind, &round, &name, notes, false);
        }
    }
    let status = root.status(&name);
    if status != "running" && status != "paused" {
        root.ok(&["start", &name]);
    }
    assert_eq!(root.status(&name), "running", "{round}: not running again");
    notes.push("started again".into());
    if point == "start.userns-shifting" {
        let mode = std::fs::metadata(root.instance_dir(&name).join("rootfs/bin/setuid-tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o4755, "{round}: the setuid bit was lost");
        notes.push("setuid bit kept".into());
    }
    finish(&root, h, kind, &round, &name, notes, true)
}

/// Stops and deletes the instance, then checks nothing of it is left on the host.
fn finish(
    root: &Root,
    h: &Harness,
    kind: Kind,
    round: &str,
    name: &str,
    mut notes: Vec<String>,
    exists: bool,
) -> String {
    if exists {
        root.ok(&["delete", "--force", name]);
    }
    assert!(
        !root.instance_dir(name).exists(),
        "{round}: still there after delete"
    );
    let needle = root.path().display().to_string();
    nothing_left(round, "processes", || processes_mentioning(&needle));
    nothing_left(round, "mounts", || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(String::from)
            .collect()
    });
    nothing_left(round, "cgroups", || {
        cgroups_of(name)
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    });
    if kind == Kind::Vm {
        nothing_left(round, "taps", || {
            let tap = Path::new("/sys/class/net").join(h.tap());
            if tap.exists() {
                vec![tap.display().to_string()]
            } else {
                Vec::new()
            }
        });
    }
    nothing_left(round, "nftables tables", || {
        corral_nft_tables()
            .into_iter()
            .filter(|table| !h.nft_tables_before.contains(table))
            .collect()
    });
    nothing_left(round, "litter", || litter(root));
    notes.push("deleted: no process, mount, cgroup, tap, nft table or litter left".into());
    notes.join("; ")
}

fn run_instance_rounds(kind: Kind) {
    let Some(h) = Harness::new() else { return };
    let started = Instant::now();
    let mut covered = BTreeSet::new();
    for (point, op, kinds) in INSTANCE_ROUNDS {
        if !kinds.contains(&kind) || !selected(point) {
            continue;
        }
        let round_start = Instant::now();
        let checked = instance_round(&h, kind, point, *op);
        println!(
            "killed at {point:28} {op:?} {kind:?} ({:.1}s): {checked}",
            round_start.elapsed().as_secs_f64()
        );
        covered.insert(*point);
    }
    println!(
        "{} {kind:?} rounds in {:.0}s",
        covered.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn container_operations_killed_at_every_failpoint_leave_nothing_half_done() {
    run_instance_rounds(Kind::Container);
}

#[test]
fn vm_operations_killed_at_every_failpoint_leave_nothing_half_done() {
    corral_testkit::require_kvm!();
    run_instance_rounds(Kind::Vm);
}

/// Runs one volume round; returns what it checked.
fn volume_round(point: &str, op: VolumeOp) -> String {
    let root = Root::new();
    let name = "vol";
    let round = format!("{point} (volume {op:?})");
    let source = root.dir.path().join("source.raw");
    let mut notes = Vec::new();
    match op {
        VolumeOp::Import => {
            // 4 MiB of data: more than one copy chunk.
            let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
            std::fs::write(&source, data).unwrap();
        }
        VolumeOp::ResizeQcow2 => {
            root.ok(&[
                "volume", "create", name, "--format", "qcow2", "--size", "1M",
            ]);
        }
        VolumeOp::DeleteDir => {
            root.ok(&["volume", "create", name, "--format", "dir"]);
            let dir = root.path().join("storage/default").join(name);
            for i in 0..50 {
                std::fs::create_dir_all(dir.join(format!("d{i}"))).unwrap();
                std::fs::write(dir.join(format!("d{i}/f")), b"data").unwrap();
            }
        }
        VolumeOp::CreateRaw | VolumeOp::CreateQcow2 => {}
    }
    let source_arg = source.display().to_string();
    let args: Vec<&str> = match op {
        VolumeOp::CreateRaw => vec!["volume", "create", name, "--size", "1M"],
        VolumeOp::CreateQcow2 => {
            vec![
                "volume", "create", name, "--format", "qcow2", "--size", "1M",
            ]
        }
        VolumeOp::Import => vec!["volume", "import", name, &source_arg, "--format", "qcow2"],
        VolumeOp::ResizeQcow2 => vec!["volume", "resize", name, "2M"],
        VolumeOp::DeleteDir => vec!["volume", "delete", name],
    };
    let (out, hit) = armed(&root, point, &args);
    assert_eq!(hit, [point], "{round}: the failpoint was not reached");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{round}");
    let list: Value = serde_json::from_str(&root.ok(&["volume", "list", "-o", "json"])).unwrap();
    let listed = list.as_array().unwrap().iter().any(|v| v["name"] == name);
    nothing_left(&round, "litter", || litter(&root));
    match op {
        VolumeOp::ResizeQcow2 => {
            assert!(listed, "{round}: the volume disappeared");
            let check = root.run(&["volume", "check", name]);
            assert!(
                matches!(check.status.code(), Some(0 | 3)),
                "{round}: the image is damaged: {}",
                String::from_utf8_lossy(&check.stdout)
            );
            let size = root.ok(&["volume", "info", name, "-o", "json"]);
            let size: Value = serde_json::from_str(&size).unwrap();
            let size = size["virtual_size"].as_u64().unwrap();
            assert!(size == 1 << 20 || size == 2 << 20, "{round}: size {size}");
            notes.push(format!(
                "qcow2 check: no corruption (exit {:?}); size {size}",
                check.status.code()
            ));
            root.ok(&["volume", "resize", name, "3M"]);
            notes.push("resized again".into());
        }
        _ => {
            assert!(
                !listed,
                "{round}: a half-made or half-deleted volume is listed"
            );
            notes.push("cleanly absent, no litter".into());
            match op {
                VolumeOp::Import => {
                    root.ok(&args);
                    let check = root.run(&["volume", "check", name]);
                    assert_eq!(check.status.code(), Some(0), "{round}");
                    notes.push("imported again, clean".into());
                }
                VolumeOp::DeleteDir => {
                    root.ok(&["volume", "create", name, "--format", "dir"]);
                    notes.push("created again".into());
                }
                _ => {
                    root.ok(&args);
                    notes.push("created again".into());
                }
            }
        }
    }
    root.ok(&["volume", "delete", name]);
    nothing_left(&round, "litter", || litter(&root));
    assert!(
        std::fs::read_dir(root.path().join("storage/default"))
            .unwrap()
            .next()
            .is_none(),
        "{round}: the pool is not empty after the delete"
    );
    notes.join("; ")
}

#[test]
fn volume_operations_killed_at_every_failpoint_leave_no_half_image() {
    for (point, op) in VOLUME_ROUNDS {
        if !selected(point) {
            continue;
        }
        let checked = volume_round(point, *op);
        println!("killed at {point:28} volume {op:?}: {checked}");
    }
}

/// The shared corral root of the image rounds and what it was set up with.
struct ImageRounds {
    root: Root,
    /// Where exports and the second tarball go (beside the corral root).
    scratch: PathBuf,
    /// The second tarball `Import` and `Delete` rounds import (alias `extra`).
    extra: PathBuf,
    /// The fingerprints of `bb` and `vm`, which every round leaves as they are.
    base: BTreeSet<String>,
    /// Each round's instance gets its own name (a kill may leave a name's cgroup to reap).
    round: u32,
}

fn busybox_tarball(tree: &Path, tarball: &Path) {
    let status = std::process::Command::new("tar")
        .arg("--numeric-owner")
        .arg("-czf")
        .arg(tarball)
        .arg("-C")
        .arg(tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of {}", tree.display());
}

impl ImageRounds {
    fn new() -> ImageRounds {
        let root = Root::new();
        let scratch = root.dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let tree = scratch.join("busybox");
        build_rootfs(&tree);
        let bb = scratch.join("bb.tar.gz");
        busybox_tarball(&tree, &bb);
        std::fs::write(tree.join("etc/extra"), b"the second image\n").unwrap();
        let extra = scratch.join("extra.tar.gz");
        busybox_tarball(&tree, &extra);
        root.ok(&["image", "import", bb.to_str().unwrap(), "--alias", "bb"]);
        common::import_hello_vm_image(&root, &scratch, "vm", "8M");
        root.ok(&["create", "pc", "--image", "bb", "--", "/bin/true"]);
        root.ok(&["create", "pv", "--image", "vm", "--memory", "32M"]);
        let base = image_list(&root).into_keys().collect();
        ImageRounds {
            root,
            scratch,
            extra,
            base,
            round: 0,
        }
    }

    /// Runs one round; returns what it checked.
    fn run(&mut self, point: &str, op: ImageOp) -> String {
        self.round += 1;
        let root = &self.root;
        let round = format!("{point} (image {op:?})");
        let instance = format!("fpi{}-{}", std::process::id(), self.round);
        let extra = self.extra.to_str().unwrap().to_string();
        let export = self.scratch.join("bb.incus.tar");
        let export_arg = export.to_str().unwrap().to_string();
        let import_args = vec!["image", "import", &extra, "--alias", "extra"];
        let mut notes = Vec::new();

        // Setup.
        match op {
            ImageOp::Delete => {
                root.ok(&import_args);
            }
            ImageOp::DeleteLinkedVm => {
                root.ok(&["create", &instance, "--image", "vm", "--memory", "32M"]);
            }
            _ => {}
        }

        // The kill.
        let args: Vec<&str> = match op {
            ImageOp::Import => import_args.clone(),
            ImageOp::Delete => vec!["image", "delete", "extra"],
            ImageOp::AliasSet => vec!["image", "alias", "set", "bb2", "bb"],
            ImageOp::Export => vec!["image", "export", "bb", &export_arg],
            ImageOp::CreateContainer => {
                vec!["create", &instance, "--image", "bb", "--", "/bin/true"]
            }
            ImageOp::CreateVm => vec!["create", &instance, "--image", "vm", "--memory", "32M"],
            ImageOp::CreateVmFull => {
                vec![
                    "create", &instance, "--image", "vm", "--full", "--memory", "32M",
                ]
            }
            ImageOp::PublishContainer => vec!["publish", "pc", "--alias", "published"],
            ImageOp::PublishVm => vec!["publish", "pv", "--alias", "published"],
            ImageOp::DeleteLinkedVm if point == "delete.killed" => {
                vec!["delete", "--force", &instance]
            }
            ImageOp::DeleteLinkedVm => vec!["delete", &instance],
        };
        let (out, hit) = armed(root, point, &args);
        assert_eq!(
            hit,
            [point],
            "{round}: the failpoint was not reached (stderr: {})",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{round}");

        // The truth after the kill (`image list` is the next command: it sweeps).
        let images = image_list(root);
        check_image_store(root, &round, &images);
        for base in &self.base {
            assert!(
                images.contains_key(base),
                "{round}: image {base} disappeared"
            );
        }
        notes.push(format!("store whole ({} images, no litter)", images.len()));

        // Done again, or found done.
        match op {
            ImageOp::Import | ImageOp::PublishContainer | ImageOp::PublishVm => {
                let alias = if op == ImageOp::Import {
                    "extra"
                } else {
                    "published"
                };
                let new = images.len() - self.base.len();
                notes.push(format!(
                    "{new} new image{}",
                    if new == 1 { " (whole)" } else { "s" }
                ));
                root.ok(&args);
                let again = image_list(root);
                check_image_store(root, &round, &again);
                assert!(
                    again
                        .values()
                        .any(|aliases| aliases.iter().any(|a| a == alias)),
                    "{round}: no image {alias} after the second run"
                );
                notes.push("run again: done".into());
            }
            ImageOp::Delete => {
                match images
                    .values()
                    .find(|aliases| aliases.iter().any(|a| a == "extra"))
                {
                    Some(_) => {
                        root.ok(&args);
                        notes.push("image whole with its alias; deleted again".into());
                    }
                    None => {
                        assert_eq!(
                            images.len(),
                            self.base.len(),
                            "{round}: the image is unnamed but still stored"
                        );
                        let err = root.fails(&args);
                        assert!(err.contains("no image"), "{round}: {err}");
                        notes.push("deleted whole, its alias too".into());
                    }
                }
                assert_eq!(image_list(root).len(), self.base.len(), "{round}");
            }
            ImageOp::AliasSet => {
                root.ok(&args);
                let info = root.ok(&["image", "info", "bb2"]);
                assert!(info.contains("bb, bb2"), "{round}: {info}");
                root.ok(&["image", "alias", "delete", "bb2"]);
                notes.push("alias set again".into());
            }
            ImageOp::Export => {
                assert!(!export.exists(), "{round}: the export appeared");
                root.ok(&args);
                let litter = scratch_litter(&self.scratch);
                assert!(litter.is_empty(), "{round}: export litter left: {litter:?}");
                let fingerprint = image_fingerprint(root, "bb");
                assert_eq!(sha256(&export), fingerprint, "{round}: a different export");
                std::fs::remove_file(&export).unwrap();
                notes.push("absent; exported again whole, the temp swept".into());
            }
            ImageOp::CreateContainer | ImageOp::CreateVm | ImageOp::CreateVmFull => {
                notes.push(instance_whole_or_absent(root, &round, &instance));
                if !root.instance_dir(&instance).exists() {
                    root.ok(&args);
                    notes.push("created again".into());
                }
                root.ok(&["start", &instance]);
                notes.push("started".into());
                root.ok(&["delete", "--force", &instance]);
            }
            ImageOp::DeleteLinkedVm => {
                notes.push(instance_whole_or_absent(root, &round, &instance));
                if root.instance_dir(&instance).exists() {
                    let err = root.fails(&["image", "delete", "vm"]);
                    assert!(err.contains("is used by"), "{round}: {err}");
                    notes.push("the image it links to is kept".into());
                    root.ok(&["delete", "--force", &instance]);
                }
            }
        }

        // Back to the base state.
        for (fingerprint, _) in image_list(root) {
            if !self.base.contains(&fingerprint) {
                root.ok(&["image", "delete", &fingerprint]);
            }
        }
        let images = image_list(root);
        check_image_store(root, &round, &images);
        assert_eq!(
            images.keys().cloned().collect::<BTreeSet<_>>(),
            self.base,
            "{round}"
        );
        nothing_left(&round, "litter", || litter(root));
        notes.join("; ")
    }
}

/// `corral image list`: fingerprint -> aliases.
fn image_list(root: &Root) -> std::collections::BTreeMap<String, Vec<String>> {
    let list: Value = serde_json::from_str(&root.ok(&["image", "list", "-o", "json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|image| {
            let aliases = image["aliases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            (image["fingerprint"].as_str().unwrap().to_string(), aliases)
        })
        .collect()
}

fn image_fingerprint(root: &Root, reference: &str) -> String {
    let info: Value =
        serde_json::from_str(&root.ok(&["image", "info", reference, "-o", "json"])).unwrap();
    info["fingerprint"].as_str().unwrap().to_string()
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The image store holds whole images only: each directory with a readable record naming it,
/// listed by `image list`; every alias naming a stored image; no import, deletion or temp file
/// left.
fn check_image_store(
    root: &Root,
    round: &str,
    listed: &std::collections::BTreeMap<String, Vec<String>>,
) {
    let store = root.path().join("images");
    let mut dirs = BTreeSet::new();
    for entry in std::fs::read_dir(&store).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match name.as_str() {
            "lock" | "aliases.json" => continue,
            _ if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let record = std::fs::read_to_string(entry.path().join("metadata.json"))
                    .unwrap_or_else(|e| panic!("{round}: image {name} has no record: {e}"));
                let record: Value = serde_json::from_str(&record)
                    .unwrap_or_else(|e| panic!("{round}: image {name}'s record: {e}"));
                assert_eq!(record["fingerprint"], name.as_str(), "{round}");
                dirs.insert(name);
            }
            _ => panic!("{round}: litter in the image store: {name}"),
        }
    }
    assert_eq!(
        dirs,
        listed.keys().cloned().collect::<BTreeSet<_>>(),
        "{round}: `image list` and the store differ"
    );
    let aliases: std::collections::BTreeMap<String, String> =
        match std::fs::read_to_string(store.join("aliases.json")) {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(_) => Default::default(),
        };
    for (alias, target) in &aliases {
        assert!(
            dirs.contains(target),
            "{round}: alias {alias} names a missing image {target}"
        );
    }
}

/// Export temp files beside the export.
fn scratch_litter(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corral-tmp-") || n.contains(".tmp-"))
        .collect()
}

/// The instance is listed exactly when its directory exists, with its root disk or rootfs.
fn instance_whole_or_absent(root: &Root, round: &str, name: &str) -> String {
    let list: Value = serde_json::from_str(&root.ok(&["list", "--all", "-o", "json"])).unwrap();
    let listed = list.as_array().unwrap().iter().any(|i| i["name"] == name);
    let dir = root.instance_dir(name);
    assert_eq!(
        listed,
        dir.join("instance.toml").exists(),
        "{round}: listed {listed}"
    );
    nothing_left(round, "litter", || litter(root));
    if !listed {
        return "instance cleanly absent".into();
    }
    assert!(
        dir.join("root.qcow2").exists() || dir.join("rootfs/bin/busybox").exists(),
        "{round}: listed without its root disk or rootfs"
    );
    "instance whole".into()
}

#[test]
fn image_operations_killed_at_every_failpoint_leave_whole_images_or_none() {
    corral_testkit::require_root!();
    corral_testkit::require_kvm!();
    corral_testkit::require_program!("qemu-img");
    if !common::have_busybox() {
        return;
    }
    let started = Instant::now();
    let mut rounds = ImageRounds::new();
    for (point, op) in IMAGE_ROUNDS {
        if !selected(point) {
            continue;
        }
        let round_start = Instant::now();
        let checked = rounds.run(point, *op);
        println!(
            "killed at {point:28} image {op:?} ({:.1}s): {checked}",
            round_start.elapsed().as_secs_f64()
        );
    }
    println!(
        "{} image rounds in {:.0}s",
        IMAGE_ROUNDS.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Runs one clone round; returns what it checked.
fn clone_round(h: &Harness, point: &str, op: CloneOp) -> String {
    let root = Root::new();
    let round = format!("{point} (clone {op:?})");
    let mut notes = Vec::new();
    let kind = match op {
        CloneOp::Container => Kind::Container,
        CloneOp::VmFull | CloneOp::VmLinked => Kind::Vm,
    };
    match kind {
        Kind::Container => {
            root.ok(&strs(&h.create_args(Kind::Container, "src", false)));
        }
        Kind::Vm => {
            common::import_hello_vm_image(&root, root.dir.path(), "vm", "8M");
            root.ok(&[
                "create", "src", "--image", "vm", "--full", "--memory", "32M",
            ]);
        }
    }
    let mut args = vec!["clone", "src", "dst"];
    if op == CloneOp::VmLinked {
        args.push("--linked");
    }
    if kind == Kind::Vm {
        // The test guest's disk has no filesystem whose identity could be reset.
        args.push("--keep-identity");
    }

    let (out, hit) = armed(&root, point, &args);
    assert_eq!(
        hit,
        [point],
        "{round}: the failpoint was not reached (stderr: {})",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{round}");

    // The truth after the kill (`list` is the next command: it sweeps).
    let list: Value = serde_json::from_str(&root.ok(&["list", "--all", "-o", "json"])).unwrap();
    let status = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .map(|i| i["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("src").as_deref(), Some("stopped"), "{round}");
    assert_eq!(
        status("dst").is_some(),
        root.instance_dir("dst").exists(),
        "{round}: the clone is listed only with its directory"
    );
    assert!(
        status("dst").is_none(),
        "{round}: a killed clone was committed"
    );
    nothing_left(&round, "litter", || litter(&root));
    notes.push("source stopped, clone cleanly absent".to_string());

    // The source starts; the clone is made again, which also collects what the kill left.
    let run_once = |name: &str| {
        root.ok(&["start", name]);
        match kind {
            Kind::Container => drop(root.ok(&["kill", name])),
            // The hello guest powers off by itself.
            Kind::Vm => common::wait_for("the guest's power-off", SETTLE, || {
                root.status(name) == "stopped"
            }),
        }
    };
    run_once("src");
    root.ok(&args);
    run_once("dst");
    notes.push("source started; cloned again and started".to_string());
    if kind == Kind::Vm {
        // The source's directory holds what its definition names, nothing an interrupted
        // switch left (the disk's old name, an overlay made before the definition was saved).
        let definition: toml::Table =
            std::fs::read_to_string(root.instance_dir("src").join("instance.toml"))
                .unwrap()
                .parse()
                .unwrap();
        let disk = definition["disks"][0]["path"].as_str().unwrap().to_string();
        let mut found: Vec<String> = std::fs::read_dir(root.instance_dir("src"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        let mut expected = vec![
            "instance.toml".to_string(),
            "kernel".into(),
            "lock".into(),
            "run".into(),
            "state.json".into(),
            disk,
        ];
        expected.sort();
        assert_eq!(found, expected, "{round}: stray files in the source");
        notes.push("no stray file in the source".to_string());
    }

    root.ok(&["delete", "src"]);
    root.ok(&["delete", "dst"]);
    let bases: Vec<String> = std::fs::read_dir(root.path().join("bases"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(bases.is_empty(), "{round}: bases left: {bases:?}");
    nothing_left(&round, "litter", || litter(&root));
    notes.push("both deleted: no base, no litter".to_string());
    notes.join("; ")
}

#[test]
fn clones_killed_at_every_failpoint_leave_the_source_whole_and_no_half_clone() {
    corral_testkit::require_kvm!();
    let Some(h) = Harness::new() else { return };
    let started = Instant::now();
    for (point, op) in CLONE_ROUNDS {
        if !selected(point) {
            continue;
        }
        let round_start = Instant::now();
        let checked = clone_round(&h, point, *op);
        println!(
            "killed at {point:28} clone {op:?} ({:.1}s): {checked}",
            round_start.elapsed().as_secs_f64()
        );
    }
    println!(
        "{} clone rounds in {:.0}s",
        CLONE_ROUNDS.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The whole virtual disk of VM `name`'s first disk, read through its chain, after `mark` is
/// written at its start (when given).
fn first_disk_content(root: &Root, name: &str, mark: Option<&[u8]>) -> Vec<u8> {
    let dir = root.instance_dir(name);
    let definition: toml::Table = std::fs::read_to_string(dir.join("instance.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let disk = &definition["disks"][0];
    let allow: Vec<PathBuf> = disk
        .get("allow_backing")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().map(|p| dir.join(p.as_str().unwrap())).collect())
        .unwrap_or_default();
    let options = corral_disk::OpenOptions {
        backing: corral_disk::BackingPolicy::Within(allow),
        ..corral_disk::OpenOptions::writable().format(corral_disk::DiskFormat::Qcow2)
    };
    let mut disk = corral_disk::open(&dir.join(disk["path"].as_str().unwrap()), options).unwrap();
    if let Some(mark) = mark {
        disk.write_at(mark, 0).unwrap();
        disk.flush().unwrap();
    }
    let mut bytes = vec![0; disk.virtual_size() as usize];
    disk.read_at(&mut bytes, 0).unwrap();
    bytes
}

/// Runs one snapshot round; returns what it checked.
fn snapshot_round(h: &Harness, point: &str, op: SnapshotOp) -> String {
    let root = Root::new();
    let round = format!("{point} (snapshot {op:?})");
    let mut notes = Vec::new();
    let args = match op {
        SnapshotOp::VmCreate => {
            common::import_hello_vm_image(&root, root.dir.path(), "vm", "8M");
            root.ok(&["create", "src", "--image", "vm", "--memory", "32M"]);
            vec!["snapshot", "create", "src", "s"]
        }
        SnapshotOp::VmRunning => {
            common::create_vm(&root, "src", "counter", &[]);
            root.ok(&["start", "src"]);
            vec!["snapshot", "create", "src", "s"]
        }
        SnapshotOp::ContainerRestore => {
            root.ok(&strs(&h.create_args(Kind::Container, "src", false)));
            root.ok(&["snapshot", "create", "src", "s"]);
            std::fs::write(root.instance_dir("src").join("rootfs/etc/changed"), b"x").unwrap();
            vec!["snapshot", "restore", "src", "s"]
        }
    };
    // The disk holds more than the image's zeroes, so a lost write would show.
    let before =
        (op == SnapshotOp::VmCreate).then(|| first_disk_content(&root, "src", Some(b"mark")));

    let (out, hit) = armed(&root, point, &args);
    assert_eq!(
        hit,
        [point],
        "{round}: the failpoint was not reached (stderr: {})",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{round}");

    // The next snapshot command settles what the kill left.
    let listed = common::snapshot_names(&root, "src");
    assert_eq!(root.status("src"), "stopped", "{round}");
    let dir = root.instance_dir("src");
    match op {
        SnapshotOp::VmRunning => {
            // The guest was saved and its VMM ended: it is stopped, with no snapshot and no
            // saved state left in its runtime directory.
            assert!(listed.is_empty(), "{round}: listed {listed:?}");
            let saved: Vec<_> = std::fs::read_dir(dir.join("run"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().starts_with(".snapshot-"))
                .collect();
            assert!(saved.is_empty(), "{round}: {saved:?} left");
            root.ok(&["start", "src"]);
            root.ok(&args);
            assert_eq!(root.status("src"), "running", "{round}");
            assert_eq!(common::snapshot_names(&root, "src"), ["s"], "{round}");
            root.ok(&["kill", "src"]);
            root.ok(&["delete", "src"]);
            nothing_left(&round, "litter", || litter(&root));
            return "stopped, no snapshot, no saved state; started and snapshotted again".into();
        }
        SnapshotOp::VmCreate => {
            let switched = point == "snapshot.switched";
            assert_eq!(listed.is_empty(), !switched, "{round}: listed {listed:?}");
            assert!(
                Some(first_disk_content(&root, "src", None)) == before,
                "{round}: the disk's content changed"
            );
            notes.push(format!(
                "disk intact, snapshot {}",
                if switched { "kept" } else { "rolled back" }
            ));
            if !switched {
                root.ok(&args);
            }
        }
        SnapshotOp::ContainerRestore => {
            assert_eq!(listed, ["s"], "{round}");
            assert!(!dir.join("rootfs/etc/changed").exists(), "{round}");
            assert!(dir.join("rootfs/bin/sh").exists(), "{round}");
            notes.push("root filesystem restored".to_string());
        }
    }
    // Only what the definition names is left, and the instance runs.
    let definition: toml::Table = std::fs::read_to_string(dir.join("instance.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut expected = vec![
        "instance.toml".to_string(),
        "lock".into(),
        "snapshots".into(),
        "state.json".into(),
    ];
    match op {
        SnapshotOp::VmRunning => {}
        SnapshotOp::VmCreate => {
            expected.push("kernel".into());
            expected.push(definition["disks"][0]["path"].as_str().unwrap().to_string());
        }
        SnapshotOp::ContainerRestore => expected.push("rootfs".into()),
    }
    expected.sort();
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // The supervisor's directory, made by a start.
        .filter(|n| n != "run")
        .collect();
    found.sort();
    assert_eq!(found, expected, "{round}: stray files");
    let snapshot_dirs = std::fs::read_dir(dir.join("snapshots")).unwrap().count();
    assert_eq!(snapshot_dirs, 1, "{round}: snapshot directories");
    root.ok(&["start", "src"]);
    match op {
        SnapshotOp::VmCreate => common::wait_for("the guest's power-off", SETTLE, || {
            root.status("src") == "stopped"
        }),
        SnapshotOp::ContainerRestore | SnapshotOp::VmRunning => drop(root.ok(&["kill", "src"])),
    }
    root.ok(&["snapshot", "restore", "src", "s"]);
    if let Some(before) = before {
        assert!(
            first_disk_content(&root, "src", None) == before,
            "{round}: restore"
        );
    }
    notes.push("no stray file; started; restored".to_string());
    root.ok(&["delete", "src"]);
    nothing_left(&round, "litter", || litter(&root));
    notes.join("; ")
}

#[test]
fn snapshot_commands_killed_at_every_failpoint_leave_the_instance_usable_and_consistent() {
    corral_testkit::require_kvm!();
    let Some(h) = Harness::new() else { return };
    for (point, op) in SNAPSHOT_ROUNDS {
        if !selected(point) {
            continue;
        }
        let round_start = Instant::now();
        let checked = snapshot_round(&h, point, *op);
        println!(
            "killed at {point:28} snapshot {op:?} ({:.1}s): {checked}",
            round_start.elapsed().as_secs_f64()
        );
    }
}
