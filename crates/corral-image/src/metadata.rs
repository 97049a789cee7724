//! What an image says about itself. Stored as `metadata.json` beside its content; the part that
//! describes the content (everything but the store's own bookkeeping) also goes into the
//! image's canonical form, so it is covered by the fingerprint.

use serde::{Deserialize, Serialize};

/// What an image can become.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    /// A root filesystem tree: containers.
    Container,
    /// A bootable disk: VMs.
    Vm,
}

impl std::fmt::Display for ImageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Container => "container",
            Self::Vm => "vm",
        })
    }
}

/// What a container made from the image runs unless its definition says otherwise (an OCI
/// image config's `Entrypoint`/`Cmd`/`Env`/`WorkingDir`/`User`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerDefaults {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A system container image: PID 1 is an init system.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

impl ContainerDefaults {
    /// PID 1's command line: the entrypoint followed by the command (the OCI rule).
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// How a VM made from the image boots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefaults {
    /// The kernel command line; when absent it is taken from the disk's boot configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// The image carries its own kernel (`kernel` beside the disk) rather than booting the one
    /// inside the disk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel: bool,
    /// ... and its own initrd (`initrd` beside the disk).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initrd: bool,
}

/// The description of an image's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMetadata {
    #[serde(rename = "type")]
    pub image_type: ImageType,
    /// `amd64`, `arm64`, ... (Debian's names, as Incus and OCI use).
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the content was made (RFC 3339), as its source says; not when it was imported, so
    /// two imports of the same content have the same fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub container: ContainerDefaults,
    #[serde(default, skip_serializing_if = "is_default")]
    pub vm: VmDefaults,
}

impl ImageMetadata {
    /// An image of `image_type` for this host's architecture that says nothing else yet.
    pub fn new(image_type: ImageType) -> Self {
        Self {
            image_type,
            architecture: host_architecture().to_string(),
            os: None,
            release: None,
            description: None,
            created: None,
            container: ContainerDefaults::default(),
            vm: VmDefaults::default(),
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The architecture of this build of corral, in Debian's naming.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        other => other,
    }
}

/// Debian's name for an architecture named the OCI/Go, kernel or Debian way (`x86_64`,
/// `amd64`, `aarch64`, ...); unknown names are kept.
pub fn normalize_architecture(name: &str) -> String {
    match name {
        "x86_64" | "x86-64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i686" | "386" => "i386",
        "ppc64le" | "ppc64el" => "ppc64el",
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_the_entrypoint_then_cmd() {
        let defaults = ContainerDefaults {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            ..ContainerDefaults::default()
        };
        assert_eq!(defaults.command(), ["/bin/sh", "-c", "echo hi"]);
    }

    #[test]
    fn architectures_get_debian_names() {
        assert_eq!(normalize_architecture("x86_64"), "amd64");
        assert_eq!(normalize_architecture("aarch64"), "arm64");
        assert_eq!(normalize_architecture("mips"), "mips");
    }

    #[test]
    fn metadata_round_trips_and_refuses_unknown_fields() {
        let meta = ImageMetadata {
            image_type: ImageType::Container,
            architecture: "amd64".into(),
            os: Some("debian".into()),
            release: Some("12".into()),
            description: None,
            created: None,
            container: ContainerDefaults {
                cmd: vec!["/bin/sh".into()],
                ..ContainerDefaults::default()
            },
            vm: VmDefaults::default(),
        };
        let text = serde_json::to_string(&meta).unwrap();
        assert!(!text.contains("\"vm\""), "{text}");
        assert_eq!(serde_json::from_str::<ImageMetadata>(&text).unwrap(), meta);
        let err = serde_json::from_str::<ImageMetadata>(
            r#"{"type":"vm","architecture":"amd64","colour":"red"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
