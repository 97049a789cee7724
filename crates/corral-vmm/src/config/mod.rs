//! The VM configuration: what `corral vmm run` takes as flags or as a TOML file, and what instance
//! definitions will embed later. Validation here covers everything that does not need the kernel
//! file or `/dev/kvm`; the rest is checked when the VM is built.

use std::path::{Path, PathBuf};

pub use corral_control::policy::Action;
pub use corral_control::restart::RestartLimit;
pub use corral_control::size::{MemorySize, MemorySizeError};
use serde::{Deserialize, Serialize};

mod devices;
mod mac;

pub use devices::{DiskConfig, NicConfig, SerialTarget, VsockConfig};
pub use mac::{MacAddress, MacAddressError};

/// Linux's x86 `COMMAND_LINE_SIZE` (including the terminating NUL): the longest command line a
/// kernel booted through PVH or the ELF entry accepts. bzImages state their own limit.
pub const MAX_CMDLINE_BYTES: usize = 2048;

/// The smallest guest memory corral accepts: below this not even the boot structures fit.
pub const MIN_MEMORY_BYTES: u64 = 2 << 20;

/// The largest guest memory corral accepts (1 TiB); more is almost certainly a typo.
pub const MAX_MEMORY_BYTES: u64 = 1 << 40;

/// The most vCPUs corral builds an MP table for (APIC ids are 8 bits and one id is the I/O APIC's).
pub const MAX_VCPUS: u8 = 254;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The command line used when none is given: serial console, and a panic ends the VM at once.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read vm config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid vm config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no kernel given; pass --kernel PATH or set `kernel` in the config file")]
    NoKernel,
    #[error("vcpus must be between 1 and {MAX_VCPUS}, not {0}")]
    Vcpus(u8),
    #[error("memory size {0} is too small; give at least 2M")]
    MemoryTooSmall(MemorySize),
    #[error("memory size {0} is too large; corral accepts at most 1T")]
    MemoryTooLarge(MemorySize),
    #[error("memory size {0} is not a multiple of 4K pages")]
    MemoryUnaligned(MemorySize),
    #[error(
        "kernel command line is {len} bytes, longer than the {max} bytes the kernel accepts; \
         shorten it"
    )]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte or a non-ASCII character")]
    CmdlineInvalid,
    #[error("socket path {0} is longer than 107 bytes; use a shorter path")]
    SocketPathTooLong(PathBuf),
    #[error("disk {path}: serial {serial:?} must be at most 20 printable ASCII characters")]
    DiskSerial { path: PathBuf, serial: String },
    #[error("network interface {index}: give `tap`, `bridge` or both")]
    NicBackend { index: usize },
    #[error("network interface {index}: MAC {mac} is a multicast or all-zero address; use a unicast one such as 52:54:00:12:34:56")]
    NicMac { index: usize, mac: MacAddress },
    #[error("vsock guest CID {0} is reserved; use 3 or more (below 2^32)")]
    VsockCid(u64),
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_owned()
}

/// Defaults shared with instance definitions (serde `default =` paths).
pub mod defaults {
    use super::{Action, MemorySize};

    pub fn vcpus() -> u8 {
        1
    }
    pub fn memory() -> MemorySize {
        MemorySize(256 << 20)
    }
    pub fn on_poweroff() -> Action {
        Action::Destroy
    }
    pub fn on_reboot() -> Action {
        Action::Restart
    }
    pub fn on_crash() -> Action {
        Action::Destroy
    }
    pub fn seccomp() -> bool {
        true
    }
    /// Serialise `seccomp` only when it is off.
    pub fn is_seccomp(on: &bool) -> bool {
        *on
    }
}

