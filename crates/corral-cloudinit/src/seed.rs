//! The seed files of a NoCloud datasource, made from the `[cloud_init]` table and what corral
//! knows of the instance: `meta-data` (`instance-id`, `local-hostname`, the user's keys),
//! `user-data` (always; `#cloud-config` and `{}` when none is given), and `vendor-data` and
//! `network-config` when given (`network-config` generated from the nics otherwise).

use std::path::Path;

use serde_yaml::{Mapping, Value};

use crate::config::{CloudInit, INSTANCE_ID, LOCAL_HOSTNAME};
use crate::error::SeedError;
use crate::network::Interface;
use crate::yaml;

/// The user-data of a seed whose table gives none.
pub const EMPTY_USER_DATA: &str = "#cloud-config\n{}\n";

/// The instance's identity as the seed states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The instance's UUID: a clone (a new UUID) is a new instance to cloud-init, which then
    /// runs its once-per-instance modules again (new SSH host keys, users, runcmd).
    pub uuid: String,
    pub hostname: String,
}

/// The `instance-id` of the instance with `uuid`.
pub fn instance_id(uuid: &str) -> String {
    format!("iid-{uuid}")
}

/// The files of a seed, by their NoCloud names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub meta_data: Vec<u8>,
    pub user_data: Vec<u8>,
    pub vendor_data: Option<Vec<u8>>,
    pub network_config: Option<Vec<u8>>,
}

/// The NoCloud file names, in the order a seed holds them.
pub const FILE_NAMES: [&str; 4] = ["meta-data", "user-data", "vendor-data", "network-config"];

impl Seed {
    /// Builds the seed: documents read (files relative to `base_dir`) and checked, meta-data and
    /// (without a user's) network-config generated. `interfaces` are the instance's nics.
    pub fn build(
        table: &CloudInit,
        base_dir: &Path,
        identity: &Identity,
        interfaces: &[Interface],
    ) -> Result<Seed, SeedError> {
        table.check()?;
        let read = |field: &'static str, content: Option<&crate::Content>| {
            content
                .map(|content| {
                    let bytes = content.read(field, base_dir)?;
                    crate::validate::document(field, &bytes)?;
                    Ok::<_, SeedError>(bytes)
                })
                .transpose()
        };
        let user_data = read("user_data", table.user_data.as_ref())?
            .unwrap_or_else(|| EMPTY_USER_DATA.as_bytes().to_vec());
        let vendor_data = read("vendor_data", table.vendor_data.as_ref())?;
        let network_config = match read("network_config", table.network_config.as_ref())? {
            Some(bytes) => Some(bytes),
            None if interfaces.is_empty() => None,
            None => Some(crate::network::generate(interfaces).into_bytes()),
        };
        Ok(Seed {
            meta_data: meta_data(table, identity)?.into_bytes(),
            user_data,
            vendor_data,
            network_config,
        })
    }

    /// The files there are, as (name, content).
    pub fn files(&self) -> Vec<(&'static str, &[u8])> {
        let [meta, user, vendor, network] = FILE_NAMES;
        let mut files = vec![(meta, &self.meta_data[..]), (user, &self.user_data[..])];
        if let Some(bytes) = &self.vendor_data {
            files.push((vendor, bytes));
        }
        if let Some(bytes) = &self.network_config {
            files.push((network, bytes));
        }
        files
    }

    /// Runs `cloud-init schema` on the `#cloud-config` documents, where cloud-init is installed.
    pub fn check_schema(&self) -> Result<(), SeedError> {
        crate::validate::schema("user_data", &self.user_data)?;
        if let Some(bytes) = &self.vendor_data {
            crate::validate::schema("vendor_data", bytes)?;
        }
        Ok(())
    }
}

