//! Container escapes, attempted for real through `corral oci`; each test performs an attack
//! of issue 9 and must see it fail. Needs root and Debian's busybox-static.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TestBundle;
use corral_testkit::require_root;
use serde_json::json;

macro_rules! require_container_host {
    () => {
        require_root!();
        if !common::have_busybox() {
            return;
        }
    };
}

// Host sysctls set from a container (kernel.core_pattern runs a program as root on the host).

/// The host's core_pattern, restored when dropped (a broken runtime would have changed it).
struct CorePatternGuard(String);

impl Drop for CorePatternGuard {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/core_pattern", &self.0);
    }
}

#[test]
fn only_namespaced_sysctls_are_accepted() {
    require_container_host!();
    let guard = CorePatternGuard(std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap());
    let mut bundle = TestBundle::new("sysctl", "echo ran");
    bundle.config["linux"]["sysctl"] = json!({"kernel.core_pattern": "corral-test-core-%p"});
    let (code, out, err) = bundle.run();
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        guard.0,
        "the container changed the host's core_pattern"
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("kernel.core_pattern") && err.contains("not namespaced"),
        "{err}"
    );
    assert!(bundle.left_nothing_behind());

    // net.* needs the container's own network namespace, IPC ones its own ipc namespace. The
    // values are the host's own, so a runtime that wrongly writes them changes nothing.
    for (kind, key) in [
        ("network", "net.ipv4.ip_forward"),
        ("ipc", "kernel.shmmax"),
        ("uts", "kernel.domainname"),
    ] {
        let host_value =
            std::fs::read_to_string(Path::new("/proc/sys").join(key.replace('.', "/"))).unwrap();
        let mut bundle = TestBundle::new("sysctl-host", "echo ran");
        bundle.config["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != kind);
        if kind == "uts" {
            bundle.config.as_object_mut().unwrap().remove("hostname");
        }
        bundle.config["linux"]["sysctl"] = json!({key: host_value.trim()});
        let (code, out, err) = bundle.run();
        assert_ne!(code, 0, "{key} without a {kind} namespace: {out}");
        assert!(err.contains(key) && err.contains(kind), "{err}");
    }

    let mut bundle = TestBundle::new(
        "sysctl-ok",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax /proc/sys/fs/mqueue/msg_max",
    );
    bundle.config["linux"]["sysctl"] = json!({
        "net.ipv4.ip_forward": "1",
        "kernel.shmmax": "123456789",
        "fs.mqueue.msg_max": "77",
    });
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1\n123456789\n77\n");
}

// Mount destinations swapped for symlinks while the container starts (CVE-2021-30465).

