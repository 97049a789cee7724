//! A VM instance's supervisor runs jailed: the `corral` user, its own cgroup with the
//! instance's memory limit, an empty environment, only its own descriptors, and a root that
//! holds its runtime directory and nothing else of the host. Needs /dev/kvm and root.

mod common;

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_testkit::{require_kvm, require_root};

use common::{wait_for, CorralRoot as Root};

/// Guest memory plus the VMM's allowance (corral-core's VMM_MEMORY_OVERHEAD and 1/32).
const EXPECTED_LIMIT: u64 = (32 << 20) + (64 << 20) + ((32 << 20) >> 5);

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} missing from {status}"))
        .trim()
        .to_owned()
}

/// Every path under `dir` (not following symlinks).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// Opens `path` for reading from a process in `pid`'s mount namespace with `uid`/`gid`: 0 when
/// it opens, 1 when it does not (2: the namespace could not be entered).
fn open_inside(pid: i32, uid: u32, gid: u32, path: &Path) -> i32 {
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap();
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: the child only makes async-signal-safe system calls on values prepared before
    // the fork, then _exits; the parent waits for it.
    unsafe {
        let child = libc::fork();
        assert!(child >= 0);
        if child == 0 {
            let entered = libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNS) == 0
                && libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(gid) == 0
                && libc::setuid(uid) == 0;
            if !entered {
                libc::_exit(2);
            }
            libc::_exit(i32::from(libc::open(path.as_ptr(), libc::O_RDONLY) < 0));
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(child, &mut status, 0), child);
        libc::WEXITSTATUS(status)
    }
}

/// The memory limit of cgroup `path` (v1 `memory.limit_in_bytes` or v2 `memory.max`).
fn memory_limit(path: &str) -> u64 {
    let relative = path.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(relative)
            .join("memory.limit_in_bytes"),
        Path::new("/sys/fs/cgroup")
            .join(relative)
            .join("memory.max"),
    ];
    let file = candidates
        .iter()
        .find(|file| file.exists())
        .unwrap_or_else(|| panic!("no memory limit file for cgroup {path}"));
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_vm_instance_runs_jailed_in_its_own_cgroup() {
    require_kvm!();
    require_root!();
    let root = Root::new();
    let images = tempfile::tempdir().unwrap();
    let disk = images.path().join("data.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let kernel = corral_guests::elf("counter");
    root.ok(&[
        "create",
        "jailed",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "32M",
        "--disk",
        disk.to_str().unwrap(),
    ]);
    root.ok(&["start", "jailed"]);
    wait_for("the guest's output", Duration::from_secs(20), || {
        root.ok(&["logs", "jailed"]).contains("count 1")
    });
    let pid = root.info("jailed")["state"]["pid"].as_i64().unwrap();
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let instance = std::fs::canonicalize(root.instance_dir("jailed")).unwrap();
    let run = instance.join("run");

    // Unprivileged, confined, with an empty environment.
    let status = std::fs::read_to_string(proc.join("status")).unwrap();
    let uid = status_field(&status, "Uid");
    let gid = status_field(&status, "Gid");
    assert!(uid.split_whitespace().all(|id| id != "0"), "Uid: {uid}");
    assert!(gid.split_whitespace().all(|id| id != "0"), "Gid: {gid}");
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    for task in std::fs::read_dir(proc.join("task")).unwrap() {
        // A thread may end between the listing and the read (the one that answered `info`).
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
            continue;
        };
        assert_eq!(status_field(&status, "Seccomp"), "2");
    }
    assert_eq!(std::fs::read(proc.join("environ")).unwrap(), b"");

    // Its root holds the runtime directory at its own path, and nothing else.
    let jail_root = proc.join("root");
    for entry in walk(&jail_root) {
        let inside = Path::new("/").join(entry.strip_prefix(&jail_root).unwrap());
        assert!(
            run.starts_with(&inside) || inside.starts_with(&run),
            "{} is in the jail",
            inside.display()
        );
    }
    assert!(jail_root
        .join(run.strip_prefix("/").unwrap())
        .join("control.sock")
        .exists());

    // Its descriptors: KVM, its own anonymous files and sockets, and the files it was given.
    let allowed: Vec<(u64, u64)> = [
        kernel.as_path(),
        disk.as_path(),
        Path::new("/dev/null"),
        Path::new("/dev/kvm"),
        &run.join("supervisor.log"),
        &run.join("console.log"),
    ]
    .iter()
    .map(|path| {
        let meta = std::fs::metadata(path).unwrap();
        (meta.dev(), meta.ino())
    })
    .collect();
    for fd in std::fs::read_dir(proc.join("fd")).unwrap() {
        let fd = fd.unwrap().path();
        let target = std::fs::read_link(&fd).unwrap();
        let target = target.to_string_lossy();
        if target.starts_with("anon_inode:") || target.starts_with("socket:") {
            continue;
        }
        let meta = std::fs::metadata(&fd).unwrap();
        assert!(
            allowed.contains(&(meta.dev(), meta.ino())),
            "unexpected descriptor {} -> {target}",
            fd.display()
        );
    }

    // Its own cgroup, with the instance's memory limit.
    let cgroups = std::fs::read_to_string(proc.join("cgroup")).unwrap();
    let memory = cgroups
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            (controllers.split(',').any(|c| c == "memory") || controllers.is_empty())
                .then(|| path.to_owned())
        })
        .unwrap();
    assert!(memory.starts_with("/corral-instances/jailed."), "{memory}");
    assert_eq!(memory_limit(&memory), EXPECTED_LIMIT);

    // From inside its mount namespace, as its user: the runtime directory (its own; the files
    // root wrote there, like vm.toml, are root's alone) is there, the instance's other files are
    // not.
    let uid: u32 = uid.split_whitespace().next().unwrap().parse().unwrap();
    let gid: u32 = gid.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(open_inside(pid as i32, uid, gid, &run), 0);
    assert_eq!(open_inside(pid as i32, uid, gid, &run.join("vm.toml")), 1);
    assert_eq!(
        open_inside(pid as i32, uid, gid, &instance.join("instance.toml")),
        1,
        "the definition is readable from the jail"
    );

    root.ok(&["kill", "jailed"]);
    assert_eq!(
        root.info("jailed")["state"]["last_exit"]["reason"],
        "stopped"
    );
}

