//! The VM configuration: what `corral vmm run` takes as flags or as a TOML file, and what instance
//! definitions will embed later. Validation here covers everything that does not need the kernel
//! file or `/dev/kvm`; the rest is checked when the VM is built.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    #[error("cannot read vm config {path}: {source}")]
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
}

/// A guest memory size, written like `256M`, `1G` or `512MiB` (binary units: K, M, G, T).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemorySize(pub u64);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid memory size {0:?}: write a number with a unit, like 256M or 1G (units K, M, G, T)"
)]
pub struct MemorySizeError(String);

impl FromStr for MemorySize {
    type Err = MemorySizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || MemorySizeError(text.to_owned());
        let trimmed = text.trim();
        let digits_end = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let (number, unit) = trimmed.split_at(digits_end);
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(invalid()),
        };
        number
            .checked_mul(1 << shift)
            .map(MemorySize)
            .ok_or_else(invalid)
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        for (shift, unit) in UNITS {
            if self.0 >= 1 << shift && self.0 % (1 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

impl Serialize for MemorySize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

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

/// What happens when the guest powers off, reboots or crashes (Xen's `on_*` domain settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The VMM process exits with the reason.
    Destroy,
    /// The guest is started again from scratch in the same process.
    Restart,
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "destroy" => Ok(Action::Destroy),
            "restart" => Ok(Action::Restart),
            _ => Err(format!("invalid action {text:?}: use destroy or restart")),
        }
    }
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
        }
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
        ];
        for path in sockets.into_iter().flatten() {
            if path.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
                return Err(ConfigError::SocketPathTooLong(path.clone()));
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

    #[test]
    fn memory_sizes_parse_with_binary_units() {
        assert_eq!("256M".parse(), Ok(MemorySize(256 << 20)));
        assert_eq!("1G".parse(), Ok(MemorySize(1 << 30)));
        assert_eq!("512MiB".parse(), Ok(MemorySize(512 << 20)));
        assert_eq!("64k".parse(), Ok(MemorySize(64 << 10)));
        assert!("256".parse::<MemorySize>().is_err());
        assert!("M".parse::<MemorySize>().is_err());
        assert!("1.5G".parse::<MemorySize>().is_err());
        assert!("99999999999T".parse::<MemorySize>().is_err());
        assert_eq!(MemorySize(1 << 30).to_string(), "1G");
        assert_eq!(MemorySize(1536 << 20).to_string(), "1536M");
    }

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
