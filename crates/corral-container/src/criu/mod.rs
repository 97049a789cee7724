//! Checkpoint and restore of containers with CRIU, driven as runc drives it.
//!
//! `check` asks `criu check` once whether CRIU works on this host and keeps its reason when it
//! does not; `args` builds the dump and restore command lines; this module derives what they
//! need from a container's spec (external mounts and namespaces) and runs CRIU, turning a
//! failure into CRIU's own last error with the path of its log. The verbs themselves are
//! [`crate::Container::checkpoint`] and [`crate::Container::restore`].

pub mod args;
pub mod check;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};
use crate::rootfs::CgroupMount;
use crate::spec::has_new_namespace;
pub use args::{CriuFlags, ExternalMount};
pub use check::CriuUnavailable;

/// The file in the image directory recording what the init's stdio were at the dump (runc's
/// name and format: a JSON list of `/proc/PID/fd/N` link texts), so a restore can hand the
/// restored init new pipes in place of the old ones.
pub const DESCRIPTORS_FILE: &str = "descriptors.json";

/// Refuses `action` on container `id` unless `criu check` passes, with CRIU's reason.
pub fn require_criu(id: &str, action: &'static str) -> Result<()> {
    check::check().map_err(|unavailable| Error::CriuUnavailable {
        id: id.to_owned(),
        action,
        reason: unavailable.reason,
    })
}

/// Refuses a container with a terminal: its pty's master lives outside the container (with
/// conmon or corral's monitor), and handing a new one to a restored init needs CRIU's RPC
/// notifications, which corral does not speak.
pub fn refuse_terminal(spec: &Spec, id: &str, action: &'static str) -> Result<()> {
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    if terminal {
        return Err(Error::CriuTerminal {
            id: id.to_owned(),
            action,
        });
    }
    Ok(())
}

/// [`external_mounts`] of a container made from `spec`: in a cgroup namespace if it makes one,
/// in a user namespace if it makes or joins one.
pub fn container_external_mounts(
    spec: &Spec,
    bundle: &Path,
    cgroup_mounts: &[CgroupMount],
) -> Result<Vec<ExternalMount>> {
    let in_user_namespace = has_new_namespace(spec, LinuxNamespaceType::User)
        || crate::spec::namespaces(spec)
            .iter()
            .any(|ns| ns.typ() == LinuxNamespaceType::User);
    external_mounts(
        spec,
        bundle,
        cgroup_mounts,
        has_new_namespace(spec, LinuxNamespaceType::Cgroup),
        in_user_namespace,
    )
}

/// The mounts of the container that come from the host, as CRIU must be told about them:
/// bind mounts (source resolved as at create), the container's cgroup directories bound on a
/// cgroup v1 host without a cgroup namespace, and device nodes, which are bind mounts in a
/// user namespace (as runc lists them).
pub fn external_mounts(
    spec: &Spec,
    bundle: &Path,
    cgroup_mounts: &[CgroupMount],
    in_cgroup_namespace: bool,
    in_user_namespace: bool,
) -> Result<Vec<ExternalMount>> {
    let mut external = Vec::new();
    for mount in spec.mounts().as_deref().unwrap_or_default() {
        let destination = mount.destination().clone();
        if crate::rootfs::is_bind_mount(mount) {
            let source = crate::rootfs::bind_source(mount, bundle)?;
            external.push(ExternalMount {
                destination,
                source,
            });
        } else if mount.typ().as_deref() == Some("cgroup") && !in_cgroup_namespace {
            external.extend(
                cgroup_mounts
                    .iter()
                    .filter(|m| m.fstype == "cgroup")
                    .map(|m| ExternalMount {
                        destination: destination.join(&m.subdir),
                        source: m.host_path.clone(),
                    }),
            );
        }
    }
    if in_user_namespace {
        let devices = spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default();
        for device in crate::rootfs::default_devices().iter().chain(&devices) {
            external.push(ExternalMount {
                destination: device.path().clone(),
                source: device.path().clone(),
            });
        }
    }
    Ok(external)
}

