//! Instance definitions: `instances/NAME/instance.toml`, plain TOML an admin reads and edits like
//! a Xen domain file. Unknown fields are rejected; every error names the field and the fix.
//! Relative paths are relative to the instance's directory.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use corral_control::disk_spec::{DiskSpec, DiskSpecError};
use corral_control::policy::Action;
use corral_control::restart::RestartLimit;
use corral_control::size::MemorySize;
use corral_vmm::config::defaults;

use crate::nic::Nic;
use serde::{Deserialize, Serialize};

/// The longest instance name (a DNS label, so it can be the hostname).
pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error(
        "invalid instance name {0:?}: use 1 to 63 letters, digits, '-', '_' or '.', starting with \
         a letter or digit"
    )]
    Name(String),
    #[error("invalid instance definition {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
    #[error(transparent)]
    CloudInit(#[from] corral_cloudinit::SeedError),
}

fn field_error(field: &str, message: impl Into<String>) -> DefinitionError {
    DefinitionError::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

/// VM or container: the only place the two differ is the driver that runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Vm,
    Container,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Vm => "vm",
            Self::Container => "container",
        })
    }
}

/// Where a VM's kernel comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootFrom {
    /// The host files `kernel` and `initrd` name.
    #[default]
    Kernel,
    /// The VM's first disk: its boot configuration (grub.cfg, BLS entries, /boot/vmlinuz-*) is
    /// read at every start and the kernel and initrd it names are copied out (pygrub's way).
    Disk,
}

/// How a VM boots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    #[serde(default, skip_serializing_if = "is_default")]
    pub from: BootFrom,
    /// ELF vmlinux (PVH) or bzImage; empty (and left out) when booting from the disk.
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub kernel: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn path_is_empty(path: &Path) -> bool {
    path.as_os_str().is_empty()
}

/// What a container runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The root filesystem directory.
    pub rootfs: PathBuf,
    /// The command of PID 1; for a system container (`init = true`) it defaults to `/sbin/init`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// A system container: PID 1 is an init system, in its own user namespace by default, with
    /// a delegated cgroup, tmpfs on /run and /tmp, and stopped with `stop_signal`.
    #[serde(default)]
    pub init: bool,
    /// The signal `corral stop` sends PID 1 (`SIGRTMIN+3`, `PWR`, `15`). Without it: SIGTERM
    /// for an application; for a system container SIGRTMIN+3 when its init is systemd (its halt
    /// request; systemd's SIGPWR target does nothing by default), else SIGPWR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `NAME=value` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Defaults to the instance name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `uid[:gid]` of PID 1 (root by default; a uid alone runs in group 0, as with runc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Give PID 1 a terminal (so `corral console` is interactive).
    #[serde(default = "yes")]
    pub tty: bool,
    /// The seccomp profile: `"default"` (podman's; the default), `"unconfined"`, or the path of
    /// a profile in the same format (relative paths from the instance directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<String>,
    /// A user namespace: `"auto"` maps the container's root to corral's subordinate id range;
    /// `"host"` (the default of a definition without the field) shares the host's ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<UserNs>,
}

/// Whether a container gets its own user namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserNs {
    /// Share the host's user ids: the container's root is the host's root.
    Host,
    /// Map ids 0..65535 to corral's range from /etc/subuid and /etc/subgid.
    Auto,
}

impl std::str::FromStr for UserNs {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "host" => Ok(UserNs::Host),
            "auto" => Ok(UserNs::Auto),
            other => Err(format!(
                "{other:?} is not a user namespace mode; use auto or host"
            )),
        }
    }
}

impl ContainerSpec {
    /// A container running the default command in `rootfs`.
    pub fn new(rootfs: impl Into<PathBuf>) -> Self {
        Self {
            rootfs: rootfs.into(),
            command: Vec::new(),
            init: false,
            stop_signal: None,
            env: Vec::new(),
            cwd: None,
            hostname: None,
            user: None,
            tty: true,
            seccomp: None,
            userns: None,
        }
    }

    /// The command PID 1 runs.
    pub fn effective_command(&self) -> Vec<String> {
        match (self.command.is_empty(), self.init) {
            (false, _) => self.command.clone(),
            (true, true) => vec!["/sbin/init".to_string()],
            (true, false) => vec!["/bin/sh".to_string()],
        }
    }
}

/// Resource limits beyond cpus and memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most processes a container may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Relative CPU weight, 1 to 10000 (100 is the default share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
}

impl Limits {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// Disk image formats corral attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
    /// A directory bind-mounted into a container.
    Dir,
}

