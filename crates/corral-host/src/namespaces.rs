//! Linux namespaces: which kinds the kernel offers, and whether a process is in the initial ones.

use std::path::Path;

use serde::Serialize;

/// The namespace kinds corral's container engine uses.
pub const KINDS: &[&str] = &["user", "pid", "net", "mnt", "uts", "ipc", "cgroup"];

/// Inode numbers the kernel gives its initial namespaces (`include/linux/proc_ns.h`). A process
/// whose namespace of one of these kinds has another inode is not in the host's namespace.
pub const INITIAL_INODES: &[(&str, u64)] = &[
    ("ipc", 0xEFFF_FFFF),
    ("uts", 0xEFFF_FFFE),
    ("user", 0xEFFF_FFFD),
    ("pid", 0xEFFF_FFFC),
    ("cgroup", 0xEFFF_FFFB),
];

/// One namespace kind as seen from a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceFact {
    pub kind: String,
    /// The kernel offers this kind (`/proc/self/ns/<kind>` exists).
    pub available: bool,
    /// Inode of the process's namespace of this kind.
    pub inode: Option<u64>,
}

impl NamespaceFact {
    /// Whether the namespace is the kernel's initial one; `None` for kinds without a fixed inode.
    pub fn is_initial(&self) -> Option<bool> {
        let (_, initial) = INITIAL_INODES.iter().find(|(kind, _)| *kind == self.kind)?;
        self.inode.map(|inode| inode == *initial)
    }
}

/// Parses the target of a `/proc/PID/ns/*` link, e.g. `pid:[4026531836]`.
pub fn parse_ns_link(target: &str) -> Option<u64> {
    let (_, rest) = target.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// Reads the namespaces of `KINDS` from a `/proc/<pid>/ns`-like directory.
pub fn read(ns_dir: &Path) -> Vec<NamespaceFact> {
    KINDS
        .iter()
        .map(|kind| {
            let link = std::fs::read_link(ns_dir.join(kind)).ok();
            NamespaceFact {
                kind: kind.to_string(),
                available: link.is_some(),
                inode: link.and_then(|l| parse_ns_link(&l.to_string_lossy())),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_links() {
        assert_eq!(parse_ns_link("pid:[4026531836]"), Some(4026531836));
        assert_eq!(parse_ns_link("net:[4026532001]"), Some(4026532001));
        assert_eq!(parse_ns_link("garbage"), None);
        assert_eq!(parse_ns_link("pid:[12"), None);
    }

    #[test]
    fn initial_namespaces_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("pid:[4026531836]", dir.path().join("pid")).unwrap();
        std::os::unix::fs::symlink("uts:[4026532200]", dir.path().join("uts")).unwrap();
        std::os::unix::fs::symlink("net:[4026531833]", dir.path().join("net")).unwrap();
        let facts = read(dir.path());
        let get = |kind: &str| facts.iter().find(|f| f.kind == kind).unwrap().clone();
        assert_eq!(get("pid").is_initial(), Some(true));
        assert_eq!(get("uts").is_initial(), Some(false));
        assert_eq!(
            get("net").is_initial(),
            None,
            "net has no fixed initial inode"
        );
        assert!(!get("ipc").available);
    }
}
