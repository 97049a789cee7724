//! An instance's cloud-init seed (docs/cloud-init.md): corral-cloudinit's files made from the
//! definition's `[cloud_init]` table, the instance's UUID and hostname and its nics as their
//! networks resolve them; written at every start (a VM's CIDATA image in the instance
//! directory, a container's seed directory in its root filesystem), so an edited definition
//! takes effect at the next start.

use std::path::PathBuf;

use corral_cloudinit::{Content, FileRef, Identity, Interface, Seed, SeedError, Shortcuts};
use corral_net::Networks;

use crate::definition::Definition;
use crate::driver::InstancePaths;
use crate::error::CoreError;

/// The CIDATA image of a VM: in the instance directory (root's, not the jailed VMM's run
/// directory), attached read-only after the definition's disks.
pub fn image_path(paths: &InstancePaths) -> PathBuf {
    paths.dir.join("cidata.img")
}

/// Merges `corral create`'s cloud-init options into `definition`: `user_data` (a file, kept
/// as a reference unless the `shortcuts` must be merged into it, which stores the merged
/// `#cloud-config` inline) and, for a VM, `vm_hostname` as meta-data's `local-hostname`.
pub fn apply_create_options(
    definition: &mut Definition,
    user_data: Option<PathBuf>,
    shortcuts: &Shortcuts,
    vm_hostname: Option<String>,
) -> Result<(), CoreError> {
    if user_data.is_none() && shortcuts.is_empty() && vm_hostname.is_none() {
        return Ok(());
    }
    let name = definition.name.clone();
    let failed = |source| CoreError::Seed {
        name: name.clone(),
        source,
    };
    let table = definition.cloud_init.get_or_insert_with(Default::default);
    let user_data = user_data.map(|p| std::path::absolute(&p).unwrap_or(p));
    if !shortcuts.is_empty() {
        let base = match (&user_data, &table.user_data) {
            (Some(file), _) => Some(std::fs::read(file).map_err(|source| {
                failed(SeedError::Read {
                    field: "user_data",
                    path: file.clone(),
                    source,
                })
            })?),
            (None, Some(Content::Inline(text))) => Some(text.clone().into_bytes()),
            (None, Some(Content::File(FileRef { file }))) => {
                return Err(failed(SeedError::Shortcut(format!(
                    "the definition's user-data is the file {}; give it again as --user-data \
                     so --user, --ssh-key and --password-hash can be merged into it",
                    file.display()
                ))))
            }
            (None, None) => None,
        };
        let merged = shortcuts.render(base.as_deref()).map_err(failed)?;
        table.user_data = Some(Content::Inline(merged));
    } else if let Some(file) = user_data {
        table.user_data = Some(Content::File(FileRef { file }));
    }
    if let Some(hostname) = vm_hostname {
        table.meta_data.0.insert(
            corral_cloudinit::config::LOCAL_HOSTNAME.to_string(),
            toml::Value::String(hostname),
        );
    }
    Ok(())
}

/// The guest's hostname: a container's `hostname`, else the instance name (the table's
/// `meta_data.local-hostname` replaces it).
fn hostname(definition: &Definition) -> String {
    definition
        .container
        .as_ref()
        .and_then(|c| c.hostname.clone())
        .unwrap_or_else(|| definition.name.clone())
}

/// The seed of `definition`, or `None` when it has no `[cloud_init]`.
pub fn build(
    definition: &Definition,
    paths: &InstancePaths,
    networks: &Networks,
) -> Result<Option<Seed>, CoreError> {
    let Some(table) = &definition.cloud_init else {
        return Ok(None);
    };
    let interfaces: Vec<Interface> = crate::container_net::resolve(definition, networks)?
        .into_iter()
        .map(|nic| Interface {
            mac: nic.mac.to_string(),
            address: nic
                .address
                .and_then(|ip| ip.prefix_len.map(|prefix| (ip.address, prefix))),
            gateway: nic.gateway,
            dns: nic.dns,
        })
        .collect();
    let identity = Identity {
        uuid: definition.uuid.clone(),
        hostname: hostname(definition),
    };
    Seed::build(table, &paths.dir, &identity, &interfaces)
        .map(Some)
        .map_err(|source| seed_error(definition, source))
}