/// One VM. Relative paths in a config file are relative to the file's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// An x86_64 ELF vmlinux (booted through its PVH entry when it has one) or a bzImage.
    pub kernel: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    #[serde(default = "defaults::vcpus")]
    pub vcpus: u8,
    #[serde(default = "defaults::memory")]
    pub memory: MemorySize,
    #[serde(default)]
    pub serial: SerialTarget,
    /// With a socket console, also append everything the guest prints to this file (rotated to
    /// `<file>.1` at 1 MiB), so it can be read while no client is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_log: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    #[serde(default = "defaults::on_poweroff")]
    pub on_poweroff: Action,
    #[serde(default = "defaults::on_reboot")]
    pub on_reboot: Action,
    #[serde(default = "defaults::on_crash")]
    pub on_crash: Action,
    /// How often the `on_*` policies may restart the guest before the VM ends (`restart-limit`).
    #[serde(default)]
    pub restart_limit: RestartLimit,
    /// A virtio-rng device fed from the host's getrandom.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rng: bool,
    /// virtio-blk disks, in the order the guest finds them (vda, vdb, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// virtio-net interfaces, in the order the guest finds them (eth0, eth1, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// Track the pages written to guest memory, so that diff snapshots can be taken (off by
    /// default: KVM's dirty log makes the guest's first write to each page after a snapshot
    /// fault).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub track_dirty_pages: bool,
    /// Per-thread seccomp filters (on unless turned off for debugging; see docs/vmm.md).
    #[serde(
        default = "defaults::seccomp",
        skip_serializing_if = "defaults::is_seccomp"
    )]
    pub seccomp: bool,
}

impl VmConfig {
    /// A config with defaults for everything but the kernel.
    pub fn new(kernel: PathBuf) -> VmConfig {
        VmConfig {
            kernel,
            initrd: None,
            cmdline: default_cmdline(),
            vcpus: defaults::vcpus(),
            memory: defaults::memory(),
            serial: SerialTarget::default(),
            console_log: None,
            control_socket: None,
            on_poweroff: defaults::on_poweroff(),
            on_reboot: defaults::on_reboot(),
            on_crash: defaults::on_crash(),
            restart_limit: RestartLimit::default(),
            rng: false,
            disks: Vec::new(),
            nics: Vec::new(),
            vsock: None,
            track_dirty_pages: false,
            seccomp: defaults::seccomp(),
        }
    }

    /// How many virtio devices the config asks for.
    pub fn virtio_device_count(&self) -> usize {
        self.disks.len()
            + self.nics.len()
            + usize::from(self.rng)
            + usize::from(self.vsock.is_some())
    }

    /// This config with a random MAC for each network interface that has none: chosen once per
    /// VMM process, so a snapshot saves the MAC its guest knows and a restore gives it the same.
    pub fn with_chosen_macs(&self) -> VmConfig {
        let mut config = self.clone();
        for nic in &mut config.nics {
            nic.mac.get_or_insert_with(MacAddress::random_local);
        }
        config
    }

    /// Parses a TOML config; `path` names it in errors and anchors relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<VmConfig, ConfigError> {
        let mut config: VmConfig = toml::from_str(text).map_err(|err| {
            let line = err.span().map(|span| {
                1 + text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
            });
            ConfigError::Parse {
                path: path.to_owned(),
                message: match line {
                    Some(line) => format!("line {line}: {}", err.message()),
                    None => err.message().to_owned(),
                },
            }
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Reads and parses a TOML config file.
    pub fn from_file(path: &Path) -> Result<VmConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        VmConfig::from_toml(&text, path)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.kernel);
        if let Some(initrd) = &mut self.initrd {
            resolve(initrd);
        }
        if let Some(socket) = &mut self.control_socket {
            resolve(socket);
        }
        if let Some(log) = &mut self.console_log {
            resolve(log);
        }
        if let SerialTarget::File(path) | SerialTarget::Socket(path) = &mut self.serial {
            resolve(path);
        }
        for disk in &mut self.disks {
            resolve(&mut disk.path);
            for place in disk.allow_backing.iter_mut().flatten() {
                resolve(place);
            }
        }
        if let Some(vsock) = &mut self.vsock {
            resolve(&mut vsock.socket);
        }
    }

    /// Checks everything that needs neither the kernel file nor KVM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kernel.as_os_str().is_empty() {
            return Err(ConfigError::NoKernel);
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        let memory = self.memory;
        if memory.0 < MIN_MEMORY_BYTES {
            return Err(ConfigError::MemoryTooSmall(memory));
        }
        if memory.0 > MAX_MEMORY_BYTES {
            return Err(ConfigError::MemoryTooLarge(memory));
        }
        if memory.0 % 4096 != 0 {
            return Err(ConfigError::MemoryUnaligned(memory));
        }
        check_cmdline(&self.cmdline, MAX_CMDLINE_BYTES)?;
        let sockets = [
            self.control_socket.as_ref(),
            match &self.serial {
                SerialTarget::Socket(path) => Some(path),
                _ => None,
            },
            self.vsock.as_ref().map(|vsock| &vsock.socket),
        ];
        for path in sockets.into_iter().flatten() {
            // Guest-initiated vsock connections use `<socket>_<port>`: leave room for the port.
            let room = if Some(path) == self.vsock.as_ref().map(|v| &v.socket) {
                11
            } else {
                0
            };
            if path.as_os_str().len() + room > MAX_SOCKET_PATH_BYTES {
                return Err(ConfigError::SocketPathTooLong(path.clone()));
            }
        }
        for disk in &self.disks {
            if let Some(serial) = &disk.serial {
                if serial.len() > corral_disk::SERIAL_LEN
                    || !serial.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(ConfigError::DiskSerial {
                        path: disk.path.clone(),
                        serial: serial.clone(),
                    });
                }
            }
        }
        for (index, nic) in self.nics.iter().enumerate() {
            nic.validate(index)?;
        }
        if let Some(vsock) = &self.vsock {
            if vsock.cid < 3 || vsock.cid > u64::from(u32::MAX) {
                return Err(ConfigError::VsockCid(vsock.cid));
            }
        }
        Ok(())
    }
}

