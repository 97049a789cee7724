//! `restore`: a container brought back from CRIU images as a container of this engine (its
//! record, init pid and cgroup), which `state`, `kill` and `delete` then manage like any other.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use super::create::Made;
use super::Container;
use crate::criu::args::{restore_args, RestorePlan, RESTORE_LOG};
use crate::criu::{self, CriuFlags, DESCRIPTORS_FILE};
use crate::error::{Error, Result};
use crate::spec::{namespace_name, Bundle};
use crate::state::{check_id, process_start_time};

/// Where the rootfs is bound for CRIU, in the container's state directory.
const CRIU_ROOT: &str = "criu-root";
/// Where CRIU writes the restored init's pid, in the container's state directory.
const CRIU_PIDFILE: &str = "criu.pid";

/// How to restore a container (runc's `restore` flags).
#[derive(Debug)]
pub struct RestoreOptions {
    /// The state root (`/run/corral` by default).
    pub root: PathBuf,
    pub id: String,
    /// The bundle the container was created from (or one with the same rootfs and mounts).
    pub bundle: PathBuf,
    /// The images a checkpoint wrote.
    pub image_path: PathBuf,
    /// Where CRIU works and logs (`restore.log`); the image directory when `None`.
    pub work_path: Option<PathBuf>,
    pub flags: CriuFlags,
}

impl Container {
    /// Restores container `options.id` from a checkpoint, running, with the caller as the
    /// parent of its init (so a supervisor can [`Container::wait`] for it). The init's stdio
    /// that were pipes at the checkpoint become the caller's descriptors 0-2. Refused, with
    /// nothing created, when `criu check` fails; on failure nothing is left behind.
    pub fn restore(options: RestoreOptions) -> Result<Container> {
        check_id(&options.id)?;
        criu::require_criu(&options.id, "restore")?;
        let bundle = Bundle::load(&options.bundle)?;
        let spec = &bundle.spec;
        criu::refuse_terminal(spec, &options.id, "restore")?;
        let images = options.image_path.as_path();
        if !images.join("inventory.img").is_file() {
            return Err(Error::NoCheckpoint(images.to_path_buf()));
        }
        let work = options.work_path.as_deref().unwrap_or(images);
        std::fs::create_dir_all(work).map_err(|e| Error::io("create", work, e))?;

        // The cgroup with its limits first: CRIU puts the restored tasks into it.
        let Made {
            _lock,
            dir,
            mut cleanup,
            delegated,
            cgroup_path,
            cgroup,
            mut record,
            ..
        } = Made::claim(&options.root, &options.id, &bundle, true, || Ok(()))?;

        let mounts = criu::container_external_mounts(
            spec,
            &bundle.path,
            &cgroup.container_mounts(delegated),
        )?;
        // Held open (inheritable) until CRIU has run.
        let mut namespace_fds: Vec<OwnedFd> = Vec::new();
        let mut inherited_namespaces = Vec::new();
        for (kind, path) in criu::external_namespaces(spec) {
            let fd = open_inheritable(&path)?;
            inherited_namespaces.push((kind, fd.as_raw_fd()));
            namespace_fds.push(fd);
        }
        let joined_namespaces = joined_namespaces(spec)?;
        let masked = spec
            .linux()
            .as_ref()
            .and_then(|l| l.masked_paths().as_ref())
            .is_some_and(|paths| !paths.is_empty());
        let stdio_pipes = stdio_pipes(images)?;

        let criu_root = dir.join(CRIU_ROOT);
        let bound = BoundRoot::bind(&bundle.rootfs, &criu_root)?;
        let pidfile = dir.join(CRIU_PIDFILE);
        let args = restore_args(&RestorePlan {
            images,
            work,
            root: &criu_root,
            pidfile: &pidfile,
            cgroup: &cgroup_path,
            flags: options.flags,
            inherited_namespaces,
            joined_namespaces,
            mounts: &mounts,
            masked,
            stdio_pipes,
        });
        criu::run(
            &options.id,
            "restore",
            args,
            (work, RESTORE_LOG),
            criu::CriuStdio::Inherit,
        )?;
        drop(namespace_fds);
        drop(bound);

        let text = std::fs::read_to_string(&pidfile).map_err(|e| Error::io("read", &pidfile, e))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| Error::Setup(format!("criu wrote no pid into {}", pidfile.display())))?;
        cleanup.child = Some(Pid::from_raw(pid));
        let _ = std::fs::remove_file(&pidfile);
        record.pid = pid;
        record.pid_start_time = process_start_time(pid).ok_or_else(|| {
            Error::Setup(format!(
                "the restored init of container {} exited at once",
                options.id
            ))
        })?;
        record.creator = None;
        record.save(&options.root)?;
        cleanup.disarm();
        Ok(Container {
            root: options.root,
            record,
        })
    }
}

