//! Filling a new container's root filesystem from a directory or a tarball.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral_image::progress::Progress;

use crate::CoreError;

/// Copies `source` (a directory, or a tar archive compressed or not) into `target`, keeping
/// owners, modes, links and extended attributes; the copy is one phase of `progress`. Block and
/// character device nodes are removed with a warning: an image must not bring its own `/disk`
/// naming a host device (the container gets its devices on a fresh `/dev`).
pub fn populate(source: &Path, target: &Path, progress: &dyn Progress) -> Result<(), CoreError> {
    std::fs::create_dir_all(target).map_err(CoreError::io("create", target))?;
    progress.begin(
        &format!("copying root filesystem from {}", source.display()),
        None,
    );
    if source.is_dir() {
        crate::copy::copy_tree(source, target, progress)?;
    } else if source.is_file() {
        let mut tar = Command::new("tar");
        tar.arg("--extract")
            .arg("--file")
            .arg(source)
            .arg("--directory")
            .arg(target)
            .arg("--numeric-owner")
            .arg("--preserve-permissions")
            .arg("--xattrs")
            .arg("--xattrs-include=*");
        crate::copy::run_until_done(&mut tar, source, progress)?;
    } else {
        return Err(CoreError::Unsupported(format!(
            "root filesystem {} is neither a directory nor a tar archive",
            source.display()
        )));
    }
    let removed = remove_device_nodes(target)?;
    if !removed.is_empty() {
        let names: Vec<String> = removed
            .iter()
            .map(|p| Path::new("/").join(p).display().to_string())
            .collect();
        tracing::warn!(
            "removed {} device node{} from the root filesystem: {}",
            removed.len(),
            if removed.len() == 1 { "" } else { "s" },
            names.join(", ")
        );
    }
    Ok(())
}

/// Removes every block and character device below `root`; returns their paths relative to it.
fn remove_device_nodes(root: &Path) -> Result<Vec<PathBuf>, CoreError> {
    let mut nodes = Vec::new();
    corral_host::tree::walk(root, |path, meta| -> Result<(), CoreError> {
        let kind = meta.file_type();
        if kind.is_block_device() || kind.is_char_device() {
            nodes.push(path.to_path_buf());
        }
        Ok(())
    })?;
    let mut removed = Vec::new();
    for path in nodes {
        std::fs::remove_file(&path).map_err(CoreError::io("remove device node", &path))?;
        removed.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_image::progress::NoProgress;

    #[test]
    fn copies_a_directory_with_links_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let source = tempfile::tempdir().unwrap();
        std::fs::create_dir(source.path().join("bin")).unwrap();
        std::fs::write(source.path().join("bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            source.path().join("bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("tool", source.path().join("bin/alias")).unwrap();
        std::fs::write(source.path().join(".hidden"), b"x").unwrap();
        let target = tempfile::tempdir().unwrap();
        let dest = target.path().join("rootfs");
        populate(source.path(), &dest, &NoProgress).unwrap();
        let mode = std::fs::metadata(dest.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(dest.join("bin/alias")).unwrap(),
            Path::new("tool")
        );
        assert!(dest.join(".hidden").exists());
    }

    #[test]
    fn unpacks_a_tarball() {
        let source = tempfile::tempdir().unwrap();
        std::fs::create_dir(source.path().join("etc")).unwrap();
        std::fs::write(source.path().join("etc/hostname"), b"box\n").unwrap();
        let tarball = source.path().join("rootfs.tar.gz");
        let status = Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(source.path())
            .arg("etc")
            .status()
            .unwrap();
        assert!(status.success());
        let target = tempfile::tempdir().unwrap();
        populate(&tarball, target.path(), &NoProgress).unwrap();
        assert_eq!(
            std::fs::read(target.path().join("etc/hostname")).unwrap(),
            b"box\n"
        );
    }

    #[test]
    fn device_nodes_are_not_unpacked() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            return corral_testkit::skip("needs root to make device nodes");
        }
        // An image shipping /disk = the block device holding the host's root, and a char device.
        let source = tempfile::tempdir().unwrap();
        let root_dev = std::fs::metadata("/").unwrap().dev();
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        let block = nix::sys::stat::SFlag::S_IFBLK;
        let char = nix::sys::stat::SFlag::S_IFCHR;
        nix::sys::stat::mknod(&source.path().join("disk"), block, mode, root_dev).unwrap();
        std::fs::create_dir(source.path().join("deep")).unwrap();
        let kmsg = nix::sys::stat::makedev(1, 11);
        nix::sys::stat::mknod(&source.path().join("deep/kmsg"), char, mode, kmsg).unwrap();
        std::fs::write(source.path().join("deep/file"), b"kept").unwrap();
        let tarball = tempfile::tempdir().unwrap();
        let tarball = tarball.path().join("image.tar");
        let status = Command::new("tar")
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(source.path())
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        for from in [tarball.as_path(), source.path()] {
            let target = tempfile::tempdir().unwrap();
            populate(from, target.path(), &NoProgress).unwrap();
            assert!(!target.path().join("disk").exists(), "{}", from.display());
            assert!(!target.path().join("deep/kmsg").exists());
            assert_eq!(
                std::fs::read(target.path().join("deep/file")).unwrap(),
                b"kept"
            );
        }
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let source = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(source.path(), b"not a tarball").unwrap();
        let target = tempfile::tempdir().unwrap();
        let err = populate(source.path(), target.path(), &NoProgress).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot copy the root filesystem from"),
            "{err}"
        );
    }
}
