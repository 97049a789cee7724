//! A VM's seed disk: a FAT filesystem labelled `CIDATA` holding the seed files in its root,
//! written in userspace with the `fatfs` crate (this host's kernel need not know vfat, and a
//! host mount of a filesystem is never needed). The same seed gives the same bytes: the volume
//! id comes from the content and the files carry fatfs's fixed timestamp.

use std::io::{Cursor, Write};
use std::path::Path;

use corral_host::atomic::PRIVATE_FILE_MODE;

use crate::error::SeedError;
use crate::seed::Seed;

/// The volume label cloud-init's NoCloud datasource looks for (it accepts either case).
pub const LABEL: &str = "CIDATA";

/// The smallest image: what cloud-localds makes (128 KiB), room enough for small documents.
const MIN_IMAGE_BYTES: u64 = 128 << 10;

/// The filesystem image of `seed`.
pub fn image(seed: &Seed) -> std::io::Result<Vec<u8>> {
    let files = seed.files();
    // Each file rounded up to a 4 KiB cluster, plus the tables, directory and slack.
    let content: u64 = files
        .iter()
        .map(|(_, bytes)| (bytes.len() as u64).div_ceil(4096) * 4096)
        .sum();
    let size = (MIN_IMAGE_BYTES + content * 2).next_multiple_of(64 << 10);
    let mut disk = Cursor::new(vec![
        0_u8;
        usize::try_from(size).map_err(std::io::Error::other)?
    ]);
    let mut label = [b' '; 11];
    label[..LABEL.len()].copy_from_slice(LABEL.as_bytes());
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new()
            .volume_label(label)
            .volume_id(volume_id(&files)),
    )?;
    disk.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        let root = fs.root_dir();
        for (name, bytes) in &files {
            let mut file = root.create_file(name)?;
            file.truncate()?;
            file.write_all(bytes)?;
            file.flush()?;
        }
        drop(root);
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

/// Writes the image of `seed` to `path` atomically (a VM starting reads the old or the new).
pub fn write_image(seed: &Seed, path: &Path) -> Result<(), SeedError> {
    let bytes = image(seed).map_err(|source| SeedError::Image {
        path: path.to_path_buf(),
        source,
    })?;
    corral_host::atomic::write_file(path, &bytes, PRIVATE_FILE_MODE)?;
    Ok(())
}

/// A volume serial number from the files (FNV-1a), so equal seeds give equal images.
fn volume_id(files: &[(&str, &[u8])]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for (name, bytes) in files {
        for byte in name.bytes().chain(bytes.iter().copied()) {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn seed(user_data: &[u8]) -> Seed {
        Seed {
            meta_data: b"instance-id: iid-1\nlocal-hostname: web\n".to_vec(),
            user_data: user_data.to_vec(),
            vendor_data: None,
            network_config: Some(b"version: 2\n".to_vec()),
        }
    }

    #[test]
    fn the_image_holds_the_files_under_their_names_and_is_reproducible() {
        let seed = seed(b"#cloud-config\n{}\n");
        let bytes = image(&seed).unwrap();
        assert_eq!(bytes, image(&seed).unwrap());
        let fs = fatfs::FileSystem::new(Cursor::new(bytes), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), LABEL);
        let mut names: Vec<String> = fs
            .root_dir()
            .iter()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["meta-data", "network-config", "user-data"]);
        let mut text = String::new();
        fs.root_dir()
            .open_file("user-data")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "#cloud-config\n{}\n");
    }

    #[test]
    fn a_large_document_fits() {
        let big = vec![b'#'; 900 << 10];
        let bytes = image(&seed(&big)).unwrap();
        let fs = fatfs::FileSystem::new(Cursor::new(bytes), fatfs::FsOptions::new()).unwrap();
        let mut read = Vec::new();
        fs.root_dir()
            .open_file("user-data")
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, big);
    }
}
