//! Interface addresses written `ADDRESS/PREFIX` (`10.0.3.1/24`, `fd42::1/64`): an address of the
//! host together with the length of its subnet's prefix, the form `ip address add` takes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an {family} address with a prefix length, like {example}")]
pub struct CidrError {
    text: String,
    family: &'static str,
    example: &'static str,
}

/// An IPv4 address and its subnet's prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(address: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { address, prefix })
    }

    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The subnet's first address (all host bits zero).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }

    /// The subnet's last address (all host bits one).
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    /// The subnet itself, `NETWORK/PREFIX`.
    pub fn subnet(self) -> Ipv4Cidr {
        Self {
            address: self.network(),
            prefix: self.prefix,
        }
    }

    pub fn contains(self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network())
    }

    /// Whether the two subnets share an address (one holds the other).
    pub fn overlaps(self, other: Ipv4Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = u32::MAX.checked_shl(32 - u32::from(shorter)).unwrap_or(0);
        u32::from(self.address) & mask == u32::from(other.address) & mask
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || CidrError {
            text: text.to_owned(),
            family: "IPv4",
            example: "10.0.3.1/24",
        };
        let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let address = address.parse().map_err(|_| invalid())?;
        let prefix = prefix.parse().map_err(|_| invalid())?;
        Self::new(address, prefix).ok_or_else(invalid)
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = CidrError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(cidr: Ipv4Cidr) -> String {
        cidr.to_string()
    }
}

/// An IPv6 address and its subnet's prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv6Cidr {
    pub address: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Cidr {
    fn mask(self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The subnet itself, `NETWORK/PREFIX`.
    pub fn subnet(self) -> Ipv6Cidr {
        Self {
            address: Ipv6Addr::from(u128::from(self.address) & self.mask()),
            prefix: self.prefix,
        }
    }

    /// Whether the two subnets share an address (one holds the other).
    pub fn overlaps(self, other: Ipv6Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = u128::MAX.checked_shl(128 - u32::from(shorter)).unwrap_or(0);
        u128::from(self.address) & mask == u128::from(other.address) & mask
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || CidrError {
            text: text.to_owned(),
            family: "IPv6",
            example: "fd42:1:2::1/64",
        };
        let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let address = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if prefix > 128 {
            return Err(invalid());
        }
        Ok(Self { address, prefix })
    }
}

impl TryFrom<String> for Ipv6Cidr {
    type Error = CidrError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Ipv6Cidr> for String {
    fn from(cidr: Ipv6Cidr) -> String {
        cidr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cidr_knows_its_subnet_and_what_it_overlaps() {
        let gateway: Ipv4Cidr = "10.0.3.1/24".parse().unwrap();
        assert_eq!(gateway.network(), Ipv4Addr::new(10, 0, 3, 0));
        assert_eq!(gateway.broadcast(), Ipv4Addr::new(10, 0, 3, 255));
        assert_eq!(gateway.subnet().to_string(), "10.0.3.0/24");
        assert!(gateway.contains(Ipv4Addr::new(10, 0, 3, 200)));
        assert!(!gateway.contains(Ipv4Addr::new(10, 0, 4, 1)));
        assert!(gateway.overlaps("10.0.0.0/16".parse().unwrap()));
        assert!(!gateway.overlaps("10.0.4.0/24".parse().unwrap()));
        assert!(gateway.overlaps("0.0.0.0/0".parse().unwrap()));
        let v6: Ipv6Cidr = "fd42:1:2::1/64".parse().unwrap();
        assert_eq!(v6.subnet().to_string(), "fd42:1:2::/64");
        assert!(v6.overlaps("fd42:1:2::/48".parse().unwrap()));
        assert!(!v6.overlaps("fd42:1:3::1/64".parse().unwrap()));
    }

    #[test]
    fn malformed_cidrs_are_refused_with_an_example() {
        for bad in [
            "10.0.3.1",
            "10.0.3.1/33",
            "10.0.3/24",
            "x/24",
            "10.0.3.1/-1",
        ] {
            let err = bad.parse::<Ipv4Cidr>().unwrap_err();
            assert!(err.to_string().contains("like 10.0.3.1/24"), "{err}");
        }
        assert!("fd42::1/129".parse::<Ipv6Cidr>().is_err());
    }
}
