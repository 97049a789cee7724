//! A container instance's network: its own network namespace, bound to `run/netns` before the
//! container starts, with one veth pair per `[[nics]]` entry (the host end a port of the nic's
//! bridge, the other end `ethN` inside), each kept to its own addresses by a filter; and, for an
//! application container, the address, default route and name servers corral sets itself (a
//! system container's init asks DHCP). On a corral network the bridge, prefix, gateway and name
//! server are the network's, and an application container without a fixed `ip` gets an address
//! the network's DHCP service reserves for it (`network_service::reserve`). `run/nics.json`
//! records what a start made, so whatever ends the run (stop, a failed start, a dead supervisor
//! found later) removes exactly that.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use corral_host::atomic::PRIVATE_FILE_MODE;
use corral_net::{link, netns, HostAddress, NetnsPath};
use corral_vmm::config::MacAddress;
use serde::{Deserialize, Serialize};

use crate::definition::Definition;
use crate::driver::InstancePaths;
use crate::error::CoreError;
use crate::network_service::{release, reserve, service_dir};
use crate::networks::nic_network;
use corral_net::Networks;

pub(crate) mod error;

pub use error::NicError;

/// Files an application container with nics gets bind-mounted over its image's, as podman does.
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// One nic of a container as a start sets it up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerNic {
    pub index: usize,
    pub bridge: String,
    /// The host end of the veth pair, a port of `bridge`.
    pub host_interface: String,
    pub mac: MacAddress,
    pub address: Option<HostAddress>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub filter: bool,
    /// The network service directory holding the address reserved for this run, released
    /// when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_in: Option<PathBuf>,
}

impl ContainerNic {
    /// The name of the nic inside the container.
    pub fn name(&self) -> String {
        format!("eth{}", self.index)
    }

    /// The veth end's name on the host until it moves into the container.
    fn peer(&self) -> String {
        format!("vp{}", self.host_interface.get(2..).unwrap_or_default())
    }
}

/// The host end of nic `index` of the instance with `uuid`: `vc`, ten hex digits of the UUID and
/// the index, stable across starts and at most 15 characters.
pub fn host_interface(uuid: &str, index: usize) -> String {
    crate::nic::derived_interface("vc", uuid, index)
}

/// The container's nics as a start sets them up, resolved from the definition and the networks
/// they name; an application container's address on a network with a DHCP service is reserved
/// by [`set_up`], not here.
pub fn plan(definition: &Definition, networks: &Networks) -> Result<Vec<ContainerNic>, CoreError> {
    let system = definition.container.as_ref().is_some_and(|c| c.init);
    let planned = resolve(definition, networks)?;
    for nic in &planned {
        if let Some(ip) = nic.address.filter(|ip| ip.prefix_len.is_none() && !system) {
            return Err(CoreError::InstanceNetwork {
                name: definition.name.clone(),
                source: NicError::NoPrefix {
                    index: nic.index,
                    ip,
                },
            });
        }
    }
    Ok(planned)
}

/// The instance's nics with what their networks add: the MAC (derived from the UUID when the
/// definition gives none, as a VM's), the fixed address with its network's prefix, the gateway
/// and name servers. Shared by containers and the cloud-init seed of either kind.
pub fn resolve(
    definition: &Definition,
    networks: &Networks,
) -> Result<Vec<ContainerNic>, CoreError> {
    let mut planned = Vec::new();
    for (index, nic) in definition.nics.iter().enumerate() {
        let mut container_nic = ContainerNic {
            index,
            bridge: nic.bridge.clone().unwrap_or_default(),
            host_interface: host_interface(&definition.uuid, index),
            mac: nic
                .mac
                .unwrap_or_else(|| crate::nic::stable_mac(&definition.uuid, index)),
            address: nic.ip,
            gateway: nic.gateway,
            dns: nic.dns.clone(),
            filter: nic.filtered(),
            reserved_in: None,
        };
        if let Some(network) = nic_network(networks, definition, index, nic)? {
            container_nic.bridge = network.bridge;
            if let Some(ipv4) = network.ipv4 {
                container_nic.address = nic.ip.map(|ip| HostAddress {
                    address: ip.address,
                    prefix_len: Some(ipv4.prefix),
                });
                container_nic.gateway = Some(ipv4.address);
                container_nic.dns = vec![ipv4.address];
            }
        }
        planned.push(container_nic);
    }
    Ok(planned)
}