#[test]
fn mount_destinations_swapped_for_symlinks_never_mount_outside_the_rootfs() {
    require_container_host!();
    // A canary directory on the host, and in the rootfs a directory `racy` that a racer keeps
    // exchanging with a symlink to the canary while containers mount tmpfs under /racy.
    let canary = tempfile::Builder::new()
        .prefix(&format!("corral-canary-{}-", std::process::id()))
        .tempdir()
        .unwrap();
    let mut bundle = TestBundle::new("mount-race", "true");
    let rootfs = bundle.rootfs();
    let racy = rootfs.join("racy");
    let swapped = rootfs.join("racy-link");
    std::fs::create_dir(&racy).unwrap();
    std::os::unix::fs::symlink(canary.path(), &swapped).unwrap();
    let mounts = bundle.config["mounts"].as_array_mut().unwrap();
    for i in 0..16 {
        mounts.push(
            json!({"destination": format!("/racy/m{i}"), "type": "tmpfs", "source": "tmpfs"}),
        );
        std::fs::create_dir(racy.join(format!("m{i}"))).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let (racy, swapped) = (racy.clone(), swapped.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &racy,
                    nix::fcntl::AT_FDCWD,
                    &swapped,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let bundle_arg = bundle.path().to_string_lossy().into_owned();
    let (mut created, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(40);
    for _ in 0..60 {
        if Instant::now() > deadline {
            break;
        }
        let out = bundle.oci(&["create", "--bundle", &bundle_arg, &bundle.id]);
        if out.status.success() {
            created += 1;
        } else {
            refused += 1;
        }
        bundle.force_delete();
        let leaked: Vec<_> = std::fs::read_dir(canary.path())
            .unwrap()
            .flatten()
            .collect();
        assert!(leaked.is_empty(), "the setup wrote on the host: {leaked:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&*canary.path().to_string_lossy()),
            "something was mounted on the host's canary"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    eprintln!("{created} created, {refused} refused, {swaps} swaps");
    // The swapped link lives in the rootfs; put the directory back for the cleanup.
    bundle.config["mounts"] = json!([]);
    assert!(bundle.left_nothing_behind());
}

// A working directory through a leaked descriptor or a /proc magic link (CVE-2024-21626).

/// The script every escape attempt runs: it must never get to run at all.
const LIST_PARENTS: &str = "echo escaped; pwd; ls -a ../../..";

#[test]
fn a_cwd_through_proc_self_fd_is_refused_for_every_descriptor() {
    require_container_host!();
    let mut bundle = TestBundle::new("cwd-fd", LIST_PARENTS);
    let mut errors = Vec::new();
    for fd in 0..=24 {
        let cwd = format!("/proc/self/fd/{fd}");
        bundle.config["process"]["cwd"] = json!(cwd);
        let (code, out, err) = bundle.run();
        assert_ne!(code, 0, "cwd {cwd}: the container ran and printed {out:?}");
        assert_eq!(out, "", "cwd {cwd}: the process must never start");
        assert!(err.contains(&cwd), "cwd {cwd}: the error names it: {err}");
        assert!(bundle.left_nothing_behind(), "cwd {cwd}");
        errors.push(err);
    }
    // Stdio is always open: resolving /proc/self/fd/0..2 means following the magic link.
    for err in &errors[..3] {
        assert!(err.contains("magic link"), "{err}");
    }
    // An image may ship the magic link as an ordinary-looking directory.
    std::os::unix::fs::symlink("/proc/self/fd/3", bundle.rootfs().join("work")).unwrap();
    bundle.config["process"]["cwd"] = json!("/work");
    let (code, out, err) = bundle.run();
    assert_ne!(code, 0, "cwd /work -> /proc/self/fd/3 ran: {out:?}");
    assert!(err.contains("magic link"), "{err}");
}

#[test]
fn a_cwd_through_proc_pid_root_is_refused_without_a_pid_namespace() {
    require_container_host!();
    // Sharing the host's pid namespace, /proc/PID/root of a host process (this test) is the
    // host's root directory.
    let mut bundle = TestBundle::new("cwd-root", LIST_PARENTS);
    bundle.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "pid");
    let pid = std::process::id();
    for cwd in [
        format!("/proc/{pid}/root"),
        format!("/proc/{pid}/cwd"),
        format!("/proc/self/root/proc/{pid}/root/tmp"),
    ] {
        bundle.config["process"]["cwd"] = json!(cwd);
        let (code, out, err) = bundle.run();
        assert_ne!(code, 0, "cwd {cwd}: the container ran and printed {out:?}");
        assert_eq!(out, "", "cwd {cwd}");
        assert!(err.contains("magic link"), "cwd {cwd}: {err}");
    }
}

#[test]
fn exec_with_a_cwd_through_proc_is_refused() {
    require_container_host!();
    let bundle = TestBundle::new("cwd-exec", "sleep 60");
    bundle.create_and_start();
    for fd in 0..=24 {
        let cwd = format!("/proc/self/fd/{fd}");
        let out = bundle.oci(&["exec", "--cwd", &cwd, &bundle.id, "sh", "-c", LIST_PARENTS]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "cwd {cwd}: exec ran: {stdout}");
        assert_eq!(stdout, "", "cwd {cwd}");
        assert!(stderr.contains(&cwd), "cwd {cwd}: {stderr}");
    }
    let out = bundle.oci(&[
        "exec",
        "--cwd",
        "/proc/1/root",
        &bundle.id,
        "sh",
        "-c",
        "ls",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("magic link"));
    bundle.force_delete();
    assert!(bundle.left_nothing_behind());
}

#[test]
fn an_ordinary_missing_cwd_is_still_created() {
    require_container_host!();
    let mut bundle = TestBundle::new("cwd-new", "pwd");
    bundle.config["process"]["cwd"] = json!("/srv/app/data");
    let (code, out, err) = bundle.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "/srv/app/data\n");
}

// The host's corral binary through /proc/PID/exe (CVE-2019-5736).

/// `device:inode` of the corral binary under test, as busybox's `stat -L -c %d:%i` prints it.
fn host_binary_id() -> String {
    let meta = std::fs::metadata(common::corral_bin()).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Waits until `path` exists (10 s at most).
fn wait_for_file(path: &Path) {
    common::wait_for(&path.display().to_string(), Duration::from_secs(10), || {
        path.exists()
    });
}

#[test]
fn the_init_before_start_does_not_expose_the_host_binary() {
    require_container_host!();
    let bundle = TestBundle::new("exe-init", "true");
    bundle.create();
    // Until start, pid 1 of the container is corral itself. Even a process allowed to ptrace
    // it must find a sealed copy there, never the host's file.
    let stdout = bundle.oci_ok(&[
        "exec",
        "--cap",
        "CAP_SYS_PTRACE",
        &bundle.id,
        "sh",
        "-c",
        "stat -L -c %d:%i /proc/1/exe; \
         if (: >> /proc/1/exe) 2>/dev/null; then echo writable; else echo not-writable; fi",
    ]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_ne!(
        lines[0],
        host_binary_id(),
        "the container reached the host binary"
    );
    assert_eq!(lines[1], "not-writable");
    bundle.force_delete();
}

#[test]
fn a_process_being_execed_does_not_expose_the_host_binary() {
    require_container_host!();
    // The container stalls every exec on a fifo at /etc/passwd (which the runtime reads before
    // it execs the program) and meanwhile looks at every process that is not busybox.
    let mut bundle = TestBundle::new(
        "exe-exec",
        "mv /etc/passwd /etc/passwd.real; mkfifo /etc/passwd; \
         own=$(stat -L -c %d:%i /bin/busybox); echo > /tmp/ready; \
         while true; do \
           exec 3> /etc/passwd; \
           for p in /proc/[0-9]*; do \
             e=$(stat -L -c %d:%i $p/exe 2>/dev/null) || continue; \
             [ \"$e\" = \"$own\" ] && continue; \
             if (: >> $p/exe) 2>/dev/null; then w=writable; else w=not-writable; fi; \
             echo \"$e $w\" >> /tmp/seen; \
           done; \
           cat /etc/passwd.real >&3; exec 3>&-; \
         done",
    );
    bundle.config["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_SYS_PTRACE"));
    for set in ["effective", "permitted"] {
        bundle.config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_PTRACE"));
    }
    bundle.create_and_start();
    wait_for_file(&bundle.rootfs().join("tmp/ready"));
    bundle.oci_ok(&["exec", &bundle.id, "true"]);
    let seen = std::fs::read_to_string(bundle.rootfs().join("tmp/seen")).unwrap_or_default();
    assert!(
        !seen.is_empty(),
        "the container saw no process being exec'd; the test proves nothing"
    );
    for line in seen.lines() {
        let (id, writable) = line.split_once(' ').unwrap();
        assert_ne!(
            id,
            host_binary_id(),
            "the container reached the host binary: {seen}"
        );
        assert_eq!(writable, "not-writable", "{seen}");
    }
    bundle.force_delete();
}

#[test]
fn a_container_that_execs_proc_self_exe_runs_a_sealed_copy() {
    require_container_host!();
    // The CVE-2019-5736 entry point: the container's program is /proc/self/exe, which at the
    // init's execve is the runtime's own binary. Here it runs corral, which blocks opening a
    // fifo as its log while another process looks at it.
    let mut bundle = TestBundle::new("exe-self", "");
    common::install_corral_libraries(&bundle.rootfs());
    nix::unistd::mkfifo(
        &bundle.rootfs().join("tmp/log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    bundle.config["process"]["args"] = json!([
        "/proc/self/exe",
        "oci",
        "--log",
        "/tmp/log",
        "state",
        "no-such-container"
    ]);
    bundle.create_and_start();
    let stdout = bundle.oci_ok(&[
        "exec",
        &bundle.id,
        "sh",
        "-c",
        "stat -L -c %d:%i /proc/1/exe; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
         cat /tmp/log > /dev/null",
    ]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[1].starts_with("/proc/self/exe oci"),
        "pid 1 runs corral: {stdout}"
    );
    assert_ne!(
        lines[0],
        host_binary_id(),
        "the container executed the host binary"
    );
    bundle.force_delete();
}
