//! The command lines of `criu dump` and `criu restore` for a container, built from plain data so
//! they are unit-tested without CRIU. The choices follow runc's (libcontainer's CRIU requests):
//! the container's root, its freezer, the cgroups left to corral ("soft"), namespaces joined by
//! path kept external, and bind mounts, masked files and bind-mounted devices as external
//! mounts, mapped back to their sources on restore.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// CRIU's log inside the work directory.
pub const DUMP_LOG: &str = "dump.log";
pub const RESTORE_LOG: &str = "restore.log";

/// The key a namespace joined by path is known by in the images, as runc names it.
pub fn external_namespace_key(kind: Namespace) -> &'static str {
    match kind {
        Namespace::Net => "extRootNetNS",
        Namespace::Pid => "extRootPidNS",
    }
}

/// The namespaces CRIU treats as external when the container joined them by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    Net,
    Pid,
}

impl Namespace {
    fn criu_name(self) -> &'static str {
        match self {
            Namespace::Net => "net",
            Namespace::Pid => "pid",
        }
    }
}

/// runc's checkpoint/restore switches that pass straight to CRIU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CriuFlags {
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
}

impl CriuFlags {
    fn push(&self, args: &mut Vec<OsString>) {
        for (on, flag) in [
            (self.tcp_established, "--tcp-established"),
            (self.ext_unix_sk, "--ext-unix-sk"),
            (self.shell_job, "--shell-job"),
            (self.file_locks, "--file-locks"),
        ] {
            if on {
                args.push(flag.into());
            }
        }
    }
}

/// A mount the container got from the host: where it is inside the container and what it is
/// on the host (a bind mount's source, a device, a cgroup directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalMount {
    pub destination: PathBuf,
    pub source: PathBuf,
}

/// What a dump needs to know.
#[derive(Debug)]
pub struct DumpPlan<'a> {
    pub pid: i32,
    pub images: &'a Path,
    pub work: &'a Path,
    pub rootfs: &'a Path,
    pub freezer: Option<&'a Path>,
    pub leave_running: bool,
    pub flags: CriuFlags,
    /// Namespaces joined by path, with their inode numbers.
    pub external_namespaces: Vec<(Namespace, u64)>,
    pub mounts: &'a [ExternalMount],
    /// Masked paths that are files (masked with a bind of `/dev/null`).
    pub masked_files: &'a [PathBuf],
}

/// `criu dump ...` (without the program name).
pub fn dump_args(plan: &DumpPlan) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["dump".into(), "--tree".into(), plan.pid.to_string().into()];
    common(&mut args, plan.images, plan.work, DUMP_LOG, plan.rootfs);
    if let Some(freezer) = plan.freezer {
        args.push("--freeze-cgroup".into());
        args.push(freezer.into());
    }
    if plan.leave_running {
        args.push("--leave-running".into());
    }
    plan.flags.push(&mut args);
    for (kind, inode) in &plan.external_namespaces {
        args.push("--external".into());
        args.push(
            format!(
                "{}[{inode}]:{}",
                kind.criu_name(),
                external_namespace_key(*kind)
            )
            .into(),
        );
    }
    // At dump the value only names the mount in the images; the destination is that name, as
    // in runc, so the restore maps it back to a source.
    for mount in plan.mounts {
        args.push("--external".into());
        args.push(external_mount(&mount.destination, &mount.destination));
    }
    for masked in plan.masked_files {
        args.push("--external".into());
        args.push(external_mount(masked, Path::new("/dev/null")));
    }
    args
}

