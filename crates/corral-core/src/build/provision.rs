//! Provisioning steps, in order, on the staged rootfs: files copied in (their destination
//! resolved inside the rootfs, so the image's links cannot send a write to the host), shell
//! commands or scripts run in a container on the rootfs through corral's own OCI runtime, with
//! the host's network so package managers work, and the guest agent installed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral_host::fsroot::FsRoot;
use serde_json::json;

use super::log::describe_status;
use super::spec::Step;
use super::{BuildError, Context};

/// What a build step's container may do: Docker's default capability set. Not CAP_NET_ADMIN
/// nor CAP_SYS_ADMIN: the step shares the host's network namespace.
const STEP_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const STEP_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// A script step is copied here (inside the rootfs) for its run, then removed.
const SCRIPT_PATH: &str = "/tmp/.corral-build-script";
/// The host's resolver configuration, bound into each step.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Runs step `number` (1-based) on `rootfs`; `scratch` is an empty directory of the build's
/// for the step's bundle.
pub fn run(
    context: &mut Context,
    number: usize,
    step: &Step,
    rootfs: &Path,
    scratch: &Path,
) -> Result<(), BuildError> {
    context
        .log
        .note(&format!("step {number}: {}", step.describe()));
    let root = FsRoot::new(rootfs);
    match step {
        Step::File {
            source,
            destination,
            mode,
        } => {
            let source = context.plan.path(source);
            let content = std::fs::read(&source).map_err(BuildError::io("read", &source))?;
            write_inside(&root, destination, &content, *mode)
        }
        Step::Shell(command) => {
            let args = vec!["/bin/sh".to_string(), "-c".to_string(), command.clone()];
            in_container(context, number, rootfs, scratch, args)
        }
        Step::Script(script) => {
            let source = context.plan.path(script);
            let content = std::fs::read(&source).map_err(BuildError::io("read", &source))?;
            write_inside(&root, SCRIPT_PATH, &content, 0o755)?;
            let args = if content.starts_with(b"#!") {
                vec![SCRIPT_PATH.to_string()]
            } else {
                vec!["/bin/sh".to_string(), SCRIPT_PATH.to_string()]
            };
            let result = in_container(context, number, rootfs, scratch, args);
            remove_inside(&root, SCRIPT_PATH)?;
            result
        }
        Step::Agent => install_agent(context, rootfs),
    }
}

/// `corral guest install-agent --root` on the tree, with the build's agent binary.
fn install_agent(context: &mut Context, rootfs: &Path) -> Result<(), BuildError> {
    let binary = context.agent_binary.clone();
    if !corral_agent::install::is_static(&binary).map_err(BuildError::Agent)? {
        context.log.note(&format!(
            "note: {} is not a static executable: the agent runs in this image only if it has \
             the libraries that binary was linked with (glibc, libseccomp, liblzma); \
             scripts/build-static.sh builds a static corral for --agent-binary",
            binary.display()
        ));
    }
    let (init, written) =
        corral_agent::install::install(rootfs, &binary).map_err(BuildError::Agent)?;
    context.log.note(&format!(
        "installed {} as the guest agent ({}): {}",
        binary.display(),
        written.join(", "),
        init.describe()
    ));
    Ok(())
}

/// Writes `content` at `guest_path` inside `root`, every link on the way resolved inside the
/// root; missing parent directories are made (0755).
pub fn write_inside(
    root: &FsRoot,
    guest_path: &str,
    content: &[u8],
    mode: u32,
) -> Result<(), BuildError> {
    let resolved = root.resolve(guest_path).map_err(BuildError::Resolve)?;
    let target = root.join(&resolved);
    if target == root.dir() {
        return Err(BuildError::NotAFile(guest_path.to_string()));
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(BuildError::io("create", parent))?;
    }
    if std::fs::symlink_metadata(&target).is_ok_and(|meta| meta.is_dir()) {
        return Err(BuildError::NotAFile(guest_path.to_string()));
    }
    // A new inode, so a hard link inside the image to another file cannot be written through.
    let temporary = target.with_file_name(format!(
        ".{}.corral-build",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&temporary, content).map_err(BuildError::io("write", &temporary))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .map_err(BuildError::io("set the mode of", &temporary))?;
    std::fs::rename(&temporary, &target).map_err(BuildError::io("write", &target))
}

fn remove_inside(root: &FsRoot, guest_path: &str) -> Result<(), BuildError> {
    let resolved = root.resolve(guest_path).map_err(BuildError::Resolve)?;
    let target = root.join(&resolved);
    match std::fs::remove_file(&target) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(BuildError::io("remove", &target)(err))
        }
        _ => Ok(()),
    }
}