/// Namespaces given by path that CRIU joins itself (all but network and pid, which it keeps
/// external, and cgroup, which it cannot join: refused, as runc does).
fn joined_namespaces(spec: &oci_spec::runtime::Spec) -> Result<Vec<(&'static str, PathBuf)>> {
    let mut joined = Vec::new();
    for ns in crate::spec::namespaces(spec) {
        let Some(path) = ns.path() else { continue };
        match ns.typ() {
            LinuxNamespaceType::Network | LinuxNamespaceType::Pid => {}
            LinuxNamespaceType::Cgroup => {
                return Err(Error::InvalidSpec(
                    "a cgroup namespace given by path cannot be restored (CRIU cannot join one)"
                        .into(),
                ))
            }
            kind => joined.push((namespace_name(kind), path.clone())),
        }
    }
    Ok(joined)
}

/// The init's stdio that were pipes at the checkpoint, by descriptor number.
fn stdio_pipes(images: &Path) -> Result<Vec<(i32, String)>> {
    let path = images.join(DESCRIPTORS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // A checkpoint by another tool: nothing to hand over.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let descriptors: Vec<String> = serde_json::from_str(&text).map_err(|source| {
        Error::Setup(format!(
            "{} is not a list of descriptors: {source}",
            path.display()
        ))
    })?;
    Ok(descriptors
        .into_iter()
        .zip(0..)
        .filter(|(target, _)| target.starts_with("pipe:"))
        .map(|(target, fd)| (fd, target))
        .collect())
}

/// Opens a namespace file without close-on-exec, for CRIU to inherit.
fn open_inheritable(path: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::sys(format!("open {}", path.display()), e))?;
    nix::fcntl::fcntl(&fd, FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|e| Error::sys(format!("pass {} to criu", path.display()), e))?;
    Ok(fd)
}

/// The rootfs bound onto a directory of the state (CRIU wants its root to be a mount point
/// whose parent is not overmounted); unmounted and removed when dropped.
struct BoundRoot {
    path: PathBuf,
}

impl BoundRoot {
    fn bind(rootfs: &Path, path: &Path) -> Result<BoundRoot> {
        std::fs::create_dir(path).map_err(|e| Error::io("create", path, e))?;
        let bound = BoundRoot {
            path: path.to_path_buf(),
        };
        nix::mount::mount(
            Some(rootfs),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("bind {} for criu", rootfs.display()), e))?;
        Ok(bound)
    }
}

impl Drop for BoundRoot {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pipes_among_the_recorded_stdio_are_handed_over() {
        let images = tempfile::tempdir().unwrap();
        assert!(stdio_pipes(images.path()).unwrap().is_empty());
        std::fs::write(
            images.path().join(DESCRIPTORS_FILE),
            r#"["/dev/null","pipe:[1234]","pipe:[5678]"]"#,
        )
        .unwrap();
        assert_eq!(
            stdio_pipes(images.path()).unwrap(),
            [
                (1, "pipe:[1234]".to_string()),
                (2, "pipe:[5678]".to_string())
            ]
        );
    }

    #[test]
    fn namespaces_by_path_are_joined_by_criu_except_net_pid_and_cgroup() {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [
                {"type": "network", "path": "/run/netns/n1"},
                {"type": "ipc", "path": "/proc/9/ns/ipc"},
                {"type": "uts"}
            ]}
        }))
        .unwrap();
        assert_eq!(
            joined_namespaces(&spec).unwrap(),
            [("ipc", PathBuf::from("/proc/9/ns/ipc"))]
        );
        let cgroup: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "cgroup", "path": "/proc/9/ns/cgroup"}]}
        }))
        .unwrap();
        assert!(joined_namespaces(&cgroup).is_err());
    }
}
