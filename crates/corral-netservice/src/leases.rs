//! The lease database, `leases.json`, and the hook dnsmasq runs to keep it.
//!
//! With `leasefile-ro` dnsmasq keeps leases in memory only and runs its `dhcp-script` (see
//! dnsmasq(8)): once at start with `init`, which prints the stored leases in dnsmasq's lease
//! file format (`EXPIRY MAC IP HOSTNAME CLIENT-ID`, `*` for a missing field), and then with
//! `add`, `old` or `del`, `MAC IP [HOSTNAME]` and the lease's expiry and client id in
//! `DNSMASQ_*` variables on every change. Each change replaces `leases.json` atomically, under a
//! lock, so a crash at any moment leaves the old database or the new one.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::is_label;
use crate::error::Error;
use crate::paths::StatePaths;

/// One DHCPv4 lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The client's hardware address as dnsmasq reports it (`aa:bb:cc:dd:ee:ff` for Ethernet).
    pub mac: String,
    pub ip: Ipv4Addr,
    /// The name the client asked for (or its reservation's), if a valid DNS label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// When the lease ends, in seconds since the Unix epoch; 0 for a lease that never ends.
    pub expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// The content of `leases.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LeaseFile {
    leases: Vec<Lease>,
}

/// What one run of the hook is asked to do.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// Print the stored leases for dnsmasq.
    Init,
    /// A lease was made or changed.
    Store(Lease),
    /// The lease of this address ended.
    Delete(Ipv4Addr),
    /// Anything else dnsmasq reports (DHCPv6, ARP, TFTP, actions added later).
    Ignore,
}

/// A hardware address or client id as dnsmasq prints them: hex octets separated by `:` or `-`.
fn is_hex_id(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'-')
}

impl Event {
    /// Reads dnsmasq's arguments and environment (`env`), `now` seconds after the epoch.
    /// Anything malformed is ignored: a bad event must not stop the DHCP server.
    fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>, now: u64) -> Event {
        let number = |name| env(name).and_then(|v| v.trim().parse::<u64>().ok());
        match args {
            [action] if action == "init" => Event::Init,
            [action, mac, ip, rest @ ..] if action == "add" || action == "old" => {
                let (Ok(ip), true) = (ip.parse(), is_hex_id(mac)) else {
                    return Event::Ignore;
                };
                let expires = number("DNSMASQ_LEASE_EXPIRES")
                    .or_else(|| number("DNSMASQ_LEASE_LENGTH").map(|length| now + length))
                    .unwrap_or(0);
                Event::Store(Lease {
                    mac: mac.to_ascii_lowercase(),
                    ip,
                    hostname: rest.first().filter(|name| is_label(name)).cloned(),
                    expires,
                    client_id: env("DNSMASQ_CLIENT_ID").filter(|id| is_hex_id(id)),
                })
            }
            [action, _, ip, ..] if action == "del" => {
                ip.parse().map_or(Event::Ignore, Event::Delete)
            }
            _ => Event::Ignore,
        }
    }
}

/// Applies `event` to `leases`; true when they changed.
fn apply(leases: &mut Vec<Lease>, event: Event) -> bool {
    match event {
        Event::Store(lease) => {
            if leases.contains(&lease) {
                return false;
            }
            leases.retain(|l| l.ip != lease.ip);
            leases.push(lease);
            leases.sort_by_key(|l| l.ip);
            true
        }
        Event::Delete(ip) => {
            let before = leases.len();
            leases.retain(|l| l.ip != ip);
            leases.len() != before
        }
        Event::Init | Event::Ignore => false,
    }
}

/// The leases in dnsmasq's lease file format.
fn lease_file_lines(leases: &[Lease]) -> String {
    leases
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {} {}\n",
                l.expires,
                l.mac,
                l.ip,
                l.hostname.as_deref().unwrap_or("*"),
                l.client_id.as_deref().unwrap_or("*")
            )
        })
        .collect()
}

fn read(paths: &StatePaths) -> Result<Vec<Lease>, Error> {
    let path = paths.leases();
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<LeaseFile>(&bytes)
            .map(|file| file.leases)
            .map_err(|source| Error::Corrupt { path, source }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(Error::io("read", path)(err)),
    }
}

fn write(paths: &StatePaths, leases: Vec<Lease>) -> Result<(), Error> {
    let mut json = serde_json::to_vec_pretty(&LeaseFile { leases }).unwrap_or_default();
    json.push(b'\n');
    corral_host::atomic::write_file(
        &paths.leases(),
        &json,
        corral_host::atomic::PRIVATE_FILE_MODE,
    )?;
    Ok(())
}

/// The network's leases, as the last lease change left them (expired ones included until
/// dnsmasq reports their end).
pub fn leases(state_dir: &Path) -> Result<Vec<Lease>, Error> {
    read(&StatePaths::new(state_dir))
}

/// The body of `corral network-lease-hook STATE_DIR ARGS...`: handles one call of dnsmasq's
/// lease script (`args` as dnsmasq passed them, `DNSMASQ_*` from the environment), printing the
/// stored leases to `out` for `init`.
pub fn run_lease_hook(state_dir: &Path, args: &[String], out: &mut dyn Write) -> Result<(), Error> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let event = Event::parse(args, &|name| std::env::var(name).ok(), now);
    handle(&StatePaths::new(state_dir), event, out)
}

