//! `/proc/PID/mountinfo`, the kernel's description of a mount namespace.

use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The path inside the filesystem that is mounted (`/` unless it is a bind of a subtree).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    /// The filesystem's own options (for cgroup v1: the hierarchy's controllers).
    pub super_options: String,
}

impl MountEntry {
    /// Parses `36 35 98:0 /root /mnt rw,noatime master:1 - ext3 /dev/root rw,errors=continue`;
    /// `None` for a line that is not of that shape.
    pub fn parse(line: &str) -> Option<MountEntry> {
        let (before, after) = line.split_once(" - ")?;
        let fields: Vec<&str> = before.split(' ').collect();
        let mut after = after.split(' ');
        Some(MountEntry {
            root: PathBuf::from(unescape(fields.get(3)?)),
            mount_point: PathBuf::from(unescape(fields.get(4)?)),
            fstype: after.next()?.to_string(),
            source: unescape(after.next().unwrap_or("")),
            super_options: after.next().unwrap_or("").to_string(),
        })
    }
}

/// Every well-formed line of `text`.
pub fn parse(text: &str) -> impl Iterator<Item = MountEntry> + '_ {
    text.lines().filter_map(MountEntry::parse)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(value)) => {
                out.push(value);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_line_with_optional_fields() {
        let entry = MountEntry::parse(
            "36 35 98:0 /root /mnt rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(entry.root, PathBuf::from("/root"));
        assert_eq!(entry.mount_point, PathBuf::from("/mnt"));
        assert_eq!(entry.fstype, "ext3");
        assert_eq!(entry.source, "/dev/root");
        assert_eq!(entry.super_options, "rw,errors=continue");
    }

    #[test]
    fn decodes_escapes_and_skips_garbage() {
        let text = "30 25 0:26 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\nnot a mount line\n";
        let entries: Vec<MountEntry> = parse(text).collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].mount_point, PathBuf::from("/mnt/my cgroups"));
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(
            unescape("trailing\\04"),
            "trailing\\04",
            "a short escape is kept as text"
        );
    }
}
