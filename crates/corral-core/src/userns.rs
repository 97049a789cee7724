//! User namespaces for instance containers (`[container] userns = "auto"`): the container's ids
//! 0..65535 map to corral's subordinate range on the host, so its root is an unprivileged user
//! there. The range is the `corral` entry of `/etc/subuid` and `/etc/subgid`, created on first
//! use the way `usermod --add-subuids` would (the first free 65536 ids from 100000 on). Every
//! such container shares it, as incus's default shared map does. The root filesystem is shifted
//! into the range once by changing its owners (idmapped mounts are not used yet).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::definition::{Definition, UserNs};
use crate::error::CoreError;

/// The name of corral's entries in /etc/subuid and /etc/subgid.
pub const SUBID_OWNER: &str = "corral";
/// How many ids a container's namespace maps.
pub const RANGE: u32 = 65536;
/// Where allocation starts, as login.defs' SUB_UID_MIN.
const FIRST_SUBID: u64 = 100_000;

/// The host ids that a container's uid 0 and gid 0 map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub uid: u32,
    pub gid: u32,
}

/// True when this host can give containers a user namespace.
pub fn host_allows() -> bool {
    Path::new("/proc/self/ns/user").exists()
        && std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// What a new container created without an explicit choice gets: a user namespace where the
/// host allows one, for an application or a system container alike (incus's unprivileged
/// default: its init's root is nobody on the host); none for a container with directory
/// volumes (their owners are the host's).
pub fn default_for(definition: &Definition) -> UserNs {
    if definition.disks.is_empty() && host_allows() {
        UserNs::Auto
    } else {
        UserNs::Host
    }
}

/// `(owner, start, count)` entries of a subordinate id file; malformed lines are skipped.
fn entries(text: &str) -> Vec<(&str, u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let owner = fields.next()?;
            let start = fields.next()?.parse().ok()?;
            let count = fields.next()?.parse().ok()?;
            Some((owner, start, count))
        })
        .collect()
}

/// corral's start in `text`, or the line to append for a new range after every other one.
fn find_or_allocate(text: &str) -> Result<(u32, Option<String>), String> {
    let entries = entries(text);
    if let Some(&(_, start, count)) = entries.iter().find(|(owner, ..)| *owner == SUBID_OWNER) {
        if count < u64::from(RANGE) {
            return Err(format!(
                "its {SUBID_OWNER} entry has {count} ids; containers need {RANGE}"
            ));
        }
        let start = u32::try_from(start).map_err(|_| "its corral entry is out of range")?;
        return Ok((start, None));
    }
    let start = entries
        .iter()
        .map(|&(_, start, count)| start.saturating_add(count))
        .fold(FIRST_SUBID, u64::max);
    if start + u64::from(RANGE) > u64::from(u32::MAX) {
        return Err("no free range of ids is left".into());
    }
    Ok((
        start as u32,
        Some(format!("{SUBID_OWNER}:{start}:{RANGE}\n")),
    ))
}

/// corral's range from `etc/subuid` and `etc/subgid`, adding the entries when missing.
pub fn ensure_range(etc: &Path) -> Result<IdRange, CoreError> {
    let mut ids = [0u32; 2];
    for (slot, file) in ids.iter_mut().zip(["subuid", "subgid"]) {
        let path = etc.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(CoreError::io("read", &path)(e)),
        };
        let (start, append) = find_or_allocate(&text).map_err(|reason| {
            CoreError::Unsupported(format!(
                "cannot take a user namespace range from {}: {reason}; fix the {SUBID_OWNER} line or set userns = \"host\"",
                path.display()
            ))
        })?;
        if let Some(line) = append {
            let mut text = text;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            corral_host::atomic::write_file(&path, text.as_bytes(), 0o644)?;
        }
        *slot = start;
    }
    Ok(IdRange {
        uid: ids[0],
        gid: ids[1],
    })
}

/// Moves the owners of `rootfs` into `range` (ids below [`RANGE`] are shifted; ids already in
/// the range stay, so an interrupted shift can run again), keeping setuid and setgid bits,
/// which a change of owner clears. Those modes are recorded in `journal` before anything
/// changes and restored from it, so a shift killed between a file's chown and its chmod loses
/// no bit when it runs again; the journal is removed once the shift is complete.
pub fn shift_rootfs(rootfs: &Path, range: IdRange, journal: &Path) -> Result<(), CoreError> {
    let special = match std::fs::read(journal) {
        Ok(bytes) => serde_json::from_slice::<Vec<(Vec<u8>, u32)>>(&bytes).map_err(|source| {
            CoreError::ShiftRecord {
                path: journal.to_path_buf(),
                source,
            }
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let special = special_modes(rootfs)?;
            let json = serde_json::to_vec(&special).map_err(|source| CoreError::Encode {
                what: "record of file modes",
                source,
            })?;
            corral_host::atomic::write_file(
                journal,
                &json,
                corral_host::atomic::PRIVATE_FILE_MODE,
            )?;
            special
        }
        Err(e) => return Err(CoreError::io("read", journal)(e)),
    };
    corral_host::tree::walk(rootfs, |path, meta| -> Result<(), CoreError> {
        let shift = |id: u32, base: u32| if id < RANGE { id + base } else { id };
        let (uid, gid) = (shift(meta.uid(), range.uid), shift(meta.gid(), range.gid));
        if (uid, gid) == (meta.uid(), meta.gid()) {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(CoreError::io("change the owner of", path))?;
        if !meta.is_symlink() && meta.mode() & 0o6000 != 0 {
            fail::fail_point!("start.userns-shifting");
        }
        Ok(())
    })?;
    for (relative, mode) in special {
        let path = rootfs.join(std::ffi::OsStr::from_bytes(&relative));
        // Only what is still the regular file or directory it was (never through a link).
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_symlink() && meta.mode() & 0o7777 != mode => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(CoreError::io("restore the mode of", &path))?
            }
            _ => {}
        }
    }
    match std::fs::remove_file(journal) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CoreError::io("remove", journal)(e))
        }
        _ => Ok(()),
    }
}

