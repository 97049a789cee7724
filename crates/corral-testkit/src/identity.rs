//! The template fixture identity resets are tested on (corral-sysprep's two targets, corral's
//! clone/template/sysprep verbs): a guest tree carrying every piece of identity the operations
//! reset (and some neighbours they must keep), plus hashing helpers.

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The template's machine-id.
pub const FIXED_ID: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4";
/// The UUID the template's fstab names for its root (and the disk tests give the filesystem).
pub const ROOT_UUID: &str = "0b1d2c3a-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

/// How the template holds D-Bus's copy of the machine-id.
#[derive(Clone, Copy, Debug)]
pub enum DbusId {
    /// `/var/lib/dbus/machine-id -> /etc/machine-id`.
    Symlink,
    /// A file of its own with the same id.
    Separate,
}

fn write(root: &Path, path: &str, content: impl AsRef<[u8]>, mode: u32) {
    let host = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(host.parent().unwrap()).unwrap();
    std::fs::write(&host, content).unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn link(root: &Path, path: &str, target: &str) {
    let host = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(host.parent().unwrap()).unwrap();
    symlink(target, host).unwrap();
}

fn dir(root: &Path, path: &str) {
    std::fs::create_dir_all(root.join(path.trim_start_matches('/'))).unwrap();
}

/// Builds the template tree in `root` (which must exist). Needs `ssh-keygen`.
pub fn build_template(root: &Path, dbus: DbusId) {
    write(root, "/etc/machine-id", format!("{FIXED_ID}\n"), 0o444);
    match dbus {
        DbusId::Symlink => link(root, "/var/lib/dbus/machine-id", "/etc/machine-id"),
        DbusId::Separate => write(
            root,
            "/var/lib/dbus/machine-id",
            format!("{FIXED_ID}\n"),
            0o444,
        ),
    }
    write(root, "/etc/ssh/sshd_config", "PermitRootLogin no\n", 0o644);
    let keygen = Command::new("ssh-keygen")
        .args(["-A", "-f"])
        .arg(root)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    write(root, "/etc/hostname", "template\n", 0o644);
    write(
        root,
        "/etc/hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n::1 localhost ip6-localhost\n",
        0o644,
    );
    write(
        root,
        "/var/lib/dhcp/dhclient.eth0.leases",
        "lease { fixed-address 10.0.0.5; }\n",
        0o644,
    );
    write(
        root,
        "/var/lib/NetworkManager/internal-1-eth0.lease",
        "ADDRESS=10.0.0.5\n",
        0o644,
    );
    write(
        root,
        "/var/lib/NetworkManager/NetworkManager.state",
        "[main]\n",
        0o644,
    );
    write(
        root,
        "/etc/udev/rules.d/70-persistent-net.rules",
        "SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:12:34:56\", NAME=\"eth0\"\n",
        0o644,
    );
    write(root, "/etc/udev/rules.d/99-local.rules", "# kept\n", 0o644);
    write(
        root,
        "/etc/sysconfig/network-scripts/ifcfg-eth0",
        "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nONBOOT=yes\n",
        0o644,
    );
    write(
        root,
        "/etc/NetworkManager/system-connections/eth0.nmconnection",
        "[connection]\nid=eth0\n[ethernet]\nmac-address=52:54:00:12:34:56\n",
        0o600,
    );
    write(root, "/var/log/syslog", "Jan 1 template booted\n", 0o640);
    write(root, "/var/log/syslog.1", "older\n", 0o640);
    write(root, "/var/log/syslog.2.gz", "gz", 0o640);
    write(
        root,
        "/var/log/apt/history.log",
        "Start-Date: then\n",
        0o644,
    );
    write(root, "/var/log/wtmp", [7u8; 384], 0o664);
    write(root, "/var/log/btmp", [8u8; 384], 0o600);
    write(root, "/var/log/lastlog", [9u8; 292], 0o664);
    write(
        root,
        &format!("/var/log/journal/{FIXED_ID}/system.journal"),
        "LPKSHHRH journal",
        0o640,
    );
    write(root, "/root/.bash_history", "ssh secret-host\n", 0o600);
    write(root, "/home/alice/.bash_history", "ls\n", 0o600);
    write(
        root,
        "/home/alice/.ssh/authorized_keys",
        "ssh-ed25519 AAAA alice\n",
        0o600,
    );
    write(
        root,
        "/root/.ssh/authorized_keys",
        "ssh-ed25519 AAAA root\n",
        0o600,
    );
    write(root, "/tmp/junk", "junk", 0o644);
    write(root, "/tmp/build/deep/er/file.o", "obj", 0o644);
    write(root, "/var/tmp/cache", "cache", 0o644);
    let seed: Vec<u8> = (0..512u32).map(|i| (i * 7 % 251) as u8).collect();
    write(root, "/var/lib/systemd/random-seed", seed, 0o600);
    write(
        root,
        "/var/lib/cloud/instances/iid-template/obj.pkl",
        "pickled",
        0o600,
    );
    link(
        root,
        "/var/lib/cloud/instance",
        "/var/lib/cloud/instances/iid-template",
    );
    write(
        root,
        "/var/lib/cloud/data/instance-id",
        "iid-template\n",
        0o644,
    );
    write(
        root,
        "/var/lib/cloud/seed/nocloud/meta-data",
        "instance-id: iid-template\n",
        0o644,
    );
    write(
        root,
        "/etc/fstab",
        format!("UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n"),
        0o644,
    );
    dir(root, "/var/lib/systemd/network");
}

/// The SHA-256 of every path below `root`: its name, type, mode, owner, and content or link
/// target. Equal hashes mean byte-identical trees.
pub fn hash_tree(root: &Path) -> String {
    let mut entries = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let relative = path.strip_prefix(root).unwrap().to_path_buf();
        let mut record = format!(
            "{} {:o} {} {} ",
            relative.display(),
            meta.mode(),
            meta.uid(),
            meta.gid()
        )
        .into_bytes();
        if meta.is_symlink() {
            record.extend(
                std::fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        } else if meta.is_file() {
            record.extend(std::fs::read(&path).unwrap());
        } else if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
        entries.push(record);
    }
    entries.sort();
    let mut hasher = Sha256::new();
    for entry in entries {
        hasher.update((entry.len() as u64).to_le_bytes());
        hasher.update(entry);
    }
    hex(&hasher.finalize())
}

/// The SHA-256 of a file's bytes.
pub fn hash_file(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A copy of the tree at `from` in a new directory `to` (`cp -a`: links, modes, owners kept).
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A host path inside `root` for the guest path `path`.
pub fn at(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}
