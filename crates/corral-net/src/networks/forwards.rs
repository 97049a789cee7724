//! Port forwards in effect, by owner (an instance nic), in `networks/NAME/forwards.json`: set
//! and cleared under the networks' lock, each change checked against the other owners' forwards
//! and the host's sockets, then applied with the whole table.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use corral_host::atomic::{write_file, PRIVATE_FILE_MODE};
use serde::{Deserialize, Serialize};

use super::{io_error, NetworkError, Networks, Result};
use crate::forward::{host_port_in_use, PortForward};

const FORWARDS_FILE: &str = "forwards.json";

/// The port forwards of one instance nic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicForwards {
    pub address: Ipv4Addr,
    pub forwards: Vec<PortForward>,
}

impl Networks {
    fn forwards_path(&self, name: &str) -> PathBuf {
        self.network_dir(name).join(FORWARDS_FILE)
    }

    /// The port forwards in effect on network `name`, by owner.
    pub fn forwards(&self, name: &str) -> Result<BTreeMap<String, NicForwards>> {
        let path = self.forwards_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| NetworkError::Corrupt { path, source }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(err) => Err(io_error("read", &path)(err)),
        }
    }

    fn save_forwards(&self, name: &str, forwards: &BTreeMap<String, NicForwards>) -> Result<()> {
        let path = self.forwards_path(name);
        if forwards.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    Err(io_error("remove", &path)(err))
                }
                _ => Ok(()),
            };
        }
        let json = serde_json::to_vec_pretty(forwards).expect("forwards serialise");
        write_file(&path, &json, PRIVATE_FILE_MODE)?;
        Ok(())
    }

    /// Sets the port forwards of `owner` (an instance nic, such as `web/0`) on network `name`
    /// to `address`, replacing the ones it had (on any network); an empty list removes them.
    /// A host port another owner forwards, or a socket of the host holds, is refused.
    pub fn set_forwards(
        &self,
        name: &str,
        owner: &str,
        address: Ipv4Addr,
        forwards: &[PortForward],
    ) -> Result<()> {
        let _lock = self.lock()?;
        let definition = self.get(name)?;
        if let Some(v4) = definition.ipv4.filter(|v4| !v4.contains(address)) {
            return Err(NetworkError::ForwardAddress {
                network: definition.name,
                address,
                subnet: v4.subnet(),
            });
        }
        let mut all: BTreeMap<String, BTreeMap<String, NicForwards>> = BTreeMap::new();
        for network in self.list()? {
            let mut table = self.forwards(&network.name)?;
            table.remove(owner);
            all.insert(network.name, table);
        }
        let mut claimed: Vec<(PortForward, String)> = all
            .values()
            .flat_map(|table| table.iter())
            .flat_map(|(holder, nic)| nic.forwards.iter().map(|f| (*f, holder.clone())))
            .collect();
        for forward in forwards {
            let same_port = |f: &PortForward| {
                f.protocol == forward.protocol && f.host_port == forward.host_port
            };
            if let Some((_, holder)) = claimed.iter().find(|(f, _)| same_port(f)) {
                return Err(NetworkError::PortInUse {
                    forward: *forward,
                    holder: format!("forwarded to {holder}"),
                });
            }
            if host_port_in_use(forward.protocol, forward.host_port)
                .map_err(NetworkError::Sockets)?
            {
                return Err(NetworkError::PortInUse {
                    forward: *forward,
                    holder: "in use by a program on the host".to_owned(),
                });
            }
            claimed.push((*forward, owner.to_owned()));
        }
        if !forwards.is_empty() {
            all.entry(definition.name.clone()).or_default().insert(
                owner.to_owned(),
                NicForwards {
                    address,
                    forwards: forwards.to_vec(),
                },
            );
        }
        self.replace_forwards(&all)
    }

    /// Removes every port forward of `owner`; without any, changes nothing.
    pub fn clear_forwards(&self, owner: &str) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        let _lock = self.lock()?;
        let mut all = BTreeMap::new();
        let mut held = false;
        for network in self.list()? {
            let mut table = self.forwards(&network.name)?;
            held |= table.remove(owner).is_some();
            all.insert(network.name, table);
        }
        if !held {
            return Ok(());
        }
        self.replace_forwards(&all)
    }

    /// Writes every network's forwards and applies them; on failure the old ones come back.
    fn replace_forwards(
        &self,
        all: &BTreeMap<String, BTreeMap<String, NicForwards>>,
    ) -> Result<()> {
        let mut old = BTreeMap::new();
        for name in all.keys() {
            old.insert(name.clone(), self.forwards(name)?);
        }
        let write = |tables: &BTreeMap<String, BTreeMap<String, NicForwards>>| {
            tables
                .iter()
                .try_for_each(|(name, table)| self.save_forwards(name, table))
        };
        if let Err(err) = write(all).and_then(|()| self.apply()) {
            let _ = write(&old);
            let _ = self.apply();
            return Err(err);
        }
        Ok(())
    }
}