/// The setuid and setgid files below `rootfs`: their paths relative to it and their modes.
fn special_modes(rootfs: &Path) -> Result<Vec<(Vec<u8>, u32)>, CoreError> {
    let mut special = Vec::new();
    corral_host::tree::walk(rootfs, |path, meta| -> Result<(), CoreError> {
        if !meta.is_symlink() && meta.mode() & 0o6000 != 0 {
            let relative = path.strip_prefix(rootfs).unwrap_or(path);
            special.push((
                relative.as_os_str().as_bytes().to_vec(),
                meta.mode() & 0o7777,
            ));
        }
        Ok(())
    })?;
    Ok(special)
}

/// The range an instance's root filesystem was shifted into (`rootfs.userns` in its
/// directory), if it was.
pub fn recorded_range(instance_dir: &Path) -> Option<IdRange> {
    let text = std::fs::read_to_string(instance_dir.join("rootfs.userns")).ok()?;
    let (uid, gid) = text.trim().split_once(':')?;
    Some(IdRange {
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
    })
}

/// Undoes [`shift_rootfs`] on a copy of a shifted tree (an image being published): owners in
/// the range go back to the container's own ids, setuid and setgid bits kept.
pub fn shift_back(tree: &Path, range: IdRange) -> Result<(), CoreError> {
    corral_host::tree::walk(tree, |path, meta| -> Result<(), CoreError> {
        let back = |id: u32, base: u32| match id.checked_sub(base) {
            Some(inner) if inner < RANGE => inner,
            _ => id,
        };
        let (uid, gid) = (back(meta.uid(), range.uid), back(meta.gid(), range.gid));
        if (uid, gid) == (meta.uid(), meta.gid()) {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(CoreError::io("change the owner of", path))?;
        if !meta.is_symlink() && meta.mode() & 0o6000 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(CoreError::io("restore the mode of", path))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_allocated_after_existing_ones_and_found_again() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(
            etc.path().join("subuid"),
            "alice:100000:65536\nbob:165536:65536",
        )
        .unwrap();
        let range = ensure_range(etc.path()).unwrap();
        assert_eq!(
            range,
            IdRange {
                uid: 231072,
                gid: 100000
            },
            "subgid was missing: first free"
        );
        let subuid = std::fs::read_to_string(etc.path().join("subuid")).unwrap();
        assert_eq!(
            subuid,
            "alice:100000:65536\nbob:165536:65536\ncorral:231072:65536\n"
        );
        assert_eq!(
            std::fs::read_to_string(etc.path().join("subgid")).unwrap(),
            "corral:100000:65536\n"
        );
        assert_eq!(
            ensure_range(etc.path()).unwrap(),
            range,
            "the entry is reused"
        );
    }

    #[test]
    fn a_short_entry_is_refused_with_the_fix() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(etc.path().join("subuid"), "corral:100000:1000\n").unwrap();
        let err = ensure_range(etc.path()).unwrap_err().to_string();
        assert!(
            err.contains("has 1000 ids") && err.contains("userns = \"host\""),
            "{err}"
        );
    }

    #[test]
    fn shifting_moves_owners_once_and_keeps_setuid() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let tool = root.path().join("tool");
        std::fs::write(&tool, b"x").unwrap();
        std::os::unix::fs::lchown(&tool, Some(0), Some(5)).unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("tool", root.path().join("link")).unwrap();
        let range = IdRange {
            uid: 200000,
            gid: 300000,
        };
        let state = tempfile::tempdir().unwrap();
        let journal = state.path().join("rootfs.userns-modes");
        for _ in 0..2 {
            shift_rootfs(root.path(), range, &journal).unwrap();
        }
        assert!(!journal.exists(), "removed once complete");
        let meta = std::fs::metadata(&tool).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (200000, 300005));
        assert_eq!(meta.mode() & 0o7777, 0o4755);
        let link = std::fs::symlink_metadata(root.path().join("link")).unwrap();
        assert_eq!(link.uid(), 200000);
        assert_eq!(std::fs::metadata(root.path()).unwrap().uid(), 200000);
    }
}