impl DiskFormat {
    /// The image format, or `None` for a directory.
    pub fn image_format(self) -> Option<corral_disk::DiskFormat> {
        match self {
            DiskFormat::Raw => Some(corral_disk::DiskFormat::Raw),
            DiskFormat::Qcow2 => Some(corral_disk::DiskFormat::Qcow2),
            DiskFormat::Dir => None,
        }
    }
}

impl From<corral_disk::DiskFormat> for DiskFormat {
    fn from(format: corral_disk::DiskFormat) -> Self {
        match format {
            corral_disk::DiskFormat::Raw => DiskFormat::Raw,
            corral_disk::DiskFormat::Qcow2 => DiskFormat::Qcow2,
        }
    }
}

/// One disk: a file or block device (VMs), or a directory (containers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// A file, block device, logical volume or directory on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub path: Option<PathBuf>,
    /// A volume of the default storage pool, by name (instead of `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The image format of a `path` disk. Decided once, when the disk is attached (`corral
    /// create`, `corral config edit`: from the file's magic when not given) and recorded here; a
    /// start never guesses it again, because a guest can write a qcow2 header into its raw disk.
    /// A pool volume's format is its file's suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskFormat>,
    /// Backing files (or directories of them) a qcow2 disk may use besides the storage pool's:
    /// a qcow2 header is untrusted, so its chain may not reach other host files unless listed
    /// here. Relative paths are relative to the instance directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub allow_backing: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    /// The id the guest sees (virtio-blk serial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Mount point inside a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A `--disk` argument that is not a disk of an instance.
#[derive(Debug, thiserror::Error)]
pub enum DiskArgError {
    #[error(transparent)]
    Spec(#[from] DiskSpecError),
    #[error("disk {spec:?}: unknown format {format:?}; use raw, qcow2 or dir")]
    Format { spec: String, format: String },
    #[error("disk {spec:?}: cannot make {} absolute", path.display())]
    Absolute {
        spec: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FromStr for Disk {
    type Err = DiskArgError;

    /// A disk in corral's one disk grammar ([`DiskSpec`]), its paths made absolute.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let spec: DiskSpec = text.parse()?;
        let absolute = |path: PathBuf| {
            std::path::absolute(&path).map_err(|source| DiskArgError::Absolute {
                spec: text.to_owned(),
                path,
                source,
            })
        };
        let format = match spec.format.as_deref() {
            None => None,
            Some("raw") => Some(DiskFormat::Raw),
            Some("qcow2") => Some(DiskFormat::Qcow2),
            Some("dir") => Some(DiskFormat::Dir),
            Some(other) => {
                return Err(DiskArgError::Format {
                    spec: text.to_owned(),
                    format: other.to_owned(),
                })
            }
        };
        Ok(Disk {
            path: spec.path.map(absolute).transpose()?,
            volume: spec.volume,
            format,
            allow_backing: spec
                .allow_backing
                .into_iter()
                .map(absolute)
                .collect::<Result<_, _>>()?,
            readonly: spec.readonly,
            serial: spec.serial,
            target: spec.target,
        })
    }
}

fn yes() -> bool {
    true
}

/// The image an instance was made from (`corral create --image`), and how the instance holds
/// its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    /// The image's SHA-256 fingerprint.
    pub fingerprint: String,
    /// What the image was called when the instance was made (an alias), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub storage: ImageStorage,
}

/// How an instance holds its image's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStorage {
    /// A container's root filesystem, cloned file by file with FICLONE (shares blocks with the
    /// image until written; independent of it).
    Reflink,
    /// A container's root filesystem, copied.
    Copy,
    /// A VM's disk is a qcow2 overlay whose backing file is the image's disk (a linked clone):
    /// the image cannot be deleted while the instance exists.
    Linked,
    /// A VM's disk is a flattened copy of the image's (`--full`).
    Full,
}

impl ImageStorage {
    /// Whether the instance reads from the image while it exists.
    pub fn uses_image(self) -> bool {
        matches!(self, ImageStorage::Linked)
    }
}

impl std::fmt::Display for ImageStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Reflink => "reflink copy",
            Self::Copy => "copy",
            Self::Linked => "linked clone: a qcow2 overlay on the image's disk",
            Self::Full => "full copy",
        })
    }
}

fn is_default_restart_limit(limit: &RestartLimit) -> bool {
    *limit == RestartLimit::default()
}

