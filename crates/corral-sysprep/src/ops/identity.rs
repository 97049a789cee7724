//! The values that name a machine: machine-id, hostname, random seed, filesystem UUID.

use std::path::Path;

use corral_host::machine_id::{MachineId, DBUS_MACHINE_ID, ETC_MACHINE_ID};

use super::{has_suffix, Planner};
use crate::error::{Result, SysprepError};
use crate::plan::{uuid_text, Edit};
use crate::view::Kind;
use crate::{MachineIdMode, Operation};

/// Where systemd, sysvinit and Debian's urandom script keep the seed for the kernel's pool.
const RANDOM_SEEDS: [&str; 3] = [
    "/var/lib/systemd/random-seed",
    "/var/lib/random-seed",
    "/var/lib/urandom/random-seed",
];
/// Seeds are 512 bytes to a few KiB; a bigger file is not a seed corral refills.
const MAX_SEED: u64 = 64 << 10;

/// Truncated, so systemd and D-Bus make a new id at first boot (systemd writes it when the file
/// is empty, `dbus-uuidgen --ensure` follows), or a new id written now. Both files are reached
/// through their links, so `/var/lib/dbus/machine-id -> /etc/machine-id` stays a link and the
/// one file behind both is edited once.
pub(super) fn machine_id(p: &mut Planner) -> Result<()> {
    let op = Operation::MachineId;
    match p.options.machine_id {
        MachineIdMode::Reset => {
            p.truncate(op, Path::new(ETC_MACHINE_ID))?;
            p.truncate(op, Path::new(DBUS_MACHINE_ID))
        }
        MachineIdMode::New => {
            let id = MachineId::generate().map_err(SysprepError::MachineId)?;
            let content = format!("{id}\n").into_bytes();
            // systemd creates the file 0444; the D-Bus copy is written only where it exists.
            p.write_or_create(op, Path::new(ETC_MACHINE_ID), content.clone(), 0o444)?;
            if let Some(node) = p.file(op, Path::new(DBUS_MACHINE_ID))? {
                p.plan.edit(op, node.path, Edit::Write { content });
            }
            Ok(())
        }
    }
}

/// `/etc/hostname` holds the new name; in `/etc/hosts` the old name's words become the new
/// one's and the `127.0.1.1` line (Debian's line for the machine's own name) names it, added
/// when missing.
pub(super) fn hostname(p: &mut Planner) -> Result<()> {
    let op = Operation::Hostname;
    let Some(name) = p.options.hostname.clone() else {
        p.plan.skip(
            op,
            Path::new("/etc/hostname"),
            "no hostname given; the clone keeps the template's",
        );
        return Ok(());
    };
    validate_hostname(&name)?;
    let old = match p.file(op, Path::new("/etc/hostname"))? {
        Some(node) => {
            let bytes = p.view.read(&node.path, super::CONFIG_LIMIT)?;
            let text = String::from_utf8_lossy(&bytes);
            text.lines().next().unwrap_or("").trim().to_string()
        }
        None => String::new(),
    };
    p.write_or_create(
        op,
        Path::new("/etc/hostname"),
        format!("{name}\n").into_bytes(),
        0o644,
    )?;
    p.rewrite(op, Path::new("/etc/hosts"), |hosts| {
        rename_in_hosts(hosts, &old, &name)
    })
}

/// Refilled with as many fresh random bytes as they held (an empty seed is left for the guest).
pub(super) fn random_seed(p: &mut Planner) -> Result<()> {
    let op = Operation::RandomSeed;
    for seed in RANDOM_SEEDS {
        let Some(node) = p.file(op, Path::new(seed))? else {
            continue;
        };
        if node.size == 0 {
            continue;
        }
        if node.size > MAX_SEED {
            p.plan.skip(
                op,
                &node.path,
                format!(
                    "it is {} bytes, more than a seed (at most {MAX_SEED})",
                    node.size
                ),
            );
            continue;
        }
        let content = p.random(op, node.size as usize)?;
        p.plan.edit(op, node.path, Edit::Write { content });
    }
    Ok(())
}

/// Files that name the root filesystem by UUID: fstab, and GRUB's and the boot loader
/// specification's configuration when they are on the same filesystem.
const UUID_REFERENCES: [&str; 3] = ["/etc/fstab", "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"];
const BLS_ENTRIES: &str = "/boot/loader/entries";