fn handle(paths: &StatePaths, event: Event, out: &mut dyn Write) -> Result<(), Error> {
    if event == Event::Ignore {
        return Ok(());
    }
    // dnsmasq runs one hook at a time, but a restarted dnsmasq's `init` may meet the last hook
    // of the one before it.
    let _lock = lock(paths)?;
    let mut leases = read(paths)?;
    if event == Event::Init {
        return out
            .write_all(lease_file_lines(&leases).as_bytes())
            .and_then(|()| out.flush())
            .map_err(Error::io("print the leases of", paths.leases()));
    }
    if apply(&mut leases, event) {
        write(paths, leases)?;
    }
    Ok(())
}

/// Holds the exclusive lock on `leases.lock` until dropped.
fn lock(paths: &StatePaths) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    lock_file(&paths.leases_lock())
}

/// Holds an exclusive lock on the file at `path` (created if missing) until dropped.
pub(crate) fn lock_file(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    let path = path.to_path_buf();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(corral_host::atomic::PRIVATE_FILE_MODE)
        .open(&path)
        .map_err(Error::io("open", &path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::io("lock", &path)(errno.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn an_add_carries_the_expiry_name_and_client_id() {
        let event = Event::parse(
            &args(&["add", "52:54:00:AA:BB:CC", "10.0.3.100", "c1"]),
            &env(&[
                ("DNSMASQ_LEASE_EXPIRES", "1700003600"),
                ("DNSMASQ_CLIENT_ID", "01:52:54:00:aa:bb:cc"),
            ]),
            1_700_000_000,
        );
        assert_eq!(
            event,
            Event::Store(Lease {
                mac: "52:54:00:aa:bb:cc".into(),
                ip: Ipv4Addr::new(10, 0, 3, 100),
                hostname: Some("c1".into()),
                expires: 1_700_003_600,
                client_id: Some("01:52:54:00:aa:bb:cc".into()),
            })
        );
        let Event::Store(lease) = Event::parse(
            &args(&["old", "52:54:00:aa:bb:cc", "10.0.3.100"]),
            &env(&[("DNSMASQ_LEASE_LENGTH", "600")]),
            1000,
        ) else {
            panic!("not a lease")
        };
        assert_eq!((lease.expires, lease.hostname), (1600, None));
    }

    #[test]
    fn hostile_or_foreign_events_are_ignored_or_cleaned() {
        let none = env(&[]);
        for ignored in [
            &["add", "52:54:00:aa:bb:cc", "fd00::5"][..],
            &["add", "52:54 00", "10.0.3.5"],
            &["add", "52:54:00:aa:bb:cc"],
            &["tftp", "100", "10.0.3.5", "/file"],
            &["arp-add", "52:54:00:aa:bb:cc", "10.0.3.5"],
            &["del", "x", "not-an-ip"],
            &[],
        ] {
            assert_eq!(
                Event::parse(&args(ignored), &none, 0),
                Event::Ignore,
                "{ignored:?}"
            );
        }
        // A name that would break the lease file line is dropped, the lease kept.
        let Event::Store(lease) = Event::parse(
            &args(&["add", "52:54:00:aa:bb:cc", "10.0.3.5", "evil 0 00:11"]),
            &env(&[("DNSMASQ_CLIENT_ID", "x y")]),
            0,
        ) else {
            panic!("not a lease")
        };
        assert_eq!((lease.hostname, lease.client_id), (None, None));
    }

    #[test]
    fn leases_are_replaced_by_address_and_deleted() {
        let lease = |mac: &str, last: u8, expires| Lease {
            mac: mac.into(),
            ip: Ipv4Addr::new(10, 0, 3, last),
            hostname: None,
            expires,
            client_id: None,
        };
        let mut leases = Vec::new();
        assert!(apply(&mut leases, Event::Store(lease("aa", 101, 5))));
        assert!(apply(&mut leases, Event::Store(lease("bb", 100, 5))));
        assert!(!apply(&mut leases, Event::Store(lease("bb", 100, 5))));
        assert!(apply(&mut leases, Event::Store(lease("bb", 100, 9))));
        assert_eq!(leases, [lease("bb", 100, 9), lease("aa", 101, 5)]);
        assert!(apply(
            &mut leases,
            Event::Delete(Ipv4Addr::new(10, 0, 3, 100))
        ));
        assert!(!apply(
            &mut leases,
            Event::Delete(Ipv4Addr::new(10, 0, 3, 100))
        ));
        assert_eq!(leases, [lease("aa", 101, 5)]);
    }

    #[test]
    fn init_prints_dnsmasq_lease_file_lines() {
        let leases = [
            Lease {
                mac: "52:54:00:aa:bb:cc".into(),
                ip: Ipv4Addr::new(10, 0, 3, 100),
                hostname: Some("c1".into()),
                expires: 1_700_003_600,
                client_id: Some("01:52:54:00:aa:bb:cc".into()),
            },
            Lease {
                mac: "52:54:00:00:00:01".into(),
                ip: Ipv4Addr::new(10, 0, 3, 101),
                hostname: None,
                expires: 0,
                client_id: None,
            },
        ];
        assert_eq!(
            lease_file_lines(&leases),
            "1700003600 52:54:00:aa:bb:cc 10.0.3.100 c1 01:52:54:00:aa:bb:cc\n\
             0 52:54:00:00:00:01 10.0.3.101 * *\n"
        );
    }
}
