//! `metadata.yaml`, the description Incus (and LXD) images carry, both ways. corral's own
//! defaults (a container's command, a VM's kernel) travel in a `corral` key, which Incus
//! ignores; the file corral writes is canonical (fixed key order, no time of writing), so the
//! same image always gives the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::{
    normalize_architecture, ContainerDefaults, ImageMetadata, ImageType, VmDefaults,
};

/// The most bytes of `metadata.yaml` read: real ones are a few KiB.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata.yaml is not valid")]
    Yaml(#[source] serde_yaml::Error),
    #[error("metadata.yaml has no architecture")]
    NoArchitecture,
    #[error("metadata.yaml has a creation_date that is not a time: {0}")]
    BadDate(i64),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IncusMetadata {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    creation_date: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry_date: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    corral: Option<CorralExtension>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorralExtension {
    #[serde(rename = "type")]
    image_type: Option<ImageType>,
    #[serde(default, skip_serializing_if = "is_default")]
    container: ContainerDefaults,
    #[serde(default, skip_serializing_if = "is_default")]
    vm: VmDefaults,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Incus's name for an architecture (the kernel's): `amd64` → `x86_64`.
fn kernel_architecture(debian: &str) -> &str {
    match debian {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "i386" => "i686",
        "ppc64el" => "ppc64le",
        other => other,
    }
}

/// The canonical `metadata.yaml` of an image.
pub fn write(metadata: &ImageMetadata) -> Vec<u8> {
    let mut properties = BTreeMap::new();
    properties.insert("architecture".to_string(), metadata.architecture.clone());
    for (key, value) in [
        ("os", &metadata.os),
        ("release", &metadata.release),
        ("description", &metadata.description),
    ] {
        if let Some(value) = value {
            properties.insert(key.to_string(), value.clone());
        }
    }
    let file = IncusMetadata {
        architecture: kernel_architecture(&metadata.architecture).to_string(),
        creation_date: metadata
            .created
            .as_deref()
            .and_then(|created| humantime::parse_rfc3339_weak(created).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64),
        expiry_date: None,
        properties,
        corral: Some(CorralExtension {
            image_type: Some(metadata.image_type),
            container: metadata.container.clone(),
            vm: metadata.vm.clone(),
        }),
    };
    // A struct of strings, maps and numbers always serializes.
    serde_yaml::to_string(&file)
        .unwrap_or_default()
        .into_bytes()
}

/// Reads a `metadata.yaml`. `image_type` is what the image's content is (a `rootfs/` tree or a
/// disk), which Incus's file does not say.
pub fn read(text: &[u8], image_type: ImageType) -> Result<ImageMetadata, MetadataError> {
    let file: IncusMetadata = serde_yaml::from_slice(text).map_err(MetadataError::Yaml)?;
    let architecture = file
        .properties
        .get("architecture")
        .filter(|a| !a.is_empty())
        .cloned()
        .or_else(|| Some(file.architecture.clone()).filter(|a| !a.is_empty()))
        .ok_or(MetadataError::NoArchitecture)?;
    let created = match file.creation_date {
        0 => None,
        secs => {
            let time = u64::try_from(secs)
                .ok()
                .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)))
                .ok_or(MetadataError::BadDate(secs))?;
            Some(humantime::format_rfc3339_seconds(time).to_string())
        }
    };
    let corral = file.corral.unwrap_or_default();
    let property = |key: &str| file.properties.get(key).filter(|v| !v.is_empty()).cloned();
    Ok(ImageMetadata {
        image_type,
        architecture: normalize_architecture(&architecture),
        os: property("os"),
        release: property("release"),
        description: property("description"),
        created,
        container: corral.container,
        vm: corral.vm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_from_linuxcontainers_org_is_read() {
        let text = br#"architecture: x86_64
creation_date: 1701388800
expiry_date: 1703980800
properties:
  architecture: amd64
  description: Debian bookworm amd64 (20231201_05:24)
  os: Debian
  release: bookworm
  serial: "20231201_05:24"
  variant: default
templates:
  /etc/hostname:
    when:
    - create
    - copy
    template: hostname.tpl
"#;
        let meta = read(text, ImageType::Container).unwrap();
        assert_eq!(meta.architecture, "amd64");
        assert_eq!(meta.os.as_deref(), Some("Debian"));
        assert_eq!(meta.release.as_deref(), Some("bookworm"));
        assert_eq!(meta.created.as_deref(), Some("2023-12-01T00:00:00Z"));
        assert_eq!(meta.container, ContainerDefaults::default());
    }

    #[test]
    fn what_corral_writes_it_reads_back_and_always_the_same() {
        let meta = ImageMetadata {
            image_type: ImageType::Vm,
            architecture: "amd64".into(),
            os: Some("debian".into()),
            release: Some("12".into()),
            description: Some("test".into()),
            created: Some("2026-01-02T03:04:05Z".into()),
            container: ContainerDefaults::default(),
            vm: VmDefaults {
                cmdline: Some("console=ttyS0 root=/dev/vda".into()),
                kernel: true,
                initrd: false,
            },
        };
        let text = write(&meta);
        assert_eq!(text, write(&meta));
        let yaml = String::from_utf8(text.clone()).unwrap();
        assert!(
            yaml.starts_with("architecture: x86_64\ncreation_date: 1767323045\n"),
            "{yaml}"
        );
        assert_eq!(read(&text, ImageType::Vm).unwrap(), meta);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            &b"- a list"[..],
            b"architecture: [",
            b"creation_date: -5\narchitecture: x",
        ] {
            assert!(read(text, ImageType::Container).is_err(), "{text:?}");
        }
        assert!(matches!(
            read(b"properties: {}", ImageType::Container),
            Err(MetadataError::NoArchitecture)
        ));
    }
}