/// What a restore needs to know.
#[derive(Debug)]
pub struct RestorePlan<'a> {
    pub images: &'a Path,
    pub work: &'a Path,
    /// A mount point holding the container's rootfs (CRIU wants the root to be a mount whose
    /// parent is not overmounted; runc binds the rootfs onto a directory of its state, too).
    pub root: &'a Path,
    /// Where CRIU writes the restored init's pid.
    pub pidfile: &'a Path,
    /// The container's cgroup (from the hierarchy roots): CRIU puts the restored tasks there.
    pub cgroup: &'a Path,
    pub flags: CriuFlags,
    /// Namespaces joined by path: the descriptor CRIU inherits for each.
    pub inherited_namespaces: Vec<(Namespace, i32)>,
    /// Other namespaces joined by path (`ipc`, `uts`, `mnt`, `user`), which CRIU joins.
    pub joined_namespaces: Vec<(&'static str, PathBuf)>,
    pub mounts: &'a [ExternalMount],
    /// Whether the dump had masked files (all of them masked with `/dev/null`).
    pub masked: bool,
    /// The init's stdio that were pipes at the dump (`pipe:[INODE]`, by descriptor), replaced
    /// with the restoring process's own descriptors of the same numbers.
    pub stdio_pipes: Vec<(i32, String)>,
}

/// `criu restore ...` (without the program name). The restored init becomes a child of the
/// process that runs CRIU (`--restore-sibling` with `--restore-detached`), as in runc, so a
/// supervisor can wait for it.
pub fn restore_args(plan: &RestorePlan) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["restore".into()];
    common(&mut args, plan.images, plan.work, RESTORE_LOG, plan.root);
    args.extend(
        [
            "--restore-detached",
            "--restore-sibling",
            "--evasive-devices",
            "--pidfile",
        ]
        .map(OsString::from),
    );
    args.push(plan.pidfile.into());
    args.push("--cgroup-root".into());
    args.push(plan.cgroup.into());
    plan.flags.push(&mut args);
    for (kind, fd) in &plan.inherited_namespaces {
        args.push("--inherit-fd".into());
        args.push(format!("fd[{fd}]:{}", external_namespace_key(*kind)).into());
    }
    for (kind, path) in &plan.joined_namespaces {
        let mut joined = OsString::from(format!("{kind}:"));
        joined.push(path);
        args.push("--join-ns".into());
        args.push(joined);
    }
    for mount in plan.mounts {
        args.push("--external".into());
        args.push(external_mount(&mount.destination, &mount.source));
    }
    if plan.masked {
        args.push("--external".into());
        args.push(external_mount(
            Path::new("/dev/null"),
            Path::new("/dev/null"),
        ));
    }
    for (fd, pipe) in &plan.stdio_pipes {
        args.push("--inherit-fd".into());
        args.push(format!("fd[{fd}]:{pipe}").into());
    }
    args
}

/// Options every CRIU run here takes: images, work directory and its log, verbosity 4 (runc's
/// log level), the container's root, and cgroups whose properties corral has set ("soft").
fn common(args: &mut Vec<OsString>, images: &Path, work: &Path, log: &str, root: &Path) {
    args.push("--images-dir".into());
    args.push(images.into());
    args.push("--work-dir".into());
    args.push(work.into());
    args.push("--log-file".into());
    args.push(log.into());
    args.push("-v4".into());
    args.push("--root".into());
    args.push(root.into());
    args.push("--manage-cgroups=soft".into());
}