/// A root with a counter-guest VM `name` that has run (and was killed), so its `run/` exists.
fn counter_vm_that_ran_once(name: &str) -> Root {
    let root = Root::new();
    let kernel = corral_guests::elf("counter");
    root.ok(&[
        "create",
        name,
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "32M",
    ]);
    root.ok(&["start", name]);
    root.ok(&["kill", name]);
    root
}

#[test]
fn a_symlink_left_in_the_jail_directory_is_not_followed_as_root() {
    require_kvm!();
    require_root!();
    let root = counter_vm_that_ran_once("planted");
    // What a VMM taken over by its guest could leave in the directory it owns: its console
    // log turned into a link to a host file, which the next VMM opens as root.
    let host = tempfile::tempdir().unwrap();
    let target = host.path().join("host-file");
    std::fs::write(&target, "untouched\n").unwrap();
    let log = root.instance_dir("planted").join("run/console.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&target, &log).unwrap();
    let refused = root.fails(&["start", "planted"]);
    assert!(refused.contains("console"), "{refused}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
    // `corral logs` (root) does not print the host file through it either.
    let logs = root.ok(&["logs", "planted"]);
    assert!(!logs.contains("untouched"), "{logs}");

    // The supervisor's log, which the manager opens as root for the VMM's stdout and stderr:
    // neither a link nor a FIFO (which would block the start) is used.
    std::fs::remove_file(&log).unwrap();
    let supervisor_log = root.instance_dir("planted").join("run/supervisor.log");
    std::fs::remove_file(&supervisor_log).unwrap();
    std::os::unix::fs::symlink(&target, &supervisor_log).unwrap();
    let refused = root.fails(&["start", "planted"]);
    assert!(refused.contains("supervisor.log"), "{refused}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
    std::fs::remove_file(&supervisor_log).unwrap();
    let fifo = CString::new(supervisor_log.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path this test owns.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let refused = root.fails(&["start", "planted"]);
    assert!(refused.contains("supervisor.log"), "{refused}");
}

#[test]
fn a_jailed_vm_rotates_its_logs_under_its_seccomp_filters() {
    require_kvm!();
    require_root!();
    let root = counter_vm_that_ran_once("chatty");
    // Both logs at their limit (1 MiB) before the next start: the console log rotates on the
    // guest's first byte (on the vCPU thread), the supervisor log at the VMM main thread's next
    // check, both jailed and under their seccomp filters.
    let run = root.instance_dir("chatty").join("run");
    let old_console = "old console line\n".repeat((1 << 20) / 17 + 1);
    let old_supervisor = "old supervisor line\n".repeat((1 << 20) / 20 + 1);
    std::fs::write(run.join("console.log"), &old_console).unwrap();
    std::fs::write(run.join("supervisor.log"), &old_supervisor).unwrap();
    root.ok(&["start", "chatty"]);
    wait_for("the guest's output", Duration::from_secs(20), || {
        root.ok(&["logs", "chatty"]).contains("count 1")
    });
    wait_for(
        "the supervisor log's rotation",
        Duration::from_secs(20),
        || run.join("supervisor.log.1").exists(),
    );
    assert_eq!(root.status("chatty"), "running");
    // The counter guest ignores Ctrl-Alt-Del: forced off, the VMM says so in its new log.
    root.ok(&["stop", "chatty", "--timeout", "1"]);
    let console = std::fs::read_to_string(run.join("console.log")).unwrap();
    assert!(console.contains("count 1"), "{console}");
    assert!(!console.contains("old console line"));
    assert_eq!(
        std::fs::read_to_string(run.join("console.log.1")).unwrap(),
        old_console
    );
    let supervisor = std::fs::read_to_string(run.join("supervisor.log")).unwrap();
    assert!(supervisor.contains("vm stopped"), "{supervisor}");
    assert!(!supervisor.contains("old supervisor line"));
    assert!(std::fs::read_to_string(run.join("supervisor.log.1"))
        .unwrap()
        .starts_with(&old_supervisor));
    assert_eq!(
        root.info("chatty")["state"]["last_exit"]["reason"],
        "stopped"
    );
}
