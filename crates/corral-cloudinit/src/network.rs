//! The `network-config` corral writes when the user gives none: netplan version 2, one
//! ethernet per nic matched by its MAC address (the guest names its interfaces as it likes);
//! a fixed address with its prefix becomes a static configuration with the gateway and name
//! servers, anything else DHCPv4.

use std::net::Ipv4Addr;

use serde_yaml::{Mapping, Value};

/// One network interface of the instance, as the guest will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// `52:54:00:12:34:56`.
    pub mac: String,
    /// A fixed address and its prefix length; `None` for DHCP.
    pub address: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

/// The version 2 document for `interfaces` (`nic0`, `nic1`, ... in order).
pub fn generate(interfaces: &[Interface]) -> String {
    let mut ethernets = Mapping::new();
    for (index, interface) in interfaces.iter().enumerate() {
        let mut ethernet = Mapping::new();
        ethernet.insert(
            "match".into(),
            Value::Mapping(Mapping::from_iter([(
                "macaddress".into(),
                interface.mac.to_lowercase().into(),
            )])),
        );
        match interface.address {
            Some((address, prefix)) => {
                ethernet.insert("dhcp4".into(), false.into());
                ethernet.insert(
                    "addresses".into(),
                    Value::Sequence(vec![format!("{address}/{prefix}").into()]),
                );
                if let Some(gateway) = interface.gateway {
                    let route = Mapping::from_iter([
                        ("to".into(), "default".into()),
                        ("via".into(), gateway.to_string().into()),
                    ]);
                    ethernet.insert(
                        "routes".into(),
                        Value::Sequence(vec![Value::Mapping(route)]),
                    );
                }
                if !interface.dns.is_empty() {
                    let servers = interface
                        .dns
                        .iter()
                        .map(|dns| Value::from(dns.to_string()))
                        .collect();
                    ethernet.insert(
                        "nameservers".into(),
                        Value::Mapping(Mapping::from_iter([(
                            "addresses".into(),
                            Value::Sequence(servers),
                        )])),
                    );
                }
            }
            None => {
                ethernet.insert("dhcp4".into(), true.into());
            }
        }
        ethernets.insert(format!("nic{index}").into(), Value::Mapping(ethernet));
    }
    let document = Mapping::from_iter([
        ("version".into(), 2.into()),
        ("ethernets".into(), Value::Mapping(ethernets)),
    ]);
    crate::yaml(&Value::Mapping(document))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_addresses_are_static_and_the_rest_dhcp_matched_by_mac() {
        let text = generate(&[
            Interface {
                mac: "52:54:00:AA:00:01".into(),
                address: Some(("10.0.3.10".parse().unwrap(), 24)),
                gateway: Some("10.0.3.1".parse().unwrap()),
                dns: vec!["10.0.3.1".parse().unwrap()],
            },
            Interface {
                mac: "52:54:00:aa:00:02".into(),
                address: None,
                gateway: None,
                dns: vec![],
            },
        ]);
        assert_eq!(
            text,
            "version: 2\n\
             ethernets:\n  \
               nic0:\n    \
                 match:\n      macaddress: 52:54:00:aa:00:01\n    \
                 dhcp4: false\n    \
                 addresses:\n    - 10.0.3.10/24\n    \
                 routes:\n    - to: default\n      via: 10.0.3.1\n    \
                 nameservers:\n      addresses:\n      - 10.0.3.1\n  \
               nic1:\n    \
                 match:\n      macaddress: 52:54:00:aa:00:02\n    \
                 dhcp4: true\n"
        );
        crate::validate::document("network_config", text.as_bytes()).unwrap();
    }
}
