//! Per-nic anti-spoofing in nftables: an instance's frames, as they enter a bridge from its host
//! interface, must carry its own MAC address and, when corral knows it, its own IPv4 address.
//!
//! Everything lives in corral's own `table bridge corral` (other tables are never touched): one
//! base chain at the bridge's prerouting hook sends each frame through a verdict map keyed by
//! input interface to that nic's chain, so adding or removing one nic is one atomic `nft -f`
//! transaction that leaves the others alone.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::link::{validate_interface_name, LinkError, NetnsPath};

/// The nftables table, of family `bridge`, that holds every nic's filter.
pub const TABLE: &str = "corral";

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Interface(#[from] LinkError),
    #[error("cannot run `nft` (install nftables)")]
    Spawn(#[source] std::io::Error),
    #[error("`nft` refused the filter of {interface}: {stderr}")]
    Failed { interface: String, stderr: String },
}

/// What one nic may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicFilter {
    /// The host end of the nic (a veth or a tap), a port of the bridge.
    pub interface: String,
    pub mac: [u8; 6],
    /// The nic's IPv4 address, when corral knows it (a static one, or a lease).
    pub ipv4: Option<Ipv4Addr>,
}

fn chain(interface: &str) -> String {
    format!("nic-{interface}")
}

fn mac_text(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// The transaction that installs (or replaces) `filter`.
pub fn add_script(filter: &NicFilter) -> Result<String, FilterError> {
    validate_interface_name(&filter.interface)?;
    let NicFilter { interface, mac, .. } = filter;
    let chain = chain(interface);
    let mac = mac_text(mac);
    let mut script = format!(
        "add table bridge {TABLE}\n\
         add map bridge {TABLE} nics {{ type ifname : verdict ; }}\n\
         add chain bridge {TABLE} prerouting {{ type filter hook prerouting priority -300 ; policy accept ; }}\n\
         flush chain bridge {TABLE} prerouting\n\
         add rule bridge {TABLE} prerouting iifname vmap @nics\n\
         add chain bridge {TABLE} {chain}\n\
         flush chain bridge {TABLE} {chain}\n\
         add rule bridge {TABLE} {chain} ether saddr != {mac} drop\n\
         add rule bridge {TABLE} {chain} ether type vlan drop\n\
         add rule bridge {TABLE} {chain} ether type 0x88a8 drop\n\
         add rule bridge {TABLE} {chain} arp saddr ether != {mac} drop\n"
    );
    if let Some(ip) = filter.ipv4 {
        // 0.0.0.0 is what a client without an address sends: DHCP requests, ARP probes.
        script.push_str(&format!(
            "add rule bridge {TABLE} {chain} arp saddr ip != {{ 0.0.0.0, {ip} }} drop\n\
             add rule bridge {TABLE} {chain} ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept\n\
             add rule bridge {TABLE} {chain} ip saddr != {ip} drop\n"
        ));
    }
    script.push_str(&format!(
        "add element bridge {TABLE} nics {{ \"{interface}\" : jump {chain} }}\n"
    ));
    Ok(script)
}

/// The transaction that removes the filter of `interface`.
pub fn remove_script(interface: &str) -> Result<String, FilterError> {
    validate_interface_name(interface)?;
    let chain = chain(interface);
    Ok(format!(
        "delete element bridge {TABLE} nics {{ \"{interface}\" }}\n\
         flush chain bridge {TABLE} {chain}\n\
         delete chain bridge {TABLE} {chain}\n"
    ))
}

/// Installs `filter`, replacing an earlier one of the same interface.
pub fn add(netns: Option<&NetnsPath>, filter: &NicFilter) -> Result<(), FilterError> {
    nft(netns, &filter.interface, &add_script(filter)?)
}

/// Removes the filter of `interface`; one that is not there is already removed.
pub fn remove(netns: Option<&NetnsPath>, interface: &str) -> Result<(), FilterError> {
    let script = remove_script(interface)?;
    match nft(netns, interface, &script) {
        Ok(()) => Ok(()),
        // The failed removal of a filter that is not there says nothing worth keeping.
        Err(_) if !exists(netns, interface)? => Ok(()),
        Err(err) => Err(err),
    }
}

/// Whether `interface` has a filter (its chain exists).
pub fn exists(netns: Option<&NetnsPath>, interface: &str) -> Result<bool, FilterError> {
    validate_interface_name(interface)?;
    let chain = chain(interface);
    let mut command = command(netns);
    command.args(["list", "chain", "bridge", TABLE, &chain]);
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(FilterError::Spawn)?;
    Ok(status.success())
}

fn command(netns: Option<&NetnsPath>) -> Command {
    match netns {
        Some(NetnsPath(path)) => {
            let mut option = std::ffi::OsString::from("--net=");
            option.push(path);
            let mut command = Command::new("nsenter");
            command.arg(option).arg("nft");
            command
        }
        None => Command::new("nft"),
    }
}

/// Runs `script` as one nftables transaction: all of it applies, or none.
fn nft(netns: Option<&NetnsPath>, interface: &str, script: &str) -> Result<(), FilterError> {
    let mut child = command(netns)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FilterError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write cut short makes nft fail, which the status reports.
        let _ = stdin.write_all(script.as_bytes());
    }
    let output = child.wait_with_output().map_err(FilterError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FilterError::Failed {
            interface: interface.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(ipv4: Option<Ipv4Addr>) -> NicFilter {
        NicFilter {
            interface: "vc0123456789a0".into(),
            mac: [0x02, 0xab, 0, 0, 0, 0x01],
            ipv4,
        }
    }

    #[test]
    fn a_nic_may_send_only_its_own_mac_and_address() {
        let script = add_script(&filter(Some(Ipv4Addr::new(10, 0, 3, 10)))).unwrap();
        assert!(
            script.contains("ether saddr != 02:ab:00:00:00:01 drop"),
            "{script}"
        );
        assert!(script.contains("arp saddr ether != 02:ab:00:00:00:01 drop"));
        assert!(script.contains("ip saddr != 10.0.3.10 drop"));
        assert!(script.contains("arp saddr ip != { 0.0.0.0, 10.0.3.10 } drop"));
        assert!(script.contains("\"vc0123456789a0\" : jump nic-vc0123456789a0"));
        // Only corral's own table.
        for line in script.lines() {
            assert!(line.contains(" bridge corral"), "{line}");
        }
    }

    #[test]
    fn without_a_known_address_only_the_mac_is_checked() {
        let script = add_script(&filter(None)).unwrap();
        assert!(script.contains("ether saddr != 02:ab:00:00:00:01 drop"));
        assert!(!script.contains("ip saddr"), "{script}");
    }

    #[test]
    fn interface_names_cannot_inject_commands() {
        let mut bad = filter(None);
        bad.interface = "x\" }\nflush".into();
        assert!(add_script(&bad).is_err());
        assert!(remove_script("a;b").is_err());
    }
}