/// A new random UUID for the filesystem, and its old one replaced in the files naming it.
pub(super) fn fs_uuids(p: &mut Planner) -> Result<()> {
    let op = Operation::FsUuids;
    let Some(old) = p.view.fs_uuid() else {
        return Err(SysprepError::FsUuidsOnDirectory);
    };
    let mut new = [0u8; 16];
    new.copy_from_slice(&p.random(op, 16)?);
    // A version-4 (random) UUID, as `tune2fs -U random` makes.
    new[6] = (new[6] & 0x0f) | 0x40;
    new[8] = (new[8] & 0x3f) | 0x80;
    let (old_text, new_text) = (uuid_text(&old), uuid_text(&new));
    p.plan.edit(
        op,
        Path::new("/").to_path_buf(),
        Edit::SetFsUuid { old, new },
    );
    let mut files: Vec<_> = UUID_REFERENCES
        .iter()
        .map(|f| Path::new(f).to_path_buf())
        .collect();
    if let Some(dir) = p.view.lookup(Path::new(BLS_ENTRIES), true)? {
        if dir.kind == Kind::Dir {
            for name in p.names(&dir.path)? {
                if has_suffix(&name, ".conf") {
                    files.push(dir.path.join(name));
                }
            }
        }
    }
    for file in files {
        p.rewrite(op, &file, |text| replace_uuid(text, &old_text, &new_text))?;
    }
    Ok(())
}

/// `text` with every occurrence of the UUID `old` (in any letter case) replaced by `new`.
fn replace_uuid(text: &str, old: &str, new: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    while let Some(found) = lower[rest..].find(old) {
        out.push_str(&text[rest..rest + found]);
        out.push_str(new);
        rest += found + old.len();
    }
    out.push_str(&text[rest..]);
    out
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
fn validate_hostname(name: &str) -> Result<()> {
    let invalid = |reason| SysprepError::InvalidHostname {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 253 {
        return Err(invalid("it must be 1 to 253 characters long"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("a label is empty or longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "it has a character other than a-z, 0-9, hyphen and dot",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label starts or ends with a hyphen"));
        }
    }
    Ok(())
}

/// `/etc/hosts` with `old` (and its short form) renamed to `new` and a `127.0.1.1` line naming
/// `new`. Comments are kept as they are.
fn rename_in_hosts(hosts: &str, old: &str, new: &str) -> String {
    let short = |name: &str| name.split('.').next().unwrap_or(name).to_string();
    let (old_short, new_short) = (short(old), short(new));
    let own_names = if new_short == new {
        new.to_string()
    } else {
        format!("{new} {new_short}")
    };
    let mut out = String::with_capacity(hosts.len() + 64);
    let mut has_own_line = false;
    for line in hosts.lines() {
        let (entry, comment) = match line.find('#') {
            Some(at) => line.split_at(at),
            None => (line, ""),
        };
        let mut words = entry.split_whitespace();
        match words.next() {
            Some("127.0.1.1") => {
                has_own_line = true;
                out.push_str(&format!("127.0.1.1\t{own_names}"));
                if !comment.is_empty() {
                    out.push(' ');
                    out.push_str(comment);
                }
            }
            Some(address)
                if !old.is_empty() && words.clone().any(|w| w == old || w == old_short) =>
            {
                let names: Vec<&str> = words
                    .map(|w| match w {
                        w if w == old => new,
                        w if w == old_short => new_short.as_str(),
                        w => w,
                    })
                    .collect();
                out.push_str(&format!("{address}\t{}", names.join(" ")));
                if !comment.is_empty() {
                    out.push(' ');
                    out.push_str(comment);
                }
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    if !has_own_line {
        out.push_str(&format!("127.0.1.1\t{own_names}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_get_the_new_name_on_their_own_line_and_where_the_old_one_was() {
        let hosts = "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate.example.com template\n\
                     10.0.0.5 template # the box\n::1 localhost ip6-localhost\n";
        assert_eq!(
            rename_in_hosts(hosts, "template.example.com", "web2"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tweb2\n10.0.0.5\tweb2 # the box\n\
             ::1 localhost ip6-localhost\n"
        );
    }

    #[test]
    fn a_missing_own_line_is_added() {
        assert_eq!(
            rename_in_hosts("127.0.0.1 localhost\n", "", "db.lan"),
            "127.0.0.1 localhost\n127.0.1.1\tdb.lan db\n"
        );
    }

    #[test]
    fn hostnames_follow_rfc_1123() {
        for good in ["web2", "a.b-c.example", "x1"] {
            assert!(validate_hostname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a b",
            "a\nb",
            "a_b",
            &"x".repeat(64),
        ] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uuids_are_replaced_in_any_case() {
        let old = "0b1d2c3a-0000-4000-8000-000000000001";
        let fstab = "UUID=0B1D2C3A-0000-4000-8000-000000000001 / ext4 defaults 0 1\n\
                     UUID=\"0b1d2c3a-0000-4000-8000-000000000001\" /x ext4 ro 0 2\n";
        let new = "11111111-2222-4333-8444-555555555555";
        assert_eq!(
            replace_uuid(fstab, old, new),
            format!("UUID={new} / ext4 defaults 0 1\nUUID=\"{new}\" /x ext4 ro 0 2\n")
        );
    }
}
