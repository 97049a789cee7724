//! What `corral volume create` and `POST /1.0/volumes` ask for, and the one place its rules
//! live: a raw volume needs a size, a qcow2 one a size or a backing image, a directory neither.

use std::str::FromStr;

use corral_control::size::MemorySize;

use crate::definition::DiskFormat;
use crate::volume::{NewVolume, Pool, VolumeError, VolumeInfo};

/// The kind of a new volume.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VolumeFormat {
    /// A sparse raw file.
    #[default]
    Raw,
    /// A qcow2 image, optionally over a backing image.
    Qcow2,
    /// A directory, for containers.
    Dir,
}

impl FromStr for VolumeFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "raw" => Ok(VolumeFormat::Raw),
            "qcow2" => Ok(VolumeFormat::Qcow2),
            "dir" => Ok(VolumeFormat::Dir),
            other => Err(format!(
                "{other:?} is not a volume format: raw, qcow2 or dir"
            )),
        }
    }
}

impl From<VolumeFormat> for DiskFormat {
    fn from(format: VolumeFormat) -> DiskFormat {
        match format {
            VolumeFormat::Raw => DiskFormat::Raw,
            VolumeFormat::Qcow2 => DiskFormat::Qcow2,
            VolumeFormat::Dir => DiskFormat::Dir,
        }
    }
}

/// A volume to create in the pool.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    pub name: String,
    /// Its virtual size, like `10G` (a qcow2 overlay defaults to its backing image's).
    #[serde(default)]
    pub size: Option<MemorySize>,
    #[serde(default)]
    pub format: VolumeFormat,
    /// The base image of a qcow2 overlay (a linked clone): a volume of the pool, by name or
    /// by path on the server's host.
    #[serde(default)]
    pub backing: Option<String>,
}

impl Pool {
    /// Creates the volume `request` describes.
    pub fn create_requested(&self, request: &VolumeRequest) -> Result<VolumeInfo, VolumeError> {
        let size = request.size.map(|size| size.0);
        let volume = match (request.format, &request.backing) {
            (VolumeFormat::Raw | VolumeFormat::Dir, Some(_)) => {
                return Err(VolumeError::BackingNeedsQcow2)
            }
            (VolumeFormat::Raw, None) => NewVolume::Raw {
                size: size.ok_or(VolumeError::SizeNeeded("a raw volume"))?,
            },
            (VolumeFormat::Qcow2, backing) => {
                let backing = backing
                    .as_deref()
                    .map(|b| self.resolve_backing(b))
                    .transpose()?;
                if size.is_none() && backing.is_none() {
                    return Err(VolumeError::SizeNeeded(
                        "a qcow2 volume without a backing image",
                    ));
                }
                NewVolume::Qcow2 { size, backing }
            }
            (VolumeFormat::Dir, None) if size.is_some() => {
                return Err(VolumeError::DirectoryHasNoSize)
            }
            (VolumeFormat::Dir, None) => NewVolume::Dir,
        };
        self.create(&request.name, &volume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(format: VolumeFormat, size: Option<&str>, backing: Option<&str>) -> VolumeRequest {
        VolumeRequest {
            name: "v".into(),
            size: size.map(|s| s.parse().unwrap()),
            format,
            backing: backing.map(Into::into),
        }
    }

    #[test]
    fn each_format_gets_what_it_needs_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::default_in(dir.path());
        let refused = [
            (request(VolumeFormat::Raw, None, None), "needs a size"),
            (request(VolumeFormat::Qcow2, None, None), "needs a size"),
            (
                request(VolumeFormat::Raw, Some("1M"), Some("x")),
                "only qcow2",
            ),
            (request(VolumeFormat::Dir, Some("1M"), None), "no size"),
        ];
        for (request, why) in refused {
            let err = pool.create_requested(&request).unwrap_err().to_string();
            assert!(err.contains(why), "{request:?}: {err}");
        }
        assert_eq!(pool.list().unwrap().len(), 0);
        let raw = pool
            .create_requested(&request(VolumeFormat::Raw, Some("1M"), None))
            .unwrap();
        assert_eq!(raw.virtual_size, Some(1 << 20));
        let mut overlay = request(VolumeFormat::Qcow2, None, Some("v"));
        overlay.name = "o".into();
        let overlay = pool.create_requested(&overlay).unwrap();
        assert_eq!(
            overlay.virtual_size,
            Some(1 << 20),
            "the backing image's size"
        );
    }

    #[test]
    fn a_request_body_is_refused_with_the_field_that_does_not_fit() {
        let err = serde_json::from_str::<VolumeRequest>(r#"{"name":"v","format":"vmdk"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `vmdk`"), "{err}");
        let err = serde_json::from_str::<VolumeRequest>(r#"{"name":"v","colour":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }
}
