//! A nic's IPv4 address as a definition writes it: `10.0.3.10/24`, or `10.0.3.10` when the
//! prefix comes from the network the nic is on.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 address: write 10.0.3.10 or 10.0.3.10/24")]
pub struct HostAddressError(String);

/// An interface's IPv4 address, with the length of its subnet's prefix when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostAddress {
    pub address: Ipv4Addr,
    pub prefix_len: Option<u8>,
}

impl FromStr for HostAddress {
    type Err = HostAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || HostAddressError(text.to_owned());
        let (address, prefix_len) = match text.split_once('/') {
            Some((address, prefix)) => {
                let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
                if prefix > 32 {
                    return Err(invalid());
                }
                (address, Some(prefix))
            }
            None => (text, None),
        };
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(invalid());
        }
        Ok(HostAddress {
            address,
            prefix_len,
        })
    }
}

impl fmt::Display for HostAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len {
            Some(prefix) => write!(f, "{}/{prefix}", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

impl Serialize for HostAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_and_without_a_prefix_and_print_back() {
        for text in ["10.0.3.10/24", "10.0.3.10", "192.168.1.2/32"] {
            assert_eq!(text.parse::<HostAddress>().unwrap().to_string(), text);
        }
        let parsed: HostAddress = "10.0.3.10/24".parse().unwrap();
        assert_eq!(parsed.prefix_len, Some(24));
        for bad in [
            "10.0.3.10/33",
            "10.0.3/24",
            "0.0.0.0",
            "224.0.0.1",
            "fd00::1",
            "x",
            "",
        ] {
            assert!(bad.parse::<HostAddress>().is_err(), "{bad}");
        }
    }
}
