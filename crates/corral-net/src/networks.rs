//! The networks under the corral root, each made, changed and removed whole:
//!
//! ```text
//! networks/NAME/network.toml    the definition
//! networks/NAME/forwards.json   port forwards in effect, by owner (an instance nic)
//! networks/.lock                held (flock) by every change
//! ```
//!
//! Live state follows the files: a managed network's bridge (with its gateway addresses, up)
//! and corral's nftables table, rewritten whole from every definition and forward after each
//! change. A change that fails undoes what it did, so a network exists whole or not at all.
//!
//! The network's DHCP/DNS service is not started here: the caller (corral-core) starts it after
//! [`Networks::create`], [`Networks::set`] and [`Networks::restore`], and stops it before
//! [`Networks::delete`].

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use corral_error::PathIoError;
use corral_host::atomic::{write_file, PRIVATE_FILE_MODE};
use serde::Serialize;

use crate::cidr::{Ipv4Cidr, Ipv6Cidr};
use crate::definition::{
    derived_bridge_name, DefinitionError, DhcpRange, NetworkDefinition, NetworkKind, DEFAULT_DOMAIN,
};
use crate::forward::PortForward;
use crate::link::{self, LinkError};
use crate::nft::{self, ActiveForward, NftError};
use crate::subnet;

mod forwards;

pub use forwards::NicForwards;

/// The network `corral create` puts an instance on when it names none.
pub const DEFAULT_NETWORK: &str = "default";

const DEFINITION_FILE: &str = "network.toml";
const LOCK_FILE: &str = ".lock";
const DELETING_PREFIX: &str = ".deleting-";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} does not exist; `corral network list` shows the networks")]
    NotFound(String),
    #[error("network {0} already exists; choose another name or delete it first")]
    Exists(String),
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(
        "subnet {subnet} of network {network} is already routed on the host ({route}{device}); \
         choose another subnet, or leave it out and corral picks a free one"
    )]
    Routed {
        network: String,
        subnet: Ipv4Cidr,
        route: Ipv4Cidr,
        device: String,
    },
    #[error("no 10.X.Y.0/24 subnet is free on this host for network {0}; give one with --subnet")]
    NoFreeSubnet(String),
    #[error(
        "bridge {bridge} already exists on the host; name another bridge for network {network}, \
         or use that one as an unmanaged network (--unmanaged --bridge {bridge})"
    )]
    BridgeExists { network: String, bridge: String },
    #[error(
        "bridge {bridge} of unmanaged network {network} does not exist; create it first (an \
         unmanaged network uses an existing bridge) or make a managed network"
    )]
    BridgeMissing { network: String, bridge: String },
    #[error(
        "network {network} is used by {users}; move their nics to another network or delete \
         them first"
    )]
    InUse { network: String, users: String },
    #[error(
        "cannot forward host port {forward}: it is already {holder}; choose another host port"
    )]
    PortInUse {
        forward: PortForward,
        holder: String,
    },
    #[error(
        "cannot forward to {address}: it is outside network {network}'s subnet {subnet}; give \
         the nic an address in it"
    )]
    ForwardAddress {
        network: String,
        address: Ipv4Addr,
        subnet: Ipv4Cidr,
    },
    #[error(
        "address {address} is not one an instance can have on network {network} ({gateway} is \
         its gateway and subnet); choose another in the subnet"
    )]
    NicAddress {
        network: String,
        address: Ipv4Addr,
        gateway: Ipv4Cidr,
    },
    #[error("cannot {action} bridge {bridge} of network {network}")]
    Bridge {
        action: &'static str,
        network: String,
        bridge: String,
        #[source]
        source: LinkError,
    },
    #[error("cannot read the host's routes and addresses")]
    Routes(#[source] LinkError),
    #[error("cannot find which ports the host's sockets use")]
    Sockets(#[source] std::io::Error),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("cannot turn on IP forwarding, which NAT needs")]
    Forwarding(#[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{path} is corrupt; fix or delete it")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T, E = NetworkError> = std::result::Result<T, E>;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.to_path_buf();
    move |source| NetworkError::Io(PathIoError::new(action, path, source))
}

/// What `corral network create` and `POST /1.0/networks` ask for; what it leaves out gets a
/// default.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    pub name: String,
    /// The gateway address and prefix; a free `10.X.Y.1/24` when absent (managed networks).
    #[serde(default)]
    pub subnet: Option<Ipv4Cidr>,
    /// NAT on (the default) or off; always off for an unmanaged network.
    #[serde(default)]
    pub nat: Option<bool>,
    #[serde(default)]
    pub dhcp_range: Option<DhcpRange>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub ipv6: Option<Ipv6Cidr>,
    #[serde(default)]
    pub dns_upstream: Vec<IpAddr>,
    /// The bridge: an existing one for an unmanaged network; for a managed one, a name to
    /// create instead of the derived `corral-NAME`.
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub unmanaged: bool,
}

/// A network and how it stands on the host.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkInfo {
    #[serde(flatten)]
    pub definition: NetworkDefinition,
    /// The bridge's operational state (`up`, `down`, ...), `None` when it is missing.
    pub bridge_state: Option<String>,
    /// Interfaces attached to the bridge.
    pub ports: Vec<String>,
    /// Port forwards in effect, by owner.
    pub forwards: BTreeMap<String, NicForwards>,
}

