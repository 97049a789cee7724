//! The named operations, virt-sysprep's names and defaults where virt-sysprep has them, and the
//! list grammar (`defaults,-ssh-hostkeys,+fs-uuids`) a caller parses from its command line.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// One identity reset. The order here is the order operations run and report in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// `/etc/machine-id` and `/var/lib/dbus/machine-id` truncated (systemd and D-Bus make a new
    /// id at first boot), or a fresh id written with [`MachineIdMode::New`](crate::MachineIdMode).
    MachineId,
    /// `/etc/ssh/ssh_host_*` removed (sshd or cloud-init makes new keys at first boot), or new
    /// keys written with [`HostKeyMode::New`](crate::HostKeyMode).
    SshHostkeys,
    /// `/etc/hostname` and `/etc/hosts` name the hostname given in the options.
    Hostname,
    /// DHCP client leases removed.
    DhcpClientState,
    /// `/etc/udev/rules.d/70-persistent-net.rules` removed.
    UdevPersistentNet,
    /// MAC address pins removed from network configuration.
    NetHwaddr,
    /// Logs truncated, rotated logs and the journal removed.
    Logfiles,
    /// Shell histories removed.
    BashHistory,
    /// Everything in `/tmp` and `/var/tmp` removed.
    TmpFiles,
    /// Random-seed files refilled with fresh host randomness.
    RandomSeed,
    /// cloud-init's state removed, so the clone runs as a new instance.
    CloudInit,
    /// Users' `~/.ssh` directories removed (opt-in: it takes authorized keys away).
    SshUserdir,
    /// The root filesystem's UUID changed and the references to it rewritten (opt-in, disks
    /// only).
    FsUuids,
}

impl Operation {
    /// Every operation, in running order.
    pub const ALL: [Operation; 13] = [
        Operation::MachineId,
        Operation::SshHostkeys,
        Operation::Hostname,
        Operation::DhcpClientState,
        Operation::UdevPersistentNet,
        Operation::NetHwaddr,
        Operation::Logfiles,
        Operation::BashHistory,
        Operation::TmpFiles,
        Operation::RandomSeed,
        Operation::CloudInit,
        Operation::SshUserdir,
        Operation::FsUuids,
    ];

    /// The kebab-case name, as virt-sysprep spells it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::MachineId => "machine-id",
            Operation::SshHostkeys => "ssh-hostkeys",
            Operation::Hostname => "hostname",
            Operation::DhcpClientState => "dhcp-client-state",
            Operation::UdevPersistentNet => "udev-persistent-net",
            Operation::NetHwaddr => "net-hwaddr",
            Operation::Logfiles => "logfiles",
            Operation::BashHistory => "bash-history",
            Operation::TmpFiles => "tmp-files",
            Operation::RandomSeed => "random-seed",
            Operation::CloudInit => "cloud-init",
            Operation::SshUserdir => "ssh-userdir",
            Operation::FsUuids => "fs-uuids",
        }
    }

    /// One line saying what the operation does, for `--list-operations` and the docs.
    pub fn description(self) -> &'static str {
        match self {
            Operation::MachineId => {
                "truncate /etc/machine-id and /var/lib/dbus/machine-id (or write a new id)"
            }
            Operation::SshHostkeys => "remove the SSH host keys (or write new ones)",
            Operation::Hostname => "set /etc/hostname and the 127.0.1.1 line of /etc/hosts",
            Operation::DhcpClientState => "remove DHCP client leases",
            Operation::UdevPersistentNet => "remove udev's persistent network interface names",
            Operation::NetHwaddr => {
                "remove MAC address pins (HWADDR=, NetworkManager mac-address=)"
            }
            Operation::Logfiles => "truncate logs; remove rotated logs and the journal",
            Operation::BashHistory => "remove shell histories of root and /home users",
            Operation::TmpFiles => "remove everything in /tmp and /var/tmp",
            Operation::RandomSeed => "refill random-seed files with fresh host randomness",
            Operation::CloudInit => "remove cloud-init's state so the clone is a new instance",
            Operation::SshUserdir => "remove ~/.ssh of root and /home users (opt-in)",
            Operation::FsUuids => "give the root filesystem a new UUID, rewrite fstab (opt-in)",
        }
    }

    /// True for the operations that run unless the caller leaves them out; the others take
    /// something the clone may need (authorized keys) or only make sense for disks.
    pub fn is_default(self) -> bool {
        !matches!(self, Operation::SshUserdir | Operation::FsUuids)
    }

    /// The operations that run when the caller names none.
    pub fn defaults() -> BTreeSet<Operation> {
        Operation::ALL
            .into_iter()
            .filter(|op| op.is_default())
            .collect()
    }

    /// Parses virt-sysprep's `--operations` grammar: comma-separated words, each `defaults`,
    /// `all`, an operation name (`+name` alike) adding to the set, or `-name` taking one out,
    /// applied left to right from an empty set.
    pub fn parse_list(list: &str) -> Result<BTreeSet<Operation>, UnknownOperation> {
        let mut set = BTreeSet::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "defaults" => set.extend(Operation::defaults()),
                "all" => set.extend(Operation::ALL),
                _ => match word.strip_prefix('-') {
                    Some(name) => {
                        set.remove(&name.parse::<Operation>()?);
                    }
                    None => {
                        set.insert(word.trim_start_matches('+').parse::<Operation>()?);
                    }
                },
            }
        }
        Ok(set)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A word that names no operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown sysprep operation `{name}`; the operations are {all}, plus `defaults` and `all`",
    name = .0,
    all = Operation::ALL.map(Operation::name).join(", ")
)]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;

    fn from_str(name: &str) -> Result<Self, UnknownOperation> {
        Operation::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .ok_or_else(|| UnknownOperation(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(op.name().parse::<Operation>(), Ok(op));
        }
    }

    #[test]
    fn opt_in_operations_are_not_defaults() {
        let defaults = Operation::defaults();
        assert!(!defaults.contains(&Operation::SshUserdir));
        assert!(!defaults.contains(&Operation::FsUuids));
        assert_eq!(defaults.len(), Operation::ALL.len() - 2);
    }

    #[test]
    fn lists_add_and_remove_left_to_right() {
        let set = Operation::parse_list("defaults,-ssh-hostkeys,+fs-uuids").unwrap();
        assert!(!set.contains(&Operation::SshHostkeys));
        assert!(set.contains(&Operation::FsUuids));
        assert!(set.contains(&Operation::MachineId));
        let set = Operation::parse_list("machine-id, hostname").unwrap();
        assert_eq!(
            set.into_iter().collect::<Vec<_>>(),
            [Operation::MachineId, Operation::Hostname]
        );
        let err = Operation::parse_list("defaults,machine-ids").unwrap_err();
        assert!(err.to_string().contains("`machine-ids`"), "{err}");
    }
}
