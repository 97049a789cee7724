//! `checkpoint`: the container's processes saved to CRIU images (runc's `checkpoint`).

use std::path::{Path, PathBuf};

use super::Container;
use crate::criu::args::{dump_args, DumpPlan, DUMP_LOG};
use crate::criu::{self, CriuFlags, DESCRIPTORS_FILE};
use crate::error::{Error, Result};
use crate::spec::Bundle;
use crate::state::Status;

/// How to checkpoint a container (runc's `checkpoint` flags).
#[derive(Clone, Debug, Default)]
pub struct CheckpointOptions {
    /// Where CRIU writes its images (created if missing).
    pub image_path: PathBuf,
    /// Where CRIU works and logs (`dump.log`); the image directory when `None`.
    pub work_path: Option<PathBuf>,
    /// Leave the container running after the dump; otherwise CRIU ends its processes and the
    /// container is deleted, so its id can be restored (runc's behaviour, which podman expects).
    pub leave_running: bool,
    /// runc's `--pre-dump`: always refused (see [`Error::PreDump`]).
    pub pre_dump: bool,
    pub flags: CriuFlags,
}

impl Container {
    /// Checkpoints a running or paused container into `options.image_path`. Refused, with
    /// nothing created, when `criu check` fails, for a pre-dump and for a container with a
    /// terminal. A paused container stays paused (CRIU restores the freezer's state).
    pub fn checkpoint(self, options: &CheckpointOptions) -> Result<()> {
        if options.pre_dump {
            return Err(Error::PreDump(self.id().to_owned()));
        }
        self.require(
            "checkpoint",
            "running or paused",
            &[Status::Running, Status::Paused],
        )?;
        criu::require_criu(self.id(), "checkpoint")?;
        let bundle = Bundle::load(&self.record.bundle)?;
        let spec = &bundle.spec;
        criu::refuse_terminal(spec, self.id(), "checkpoint")?;

        let images = options.image_path.as_path();
        let work = options.work_path.as_deref().unwrap_or(images);
        for dir in [images, work] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        write_descriptors(self.pid(), images)?;

        let cgroup = self.cgroup();
        let mounts =
            criu::container_external_mounts(spec, &bundle.path, &cgroup.container_mounts(false))?;
        let mut external_namespaces = Vec::new();
        for (kind, path) in criu::external_namespaces(spec) {
            let meta = std::fs::metadata(&path).map_err(|e| Error::io("inspect", &path, e))?;
            external_namespaces.push((kind, std::os::unix::fs::MetadataExt::ino(&meta)));
        }
        let masked_files = masked_files(self.pid(), spec);
        let freezer = cgroup.freezer_dir();
        let args = dump_args(&DumpPlan {
            pid: self.pid(),
            images,
            work,
            rootfs: &self.record.rootfs,
            freezer: freezer.as_deref(),
            leave_running: options.leave_running,
            flags: options.flags,
            external_namespaces,
            mounts: &mounts,
            masked_files: &masked_files,
        });
        criu::run(
            self.id(),
            "dump",
            args,
            (work, DUMP_LOG),
            criu::CriuStdio::CaptureErrors,
        )?;
        if options.leave_running {
            return Ok(());
        }
        // CRIU ended the processes; what is left is the record and the cgroup.
        self.delete(true)
    }
}

/// Records where the init's stdio point (`pipe:[N]`, `/dev/null`, ...) beside the images.
fn write_descriptors(pid: i32, images: &Path) -> Result<()> {
    let descriptors: Vec<String> = (0..3)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|target| target.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let json = serde_json::to_vec(&descriptors).map_err(|source| Error::EncodeState {
        id: format!("{pid}"),
        source,
    })?;
    corral_host::atomic::write_file(&images.join(DESCRIPTORS_FILE), &json, 0o600)?;
    Ok(())
}

/// The spec's masked paths that are files in the running container (masked by binding
/// `/dev/null` over them; directories are masked with a tmpfs, which CRIU saves itself).
fn masked_files(pid: i32, spec: &oci_spec::runtime::Spec) -> Vec<PathBuf> {
    let masked = spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default();
    masked
        .into_iter()
        .filter(|path| {
            let inside = Path::new(&format!("/proc/{pid}/root")).join(path.trim_start_matches('/'));
            std::fs::metadata(inside).is_ok_and(|meta| !meta.is_dir())
        })
        .map(PathBuf::from)
        .collect()
}