/// `mnt[KEY]:VALUE`, CRIU's `--external` form for a mount.
fn external_mount(key: &Path, value: &Path) -> OsString {
    let mut text = OsString::from("mnt[");
    text.push(key);
    text.push("]:");
    text.push(value);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The value after each occurrence of `flag`.
    fn values(args: &[String], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|pair| pair[0] == flag)
            .map(|pair| pair[1].clone())
            .collect()
    }

    fn mounts() -> Vec<ExternalMount> {
        vec![ExternalMount {
            destination: "/data".into(),
            source: "/srv/volumes/data".into(),
        }]
    }

    #[test]
    fn a_dump_freezes_the_cgroup_and_keeps_joined_namespaces_and_binds_external() {
        let mounts = mounts();
        let masked = vec![PathBuf::from("/proc/kcore")];
        let args = strings(dump_args(&DumpPlan {
            pid: 4242,
            images: Path::new("/ck/images"),
            work: Path::new("/ck/work"),
            rootfs: Path::new("/b/rootfs"),
            freezer: Some(Path::new("/sys/fs/cgroup/freezer/corral/c1")),
            leave_running: true,
            flags: CriuFlags {
                tcp_established: true,
                file_locks: true,
                ..CriuFlags::default()
            },
            external_namespaces: vec![(Namespace::Net, 4026532000)],
            mounts: &mounts,
            masked_files: &masked,
        }));
        assert_eq!(args[..3], ["dump", "--tree", "4242"]);
        assert_eq!(values(&args, "--images-dir"), ["/ck/images"]);
        assert_eq!(values(&args, "--work-dir"), ["/ck/work"]);
        assert_eq!(values(&args, "--log-file"), [DUMP_LOG]);
        assert_eq!(values(&args, "--root"), ["/b/rootfs"]);
        assert_eq!(
            values(&args, "--freeze-cgroup"),
            ["/sys/fs/cgroup/freezer/corral/c1"]
        );
        for present in [
            "--leave-running",
            "--tcp-established",
            "--file-locks",
            "--manage-cgroups=soft",
        ] {
            assert!(args.iter().any(|a| a == present), "{present}: {args:?}");
        }
        for absent in ["--ext-unix-sk", "--shell-job"] {
            assert!(!args.iter().any(|a| a == absent), "{absent}: {args:?}");
        }
        assert_eq!(
            values(&args, "--external"),
            [
                "net[4026532000]:extRootNetNS",
                "mnt[/data]:/data",
                "mnt[/proc/kcore]:/dev/null"
            ]
        );
    }

    #[test]
    fn a_dump_that_stops_the_container_does_not_leave_it_running() {
        let args = strings(dump_args(&DumpPlan {
            pid: 1,
            images: Path::new("/i"),
            work: Path::new("/w"),
            rootfs: Path::new("/r"),
            freezer: None,
            leave_running: false,
            flags: CriuFlags::default(),
            external_namespaces: Vec::new(),
            mounts: &[],
            masked_files: &[],
        }));
        assert!(!args.iter().any(|a| a == "--leave-running"), "{args:?}");
        assert!(values(&args, "--freeze-cgroup").is_empty());
        assert!(values(&args, "--external").is_empty());
    }

    #[test]
    fn a_restore_is_a_sibling_in_the_cgroup_with_mounts_mapped_to_their_sources() {
        let mounts = mounts();
        let args = strings(restore_args(&RestorePlan {
            images: Path::new("/ck/images"),
            work: Path::new("/ck/work"),
            root: Path::new("/run/corral/c1/criu-root"),
            pidfile: Path::new("/run/corral/c1/criu.pid"),
            cgroup: Path::new("/corral/c1"),
            flags: CriuFlags {
                shell_job: true,
                ext_unix_sk: true,
                ..CriuFlags::default()
            },
            inherited_namespaces: vec![(Namespace::Net, 5)],
            joined_namespaces: vec![("ipc", PathBuf::from("/proc/77/ns/ipc"))],
            mounts: &mounts,
            masked: true,
            stdio_pipes: vec![(1, "pipe:[991]".into()), (2, "pipe:[992]".into())],
        }));
        assert_eq!(args[0], "restore");
        assert_eq!(values(&args, "--root"), ["/run/corral/c1/criu-root"]);
        assert_eq!(values(&args, "--log-file"), [RESTORE_LOG]);
        assert_eq!(values(&args, "--pidfile"), ["/run/corral/c1/criu.pid"]);
        assert_eq!(values(&args, "--cgroup-root"), ["/corral/c1"]);
        for present in [
            "--restore-detached",
            "--restore-sibling",
            "--shell-job",
            "--ext-unix-sk",
        ] {
            assert!(args.iter().any(|a| a == present), "{present}: {args:?}");
        }
        assert!(!args.iter().any(|a| a == "--leave-running"));
        assert_eq!(
            values(&args, "--inherit-fd"),
            ["fd[5]:extRootNetNS", "fd[1]:pipe:[991]", "fd[2]:pipe:[992]"]
        );
        assert_eq!(values(&args, "--join-ns"), ["ipc:/proc/77/ns/ipc"]);
        assert_eq!(
            values(&args, "--external"),
            ["mnt[/data]:/srv/volumes/data", "mnt[/dev/null]:/dev/null"]
        );
    }
}
