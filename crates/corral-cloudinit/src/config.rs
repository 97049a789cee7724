//! The `[cloud_init]` table of an instance definition: what the user gives, each document inline
//! or as a file, checked as far as it can be without the file system.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SeedError;

/// The most bytes one seed document may have (cloud-init's providers allow far less).
pub const MAX_DOCUMENT_BYTES: u64 = 1 << 20;

/// `[cloud_init]`: the documents of a NoCloud seed. Present (even empty) means the instance gets
/// a seed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// `user-data`: `#cloud-config` YAML, a `#!` script or another type cloud-init knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Content>,
    /// `network-config`: version 1 or 2 YAML. Without it, one is generated from the nics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<Content>,
    /// `vendor-data`, same types as user-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_data: Option<Content>,
    /// Keys added to `meta-data` (`local-hostname` may be replaced; `instance-id` may not).
    #[serde(default, skip_serializing_if = "MetaData::is_empty")]
    pub meta_data: MetaData,
    /// The filesystem of a VM's seed disk: `vfat` (labelled `CIDATA`) or `iso` (ISO 9660,
    /// volume id `cidata`).
    #[serde(default, skip_serializing_if = "SeedFormat::is_vfat")]
    pub seed_format: SeedFormat,
}

/// The filesystem of a VM's seed disk; cloud-init's NoCloud datasource reads both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedFormat {
    /// FAT, written in userspace (`vfat`).
    #[default]
    Vfat,
    /// ISO 9660 with Rock Ridge and Joliet (`iso`), written by genisoimage.
    Iso,
}

impl SeedFormat {
    fn is_vfat(&self) -> bool {
        *self == SeedFormat::Vfat
    }
}

/// A document: inline text, or `{ file = "PATH" }` (relative to the instance directory), read
/// at every start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "the document as text, or { file = \"PATH\" } naming a file that holds it"
)]
pub enum Content {
    Inline(String),
    File(FileRef),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub file: PathBuf,
}

/// Extra `meta-data` keys: strings, integers, booleans, arrays and tables (checked: no floats or
/// dates, so equality is total).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MetaData(pub BTreeMap<String, toml::Value>);

// `check` refuses floats, the only values whose equality is partial.
impl Eq for MetaData {}

impl MetaData {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The meta-data key corral derives from the instance's UUID.
pub const INSTANCE_ID: &str = "instance-id";
/// The meta-data key of the guest's hostname.
pub const LOCAL_HOSTNAME: &str = "local-hostname";

impl Content {
    /// The document's bytes; a relative file is taken from `base_dir`.
    pub fn read(&self, field: &'static str, base_dir: &Path) -> Result<Vec<u8>, SeedError> {
        match self {
            Content::Inline(text) => Ok(text.as_bytes().to_vec()),
            Content::File(FileRef { file }) => {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    base_dir.join(file)
                };
                let error = |source| SeedError::Read {
                    field,
                    path: path.clone(),
                    source,
                };
                let mut bytes = Vec::new();
                std::fs::File::open(&path)
                    .and_then(|f| f.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut bytes))
                    .map_err(error)?;
                if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
                    return Err(SeedError::TooLarge {
                        field,
                        path,
                        limit: MAX_DOCUMENT_BYTES,
                    });
                }
                Ok(bytes)
            }
        }
    }
}

impl CloudInit {
    /// Checks what needs no file: inline documents and the meta-data keys.
    pub fn check(&self) -> Result<(), SeedError> {
        for (field, content) in self.documents() {
            if let Some(Content::Inline(text)) = content {
                crate::validate::document(field, text.as_bytes())?;
            }
        }
        for (key, value) in &self.meta_data.0 {
            if key == INSTANCE_ID {
                return Err(SeedError::invalid(
                    format!("meta_data.{key}"),
                    "is derived from the instance's UUID (so a clone is a new instance); remove it",
                ));
            }
            check_value(&format!("meta_data.{key}"), value)?;
        }
        Ok(())
    }

    /// The documents by field name.
    pub(crate) fn documents(&self) -> [(&'static str, Option<&Content>); 3] {
        [
            ("user_data", self.user_data.as_ref()),
            ("vendor_data", self.vendor_data.as_ref()),
            ("network_config", self.network_config.as_ref()),
        ]
    }
}

fn check_value(field: &str, value: &toml::Value) -> Result<(), SeedError> {
    match value {
        toml::Value::Float(_) | toml::Value::Datetime(_) => Err(SeedError::invalid(
            field,
            "is a float or a date; write it as a string",
        )),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_value(&format!("{field}[{i}]"), item)),
        toml::Value::Table(table) => table
            .iter()
            .try_for_each(|(key, item)| check_value(&format!("{field}.{key}"), item)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_inline_text_or_files() {
        let table: CloudInit = toml::from_str(
            "user_data = \"#cloud-config\\n{}\\n\"\nnetwork_config = { file = \"net.yaml\" }\n\
             [meta_data]\nregion = \"lab\"\n",
        )
        .unwrap();
        assert_eq!(
            table.user_data,
            Some(Content::Inline("#cloud-config\n{}\n".into()))
        );
        assert_eq!(
            table.network_config,
            Some(Content::File(FileRef {
                file: "net.yaml".into()
            }))
        );
        assert_eq!(
            toml::from_str::<CloudInit>(&toml::to_string(&table).unwrap()).unwrap(),
            table
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("net.yaml"), "version: 2\n").unwrap();
        let content = table.network_config.as_ref().unwrap();
        assert_eq!(
            content.read("network_config", dir.path()).unwrap(),
            b"version: 2\n"
        );
        let err = content
            .read("network_config", Path::new("/nonexistent"))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cloud_init.network_config: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn a_document_of_another_shape_is_explained() {
        for text in ["user_data = 5", "user_data = { path = \"x\" }"] {
            let err = toml::from_str::<CloudInit>(text).unwrap_err().to_string();
            assert!(
                err.contains("the document as text, or { file = \"PATH\" }"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_instance_id_and_floats_are_refused_in_meta_data() {
        let table: CloudInit = toml::from_str("[meta_data]\ninstance-id = \"x\"\n").unwrap();
        let err = table.check().unwrap_err().to_string();
        assert!(
            err.contains("meta_data.instance-id") && err.contains("UUID"),
            "{err}"
        );
        let table: CloudInit = toml::from_str("[meta_data]\nweights = [1, 2.5]\n").unwrap();
        let err = table.check().unwrap_err().to_string();
        assert!(err.contains("meta_data.weights[1]"), "{err}");
    }
}
