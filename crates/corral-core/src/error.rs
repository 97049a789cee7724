//! Errors of the instance layer.

use std::path::PathBuf;

use corral_error::PathIoError;

use crate::store::StoreError;
use crate::volume::VolumeError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Create(#[from] crate::create::CreateError),
    #[error(transparent)]
    Control(#[from] corral_control::ControlError),
    #[error("instance {0} is already running")]
    AlreadyRunning(String),
    #[error("instance {0} is not running; start it with `corral start {0}`")]
    NotRunning(String),
    #[error("instance {0} is paused; resume it with `corral resume {0}` first")]
    Paused(String),
    #[error("instance {0} is not paused")]
    NotPaused(String),
    #[error("instance {0} is already paused; resume it with `corral resume {0}`")]
    AlreadyPaused(String),
    #[error("instance {0} is running; stop it first, or delete it with --force")]
    Running(String),
    #[error("instance {name} failed to start: {detail}")]
    StartFailed { name: String, detail: String },
    #[error("instance {name}'s supervisor refused `{request}`: {message}")]
    Refused {
        name: String,
        request: String,
        message: String,
    },
    #[error("{what} {path} does not exist")]
    Missing { what: &'static str, path: PathBuf },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{0}")]
    Unsupported(String),
    /// Long work stopped because its progress was cancelled (an API operation's cancel).
    #[error("{what} was cancelled")]
    Cancelled { what: String },
    #[error("the {field} of instance {name} cannot be changed; make a new instance (corral clone) instead")]
    IdentityChanged { name: String, field: &'static str },
    /// An OCI structure (the container spec, cgroup limits) cannot be built from the definition.
    #[error("cannot build the {what}")]
    OciSpec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A file the instance layer writes as JSON cannot be encoded.
    #[error("cannot write the {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The VMM refuses the configuration made from the definition; its message says why.
    #[error(transparent)]
    VmConfig(Box<corral_vmm::config::ConfigError>),
    #[error("cannot write the vm config")]
    VmConfigEncode(#[source] toml::ser::Error),
    #[error("container.stop_signal is not usable")]
    StopSignal(#[source] corral_container::Error),
    #[error("container.user is not usable")]
    ContainerUser(#[source] corral_container::user::InvalidUser),
    #[error("seccomp profile {origin} is not usable")]
    SeccompProfile {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the interrupted user namespace shift's record {} is unreadable; check the setuid files \
         of the root filesystem, then delete it",
        path.display()
    )]
    ShiftRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Container(#[from] corral_container::Error),
    #[error(transparent)]
    Volume(Box<VolumeError>),
    #[error(transparent)]
    Image(Box<corral_image::store::StoreError>),
    #[error(transparent)]
    Ovf(Box<corral_image::ovf::OvfError>),
    #[error(transparent)]
    OvfExport(Box<corral_image::ovf::export::OvfExportError>),
    #[error("cannot reset the identity of {what}")]
    Sysprep {
        what: String,
        #[source]
        source: Box<corral_sysprep::SysprepError>,
    },
    #[error(transparent)]
    ImageImport(Box<corral_image::import::ImportError>),
    #[error(transparent)]
    ImageExport(Box<corral_image::export::ExportError>),
    #[error("cannot make a template image of {path}")]
    OvfTemplate {
        path: PathBuf,
        #[source]
        source: Box<corral_image::import::ImportError>,
    },
    #[error("cannot make an image of instance {name}")]
    Publish {
        name: String,
        #[source]
        source: Box<corral_image::import::ImportError>,
    },
    #[error(
        "disks[{index}] of instance {instance} has a backing file outside the storage pool; if it \
         is meant to be used, list it in the disk's `allow_backing` (`corral config edit \
         {instance}`)"
    )]
    BackingNotAllowed {
        instance: String,
        index: usize,
        #[source]
        source: corral_disk::DiskError,
    },
    #[error("disks[{index}] of instance {instance} cannot be used")]
    DiskUnusable {
        instance: String,
        index: usize,
        #[source]
        source: corral_disk::DiskError,
    },
    #[error("instance {instance} cannot boot from its disk {disk}")]
    BootFromDisk {
        instance: String,
        disk: PathBuf,
        #[source]
        source: corral_image::bootdisk::BootError,
    },
    #[error("disk {path} of instance {instance} is in use by {users}; stop that first")]
    DiskInUse {
        instance: String,
        path: PathBuf,
        users: String,
    },
    #[error(transparent)]
    Clone(#[from] crate::clone::error::CloneError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Network(Box<corral_net::NetworkError>),
    #[error("nics[{index}] of instance {instance} cannot use its network")]
    NicNetwork {
        instance: String,
        index: usize,
        #[source]
        source: Box<corral_net::NetworkError>,
    },
    #[error("the DHCP and DNS service of network {network} failed")]
    NetworkService {
        network: String,
        #[source]
        source: corral_netservice::Error,
    },
    #[error(
        "network {network} has no free address left in its DHCP range; widen it with \
         `corral network set {network} dhcp-range=A-B` or stop an instance on it"
    )]
    NetworkFull { network: String },
    #[error(
        "instance {name} has MAC {mac} on network {network}, which instance {other} has too; \
         drop the `mac` of one of them (each instance gets its own from its UUID)"
    )]
    MacInUse {
        name: String,
        mac: corral_vmm::config::MacAddress,
        network: String,
        other: String,
    },
    #[error("cannot set up the network of instance {name}")]
    InstanceNetwork {
        name: String,
        #[source]
        source: crate::container_net::error::NicError,
    },
    #[error("instance {name}: cannot make its cloud-init seed")]
    Seed {
        name: String,
        #[source]
        source: corral_cloudinit::SeedError,
    },
    #[error("cannot use the guest agent of instance {name}")]
    Agent {
        name: String,
        #[source]
        source: corral_agent::ClientError,
    },
    #[error("cannot set up the cgroup of instance {name}")]
    Cgroup {
        name: String,
        #[source]
        source: corral_container::Error,
    },
}

impl From<VolumeError> for CoreError {
    fn from(err: VolumeError) -> Self {
        CoreError::Volume(Box::new(err))
    }
}

impl From<corral_disk::DiskError> for CoreError {
    fn from(err: corral_disk::DiskError) -> Self {
        CoreError::Volume(Box::new(VolumeError::Disk(err)))
    }
}

impl From<corral_net::NetworkError> for CoreError {
    fn from(err: corral_net::NetworkError) -> Self {
        CoreError::Network(Box::new(err))
    }
}

/// A definition's own error reaches callers as the store's (it is how the store reads one).
impl From<crate::definition::DefinitionError> for CoreError {
    fn from(err: crate::definition::DefinitionError) -> Self {
        CoreError::Store(err.into())
    }
}

impl CoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io(PathIoError::new(action, path, source))
    }
}
