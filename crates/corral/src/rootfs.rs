//! Filling a new container's root filesystem from a directory or a tarball.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// Copies `source` (a directory, or a tar archive compressed or not) into `target`, keeping
/// owners, modes, links, device nodes and extended attributes.
pub fn populate(source: &Path, target: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let progress = crate::progress::Spinner::start(&format!(
        "copying root filesystem from {}",
        source.display()
    ));
    let mut command = if source.is_dir() {
        let mut cp = Command::new("cp");
        // `source/.` copies the directory's content, dot-files included.
        cp.arg("-a")
            .arg("--reflink=auto")
            .arg(source.join("."))
            .arg(target);
        cp
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
        tar
    } else {
        bail!(
            "root filesystem {} is neither a directory nor a tar archive",
            source.display()
        );
    };
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    progress.finish();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "cannot copy the root filesystem from {}: {}",
            source.display(),
            stderr.lines().next().unwrap_or("unknown error")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        populate(source.path(), &dest).unwrap();
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
        populate(&tarball, target.path()).unwrap();
        assert_eq!(
            std::fs::read(target.path().join("etc/hostname")).unwrap(),
            b"box\n"
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let source = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(source.path(), b"not a tarball").unwrap();
        let target = tempfile::tempdir().unwrap();
        let err = populate(source.path(), target.path()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot copy the root filesystem from"),
            "{err}"
        );
    }
}
