//! Network identity: leases that would make a clone ask its DHCP server for the template's
//! address, and names and configurations pinned to the template's MAC addresses.

use std::path::Path;

use super::{has_prefix, has_suffix, Planner};
use crate::error::Result;
use crate::Operation;

/// Lease directories emptied whole: ISC dhclient (Debian's and Red Hat's places), dhcpcd, and
/// systemd-networkd's persistent state.
const LEASE_DIRS: [&str; 4] = [
    "/var/lib/dhcp",
    "/var/lib/dhclient",
    "/var/lib/dhcpcd",
    "/var/lib/systemd/network",
];
/// NetworkManager keeps other state beside its leases.
const NM_STATE: &str = "/var/lib/NetworkManager";
const PERSISTENT_NET_RULES: &str = "/etc/udev/rules.d/70-persistent-net.rules";
const IFCFG_DIR: &str = "/etc/sysconfig/network-scripts";
const NM_CONNECTIONS: &str = "/etc/NetworkManager/system-connections";

pub(super) fn dhcp_client_state(p: &mut Planner) -> Result<()> {
    let op = Operation::DhcpClientState;
    for dir in LEASE_DIRS {
        p.remove_entries(op, Path::new(dir), |_| true)?;
    }
    p.remove_entries(op, Path::new(NM_STATE), |name| has_suffix(name, ".lease"))
}

/// udev's generated names (`eth0` for the template's MAC) would give a clone's NIC another name.
pub(super) fn udev_persistent_net(p: &mut Planner) -> Result<()> {
    p.remove(
        Operation::UdevPersistentNet,
        Path::new(PERSISTENT_NET_RULES),
    )
}

/// `HWADDR=` lines of Red Hat's ifcfg files and `mac-address=` of NetworkManager's keyfiles tie
/// a connection to the template's NIC; without them the clone's NIC (a new MAC) matches.
pub(super) fn net_hwaddr(p: &mut Planner) -> Result<()> {
    let op = Operation::NetHwaddr;
    if let Some(dir) = p.real_dir(op, Path::new(IFCFG_DIR))? {
        for name in p.names(&dir.path)? {
            if has_prefix(&name, "ifcfg-") {
                p.rewrite(op, &dir.path.join(name), |text| {
                    drop_keys(text, "HWADDR", '=')
                })?;
            }
        }
    }
    if let Some(dir) = p.real_dir(op, Path::new(NM_CONNECTIONS))? {
        for name in p.names(&dir.path)? {
            if has_suffix(&name, ".nmconnection") {
                p.rewrite(op, &dir.path.join(name), |text| {
                    drop_keys(text, "mac-address", '=')
                })?;
            }
        }
    }
    Ok(())
}

/// `text` without the lines setting `key` (`key=value`, spaces allowed around the key).
fn drop_keys(text: &str, key: &str, separator: char) -> String {
    text.split_inclusive('\n')
        .filter(|line| {
            line.split_once(separator)
                .is_none_or(|(name, _)| name.trim() != key)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_key_goes() {
        let ifcfg = "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nMACADDR_X=1\nONBOOT=yes";
        assert_eq!(
            drop_keys(ifcfg, "HWADDR", '='),
            "DEVICE=eth0\nMACADDR_X=1\nONBOOT=yes"
        );
        let nm = "[ethernet]\nmac-address=52:54:00:12:34:56\ncloned-mac-address=random\n";
        assert_eq!(
            drop_keys(nm, "mac-address", '='),
            "[ethernet]\ncloned-mac-address=random\n"
        );
    }
}
