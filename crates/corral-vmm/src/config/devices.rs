//! The devices a VM config names: where the serial console goes, virtio disks, network interfaces
//! and vsock, each with the `key=value,...` syntax of its `corral vmm run` flag.

use std::path::PathBuf;
use std::str::FromStr;

use corral_control::disk_spec::{DiskSpec, DiskSpecError};
use corral_disk::DiskFormat;
use serde::{Deserialize, Serialize};

use super::{ConfigError, MacAddress};

/// Where the guest's serial console goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialTarget {
    /// Output to the VMM's stdout, input from its stdin.
    #[default]
    Stdout,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// A unix socket the VMM listens on; one client at a time gets output and sends input.
    Socket(PathBuf),
    /// Output discarded, no input.
    None,
}

impl FromStr for SerialTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            None if text == "stdout" => Ok(SerialTarget::Stdout),
            None if text == "none" => Ok(SerialTarget::None),
            Some(("file", path)) if !path.is_empty() => Ok(SerialTarget::File(path.into())),
            Some(("socket", path)) if !path.is_empty() => Ok(SerialTarget::Socket(path.into())),
            _ => Err(format!(
                "invalid serial target {text:?}: use stdout, none, file:PATH or socket:PATH"
            )),
        }
    }
}

/// A virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// An image file (raw or qcow2) or a host block device.
    pub path: PathBuf,
    /// `raw` or `qcow2`. When absent the VMM detects it from the file's magic and warns, like
    /// qemu's `-drive` without `format=`: a guest can write a qcow2 header into its raw disk, so
    /// whoever starts a VM more than once should record the format (corral's instances do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskFormat>,
    /// Where a qcow2 image's backing files may be: files inside these directories or these
    /// files. Absent: wherever the headers say (qemu's behaviour; corral's instances always set
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_backing: Option<Vec<PathBuf>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    /// What the guest reads as the disk's serial (virtio-blk GET_ID, at most 20 characters);
    /// derived from the image file's identity when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// A virtio-net interface on a host tap device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicConfig {
    /// A tap device to use (created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// A bridge to add the tap device to: `tap`, or a new one (`ctapN`) when `tap` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The guest's MAC address; a random locally administered one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddress>,
}

impl NicConfig {
    /// Checks interface `index`: a `tap` or a `bridge` (or both), a unicast MAC.
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        if self.tap.is_none() && self.bridge.is_none() {
            return Err(ConfigError::NicBackend { index });
        }
        if let Some(mac) = self.mac.filter(MacAddress::is_unusable) {
            return Err(ConfigError::NicMac { index, mac });
        }
        Ok(())
    }
}

/// A virtio-vsock device whose host side is a unix socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context ID (3 or more).
    pub cid: u64,
    /// Host programs connect here (`CONNECT <port>`); guest connections to port P go to
    /// `<socket>_P`.
    pub socket: PathBuf,
}

/// Splits `key=value,key,...` device options.
fn options(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| part.split_once('=').unwrap_or((part, "")))
}

impl FromStr for DiskConfig {
    type Err = String;

    /// A disk in the grammar `corral create` shares ([`DiskSpec`]): `PATH[,ro][,format=raw|qcow2]
    /// [,serial=S][,allow_backing=PATH...]` or `path=PATH,...`; the VMM takes files, not pool
    /// volumes or mount points.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let spec: DiskSpec = text.parse().map_err(|err: DiskSpecError| err.to_string())?;
        let (Some(path), None, None) = (spec.path, &spec.volume, &spec.target) else {
            return Err(format!(
                "disk {text:?}: the VMM takes a disk file (PATH or path=PATH); pool volumes                  (vol=) and mount points (target=) are for `corral create`"
            ));
        };
        let format = match spec.format {
            Some(format) => Some(
                format
                    .parse()
                    .map_err(|err| format!("disk {text:?}: {err}"))?,
            ),
            None => None,
        };
        Ok(DiskConfig {
            path,
            format,
            allow_backing: (!spec.allow_backing.is_empty()).then_some(spec.allow_backing),
            readonly: spec.readonly,
            serial: spec.serial,
        })
    }
}

impl FromStr for NicConfig {
    type Err = String;

    /// `tap=NAME` and/or `bridge=NAME`, optionally with `,mac=MAC`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut nic = NicConfig::default();
        for (key, value) in options(text) {
            match key {
                "tap" if !value.is_empty() => nic.tap = Some(value.to_owned()),
                "bridge" if !value.is_empty() => nic.bridge = Some(value.to_owned()),
                "mac" => nic.mac = Some(value.parse().map_err(|err| format!("{err}"))?),
                _ => {
                    return Err(format!(
                        "invalid network interface option {key:?}: use tap=NAME or bridge=NAME, \
                         optionally with ,mac=52:54:00:12:34:56"
                    ))
                }
            }
        }
        Ok(nic)
    }
}

impl FromStr for VsockConfig {
    type Err = String;

    /// `cid=N,socket=PATH`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "use --vsock cid=N,socket=PATH";
        let (mut cid, mut socket) = (None, None);
        for (key, value) in options(text) {
            match key {
                "cid" => {
                    cid = Some(
                        value
                            .parse()
                            .map_err(|_| format!("invalid vsock CID {value:?}: {usage}"))?,
                    )
                }
                "socket" if !value.is_empty() => socket = Some(PathBuf::from(value)),
                _ => return Err(format!("invalid vsock option {key:?}: {usage}")),
            }
        }
        match (cid, socket) {
            (Some(cid), Some(socket)) => Ok(VsockConfig { cid, socket }),
            _ => Err(format!("vsock needs a CID and a socket: {usage}")),
        }
    }
}
