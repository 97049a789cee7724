//! Which signal `corral stop` sends a container's PID 1. An application gets SIGTERM. An init
//! system gets its own "shut down" request: systemd halts on SIGRTMIN+3 (its documented
//! container stop signal; its SIGPWR only starts sigpwr.target, which does nothing by default),
//! while sysvinit and busybox init act on SIGPWR, a power failure. The definition's
//! `stop_signal` overrides both.

use std::path::Path;

use corral_container::signal::{parse_signal, SignalNumber};
use corral_host::fsroot::FsRoot;
use nix::sys::signal::Signal;

use crate::definition::ContainerSpec;
use crate::error::CoreError;

/// systemd's halt request in a container.
const SYSTEMD_HALT: &str = "SIGRTMIN+3";

/// The stop signal of the container `spec` with its root filesystem at `rootfs`.
pub fn for_container(spec: &ContainerSpec, rootfs: &Path) -> Result<SignalNumber, CoreError> {
    let invalid = CoreError::StopSignal;
    if let Some(name) = &spec.stop_signal {
        return parse_signal(name).map_err(invalid);
    }
    if !spec.init {
        return Ok(SignalNumber::TERM);
    }
    let command = spec.effective_command();
    if command.first().is_some_and(|init| is_systemd(rootfs, init)) {
        parse_signal(SYSTEMD_HALT).map_err(invalid)
    } else {
        Ok(Signal::SIGPWR.into())
    }
}

/// True when `init` (a path inside `rootfs`, `/sbin/init` usually a link) is systemd's binary.
fn is_systemd(rootfs: &Path, init: &str) -> bool {
    // A relative command is looked up in PATH by the engine; an init is named by its path.
    FsRoot::new(rootfs)
        .resolve(init)
        .is_ok_and(|target| Path::new(&target).file_name() == Some("systemd".as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs_with_init(target: Option<&str>) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for dir in ["usr/sbin", "usr/lib/systemd", "bin"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        std::os::unix::fs::symlink("usr/sbin", root.path().join("sbin")).unwrap();
        std::fs::write(root.path().join("usr/lib/systemd/systemd"), "").unwrap();
        std::fs::write(root.path().join("bin/busybox"), "").unwrap();
        if let Some(target) = target {
            std::os::unix::fs::symlink(target, root.path().join("usr/sbin/init")).unwrap();
        }
        root
    }

    fn system() -> ContainerSpec {
        let mut spec = ContainerSpec::new("rootfs");
        spec.init = true;
        spec
    }

    #[test]
    fn systemd_as_init_through_links_is_stopped_with_sigrtmin_plus_3() {
        let root = rootfs_with_init(Some("../lib/systemd/systemd"));
        let signal = for_container(&system(), root.path()).unwrap();
        assert_eq!(signal.to_string(), "SIGRTMIN+3");
    }

    #[test]
    fn another_init_gets_sigpwr_and_an_application_sigterm() {
        let root = rootfs_with_init(Some("/bin/busybox"));
        let signal = for_container(&system(), root.path()).unwrap();
        assert_eq!(signal, Signal::SIGPWR.into());
        let missing = rootfs_with_init(None);
        let signal = for_container(&system(), missing.path()).unwrap();
        assert_eq!(signal, Signal::SIGPWR.into());
        let app = ContainerSpec::new("rootfs");
        assert_eq!(
            for_container(&app, root.path()).unwrap(),
            SignalNumber::TERM
        );
    }

    #[test]
    fn the_definitions_stop_signal_wins() {
        let root = rootfs_with_init(Some("../lib/systemd/systemd"));
        let mut spec = system();
        spec.stop_signal = Some("TERM".into());
        assert_eq!(
            for_container(&spec, root.path()).unwrap(),
            SignalNumber::TERM
        );
        spec.stop_signal = Some("bogus".into());
        let err = for_container(&spec, root.path()).unwrap_err();
        assert!(err.to_string().contains("stop_signal"), "{err}");
    }
}