/// The MAC of network `name`'s bridge: locally administered, unicast, and the same every time
/// (FNV-1a of the name).
fn bridge_mac(name: &str) -> String {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let [_, _, _, a, b, c, d, e] = hash.to_be_bytes();
    format!("02:{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}")
}

/// The networks in one directory (`<corral root>/networks`), acting on the calling thread's
/// network namespace.
#[derive(Clone, Debug)]
pub struct Networks {
    dir: PathBuf,
}

impl Networks {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn network_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Holds the networks' lock until the returned file is dropped.
    fn lock(&self) -> Result<File> {
        corral_host::atomic::create_private_dir_all(&self.dir)
            .map_err(io_error("create", &self.dir))?;
        let path = self.dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        file.lock().map_err(io_error("lock", &path))?;
        // A delete that died before its last step left its directory aside.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(DELETING_PREFIX)
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(file)
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<NetworkDefinition>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error("read", &self.dir)(err)),
        };
        let mut networks = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("read", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|name| !name.starts_with('.')) else {
                continue;
            };
            if entry.path().join(DEFINITION_FILE).exists() {
                networks.push(self.get(name)?);
            }
        }
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(networks)
    }

    /// The definition of network `name`.
    pub fn get(&self, name: &str) -> Result<NetworkDefinition> {
        crate::definition::validate_name(name)?;
        let path = self.network_dir(name).join(DEFINITION_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(NetworkError::NotFound(name.to_owned()))
            }
            Err(err) => return Err(io_error("read", &path)(err)),
        };
        let definition: NetworkDefinition =
            toml::from_str(&text).map_err(|source| DefinitionError::Parse { path, source })?;
        definition.validate()?;
        Ok(definition)
    }

    /// Network `name` with its bridge's live state and its forwards.
    pub fn info(&self, name: &str) -> Result<NetworkInfo> {
        let definition = self.get(name)?;
        let bridge_error = |source| NetworkError::Bridge {
            action: "read",
            network: definition.name.clone(),
            bridge: definition.bridge.clone(),
            source,
        };
        let links = link::links(None).map_err(bridge_error)?;
        let bridge_state = links
            .iter()
            .find(|link| link.ifname == definition.bridge)
            .map(|link| {
                link.operstate
                    .as_deref()
                    .unwrap_or("unknown")
                    .to_ascii_lowercase()
            });
        let ports = links
            .iter()
            .filter(|link| link.master.as_deref() == Some(definition.bridge.as_str()))
            .map(|link| link.ifname.clone())
            .collect();
        let forwards = self.forwards(name)?;
        Ok(NetworkInfo {
            definition,
            bridge_state,
            ports,
            forwards,
        })
    }

    /// Creates a network: its definition, and for a managed one the bridge with the gateway
    /// address and its rules in corral's table.
    pub fn create(&self, request: &NetworkRequest) -> Result<NetworkDefinition> {
        let _lock = self.lock()?;
        crate::definition::validate_name(&request.name)?;
        let existing = self.list()?;
        if existing.iter().any(|network| network.name == request.name) {
            return Err(NetworkError::Exists(request.name.clone()));
        }
        let definition = self.plan(request, &existing)?;
        let bridge_exists = link::find(None, &definition.bridge)
            .map_err(|source| self.bridge_error("look up", &definition, source))?
            .is_some();
        match definition.kind {
            NetworkKind::Unmanaged if !bridge_exists => {
                return Err(NetworkError::BridgeMissing {
                    network: definition.name,
                    bridge: definition.bridge,
                })
            }
            NetworkKind::Managed if bridge_exists => {
                return Err(NetworkError::BridgeExists {
                    network: definition.name,
                    bridge: definition.bridge,
                })
            }
            NetworkKind::Managed => {
                if let Err(err) = self.set_up_bridge(&definition, true) {
                    let _ = link::delete(None, &definition.bridge);
                    return Err(err);
                }
            }
            NetworkKind::Unmanaged => {}
        }
        let undo = |err| {
            if definition.kind == NetworkKind::Managed {
                let _ = link::delete(None, &definition.bridge);
            }
            let _ = std::fs::remove_dir_all(self.network_dir(&definition.name));
            let _ = self.apply();
            err
        };
        self.save(&definition).map_err(undo)?;
        self.apply().map_err(undo)?;
        Ok(definition)
    }

    /// The definition a request makes, checked against the host and the other networks.
    fn plan(
        &self,
        request: &NetworkRequest,
        existing: &[NetworkDefinition],
    ) -> Result<NetworkDefinition> {
        let kind = if request.unmanaged {
            NetworkKind::Unmanaged
        } else {
            NetworkKind::Managed
        };
        let taken_bridges: Vec<String> = existing.iter().map(|n| n.bridge.clone()).collect();
        let bridge = match (&request.bridge, kind) {
            (Some(bridge), _) => bridge.clone(),
            (None, NetworkKind::Managed) => derived_bridge_name(&request.name, &taken_bridges),
            (None, NetworkKind::Unmanaged) => {
                return Err(DefinitionError::Invalid {
                    network: request.name.clone(),
                    problem: "an unmanaged network needs the existing bridge it uses (--bridge)"
                        .into(),
                }
                .into())
            }
        };
        let mut definition = NetworkDefinition {
            name: request.name.clone(),
            kind,
            bridge,
            ipv4: request.subnet,
            nat: request.nat.unwrap_or(kind == NetworkKind::Managed),
            dhcp_range: request.dhcp_range,
            domain: request
                .domain
                .clone()
                .unwrap_or_else(|| DEFAULT_DOMAIN.to_owned()),
            ipv6: request.ipv6,
            dns_upstream: request.dns_upstream.clone(),
        };
        if kind == NetworkKind::Managed {
            let routes = subnet::host_routes().map_err(NetworkError::Routes)?;
            match definition.ipv4 {
                Some(cidr) => {
                    // Another network's subnet is routed too: name the network, not its bridge.
                    definition.validate_against(existing)?;
                    if let Some(route) = subnet::routed(cidr, &routes) {
                        return Err(NetworkError::Routed {
                            network: definition.name,
                            subnet: cidr.subnet(),
                            route: route.subnet,
                            device: route
                                .device
                                .as_ref()
                                .map(|dev| format!(" dev {dev}"))
                                .unwrap_or_default(),
                        });
                    }
                }
                None => {
                    let taken: Vec<Ipv4Cidr> = existing.iter().filter_map(|n| n.ipv4).collect();
                    definition.ipv4 = Some(
                        subnet::choose_free(&routes, &taken)
                            .ok_or_else(|| NetworkError::NoFreeSubnet(definition.name.clone()))?,
                    );
                }
            }
            // Written out, so the file shows the pool in use.
            definition.dhcp_range = definition.effective_dhcp_range();
        }
        definition.validate()?;
        definition.validate_against(existing)?;
        Ok(definition)
    }

    fn bridge_error(
        &self,
        action: &'static str,
        definition: &NetworkDefinition,
        source: LinkError,
    ) -> NetworkError {
        NetworkError::Bridge {
            action,
            network: definition.name.clone(),
            bridge: definition.bridge.clone(),
            source,
        }
    }

    /// Creates (with `create`) a managed network's bridge, or brings back what it lacks: its
    /// gateway addresses, up.
    fn set_up_bridge(&self, definition: &NetworkDefinition, create: bool) -> Result<()> {
        let bridge = definition.bridge.as_str();
        let setup = || -> Result<(), LinkError> {
            if create {
                link::create_bridge(None, bridge)?;
            }
            // A bridge without its own MAC takes its lowest port's, which changes as ports
            // come and go (and with a bridge made anew): instances would keep a stale gateway
            // in their ARP caches.
            link::set_mac(None, bridge, &bridge_mac(&definition.name))?;
            if let Some(v4) = definition.ipv4 {
                link::replace_address(None, bridge, v4.address.into(), v4.prefix)?;
            }
            if let Some(v6) = definition.ipv6 {
                link::replace_address(None, bridge, v6.address.into(), v6.prefix)?;
            }
            link::set_up(None, bridge)
        };
        setup().map_err(|source| self.bridge_error("set up", definition, source))
    }

    fn save(&self, definition: &NetworkDefinition) -> Result<()> {
        let text = toml::to_string(definition).expect("a definition serialises to TOML");
        let path = self.network_dir(&definition.name).join(DEFINITION_FILE);
        write_file(&path, text.as_bytes(), PRIVATE_FILE_MODE)?;
        Ok(())
    }

    /// Rewrites corral's table from every network and forward, and turns on forwarding when
    /// a network needs NAT.
    fn apply(&self) -> Result<()> {
        let networks = self.list()?;
        let mut forwards = Vec::new();
        for network in &networks {
            for nic in self.forwards(&network.name)?.into_values() {
                forwards.extend(nic.forwards.into_iter().map(|forward| ActiveForward {
                    bridge: network.bridge.clone(),
                    address: nic.address,
                    forward,
                }));
            }
        }
        nft::apply(&nft::ruleset(&networks, &forwards))?;
        let nat = networks
            .iter()
            .filter(|n| n.kind == NetworkKind::Managed && n.nat);
        let (mut any, mut ipv6) = (false, false);
        for network in nat {
            any = true;
            ipv6 |= network.ipv6.is_some();
        }
        if any || !forwards.is_empty() {
            nft::enable_forwarding(ipv6).map_err(NetworkError::Forwarding)?;
        }
        Ok(())
    }

    /// Deletes network `name`, refused while `users` (the instances whose nics name it) is not
    /// empty: its rules, its bridge (a managed one) and its files.
    pub fn delete(&self, name: &str, users: &[String]) -> Result<()> {
        let _lock = self.lock()?;
        let definition = self.get(name)?;
        if !users.is_empty() {
            return Err(NetworkError::InUse {
                network: name.to_owned(),
                users: users.join(", "),
            });
        }
        // Aside first, so the rules are rewritten without it and a failure can put it back.
        let dir = self.network_dir(name);
        let aside = self.dir.join(format!("{DELETING_PREFIX}{name}"));
        std::fs::rename(&dir, &aside).map_err(io_error("rename", &dir))?;
        if let Err(err) = self.apply() {
            let _ = std::fs::rename(&aside, &dir);
            return Err(err);
        }
        if definition.kind == NetworkKind::Managed
            && link::find(None, &definition.bridge)
                .map_err(|source| self.bridge_error("look up", &definition, source))?
                .is_some()
        {
            link::delete(None, &definition.bridge)
                .map_err(|source| self.bridge_error("delete", &definition, source))?;
        }
        std::fs::remove_dir_all(&aside).map_err(io_error("remove", &aside))
    }

    /// Changes settings of network `name` (`KEY`, `VALUE` pairs, see
    /// [`NetworkDefinition::set`]) and applies them; nothing changes when one is refused.
    pub fn set(&self, name: &str, changes: &[(String, String)]) -> Result<NetworkDefinition> {
        let _lock = self.lock()?;
        let old = self.get(name)?;
        let mut definition = old.clone();
        for (key, value) in changes {
            definition.set(key, value)?;
        }
        definition.validate()?;
        definition.validate_against(&self.list()?)?;
        self.save(&definition)?;
        if let Err(err) = self.apply() {
            let _ = self.save(&old);
            let _ = self.apply();
            return Err(err);
        }
        Ok(definition)
    }

    /// Brings every network back after a host reboot (or a bridge removed by hand): managed
    /// bridges with their addresses, up, and corral's table. One network that cannot come back
    /// does not keep the others down; the first failure is returned.
    pub fn restore(&self) -> Result<()> {
        let _lock = self.lock()?;
        let mut failure = None;
        for definition in self.list()? {
            if let Err(err) = self.restore_bridge(&definition) {
                failure.get_or_insert(err);
            }
        }
        self.apply()?;
        failure.map_or(Ok(()), Err)
    }

    fn restore_bridge(&self, definition: &NetworkDefinition) -> Result<()> {
        let exists = link::find(None, &definition.bridge)
            .map_err(|source| self.bridge_error("look up", definition, source))?
            .is_some();
        match definition.kind {
            NetworkKind::Managed => self.set_up_bridge(definition, !exists),
            NetworkKind::Unmanaged if !exists => Err(NetworkError::BridgeMissing {
                network: definition.name.clone(),
                bridge: definition.bridge.clone(),
            }),
            NetworkKind::Unmanaged => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_mac_is_stable_unicast_and_locally_administered() {
        let mac = bridge_mac("default");
        assert_eq!(mac, bridge_mac("default"));
        assert_ne!(mac, bridge_mac("lab"));
        assert!(mac.starts_with("02:"), "{mac}");
        assert_eq!(mac.len(), 17);
    }
}
