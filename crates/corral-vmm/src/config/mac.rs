//! Ethernet MAC addresses as configs and definitions write them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An Ethernet MAC address, written `52:54:00:12:34:56`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {0:?}: write six hex bytes separated by colons, like 52:54:00:12:34:56"
)]
pub struct MacAddressError(String);

impl MacAddress {
    /// A locally administered unicast address made from `seed` (e.g. an instance's UUID), so
    /// the same seed always gives the same address.
    pub fn local_from_seed(seed: &[u8]) -> MacAddress {
        // FNV-1a over the seed, spread into five bytes after a fixed first byte.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in seed {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let bytes = hash.to_be_bytes();
        MacAddress::local([bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]])
    }

    /// A random locally administered unicast address.
    pub fn random_local() -> MacAddress {
        let mut bytes = [0u8; 5];
        // Without entropy the address is merely less unique, never invalid.
        let _ = getrandom::fill(&mut bytes);
        MacAddress::local(bytes)
    }

    /// `02:xx:xx:xx:xx:xx`: the locally administered bit set, the multicast bit clear.
    fn local(rest: [u8; 5]) -> MacAddress {
        MacAddress([0x02, rest[0], rest[1], rest[2], rest[3], rest[4]])
    }

    /// True for a multicast/broadcast address or all zeroes: not usable by a NIC.
    pub fn is_unusable(&self) -> bool {
        self.0[0] & 1 != 0 || self.0 == [0; 6]
    }
}

impl FromStr for MacAddress {
    type Err = MacAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || MacAddressError(text.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(MacAddress(bytes))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