/// Checks at create what [`set_up`] needs of the definition (a known network, an address
/// with its prefix).
pub fn check(definition: &Definition, networks: &Networks) -> Result<(), CoreError> {
    plan(definition, networks).map(drop)
}

/// Reserves an address for each nic of an application container on a network with a DHCP
/// service that has no fixed one (recording where, for [`tear_down`]).
fn reserve_addresses(
    definition: &Definition,
    networks: &Networks,
    nics: &mut [ContainerNic],
) -> Result<(), CoreError> {
    if definition.container.as_ref().is_some_and(|c| c.init) {
        return Ok(());
    }
    for nic in nics.iter_mut().filter(|nic| nic.address.is_none()) {
        let Some(name) = &definition.nics[nic.index].network else {
            continue;
        };
        let dir = service_dir(networks, name);
        let network = networks.get(name)?;
        let (Some(ipv4), true) = (network.ipv4, dir.exists()) else {
            continue;
        };
        let address = reserve(&dir, &network, nic.mac, None, &definition.name)?;
        nic.address = Some(HostAddress {
            address,
            prefix_len: Some(ipv4.prefix),
        });
        nic.reserved_in = Some(dir);
    }
    Ok(())
}

/// The file the container's network namespace is bound to.
pub fn netns_file(paths: &InstancePaths) -> PathBuf {
    paths.runtime_dir().join("netns")
}

/// What the current run set up (see the module documentation).
fn record_file(paths: &InstancePaths) -> PathBuf {
    paths.runtime_dir().join("nics.json")
}

/// Where the generated /etc files are.
pub fn etc_dir(paths: &InstancePaths) -> PathBuf {
    paths.runtime_dir().join("etc")
}