/// An instance definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Required; may be left out of a file given to `corral create NAME --file`.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Required; `corral create` generates one when a file leaves it out.
    #[serde(default)]
    pub uuid: String,
    /// vCPUs of a VM; CPU quota (in CPUs) of a container.
    #[serde(default = "defaults::vcpus")]
    pub cpus: u8,
    /// RAM of a VM; memory limit of a container.
    #[serde(default = "defaults::memory")]
    pub memory: MemorySize,
    /// Start with `corral autostart` (at host boot).
    #[serde(default)]
    pub autostart: bool,
    #[serde(default = "defaults::on_poweroff")]
    pub on_poweroff: Action,
    #[serde(default = "defaults::on_reboot")]
    pub on_reboot: Action,
    #[serde(default = "defaults::on_crash")]
    pub on_crash: Action,
    /// How often the `on_*` policies may restart the guest before it ends (`restart-limit`).
    #[serde(default, skip_serializing_if = "is_default_restart_limit")]
    pub restart_limit: RestartLimit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<Boot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    #[serde(default, skip_serializing_if = "Limits::is_default")]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// Network interfaces, in order: eth0, eth1, ... (a VM's are virtio-net on a tap, a
    /// container's veth pairs; see docs/container-networking.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// The image the instance was made from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSource>,
    /// A cloud-init NoCloud seed for the guest's first boot (docs/cloud-init.md): a VM gets it
    /// as a read-only CIDATA disk after its own, a container in its root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<corral_cloudinit::CloudInit>,
}

/// What [`validate_name`] accepts, as a regular expression (the API's document gives it).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";

/// Checks an instance name.
pub fn validate_name(name: &str) -> Result<(), DefinitionError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(DefinitionError::Name(name.to_string()))
    }
}

