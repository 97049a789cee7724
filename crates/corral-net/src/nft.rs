//! corral's nftables table `inet corral`: NAT, forwarding and port forwards of the managed
//! networks. The table is always written whole from the definitions and the active forwards, in
//! one `nft -f` transaction that deletes and re-adds it, so it never holds a stale or half rule;
//! no other table is ever touched.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::definition::{NetworkDefinition, NetworkKind};
use crate::forward::PortForward;

pub const TABLE: &str = "corral";

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run `nft` (install nftables)")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused corral's table: {stderr}")]
    Failed { stderr: String },
}

/// A port forward in effect: a host port to a port of `address` on the network of `bridge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveForward {
    pub bridge: String,
    pub address: Ipv4Addr,
    pub forward: PortForward,
}

/// The `nft -f` script that replaces table `inet corral` with the rules of `networks` and
/// `forwards`; with nothing to do, it only removes the table.
pub fn ruleset(networks: &[NetworkDefinition], forwards: &[ActiveForward]) -> String {
    let managed: Vec<&NetworkDefinition> = networks
        .iter()
        .filter(|network| network.kind == NetworkKind::Managed)
        .collect();
    // Declaring the table first makes the delete succeed when it does not exist yet.
    let mut script = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
    if managed.is_empty() && forwards.is_empty() {
        return script;
    }
    let (mut input, mut forward, mut postrouting) = (String::new(), String::new(), String::new());
    for network in &managed {
        let bridge = quoted(&network.bridge);
        // DHCP and DNS from the network's own service on the gateway.
        let _ = writeln!(input, "    iifname {bridge} udp dport {{ 53, 67 }} accept");
        let _ = writeln!(input, "    iifname {bridge} tcp dport 53 accept");
        if network.ipv6.is_some() {
            let _ = writeln!(input, "    iifname {bridge} udp dport 547 accept");
        }
        let _ = writeln!(forward, "    iifname {bridge} accept");
        let _ = writeln!(
            forward,
            "    oifname {bridge} ct state established,related accept"
        );
        let _ = writeln!(forward, "    oifname {bridge} ct status dnat accept");
        if network.nat {
            // Behind NAT: nothing from outside starts a connection to an instance (other than
            // through a port forward, accepted above).
            let _ = writeln!(forward, "    oifname {bridge} drop");
        }
        if let Some(v4) = network.ipv4 {
            let subnet = v4.subnet();
            if network.nat {
                let _ = writeln!(
                    postrouting,
                    "    ip saddr {subnet} oifname != {bridge} masquerade"
                );
            }
            // Hairpin: an instance reaching a forward of its own network gets the answer back
            // through the host, so the host must be the source the server sees.
            let _ = writeln!(
                postrouting,
                "    oifname {bridge} ip saddr {subnet} ct status dnat masquerade"
            );
        }
        if let (Some(v6), true) = (network.ipv6, network.nat) {
            let _ = writeln!(
                postrouting,
                "    ip6 saddr {} oifname != {bridge} masquerade",
                v6.subnet()
            );
        }
    }
    let mut dnat = String::new();
    for active in forwards {
        let PortForward {
            protocol,
            host_port,
            guest_port,
        } = active.forward;
        let _ = writeln!(
            dnat,
            "    fib daddr type local {protocol} dport {host_port} dnat ip to {}:{guest_port}",
            active.address
        );
    }
    // The output chain's priority -100 is dstnat's, which nft names only for prerouting.
    let _ = write!(
        script,
        "table inet {TABLE} {{\n\
         \x20 chain input {{\n    type filter hook input priority filter; policy accept;\n{input}  }}\n\
         \x20 chain forward {{\n    type filter hook forward priority filter; policy accept;\n{forward}  }}\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{postrouting}  }}\n\
         }}\n"
    );
    script
}

/// An interface name as an nft string (names are validated: no quote can occur).
fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// Runs `script` as one `nft -f -` transaction in the calling thread's network namespace.
pub fn apply(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    let written = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes());
    let output = child.wait_with_output().map_err(NftError::Spawn)?;
    if !output.status.success() {
        return Err(NftError::Failed {
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    written.map_err(NftError::Spawn)
}

/// Turns on IPv4 (and with `ipv6`, IPv6) forwarding in the calling thread's network namespace,
/// which NAT needs. corral never turns it off again: other software may rely on it by then.
pub fn enable_forwarding(ipv6: bool) -> std::io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    if ipv6 {
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::DEFAULT_DOMAIN;

    #[test]
    fn a_nat_network_and_a_forward_make_masquerade_and_dnat_rules() {
        let network = NetworkDefinition {
            name: "default".into(),
            kind: NetworkKind::Managed,
            bridge: "corral-default".into(),
            ipv4: Some("10.0.3.1/24".parse().unwrap()),
            nat: true,
            dhcp_range: None,
            domain: DEFAULT_DOMAIN.into(),
            ipv6: None,
            dns_upstream: vec![],
        };
        let forward = ActiveForward {
            bridge: network.bridge.clone(),
            address: Ipv4Addr::new(10, 0, 3, 10),
            forward: "tcp:8080:80".parse().unwrap(),
        };
        let script = ruleset(&[network], &[forward]);
        assert!(script.starts_with("table inet corral {}\ndelete table inet corral\n"));
        for rule in [
            "ip saddr 10.0.3.0/24 oifname != \"corral-default\" masquerade",
            "oifname \"corral-default\" ip saddr 10.0.3.0/24 ct status dnat masquerade",
            "fib daddr type local tcp dport 8080 dnat ip to 10.0.3.10:80",
            "iifname \"corral-default\" udp dport { 53, 67 } accept",
        ] {
            assert!(script.contains(rule), "{rule} missing from\n{script}");
        }
        assert_eq!(
            script.matches("dnat ip to").count(),
            2,
            "prerouting and output"
        );
    }

    #[test]
    fn without_networks_the_table_is_only_removed() {
        assert_eq!(
            ruleset(&[], &[]),
            "table inet corral {}\ndelete table inet corral\n"
        );
    }
}
