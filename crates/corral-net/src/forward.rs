//! Port forwards (`tcp:8080:80`: host port 8080 to port 80 of an instance nic's address) and the
//! host's own use of ports, which a forward must not shadow.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Host port `host_port` (on every address of the host) to `guest_port` of an instance nic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortForward {
    pub protocol: Protocol,
    pub host_port: u16,
    pub guest_port: u16,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a port forward: write PROTOCOL:HOST_PORT:GUEST_PORT with tcp or udp and ports \
     1 to 65535, like tcp:8080:80"
)]
pub struct ForwardError(String);

impl FromStr for PortForward {
    type Err = ForwardError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ForwardError(text.to_owned());
        let mut parts = text.split(':');
        let protocol = match parts.next() {
            Some("tcp") => Protocol::Tcp,
            Some("udp") => Protocol::Udp,
            _ => return Err(invalid()),
        };
        let mut port = || -> Result<u16, ForwardError> {
            parts
                .next()
                .and_then(|port| port.parse().ok())
                .filter(|&port| port != 0)
                .ok_or_else(invalid)
        };
        let (host_port, guest_port) = (port()?, port()?);
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self {
            protocol,
            host_port,
            guest_port,
        })
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.protocol, self.host_port, self.guest_port
        )
    }
}

impl TryFrom<String> for PortForward {
    type Error = ForwardError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<PortForward> for String {
    fn from(forward: PortForward) -> String {
        forward.to_string()
    }
}

/// Whether a socket of the calling thread's network namespace holds `port`: a listening TCP
/// socket, or any UDP socket bound to it (IPv4 or IPv6).
pub fn host_port_in_use(protocol: Protocol, port: u16) -> std::io::Result<bool> {
    // thread-self, not self: /proc/self/net shows the main thread's namespace, and a caller
    // (a test) may have entered another one on this thread only.
    let tables: [&str; 2] = match protocol {
        Protocol::Tcp => ["tcp", "tcp6"],
        Protocol::Udp => ["udp", "udp6"],
    };
    for table in tables {
        let path = format!("/proc/thread-self/net/{table}");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // No IPv6 in this kernel: nothing can listen there.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if socket_table_holds(&text, protocol, port) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads a `/proc/net/{tcp,udp}[6]` table: `sl local_address rem_address st ...`, the local
/// address as `HEXADDR:HEXPORT`, the state as hex (0A is TCP's LISTEN).
fn socket_table_holds(text: &str, protocol: Protocol, port: u16) -> bool {
    text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let local_port = fields
            .next()
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok());
        let state = fields.nth(1);
        local_port == Some(port) && (protocol == Protocol::Udp || state == Some("0A"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_and_print_the_same() {
        let forward: PortForward = "udp:5353:53".parse().unwrap();
        assert_eq!(forward.protocol, Protocol::Udp);
        assert_eq!((forward.host_port, forward.guest_port), (5353, 53));
        assert_eq!(forward.to_string(), "udp:5353:53");
        for bad in [
            "tcp:8080",
            "sctp:1:2",
            "tcp:0:80",
            "tcp:70000:80",
            "tcp:1:2:3",
            "8080:80",
        ] {
            let err = bad.parse::<PortForward>().unwrap_err();
            assert!(err.to_string().contains("like tcp:8080:80"), "{err}");
        }
    }

    #[test]
    fn only_listening_tcp_sockets_and_bound_udp_sockets_hold_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
            0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n   \
            1: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000\n";
        assert!(socket_table_holds(table, Protocol::Tcp, 8080));
        // Port 80 here is only a connection's local end, not a listener.
        assert!(!socket_table_holds(table, Protocol::Tcp, 80));
        assert!(socket_table_holds(table, Protocol::Udp, 80));
    }
}