/// Checks a UUID's text form (8-4-4-4-12 hex digits).
pub fn validate_uuid(uuid: &str) -> bool {
    let groups: Vec<&str> = uuid.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A new random (version 4) UUID.
pub fn new_uuid() -> Result<String, DefinitionError> {
    let id = corral_host::machine_id::MachineId::generate()
        .map_err(|e| field_error("uuid", e.to_string()))?;
    let hex = id.to_string();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

impl Definition {
    /// A definition with every default: a VM with an empty kernel path to fill in, or a container
    /// whose root filesystem is `rootfs` in the instance directory.
    pub fn new(name: impl Into<String>, kind: Kind, uuid: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind,
            uuid: uuid.into(),
            cpus: defaults::vcpus(),
            memory: defaults::memory(),
            autostart: false,
            on_poweroff: defaults::on_poweroff(),
            on_reboot: defaults::on_reboot(),
            on_crash: defaults::on_crash(),
            restart_limit: RestartLimit::default(),
            boot: (kind == Kind::Vm).then(|| Boot {
                from: BootFrom::Kernel,
                kernel: PathBuf::new(),
                initrd: None,
                cmdline: None,
            }),
            container: (kind == Kind::Container).then(|| ContainerSpec::new("rootfs")),
            limits: Limits::default(),
            disks: Vec::new(),
            nics: Vec::new(),
            image: None,
            cloud_init: None,
        }
    }

    /// Parses TOML without validating (the caller may fill in the name and uuid first).
    pub fn parse(text: &str, path: &Path) -> Result<Self, DefinitionError> {
        toml::from_str(text).map_err(|err| DefinitionError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &err),
        })
    }

    /// Parses and validates TOML; `path` names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, DefinitionError> {
        let definition = Self::parse(text, path)?;
        definition.validate_in(path)?;
        Ok(definition)
    }

    /// Validates, naming `path` in the error.
    pub fn validate_in(&self, path: &Path) -> Result<(), DefinitionError> {
        self.validate().map_err(|err| {
            // The message stands for the whole error: causes (a YAML error's line) go in too.
            DefinitionError::Parse {
                path: path.to_path_buf(),
                message: corral_host::error_chain(&err),
            }
        })
    }

    /// The TOML text of the definition.
    pub fn to_toml(&self) -> String {
        // Serialising plain data structures to TOML cannot fail; an empty string would only
        // appear if the serializer broke, and then validation of the saved file catches it.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks everything that does not need the file system.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if self.name.is_empty() {
            return Err(field_error("name", "is missing; give the instance a name"));
        }
        if self.uuid.is_empty() {
            return Err(field_error(
                "uuid",
                "is missing; give it a UUID or leave the file to `corral create --file`",
            ));
        }
        validate_name(&self.name)?;
        if !validate_uuid(&self.uuid) {
            return Err(field_error(
                "uuid",
                format!("{:?} is not a UUID (8-4-4-4-12 hex digits)", self.uuid),
            ));
        }
        if self.cpus == 0 || self.cpus > corral_vmm::config::MAX_VCPUS {
            return Err(field_error(
                "cpus",
                format!("must be between 1 and {}", corral_vmm::config::MAX_VCPUS),
            ));
        }
        if self.memory.0 < corral_vmm::config::MIN_MEMORY_BYTES {
            return Err(field_error(
                "memory",
                format!("{} is too small; give at least 2M", self.memory),
            ));
        }
        match self.kind {
            Kind::Vm => {
                let boot = self
                    .boot
                    .as_ref()
                    .ok_or_else(|| field_error("boot", "a vm needs [boot] with a kernel"))?;
                match boot.from {
                    BootFrom::Kernel if boot.kernel.as_os_str().is_empty() => {
                        return Err(field_error(
                            "boot.kernel",
                            "is empty; give the kernel's path, or boot the kernel inside the \
                             first disk with from = \"disk\"",
                        ));
                    }
                    BootFrom::Kernel => {}
                    BootFrom::Disk => {
                        if !boot.kernel.as_os_str().is_empty() || boot.initrd.is_some() {
                            return Err(field_error(
                                "boot",
                                "from = \"disk\" takes the kernel and initrd from the disk; \
                                 remove kernel and initrd (cmdline may stay: it replaces the \
                                 disk's)",
                            ));
                        }
                        if self.disks.is_empty() {
                            return Err(field_error(
                                "boot.from",
                                "is \"disk\" but the vm has no disk; add a [[disks]] holding \
                                 its system",
                            ));
                        }
                    }
                }
                if self.container.is_some() {
                    return Err(field_error(
                        "container",
                        "is only for containers; remove it",
                    ));
                }
                if self.limits.pids.is_some() {
                    return Err(field_error(
                        "limits.pids",
                        "is only for containers; remove it",
                    ));
                }
            }
            Kind::Container => {
                let spec = self.container.as_ref().ok_or_else(|| {
                    field_error("container", "a container needs [container] with a rootfs")
                })?;
                if spec.rootfs.as_os_str().is_empty() {
                    return Err(field_error(
                        "container.rootfs",
                        "is empty; give a directory",
                    ));
                }
                if self.boot.is_some() {
                    return Err(field_error("boot", "is only for vms; remove it"));
                }
                if let Some(signal) = &spec.stop_signal {
                    corral_container::signal::parse_signal(signal)
                        .map_err(|e| field_error("container.stop_signal", e.to_string()))?;
                }
                if let Some(user) = &spec.user {
                    user.parse::<corral_container::user::UserIds>()
                        .map_err(|e| field_error("container.user", e.to_string()))?;
                }
                if let Some(bad) = spec.env.iter().find(|e| !e.contains('=')) {
                    return Err(field_error(
                        "container.env",
                        format!("{bad:?} is not NAME=value"),
                    ));
                }
            }
        }
        if self.limits.pids == Some(0) {
            return Err(field_error("limits.pids", "must be at least 1"));
        }
        if let Some(w) = self.limits.cpu_weight.filter(|w| !(1..=10000).contains(w)) {
            return Err(field_error(
                "limits.cpu_weight",
                format!("{w} is out of range; use 1 to 10000"),
            ));
        }
        for (i, disk) in self.disks.iter().enumerate() {
            self.validate_disk(i, disk)?;
        }
        for (i, nic) in self.nics.iter().enumerate() {
            if self.kind == Kind::Container && nic.tap.is_some() {
                return Err(field_error(
                    &format!("nics[{i}].tap"),
                    "is only for vms; a container's nic is a veth on `bridge = \"NAME\"`",
                ));
            }
            nic.validate()
                .map_err(|e| field_error(&format!("nics[{i}]"), e))?;
        }
        if let Some(cloud_init) = &self.cloud_init {
            cloud_init.check()?;
        }
        if let Some(image) = &self.image {
            if !corral_image::store::is_fingerprint(&image.fingerprint) {
                return Err(field_error(
                    "image.fingerprint",
                    "is not a SHA-256 fingerprint (64 lower-case hex digits)",
                ));
            }
            let for_vm = matches!(image.storage, ImageStorage::Linked | ImageStorage::Full);
            if for_vm != (self.kind == Kind::Vm) {
                return Err(field_error(
                    "image.storage",
                    format!("{:?} does not fit a {}", image.storage, self.kind),
                ));
            }
        }
        Ok(())
    }

    fn validate_disk(&self, index: usize, disk: &Disk) -> Result<(), DefinitionError> {
        let field = |name: &str| format!("disks[{index}].{name}");
        match (&disk.path, &disk.volume) {
            (Some(_), Some(_)) => {
                return Err(field_error(
                    &field("volume"),
                    "give either path or volume, not both",
                ))
            }
            (None, None) => {
                return Err(field_error(
                    &field("path"),
                    "give the disk's path or a volume name",
                ))
            }
            _ => {}
        }
        match self.kind {
            Kind::Container => match &disk.target {
                Some(t) if t.starts_with('/') => {}
                Some(t) => {
                    return Err(field_error(
                        &field("target"),
                        format!("{t:?} must be an absolute path inside the container"),
                    ))
                }
                None => {
                    return Err(field_error(
                        &field("target"),
                        "a container disk needs the mount point inside the container",
                    ))
                }
            },
            Kind::Vm => {
                if disk.target.is_some() {
                    return Err(field_error(
                        &field("target"),
                        "is only for containers; a vm sees its disks in order (vda, vdb, ...)",
                    ));
                }
                if disk.format == Some(DiskFormat::Dir) {
                    return Err(field_error(
                        &field("format"),
                        "a vm cannot use a directory as a disk",
                    ));
                }
            }
        }
        if self.kind == Kind::Container && !disk.allow_backing.is_empty() {
            return Err(field_error(
                &field("allow_backing"),
                "is only for vm disks (qcow2 backing files)",
            ));
        }
        Ok(())
    }

    /// The absolute form of `path`, which is relative to the instance directory `dir` if relative.
    pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.join(path)
        }
    }

    /// Sets one field from `key=value` text (`corral config set`), then revalidates.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), DefinitionError> {
        let parse_action = |v: &str| Action::from_str(v).map_err(|e| field_error(key, e));
        let parse_bool = |v: &str| match v {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(field_error(key, format!("{v:?} is not true or false"))),
        };
        fn container<'a>(
            d: &'a mut Definition,
            key: &str,
        ) -> Result<&'a mut ContainerSpec, DefinitionError> {
            d.container
                .as_mut()
                .ok_or_else(|| field_error(key, "is only for containers"))
        }
        fn boot<'a>(d: &'a mut Definition, key: &str) -> Result<&'a mut Boot, DefinitionError> {
            d.boot
                .as_mut()
                .ok_or_else(|| field_error(key, "is only for vms"))
        }
        let mut updated = self.clone();
        match key {
            "cpus" => {
                updated.cpus = value
                    .parse()
                    .map_err(|_| field_error(key, format!("{value:?} is not a number of cpus")))?
            }
            "memory" => {
                updated.memory = value
                    .parse()
                    .map_err(|e| field_error(key, format!("{e}")))?
            }
            "autostart" => updated.autostart = parse_bool(value)?,
            "on_poweroff" => updated.on_poweroff = parse_action(value)?,
            "on_reboot" => updated.on_reboot = parse_action(value)?,
            "on_crash" => updated.on_crash = parse_action(value)?,
            "restart_limit.burst" => {
                updated.restart_limit.burst = value.parse().map_err(|_| {
                    field_error(key, format!("{value:?} is not a number of restarts"))
                })?
            }
            "restart_limit.interval_secs" => {
                updated.restart_limit.interval_secs = value.parse().map_err(|_| {
                    field_error(key, format!("{value:?} is not a number of seconds"))
                })?
            }
            "boot.from" => {
                boot(&mut updated, key)?.from = match value {
                    "kernel" => BootFrom::Kernel,
                    "disk" => BootFrom::Disk,
                    other => {
                        return Err(field_error(
                            key,
                            format!("{other:?} is neither \"kernel\" nor \"disk\""),
                        ))
                    }
                }
            }
            "boot.kernel" => boot(&mut updated, key)?.kernel = value.into(),
            "boot.initrd" => boot(&mut updated, key)?.initrd = Some(value.into()),
            "boot.cmdline" => boot(&mut updated, key)?.cmdline = Some(value.into()),
            "container.rootfs" => container(&mut updated, key)?.rootfs = value.into(),
            "container.hostname" => container(&mut updated, key)?.hostname = Some(value.into()),
            "container.init" => container(&mut updated, key)?.init = parse_bool(value)?,
            "container.tty" => container(&mut updated, key)?.tty = parse_bool(value)?,
            "container.seccomp" => container(&mut updated, key)?.seccomp = Some(value.into()),
            "container.stop_signal" => {
                container(&mut updated, key)?.stop_signal = Some(value.into())
            }
            "container.userns" => {
                container(&mut updated, key)?.userns =
                    Some(value.parse().map_err(|e: String| field_error(key, e))?)
            }
            "container.command" => {
                container(&mut updated, key)?.command =
                    value.split_whitespace().map(str::to_string).collect()
            }
            "limits.pids" => {
                updated.limits.pids = Some(value.parse().map_err(|_| {
                    field_error(key, format!("{value:?} is not a number of processes"))
                })?)
            }
            "limits.cpu_weight" => {
                updated.limits.cpu_weight = Some(
                    value
                        .parse()
                        .map_err(|_| field_error(key, format!("{value:?} is not a weight")))?,
                )
            }
            "cloud_init.user_data" | "cloud_init.vendor_data" | "cloud_init.network_config" => {
                let table = updated.cloud_init.get_or_insert_with(Default::default);
                let slot = match key {
                    "cloud_init.user_data" => &mut table.user_data,
                    "cloud_init.vendor_data" => &mut table.vendor_data,
                    _ => &mut table.network_config,
                };
                *slot = cloud_init_content(value);
            }
            "cloud_init.seed_format" => {
                let table = updated.cloud_init.get_or_insert_with(Default::default);
                table.seed_format = match value {
                    "vfat" => corral_cloudinit::SeedFormat::Vfat,
                    "iso" => corral_cloudinit::SeedFormat::Iso,
                    _ => return Err(field_error(key, format!("{value:?} is not vfat or iso"))),
                };
            }
            _ if key.starts_with("cloud_init.meta_data.") => {
                let name = &key["cloud_init.meta_data.".len()..];
                let table = updated.cloud_init.get_or_insert_with(Default::default);
                if value.is_empty() {
                    table.meta_data.0.remove(name);
                } else {
                    table
                        .meta_data
                        .0
                        .insert(name.to_string(), toml::Value::String(value.to_string()));
                }
            }
            "name" | "type" | "uuid" => {
                return Err(field_error(
                    key,
                    "cannot be changed; create a new instance instead",
                ))
            }
            _ => {
                return Err(field_error(
                    key,
                    "is not a settable field; use `corral config edit` for disks and lists",
                ))
            }
        }
        updated.validate()?;
        *self = updated;
        Ok(())
    }
}

