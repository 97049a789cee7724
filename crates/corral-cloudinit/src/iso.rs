//! A VM's seed disk as ISO 9660, the other filesystem cloud-init's NoCloud datasource reads: volume
//! id `cidata`, with Rock Ridge and Joliet so the names stay lowercase (`meta-data`, not
//! `META_DAT`). For guests whose kernel has iso9660 but not vfat. Written the way cloud-localds
//! writes it, by genisoimage from a private staging directory; the host never mounts it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral_host::atomic::PRIVATE_FILE_MODE;

use crate::error::SeedError;
use crate::seed::Seed;

/// The volume id cloud-init's NoCloud datasource looks for.
pub const VOLUME_ID: &str = "cidata";
/// The program that writes the image (Debian's `genisoimage`, what cloud-localds runs).
pub const PROGRAM: &str = "genisoimage";

/// Writes the ISO image of `seed` to `path`, atomically (a VM starting reads the old or the new).
pub fn write_image(seed: &Seed, path: &Path) -> Result<(), SeedError> {
    write_with(corral_host::program::find(PROGRAM), seed, path)
}

fn write_with(program: Option<PathBuf>, seed: &Seed, path: &Path) -> Result<(), SeedError> {
    let program = program.ok_or(SeedError::IsoProgramMissing)?;
    let failed = |source| SeedError::Image {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".cidata-")
        .tempdir_in(dir)
        .map_err(failed)?;
    let files = staging.path().join("files");
    std::fs::create_dir(&files).map_err(failed)?;
    for (name, bytes) in seed.files() {
        std::fs::write(files.join(name), bytes).map_err(failed)?;
    }
    let image = staging.path().join("cidata.iso");
    let output = Command::new(&program)
        .args(["-quiet", "-volid", VOLUME_ID, "-joliet", "-rock", "-output"])
        .arg(&image)
        .arg(&files)
        .output()
        .map_err(failed)?;
    if !output.status.success() {
        return Err(SeedError::IsoProgram {
            path: path.to_path_buf(),
            report: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let written = std::fs::File::open(&image).map_err(failed)?;
    written
        .set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .map_err(failed)?;
    written.sync_all().map_err(failed)?;
    std::fs::rename(&image, path).map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CloudInit, Identity};

    #[test]
    fn without_genisoimage_an_iso_seed_is_one_error_naming_the_package_and_the_other_format() {
        let identity = Identity {
            uuid: "f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b".into(),
            hostname: "web".into(),
        };
        let seed = Seed::build(&CloudInit::default(), Path::new("/"), &identity, &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("cidata.img");
        let err = write_with(None, &seed, &image).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("apt-get install genisoimage") && text.contains("seed_format = \"vfat\""),
            "{text}"
        );
        assert!(!image.exists());
    }
}