/// The nics the current run set up (none when it has none, or nothing runs).
pub fn recorded(paths: &InstancePaths) -> Vec<ContainerNic> {
    std::fs::read(record_file(paths))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Whether the container gets files of [`ETC_FILES`] from corral: an application container with
/// nics (an init system manages its own).
pub fn manages_etc_files(definition: &Definition) -> bool {
    !definition.nics.is_empty() && definition.container.as_ref().is_some_and(|c| !c.init)
}

/// The contents of [`ETC_FILES`], in that order.
fn etc_contents(definition: &Definition, nics: &[ContainerNic]) -> [String; 3] {
    let hostname = definition
        .container
        .as_ref()
        .and_then(|c| c.hostname.clone())
        .unwrap_or_else(|| definition.name.clone());
    let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
    if let Some(address) = nics.iter().find_map(|nic| nic.address) {
        hosts.push_str(&format!("{}\t{hostname}\n", address.address));
    }
    let resolv: String = nics
        .iter()
        .flat_map(|nic| &nic.dns)
        .map(|server| format!("nameserver {server}\n"))
        .collect();
    [hosts, format!("{hostname}\n"), resolv]
}

/// Creates the container's network namespace and nics; on failure removes what it made.
pub fn set_up(
    definition: &Definition,
    paths: &InstancePaths,
    networks: &Networks,
    has_userns: bool,
) -> Result<(), CoreError> {
    let error = |source| CoreError::InstanceNetwork {
        name: definition.name.clone(),
        source,
    };
    // Whatever an earlier run left (a host that lost power keeps nothing, a killed one may).
    tear_down(paths);
    let mut nics = plan(definition, networks)?;
    if nics.is_empty() {
        return Ok(());
    }
    let record = |nics: &[ContainerNic]| -> Result<(), CoreError> {
        let json = serde_json::to_vec_pretty(nics).map_err(|source| CoreError::Encode {
            what: "record of the nics",
            source,
        })?;
        Ok(corral_host::atomic::write_file(
            &record_file(paths),
            &json,
            PRIVATE_FILE_MODE,
        )?)
    };
    // Recorded before anything is made, so an interrupted start is cleaned up too.
    record(&nics)?;
    let reserved = reserve_addresses(definition, networks, &mut nics);
    // Recorded again with the reservations, even those of a failed attempt, to release them.
    if let Err(err) = record(&nics).and(reserved) {
        tear_down(paths);
        return Err(err);
    }
    let made = configure(
        definition,
        paths,
        &nics,
        attached_by_hook(definition, has_userns),
    )
    .map_err(error)
    .and_then(|()| write_etc_files(definition, paths, &nics));
    if made.is_err() {
        tear_down(paths);
    }
    made
}

fn configure(
    definition: &Definition,
    paths: &InstancePaths,
    nics: &[ContainerNic],
    by_hook: bool,
) -> Result<(), NicError> {
    for nic in nics {
        prepare_host_end(nic)?;
    }
    if by_hook {
        return Ok(());
    }
    let system = definition.container.as_ref().is_some_and(|c| c.init);
    let namespace = netns::create(&netns_file(paths))?;
    move_in(nics, &namespace)?;
    if system {
        return Ok(());
    }
    let inside = Some(&namespace);
    for nic in nics {
        if let Some(HostAddress {
            address,
            prefix_len: Some(prefix_len),
        }) = nic.address
        {
            link::add_address(inside, &nic.name(), address.into(), prefix_len)?;
        }
    }
    if let Some(gateway) = nics.iter().find_map(|nic| nic.gateway) {
        link::set_default_route(inside, gateway.into())?;
    }
    Ok(())
}

/// Makes the veth pair of `nic`: the container's end with its MAC, the host's end filtered, a
/// port of the bridge, up.
fn prepare_host_end(nic: &ContainerNic) -> Result<(), NicError> {
    if link::find(None, &nic.bridge)?.is_none() {
        return Err(NicError::NoBridge {
            index: nic.index,
            bridge: nic.bridge.clone(),
        });
    }
    link::create_veth(None, &nic.host_interface, &nic.peer())?;
    link::set_mac(None, &nic.peer(), &nic.mac.to_string())?;
    if nic.filter {
        corral_net::filter::add(None, &filter_of(nic))?;
    }
    link::set_master(None, &nic.host_interface, &nic.bridge)?;
    link::set_up(None, &nic.host_interface)?;
    Ok(())
}

/// Moves the container's ends of `nics` into `namespace` as `ethN`, up, with `lo`.
fn move_in(nics: &[ContainerNic], namespace: &NetnsPath) -> Result<(), NicError> {
    let inside = Some(namespace);
    link::set_up(inside, "lo")?;
    for nic in nics {
        link::move_to_netns(None, &nic.peer(), namespace, &nic.name())?;
        link::set_up(inside, &nic.name())?;
    }
    Ok(())
}

/// Whether the nics go into the container's namespace through the `network-attach` hook: a
/// system container with its own user namespace gets a network namespace that namespace owns
/// (so its init may configure its links), which exists only once the runtime made it. Every
/// other container with nics joins the one [`set_up`] made.
pub fn attached_by_hook(definition: &Definition, has_userns: bool) -> bool {
    has_userns
        && !definition.nics.is_empty()
        && definition.container.as_ref().is_some_and(|c| c.init)
}

/// The `network-attach` hook's work: moves the nics [`set_up`] prepared into the network
/// namespace of the container's init, process `pid`. After a reboot of the container its old
/// namespace took the pairs with it, so they are made again first.
pub fn attach(paths: &InstancePaths, pid: u32) -> Result<(), NicError> {
    let nics = recorded(paths);
    for nic in &nics {
        if link::find(None, &nic.host_interface)?.is_none() {
            prepare_host_end(nic)?;
        }
    }
    move_in(
        &nics,
        &NetnsPath(PathBuf::from(format!("/proc/{pid}/ns/net"))),
    )
}

fn filter_of(nic: &ContainerNic) -> corral_net::NicFilter {
    corral_net::NicFilter {
        interface: nic.host_interface.clone(),
        mac: nic.mac.0,
        ipv4: nic.address.map(|a| a.address),
    }
}

fn write_etc_files(
    definition: &Definition,
    paths: &InstancePaths,
    nics: &[ContainerNic],
) -> Result<(), CoreError> {
    if !manages_etc_files(definition) {
        return Ok(());
    }
    let dir = etc_dir(paths);
    corral_host::atomic::create_private_dir_all(&dir).map_err(CoreError::io("create", &dir))?;
    for (name, content) in ETC_FILES.iter().zip(etc_contents(definition, nics)) {
        // Read by the container's processes, whatever their user.
        corral_host::atomic::write_file(&dir.join(name), content.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Removes what the last start made: filters, host interfaces, the namespace, the generated
/// files. Safe to call when nothing is there; what cannot be removed is logged.
pub fn tear_down(paths: &InstancePaths) {
    for nic in recorded(paths) {
        if let Some(dir) = &nic.reserved_in {
            release(dir, nic.mac);
        }
        if nic.filter {
            if let Err(err) = corral_net::filter::remove(None, &nic.host_interface) {
                tracing::warn!("cannot remove the filter of {}: {err}", nic.host_interface);
            }
        }
        // A start interrupted before the move left the peer on the host; deleting either end
        // deletes the pair.
        for name in [nic.host_interface.clone(), nic.peer()] {
            if let Ok(Some(_)) = link::find(None, &name) {
                if let Err(err) = link::delete(None, &name) {
                    tracing::warn!("cannot delete interface {name}: {err}");
                }
            }
        }
    }
    if let Err(err) = netns::remove(&netns_file(paths)) {
        tracing::warn!("{err}");
    }
    let _ = std::fs::remove_dir_all(etc_dir(paths));
    let _ = std::fs::remove_file(record_file(paths));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(extra: &str) -> Definition {
        let text = format!(
            "name = \"web\"\ntype = \"container\"\n\
             uuid = \"0e5c8a52-3f0b-4b8e-9d55-2f8a7d9b6c11\"\n\
             [container]\nrootfs = \"rootfs\"\n{extra}"
        );
        let definition: Definition = toml::from_str(&text).unwrap();
        definition.validate().unwrap();
        definition
    }

    #[test]
    fn host_interfaces_are_stable_short_and_distinct_per_nic() {
        let uuid = "0e5c8a52-3f0b-4b8e-9d55-2f8a7d9b6c11";
        assert_eq!(host_interface(uuid, 0), "vc0e5c8a523f0");
        assert_ne!(host_interface(uuid, 0), host_interface(uuid, 1));
        assert!(host_interface(uuid, 99).len() <= corral_net::link::MAX_INTERFACE_NAME);
        corral_net::link::validate_interface_name(&host_interface(uuid, 99)).unwrap();
    }

    #[test]
    fn nics_get_the_vm_mac_their_address_and_name_servers() {
        let definition = definition(
            "[[nics]]\nbridge = \"br0\"\nip = \"10.0.3.10/24\"\ngateway = \"10.0.3.1\"\n\
             dns = [\"10.0.3.1\"]\n[[nics]]\nbridge = \"br1\"\nfilter = false\n",
        );
        let root = tempfile::tempdir().unwrap();
        let nics = plan(&definition, &crate::networks::networks_in(root.path())).unwrap();
        assert_eq!(nics[0].mac, crate::nic::stable_mac(&definition.uuid, 0));
        assert_eq!(nics[0].address.unwrap().to_string(), "10.0.3.10/24");
        assert!(nics[0].filter && !nics[1].filter);
        assert_eq!(
            (nics[0].name(), nics[1].name()),
            ("eth0".into(), "eth1".into())
        );
        let [hosts, hostname, resolv] = etc_contents(&definition, &nics);
        assert!(hosts.contains("10.0.3.10\tweb\n"), "{hosts}");
        assert_eq!(hostname, "web\n");
        assert_eq!(resolv, "nameserver 10.0.3.1\n");
    }

    #[test]
    fn an_application_container_needs_the_prefix_of_its_address() {
        let definition = definition("[[nics]]\nbridge = \"br0\"\nip = \"10.0.3.10\"\n");
        let root = tempfile::tempdir().unwrap();
        let err = plan(&definition, &crate::networks::networks_in(root.path())).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("10.0.3.10/24"), "{chain}");
    }
}