/// A `corral config set cloud_init.DOCUMENT=VALUE` value: `@PATH` names a file (read at each
/// start), empty removes the document, anything else is the document itself.
fn cloud_init_content(value: &str) -> Option<corral_cloudinit::Content> {
    match value.strip_prefix('@') {
        _ if value.is_empty() => None,
        Some(path) => Some(corral_cloudinit::Content::File(corral_cloudinit::FileRef {
            file: path.into(),
        })),
        None => Some(corral_cloudinit::Content::Inline(value.to_string())),
    }
}

/// One sentence from a TOML error: the line, the field at it, and what is wrong.
pub(crate) fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', "; ");
    let Some(span) = err.span() else {
        return message;
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) if !line.trim_start().starts_with('[') => {
            format!("line {line_no}, field `{}`: {}", key.trim(), err.message())
        }
        _ => format!("line {line_no}: {}", err.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_pattern_is_the_name_rule() {
        let pattern = regex_lite::Regex::new(NAME_PATTERN).unwrap();
        let long = "a".repeat(MAX_NAME_LEN);
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for name in [
            "web",
            "a",
            "Web-1_x.y",
            &long,
            &too_long,
            "",
            "-a",
            ".a",
            "a b",
            "ä",
            "a/b",
        ] {
            assert_eq!(
                pattern.is_match(name),
                validate_name(name).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_disk_argument_is_made_absolute_and_its_format_checked() {
        let cwd = std::env::current_dir().unwrap();
        let disk: Disk = "data.qcow2,ro,format=qcow2,allow_backing=bases"
            .parse()
            .unwrap();
        assert_eq!(disk.path, Some(cwd.join("data.qcow2")));
        assert_eq!(disk.format, Some(DiskFormat::Qcow2));
        assert_eq!(disk.allow_backing, vec![cwd.join("bases")]);
        assert!(disk.readonly);
        let volume: Disk = "vol=data,target=/srv,format=dir".parse().unwrap();
        assert_eq!(volume.volume.as_deref(), Some("data"));
        assert_eq!(volume.target.as_deref(), Some("/srv"));
        assert_eq!(
            "x.img,format=vmdk".parse::<Disk>().unwrap_err().to_string(),
            "disk \"x.img,format=vmdk\": unknown format \"vmdk\"; use raw, qcow2 or dir"
        );
        assert!(matches!(
            "x.img,bogus".parse::<Disk>(),
            Err(DiskArgError::Spec(_))
        ));
    }

    const VM: &str = r#"
name = "web"
type = "vm"
uuid = "f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b"
cpus = 2
memory = "512M"
on_reboot = "restart"

[boot]
kernel = "/boot/vmlinux"
cmdline = "console=ttyS0"

[[disks]]
path = "/vm/web.qcow2"
"#;

    const CONTAINER: &str = r#"
name = "box"
type = "container"
uuid = "0e5c8a52-3f0b-4b8e-9d55-2f8a7d9b6c11"
memory = "64M"

[container]
rootfs = "rootfs"
init = true

[limits]
pids = 100

[[disks]]
volume = "data"
target = "/data"
"#;

    fn parse(text: &str) -> Result<Definition, DefinitionError> {
        Definition::from_toml(text, Path::new("instance.toml"))
    }

    #[test]
    fn vm_definition_parses_and_round_trips() {
        let def = parse(VM).unwrap();
        assert_eq!(def.kind, Kind::Vm);
        assert_eq!(def.memory, MemorySize(512 << 20));
        assert_eq!(def.on_crash, Action::Destroy, "default");
        let again = parse(&def.to_toml()).unwrap();
        assert_eq!(again, def);
    }

    #[test]
    fn system_container_defaults_to_sbin_init() {
        let def = parse(CONTAINER).unwrap();
        let spec = def.container.as_ref().unwrap();
        assert_eq!(spec.effective_command(), vec!["/sbin/init"]);
        assert!(spec.tty);
        assert_eq!(def.limits.pids, Some(100));
    }

    #[test]
    fn a_stop_signal_is_checked_when_read_and_when_set() {
        let text = CONTAINER.replace("init = true", "init = true\nstop_signal = \"SIGRTMIN+3\"");
        let mut def = parse(&text).unwrap();
        assert_eq!(
            def.container.as_ref().unwrap().stop_signal.as_deref(),
            Some("SIGRTMIN+3")
        );
        let err = parse(&text.replace("SIGRTMIN+3", "SIGRTMIN+99")).unwrap_err();
        assert!(err.to_string().contains("container.stop_signal"), "{err}");
        def.set("container.stop_signal", "PWR").unwrap();
        assert!(def.set("container.stop_signal", "power button").is_err());
        assert_eq!(
            def.container.as_ref().unwrap().stop_signal.as_deref(),
            Some("PWR")
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse(&VM.replace("cpus = 2", "cpus = 2\nflavour = \"large\"")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown field `flavour`"), "{text}");
        assert!(text.contains("line 6"), "{text}");
    }

    #[test]
    fn twelve_parsecs_is_not_a_memory_size() {
        let err = parse(&VM.replace("\"512M\"", "\"12 parsecs\"")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("field `memory`"), "{text}");
        assert!(text.contains("12 parsecs"), "{text}");
    }

    #[test]
    fn invalid_toml_is_reported_with_its_line() {
        let err = parse("name = \"x\"\ntype = [unclosed\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn booting_from_the_disk_takes_no_kernel_and_needs_a_disk() {
        let base = "name = \"d\"\ntype = \"vm\"\nuuid = \"f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b\"\n";
        let disk = "[[disks]]\npath = \"system.qcow2\"\n";
        let ok = parse(&format!(
            "{base}[boot]\nfrom = \"disk\"\ncmdline = \"quiet\"\n{disk}"
        ))
        .unwrap();
        let boot = ok.boot.as_ref().unwrap();
        assert_eq!(boot.from, BootFrom::Disk);
        // Written back without an empty kernel, read back the same.
        let text = toml::to_string(&ok).unwrap();
        assert!(!text.contains("kernel"), "{text}");
        assert_eq!(parse(&text).unwrap(), ok);
        for (extra, wanted) in [
            (
                "from = \"disk\"\nkernel = \"/vmlinux\"\n",
                "remove kernel and initrd",
            ),
            (
                "from = \"disk\"\ninitrd = \"/initrd\"\n",
                "remove kernel and initrd",
            ),
            ("from = \"floppy\"\n", "floppy"),
            ("cmdline = \"quiet\"\n", "from = \"disk\""),
        ] {
            let err = parse(&format!("{base}[boot]\n{extra}{disk}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{extra}: {err}");
        }
        let err = parse(&format!("{base}[boot]\nfrom = \"disk\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no disk"), "{err}");
    }

    #[test]
    fn kind_specific_sections_are_enforced() {
        let no_boot = VM.replace(
            "[boot]\nkernel = \"/boot/vmlinux\"\ncmdline = \"console=ttyS0\"\n",
            "",
        );
        assert!(parse(&no_boot)
            .unwrap_err()
            .to_string()
            .contains("field `boot`"));
        let vm_with_pids = format!("{VM}\n[limits]\npids = 5\n");
        assert!(parse(&vm_with_pids)
            .unwrap_err()
            .to_string()
            .contains("limits.pids"));
        let no_target = CONTAINER.replace("target = \"/data\"\n", "");
        assert!(parse(&no_target)
            .unwrap_err()
            .to_string()
            .contains("disks[0].target"));
    }

    #[test]
    fn names_are_checked() {
        for good in ["web", "web-1", "a", "db_2.prod"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "-web", ".hidden", "a/b", "with space", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_uuids_are_valid_and_unique() {
        let a = new_uuid().unwrap();
        assert!(validate_uuid(&a), "{a}");
        assert_ne!(a, new_uuid().unwrap());
        assert!(!validate_uuid("not-a-uuid"));
    }

    #[test]
    fn config_set_validates_before_changing() {
        let mut def = parse(VM).unwrap();
        def.set("memory", "1G").unwrap();
        assert_eq!(def.memory, MemorySize(1 << 30));
        let err = def.set("memory", "12 parsecs").unwrap_err();
        assert!(err.to_string().starts_with("field `memory`"), "{err}");
        assert_eq!(
            def.memory,
            MemorySize(1 << 30),
            "unchanged after a bad value"
        );
        assert!(def.set("cpus", "0").is_err());
        assert!(
            def.set("container.init", "true").is_err(),
            "not a container"
        );
        assert!(def
            .set("uuid", "x")
            .unwrap_err()
            .to_string()
            .contains("cannot be changed"));
        def.set("on_crash", "restart").unwrap();
        assert_eq!(def.on_crash, Action::Restart);
    }

    #[test]
    fn a_cloud_init_table_is_read_checked_and_set() {
        let def = parse(&format!(
            "{VM}\n[cloud_init]\nuser_data = {{ file = \"user-data.yaml\" }}\n\
             [cloud_init.meta_data]\nregion = \"lab\"\n"
        ))
        .unwrap();
        assert_eq!(parse(&def.to_toml()).unwrap(), def);
        let err = parse(&format!("{VM}\n[cloud_init]\nuser_data = \"users: []\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cloud_init.user_data") && err.contains("#cloud-config"),
            "{err}"
        );
        let mut def = parse(VM).unwrap();
        def.set("cloud_init.user_data", "#cloud-config\nruncmd: []\n")
            .unwrap();
        def.set("cloud_init.network_config", "@/etc/corral/net.yaml")
            .unwrap();
        def.set("cloud_init.meta_data.region", "lab").unwrap();
        let table = def.cloud_init.clone().unwrap();
        assert_eq!(
            table.user_data,
            Some(corral_cloudinit::Content::Inline(
                "#cloud-config\nruncmd: []\n".into()
            ))
        );
        assert_eq!(
            table.network_config,
            Some(corral_cloudinit::Content::File(corral_cloudinit::FileRef {
                file: "/etc/corral/net.yaml".into()
            }))
        );
        let err = def
            .set("cloud_init.user_data", "#cloud-config\n- not a mapping\n")
            .unwrap_err();
        assert!(err.to_string().contains("not a YAML mapping"), "{err}");
        assert_eq!(def.cloud_init, Some(table), "unchanged after a bad value");
        assert!(def.set("cloud_init.meta_data.instance-id", "x").is_err());
        def.set("cloud_init.user_data", "").unwrap();
        assert_eq!(def.cloud_init.as_ref().unwrap().user_data, None);
    }

    #[test]
    fn the_restart_limit_defaults_reads_and_sets() {
        let def = parse(VM).unwrap();
        assert_eq!(def.restart_limit, RestartLimit::default());
        assert!(
            !def.to_toml().contains("restart_limit"),
            "defaults stay implicit"
        );
        let mut def = parse(&format!("{VM}\n[restart_limit]\nburst = 2\n")).unwrap();
        assert_eq!(
            def.restart_limit,
            RestartLimit {
                burst: 2,
                interval_secs: 10
            }
        );
        assert_eq!(parse(&def.to_toml()).unwrap(), def);
        def.set("restart_limit.interval_secs", "60").unwrap();
        assert_eq!(def.restart_limit.interval_secs, 60);
        assert!(def.set("restart_limit.burst", "many").is_err());
        let err = parse(&format!("{VM}\n[restart_limit]\nbursts = 2\n")).unwrap_err();
        assert!(err.to_string().contains("unknown field `bursts`"), "{err}");
    }
}
