//! The files of one network's service inside its state directory.

use std::path::{Path, PathBuf};

/// The state directory of one network's service and the names of its files.
#[derive(Clone, Debug)]
pub(crate) struct StatePaths {
    dir: PathBuf,
}

impl StatePaths {
    pub(crate) fn new(dir: &Path) -> StatePaths {
        StatePaths {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn service(&self) -> PathBuf {
        self.dir.join("service.json")
    }

    pub(crate) fn dnsmasq_conf(&self) -> PathBuf {
        self.dir.join("dnsmasq.conf")
    }

    pub(crate) fn dhcp_hosts(&self) -> PathBuf {
        self.dir.join("dhcp-hosts")
    }

    pub(crate) fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    pub(crate) fn lease_hook(&self) -> PathBuf {
        self.dir.join("lease-hook")
    }

    pub(crate) fn leases(&self) -> PathBuf {
        self.dir.join("leases.json")
    }

    pub(crate) fn leases_lock(&self) -> PathBuf {
        self.dir.join("leases.lock")
    }

    pub(crate) fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub(crate) fn exit_record(&self) -> PathBuf {
        self.dir.join("exit.json")
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("service.log")
    }
}