/// Checks the seed at create and `config set`: its files readable, its documents valid, and
/// (where cloud-init is installed on the host) `cloud-init schema` content.
pub fn check(
    definition: &Definition,
    paths: &InstancePaths,
    networks: &Networks,
) -> Result<(), CoreError> {
    match build(definition, paths, networks)? {
        Some(seed) => seed
            .check_schema()
            .map_err(|source| seed_error(definition, source)),
        None => Ok(()),
    }
}

/// Writes a VM's CIDATA image; returns its path, or `None` without `[cloud_init]`.
pub fn write_image(
    definition: &Definition,
    paths: &InstancePaths,
    networks: &Networks,
) -> Result<Option<PathBuf>, CoreError> {
    let Some(seed) = build(definition, paths, networks)? else {
        return Ok(None);
    };
    let path = image_path(paths);
    let format = definition
        .cloud_init
        .as_ref()
        .map(|table| table.seed_format)
        .unwrap_or_default();
    match format {
        corral_cloudinit::SeedFormat::Vfat => corral_cloudinit::vfat::write_image(&seed, &path),
        corral_cloudinit::SeedFormat::Iso => corral_cloudinit::iso::write_image(&seed, &path),
    }
    .map_err(|source| seed_error(definition, source))?;
    Ok(Some(path))
}

/// Writes a container's seed into its root filesystem `rootfs`.
pub fn write_rootfs(
    definition: &Definition,
    paths: &InstancePaths,
    networks: &Networks,
    rootfs: &std::path::Path,
) -> Result<(), CoreError> {
    match build(definition, paths, networks)? {
        Some(seed) => corral_cloudinit::rootfs::write_seed_dir(&seed, rootfs)
            .map_err(|source| seed_error(definition, source)),
        None => Ok(()),
    }
}

fn seed_error(definition: &Definition, source: corral_cloudinit::SeedError) -> CoreError {
    CoreError::Seed {
        name: definition.name.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::networks_in;

    const UUID: &str = "f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b";

    fn definition(kind: &str, extra: &str) -> Definition {
        let section = match kind {
            "vm" => "[boot]\nkernel = \"vmlinux\"\n",
            _ => "[container]\nrootfs = \"rootfs\"\nhostname = \"box.lab\"\n",
        };
        let text =
            format!("name = \"web\"\ntype = \"{kind}\"\nuuid = \"{UUID}\"\n{section}{extra}");
        Definition::from_toml(&text, std::path::Path::new("instance.toml")).unwrap()
    }

    #[test]
    fn nics_become_network_config_with_their_networks_addresses() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("networks/lab")).unwrap();
        std::fs::write(
            root.path().join("networks/lab/network.toml"),
            "name = \"lab\"\nbridge = \"corral-lab\"\nipv4 = \"10.0.3.1/24\"\n",
        )
        .unwrap();
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let definition = definition(
            "vm",
            "[cloud_init]\n[[nics]]\nnetwork = \"lab\"\nip = \"10.0.3.10\"\n\
             [[nics]]\nbridge = \"br0\"\n",
        );
        let seed = build(&definition, &paths, &networks_in(root.path()))
            .unwrap()
            .unwrap();
        let text = String::from_utf8(seed.network_config.unwrap()).unwrap();
        let first_mac = crate::nic::stable_mac(UUID, 0).to_string();
        let second_mac = crate::nic::stable_mac(UUID, 1).to_string();
        assert!(
            text.contains(&format!("macaddress: {first_mac}"))
                && text.contains("- 10.0.3.10/24")
                && text.contains("via: 10.0.3.1"),
            "{text}"
        );
        assert!(
            text.contains(&format!("macaddress: {second_mac}\n    dhcp4: true")),
            "{text}"
        );
        let meta = String::from_utf8(seed.meta_data).unwrap();
        assert_eq!(
            meta,
            format!("instance-id: iid-{UUID}\nlocal-hostname: web\n")
        );
    }

    #[test]
    fn no_table_no_seed_and_a_containers_hostname_is_its_own() {
        let root = tempfile::tempdir().unwrap();
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let networks = networks_in(root.path());
        assert!(build(&definition("vm", ""), &paths, &networks)
            .unwrap()
            .is_none());
        let seed = build(
            &definition("container", "[cloud_init]\n"),
            &paths,
            &networks,
        )
        .unwrap()
        .unwrap();
        assert!(String::from_utf8(seed.meta_data)
            .unwrap()
            .contains("local-hostname: box.lab\n"));
        assert_eq!(seed.network_config, None, "no nics, no network-config");
    }
}