/// Runs `args` in a container on `rootfs` with `oci run`; fails naming the step and its exit
/// status.
fn in_container(
    context: &mut Context,
    number: usize,
    rootfs: &Path,
    scratch: &Path,
    args: Vec<String>,
) -> Result<(), BuildError> {
    let bundle = scratch.join(format!("step-{number}"));
    std::fs::create_dir_all(&bundle).map_err(BuildError::io("create", &bundle))?;
    let absolute_rootfs =
        std::fs::canonicalize(rootfs).map_err(BuildError::io("resolve", rootfs))?;
    let config = step_config(&absolute_rootfs, args, context.source_date_epoch);
    let config_path = bundle.join("config.json");
    std::fs::write(&config_path, config.to_string())
        .map_err(BuildError::io("write", &config_path))?;
    // Mount points the runtime makes for the step and the image did not have are removed
    // afterwards, so the image holds only what the steps wrote.
    let root = FsRoot::new(rootfs);
    let absent: Vec<PathBuf> = MOUNT_POINTS
        .iter()
        .map(|point| root.join(point))
        .filter(|path| std::fs::symlink_metadata(path).is_err())
        .collect();
    let id = format!(
        "corral-build-{}-{}-{number}",
        std::process::id(),
        context.build_id
    );
    let mut command = Command::new(&context.runtime);
    command
        .arg("oci")
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg(&id);
    let status = context.log.run(command);
    for path in absent.iter().rev() {
        // Only what is still an empty mount point goes; anything a step put there stays.
        let _ = std::fs::remove_dir(path);
        if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() == 0) {
            let _ = std::fs::remove_file(path);
        }
    }
    let _ = std::fs::remove_dir_all(&bundle);
    let status = status?;
    if status.success() {
        return Ok(());
    }
    Err(BuildError::StepFailed {
        number,
        status: describe_status(status),
        tail: context.log.tail(),
    })
}

/// Where the step container mounts things (the runtime creates absent ones).
const MOUNT_POINTS: [&str; 5] = ["/etc", "/proc", "/dev", "/sys", RESOLV_CONF];

/// The OCI runtime config of a step: PID, mount, IPC and UTS namespaces of its own, the host's
/// network, root with Docker's default capabilities.
fn step_config(rootfs: &Path, args: Vec<String>, epoch: Option<u64>) -> serde_json::Value {
    let mut env = vec![
        STEP_PATH.to_string(),
        "DEBIAN_FRONTEND=noninteractive".to_string(),
        "HOME=/root".to_string(),
        "LC_ALL=C".to_string(),
    ];
    if let Some(epoch) = epoch {
        env.push(format!("SOURCE_DATE_EPOCH={epoch}"));
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": STEP_CAPABILITIES,
                "effective": STEP_CAPABILITIES,
                "permitted": STEP_CAPABILITIES,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": "corral-build",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": RESOLV_CONF, "type": "bind", "source": RESOLV_CONF,
             "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_destination_behind_a_link_stays_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // The image's /etc/conf points at a host directory; the write must land in the
        // rootfs at that path instead.
        std::os::unix::fs::symlink(&outside, rootfs.join("etc/conf")).unwrap();
        let root = FsRoot::new(&rootfs);
        write_inside(&root, "/etc/conf/motd", b"hello\n", 0o600).unwrap();
        assert!(!outside.join("motd").exists());
        let inside = rootfs.join(outside.strip_prefix("/").unwrap()).join("motd");
        assert_eq!(std::fs::read(&inside).unwrap(), b"hello\n");
        let mode = std::fs::metadata(&inside).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            write_inside(&root, "/etc", b"x", 0o644),
            Err(BuildError::NotAFile(_))
        ));
    }

    #[test]
    fn a_step_shares_the_host_network_with_a_limited_root() {
        let config = step_config(Path::new("/r"), vec!["true".into()], Some(7));
        let namespaces = config["linux"]["namespaces"].to_string();
        assert!(!namespaces.contains("network"), "{namespaces}");
        let caps = config["process"]["capabilities"]["bounding"].to_string();
        assert!(caps.contains("CAP_SETUID") && !caps.contains("CAP_SYS_ADMIN"));
        assert!(!caps.contains("CAP_NET_ADMIN"));
        let env = config["process"]["env"].to_string();
        assert!(env.contains("SOURCE_DATE_EPOCH=7") && env.contains("DEBIAN_FRONTEND"));
    }
}
