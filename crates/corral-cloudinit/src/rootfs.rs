//! A container's seed: the files in `/var/lib/cloud/seed/nocloud-net/` of its root filesystem,
//! where cloud-init's NoCloud datasource looks (Incus's way). The root is the guest's: every
//! path is resolved by the kernel inside it (`openat2(RESOLVE_IN_ROOT)`), so a link such as
//! `var/lib/cloud -> /` leads to the root's own `/`, never the host's; directories are made and
//! files written relative to descriptors, never by path again. Files are replaced atomically
//! (written under a temporary name, renamed over), owned by the root directory's owner (the
//! container's root, shifted in a user namespace), readable by it alone.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, renameat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode};
use nix::unistd::{fchown, fchownat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::error::SeedError;
use crate::seed::{Seed, FILE_NAMES};

/// Where cloud-init finds a NoCloud seed in the root filesystem.
pub const SEED_DIR: &str = "var/lib/cloud/seed/nocloud-net";

/// Writes `seed` into [`SEED_DIR`] of the root filesystem `root`, removing seed files an
/// earlier definition had and this one has not.
pub fn write_seed_dir(seed: &Seed, root: &Path) -> Result<(), SeedError> {
    let fail = |action: &'static str, path: &str| {
        let root = root.to_path_buf();
        let path = path.to_string();
        move |errno: Errno| SeedError::Rootfs {
            action,
            root: root.clone(),
            path: path.clone(),
            source: errno.into(),
        }
    };
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("open", "/"))?;
    let owner = fstat(&root_fd).map_err(fail("inspect", "/"))?;
    let (uid, gid) = (Uid::from_raw(owner.st_uid), Gid::from_raw(owner.st_gid));
    let dir = make_dirs(&root_fd, (uid, gid), &fail)?;
    for name in FILE_NAMES {
        let path = format!("/{SEED_DIR}/{name}");
        match seed.files().into_iter().find(|(file, _)| *file == name) {
            Some((_, bytes)) => {
                replace_file(&dir, name, bytes, (uid, gid)).map_err(|source| SeedError::Rootfs {
                    action: "write",
                    root: root.to_path_buf(),
                    path,
                    source,
                })?
            }
            None => match unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(errno) => return Err(fail("remove", &path)(errno)),
            },
        }
    }
    Ok(())
}

/// Opens [`SEED_DIR`] inside the root, making the directories that are missing (mode 0755,
/// owned by the root's owner).
fn make_dirs<F, E>(root: &OwnedFd, (uid, gid): (Uid, Gid), fail: &F) -> Result<OwnedFd, SeedError>
where
    F: Fn(&'static str, &str) -> E,
    E: FnOnce(Errno) -> SeedError,
{
    let mut prefix = PathBuf::new();
    let mut parent: Option<OwnedFd> = None;
    for component in SEED_DIR.split('/') {
        prefix.push(component);
        let shown = format!("/{}", prefix.display());
        let dir = match open_in_root(root, &prefix) {
            Err(Errno::ENOENT) => {
                // The parent was resolved inside the root; the new directory is made in it.
                let at = parent.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
                match mkdirat(at, component, Mode::from_bits_truncate(0o755)) {
                    Ok(()) => fchownat(
                        at,
                        component,
                        Some(uid),
                        Some(gid),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(fail("give to the root's owner", &shown))?,
                    Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(fail("create", &shown)(errno)),
                }
                open_in_root(root, &prefix).map_err(fail("open", &shown))?
            }
            opened => opened.map_err(fail("open", &shown))?,
        };
        parent = Some(dir);
    }
    let dir = parent.ok_or_else(|| fail("open", SEED_DIR)(Errno::EINVAL))?;
    // Reopened for real (an O_PATH descriptor cannot be synced).
    openat(
        &dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("open", SEED_DIR))
}

/// Opens the directory at `path`, resolved by the kernel as if `root` were `/`.
fn open_in_root(root: &OwnedFd, path: &Path) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    openat2(root, path, how)
}

/// Writes `name` in `dir` under a temporary name and renames it over the old one (a link at
/// `name` is replaced, not followed).
fn replace_file(
    dir: &OwnedFd,
    name: &str,
    bytes: &[u8],
    (uid, gid): (Uid, Gid),
) -> std::io::Result<()> {
    let temp = format!(".{name}.corral-tmp");
    match unlinkat(dir, temp.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(errno.into()),
    }
    let fd = openat(
        dir,
        temp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    fchown(&fd, Some(uid), Some(gid))?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    file.sync_all()?;
    renameat(dir, temp.as_str(), dir, name)?;
    nix::unistd::fsync(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn seed(vendor: Option<&[u8]>) -> Seed {
        Seed {
            meta_data: b"instance-id: iid-1\n".to_vec(),
            user_data: b"#cloud-config\n{}\n".to_vec(),
            vendor_data: vendor.map(<[u8]>::to_vec),
            network_config: None,
        }
    }

    #[test]
    fn the_files_land_in_the_nocloud_net_directory_and_stale_ones_go() {
        let root = tempfile::tempdir().unwrap();
        write_seed_dir(&seed(Some(b"#cloud-config\n{}\n")), root.path()).unwrap();
        let dir = root.path().join(SEED_DIR);
        assert!(dir.join("vendor-data").is_file());
        write_seed_dir(&seed(None), root.path()).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["meta-data", "user-data"]);
        assert_eq!(
            std::fs::read(dir.join("meta-data")).unwrap(),
            b"instance-id: iid-1\n"
        );
    }

    #[test]
    fn links_in_the_root_resolve_inside_it() {
        // var/lib/cloud -> / is the root's own `/`: the seed lands in <root>/seed/nocloud-net.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
        symlink("/", root.path().join("var/lib/cloud")).unwrap();
        write_seed_dir(&seed(None), root.path()).unwrap();
        assert!(root.path().join("seed/nocloud-net/user-data").is_file());
        assert!(!Path::new("/seed").exists());

        // `..` stops at the root: var/lib is `/`, so the seed is in /cloud/seed/nocloud-net.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var")).unwrap();
        symlink("../../../../../../..", root.path().join("var/lib")).unwrap();
        write_seed_dir(&seed(None), root.path()).unwrap();
        assert!(root
            .path()
            .join("cloud/seed/nocloud-net/user-data")
            .is_file());

        // A link to a host directory names a path inside the root, which does not exist: the
        // seed is refused, and the host directory stays empty.
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
        symlink(outside.path(), root.path().join("var/lib/cloud")).unwrap();
        let err = write_seed_dir(&seed(None), root.path()).unwrap_err();
        assert!(err.to_string().contains("/var/lib/cloud"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_link_in_place_of_a_seed_file_is_replaced_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::create_dir_all(root.path().join(SEED_DIR)).unwrap();
        symlink(outside.path(), root.path().join(SEED_DIR).join("user-data")).unwrap();
        write_seed_dir(&seed(None), root.path()).unwrap();
        assert_eq!(std::fs::read(outside.path()).unwrap(), b"");
        let user_data = root.path().join(SEED_DIR).join("user-data");
        assert!(!user_data
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