/// Checks that `cmdline` plus its terminating NUL fits in `max` bytes and is plain ASCII.
pub fn check_cmdline(cmdline: &str, max: usize) -> Result<(), ConfigError> {
    if cmdline.len() + 1 > max {
        return Err(ConfigError::CmdlineTooLong {
            len: cmdline.len(),
            max: max.saturating_sub(1),
        });
    }
    if !cmdline.bytes().all(|b| b.is_ascii() && b != 0) {
        return Err(ConfigError::CmdlineInvalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_disk::DiskFormat;

    #[test]
    fn toml_config_parses_with_defaults_and_relative_paths() {
        let config = VmConfig::from_toml(
            r#"
                kernel = "vmlinux"
                memory = "512M"
                vcpus = 2
                serial = { file = "console.log" }
                on_reboot = "destroy"
            "#,
            Path::new("/vms/web/vm.toml"),
        )
        .unwrap();
        assert_eq!(config.kernel, Path::new("/vms/web/vmlinux"));
        assert_eq!(config.memory, MemorySize(512 << 20));
        assert_eq!(config.vcpus, 2);
        assert_eq!(
            config.serial,
            SerialTarget::File("/vms/web/console.log".into())
        );
        assert_eq!(config.on_reboot, Action::Destroy);
        assert_eq!(config.on_poweroff, Action::Destroy);
        assert_eq!(config.cmdline, DEFAULT_CMDLINE);
        config.validate().unwrap();

        // The serialised form reads back to the same config.
        let text = toml::to_string(&config).unwrap();
        assert_eq!(
            VmConfig::from_toml(&text, Path::new("/x.toml")).unwrap(),
            config
        );
    }

    #[test]
    fn toml_config_errors_name_the_problem() {
        let path = Path::new("vm.toml");
        let unknown = VmConfig::from_toml("kernel = \"k\"\nmemroy = \"1G\"", path).unwrap_err();
        assert!(unknown.to_string().contains("memroy"), "{unknown}");
        let bad_size = VmConfig::from_toml("kernel = \"k\"\nmemory = \"lots\"", path).unwrap_err();
        assert!(bad_size.to_string().contains("256M"), "{bad_size}");
        let bad_action =
            VmConfig::from_toml("kernel = \"k\"\non_crash = \"explode\"", path).unwrap_err();
        assert!(bad_action.to_string().contains("line 2"), "{bad_action}");
        assert!(bad_action.to_string().contains("explode"), "{bad_action}");
    }

    #[test]
    fn validation_rejects_out_of_range_values() {
        let mut config = VmConfig::new("k".into());
        config.vcpus = 0;
        assert!(matches!(config.validate(), Err(ConfigError::Vcpus(0))));
        config.vcpus = 1;
        config.memory = MemorySize(1 << 20);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::MemoryTooSmall(_))
        ));
        config.memory = MemorySize((4 << 20) + 1);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::MemoryUnaligned(_))
        ));
        config.memory = MemorySize(64 << 20);
        config.cmdline = "x".repeat(MAX_CMDLINE_BYTES);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::CmdlineTooLong { .. })
        ));
        config.cmdline = "console=ttyS0".into();
        config.control_socket = Some(PathBuf::from("/".repeat(200)));
        assert!(matches!(
            config.validate(),
            Err(ConfigError::SocketPathTooLong(_))
        ));
    }

    #[test]
    fn devices_parse_from_toml_and_flags() {
        let config = VmConfig::from_toml(
            r#"
                kernel = "vmlinux"
                rng = true
                [[disks]]
                path = "root.qcow2"
                format = "qcow2"
                serial = "root-disk"
                [[disks]]
                path = "/srv/data.img"
                readonly = true
                [[nics]]
                bridge = "br0"
                mac = "52:54:00:AB:cd:01"
                [vsock]
                cid = 7
                socket = "vsock.sock"
            "#,
            Path::new("/vms/web/vm.toml"),
        )
        .unwrap();
        config.validate().unwrap();
        assert!(config.rng);
        assert_eq!(config.disks[0].path, Path::new("/vms/web/root.qcow2"));
        assert_eq!(config.disks[0].format, Some(DiskFormat::Qcow2));
        assert!(config.disks[1].readonly);
        assert_eq!(
            config.nics[0].mac,
            Some(MacAddress([0x52, 0x54, 0, 0xab, 0xcd, 1]))
        );
        assert_eq!(
            config.vsock.as_ref().unwrap().socket,
            Path::new("/vms/web/vsock.sock")
        );
        assert_eq!(config.virtio_device_count(), 5);
        let text = toml::to_string(&config).unwrap();
        assert_eq!(
            VmConfig::from_toml(&text, Path::new("/x.toml")).unwrap(),
            config
        );

        let disk: DiskConfig = "path=a.raw,format=raw,readonly,serial=s1".parse().unwrap();
        assert_eq!(disk.path, Path::new("a.raw"));
        assert!(disk.readonly);
        assert_eq!(disk.serial.as_deref(), Some("s1"));
        assert_eq!(
            "b.img".parse::<DiskConfig>().unwrap().path,
            Path::new("b.img")
        );
        assert!("path=a,format=vmdk".parse::<DiskConfig>().is_err());
        assert!("format=raw".parse::<DiskConfig>().is_err());
        let nic: NicConfig = "tap=tap0,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!(nic.tap.as_deref(), Some("tap0"));
        assert!("tap=tap0,mac=zz".parse::<NicConfig>().is_err());
        let vsock: VsockConfig = "cid=3,socket=/run/v.sock".parse().unwrap();
        assert_eq!(vsock.cid, 3);
        assert!("cid=3".parse::<VsockConfig>().is_err());
    }

    #[test]
    fn device_validation_names_the_problem() {
        let mut config = VmConfig::new("k".into());
        config.nics.push(NicConfig::default());
        assert!(matches!(
            config.validate(),
            Err(ConfigError::NicBackend { index: 0 })
        ));
        config.nics[0] = "tap=t0,mac=01:00:5e:00:00:01".parse().unwrap();
        assert!(matches!(config.validate(), Err(ConfigError::NicMac { .. })));
        config.nics.clear();
        config
            .disks
            .push("path=d,serial=this-serial-is-too-long".parse().unwrap());
        assert!(matches!(
            config.validate(),
            Err(ConfigError::DiskSerial { .. })
        ));
        config.disks.clear();
        config.vsock = Some("cid=2,socket=v.sock".parse().unwrap());
        assert!(matches!(config.validate(), Err(ConfigError::VsockCid(2))));
    }

    #[test]
    fn macs_parse_print_and_derive_stably() {
        let mac: MacAddress = "52:54:00:0a:0B:ff".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:0a:0b:ff");
        for bad in [
            "52:54:00:0a:0b",
            "52:54:00:0a:0b:ff:00",
            "5254000a0bff",
            "52:54:00:0a:0b:g1",
        ] {
            assert!(bad.parse::<MacAddress>().is_err(), "{bad}");
        }
        let a = MacAddress::local_from_seed(b"instance-a");
        assert_eq!(a, MacAddress::local_from_seed(b"instance-a"));
        assert_ne!(a, MacAddress::local_from_seed(b"instance-b"));
        for mac in [a, MacAddress::random_local()] {
            assert_eq!(mac.0[0] & 0b11, 0b10, "locally administered unicast: {mac}");
        }
    }

    #[test]
    fn serial_targets_parse_from_flags() {
        assert_eq!("stdout".parse(), Ok(SerialTarget::Stdout));
        assert_eq!(
            "file:/tmp/c.log".parse(),
            Ok(SerialTarget::File("/tmp/c.log".into()))
        );
        assert_eq!(
            "socket:c.sock".parse(),
            Ok(SerialTarget::Socket("c.sock".into()))
        );
        assert!("file:".parse::<SerialTarget>().is_err());
        assert!("tty".parse::<SerialTarget>().is_err());
    }
}