/// Namespaces the spec joins by path that CRIU keeps external (net, pid), with their paths.
pub fn external_namespaces(spec: &Spec) -> Vec<(args::Namespace, PathBuf)> {
    crate::spec::namespaces(spec)
        .iter()
        .filter_map(|ns| {
            let kind = match ns.typ() {
                LinuxNamespaceType::Network => args::Namespace::Net,
                LinuxNamespaceType::Pid => args::Namespace::Pid,
                _ => return None,
            };
            Some((kind, ns.path().clone()?))
        })
        .collect()
}

/// How CRIU's standard streams are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CriuStdio {
    /// stderr captured (for the reason, when CRIU writes no log), the rest inherited: a dump.
    CaptureErrors,
    /// All three inherited: a restore, whose restored processes get these descriptors in
    /// place of the pipes they had (`--inherit-fd fd[N]:pipe:[INODE]`).
    Inherit,
}

/// Runs CRIU with `args` in the foreground. On failure the error carries CRIU's last error,
/// from its log in `work` (or its stderr when captured and it wrote no log).
pub fn run(
    id: &str,
    action: &'static str,
    args: Vec<std::ffi::OsString>,
    (work, log): (&Path, &str),
    stdio: CriuStdio,
) -> Result<()> {
    tracing::debug!("criu {args:?}");
    let stderr = match stdio {
        CriuStdio::CaptureErrors => Stdio::piped(),
        CriuStdio::Inherit => Stdio::inherit(),
    };
    let output = Command::new(check::CRIU)
        .args(&args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(stderr)
        .output()
        .map_err(|source| Error::CriuRun { action, source })?;
    if output.status.success() {
        return Ok(());
    }
    let log = work.join(log);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let reason = check::reason_from_output(&logged)
        .or_else(|| check::reason_from_output(&String::from_utf8_lossy(&output.stderr)))
        .unwrap_or_else(|| format!("criu exited with {}", output.status));
    Err(Error::CriuFailed {
        id: id.to_owned(),
        action,
        reason,
        log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn binds_cgroup_directories_and_user_namespace_devices_are_external() {
        let bundle = tempfile::tempdir().unwrap();
        let spec = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "none", "source": "/srv/data", "options": ["rbind", "ro"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "hosts"},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}
            ],
            "linux": {"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]}
        }));
        let cgroups = vec![CgroupMount {
            subdir: "memory".into(),
            fstype: "cgroup",
            data: "memory".into(),
            host_path: "/sys/fs/cgroup/memory/corral/c1".into(),
            writable: false,
        }];
        let without_userns = external_mounts(&spec, bundle.path(), &cgroups, false, false).unwrap();
        assert_eq!(
            without_userns,
            [
                ExternalMount {
                    destination: "/data".into(),
                    source: "/srv/data".into()
                },
                ExternalMount {
                    destination: "/etc/hosts".into(),
                    source: bundle.path().join("hosts")
                },
                ExternalMount {
                    destination: "/sys/fs/cgroup/memory".into(),
                    source: "/sys/fs/cgroup/memory/corral/c1".into()
                },
            ]
        );
        let in_cgroupns = external_mounts(&spec, bundle.path(), &cgroups, true, false).unwrap();
        assert_eq!(in_cgroupns.len(), 2, "{in_cgroupns:?}");
        let with_userns = external_mounts(&spec, bundle.path(), &cgroups, false, true).unwrap();
        let devices: Vec<_> = with_userns[3..]
            .iter()
            .map(|m| m.destination.display().to_string())
            .collect();
        assert!(devices.contains(&"/dev/null".to_string()), "{devices:?}");
        assert_eq!(devices.last().unwrap(), "/dev/fuse");
    }

    #[test]
    fn only_network_and_pid_namespaces_by_path_are_external() {
        let spec = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [
                {"type": "network", "path": "/run/netns/n1"},
                {"type": "pid"},
                {"type": "ipc", "path": "/proc/1/ns/ipc"},
                {"type": "mount"}
            ]}
        }));
        assert_eq!(
            external_namespaces(&spec),
            [(args::Namespace::Net, PathBuf::from("/run/netns/n1"))]
        );
    }

    #[test]
    fn a_terminal_container_is_refused_with_its_id() {
        let spec = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"terminal": true, "cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}}
        }));
        let err = refuse_terminal(&spec, "c1", "checkpoint").unwrap_err();
        assert!(err.to_string().contains("container c1"), "{err}");
        assert!(err.to_string().contains("terminal"), "{err}");
    }
}