/// `instance-id`, `local-hostname` (unless the table's keys replace it), then the table's keys.
fn meta_data(table: &CloudInit, identity: &Identity) -> Result<String, SeedError> {
    let mut mapping = Mapping::new();
    mapping.insert(INSTANCE_ID.into(), instance_id(&identity.uuid).into());
    mapping.insert(LOCAL_HOSTNAME.into(), identity.hostname.clone().into());
    for (key, value) in &table.meta_data.0 {
        let value = serde_yaml::to_value(value).map_err(|source| SeedError::Yaml {
            field: "meta_data",
            source,
        })?;
        mapping.insert(key.clone().into(), value);
    }
    Ok(yaml(&Value::Mapping(mapping)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b";

    fn identity(uuid: &str) -> Identity {
        Identity {
            uuid: uuid.into(),
            hostname: "web".into(),
        }
    }

    fn build(table: &str, interfaces: &[Interface]) -> Result<Seed, SeedError> {
        let table: CloudInit = toml::from_str(table).unwrap();
        Seed::build(
            &table,
            Path::new("/nonexistent"),
            &identity(UUID),
            interfaces,
        )
    }

    #[test]
    fn an_empty_table_gives_meta_data_and_empty_cloud_config_only() {
        let seed = build("", &[]).unwrap();
        assert_eq!(
            String::from_utf8(seed.meta_data.clone()).unwrap(),
            format!("instance-id: iid-{UUID}\nlocal-hostname: web\n")
        );
        assert_eq!(seed.user_data, b"#cloud-config\n{}\n");
        let names: Vec<_> = seed.files().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["meta-data", "user-data"]);
    }

    #[test]
    fn the_instance_id_follows_the_uuid() {
        let table = CloudInit::default();
        let a = Seed::build(&table, Path::new("/"), &identity(UUID), &[]).unwrap();
        let clone_uuid = "0e5c8a52-3f0b-4b8e-9d55-2f8a7d9b6c11";
        let b = Seed::build(&table, Path::new("/"), &identity(clone_uuid), &[]).unwrap();
        assert_ne!(a.meta_data, b.meta_data);
        assert!(String::from_utf8(b.meta_data)
            .unwrap()
            .contains(&instance_id(clone_uuid)));
        let again = Seed::build(&table, Path::new("/"), &identity(UUID), &[]).unwrap();
        assert_eq!(a, again, "the same instance gets the same seed");
    }

    #[test]
    fn meta_data_keys_are_added_and_may_replace_the_hostname() {
        let seed = build(
            "[meta_data]\nlocal-hostname = \"www\"\npublic-keys = [\"ssh-ed25519 AAAA a@b\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(seed.meta_data).unwrap(),
            format!(
                "instance-id: iid-{UUID}\nlocal-hostname: www\npublic-keys:\n- ssh-ed25519 AAAA a@b\n"
            )
        );
    }

    #[test]
    fn network_config_is_the_users_or_generated_from_the_nics() {
        let nic = Interface {
            mac: "52:54:00:00:00:01".into(),
            address: None,
            gateway: None,
            dns: vec![],
        };
        let generated = build("", std::slice::from_ref(&nic)).unwrap();
        let text = String::from_utf8(generated.network_config.unwrap()).unwrap();
        assert!(
            text.contains("macaddress: 52:54:00:00:00:01") && text.contains("dhcp4: true"),
            "{text}"
        );
        let given = build("network_config = \"version: 1\\nconfig: []\\n\"", &[nic]).unwrap();
        assert_eq!(
            given.network_config.as_deref(),
            Some(&b"version: 1\nconfig: []\n"[..])
        );
        let names: Vec<_> = given.files().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["meta-data", "user-data", "network-config"]);
    }

    #[test]
    fn bad_documents_are_refused_naming_their_field() {
        let err = build("vendor_data = \"hello\"", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cloud_init.vendor_data"), "{err}");
        let err = build("user_data = { file = \"user-data.yaml\" }", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cloud_init.user_data: cannot read /nonexistent/user-data.yaml"),
            "{err}"
        );
    }
}
