//! A virtual system's disks, made standalone qcow2 files: each file the package carries is
//! converted through `disk_image::import` (vmdk streamOptimized or monolithicSparse through
//! qemu-img, qcow2 and raw through corral-disk), checked against the capacity the envelope
//! declares and grown to it; a disk without a file is made blank at its capacity.

use std::path::Path;

use corral_disk::{OpenOptions, Qcow2CreateOptions, ResizeOptions};

use super::envelope::VirtualSystem;
use super::error::OvfError;
use super::package::Package;
use crate::progress::Progress;

/// The disks made, in the system's order.
#[derive(Debug)]
pub struct ImportedDisks {
    /// File names in the target directory: `disk0.qcow2`, `disk1.qcow2`, ...
    pub files: Vec<String>,
    /// Whether a manifest verified every file.
    pub verified: bool,
    /// Whether the package carries a certificate (not checked).
    pub signed: bool,
}

/// Makes `system`'s disks in `dir` (an existing private directory, which the caller removes on
/// error).
pub fn import_disks(
    package: &Package,
    system: &VirtualSystem,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<ImportedDisks, OvfError> {
    let href_of = |file_ref: &str| {
        package
            .envelope
            .files
            .iter()
            .find(|f| f.id == file_ref)
            .map(|f| f.href.as_str())
    };
    let hrefs: Vec<&str> = system
        .disks
        .iter()
        .filter_map(|drive| drive.disk.file_ref.as_deref().and_then(href_of))
        .collect();
    let fetched = package.fetch(&hrefs, dir, progress)?;
    let mut files = Vec::new();
    let made = (|| {
        for (index, drive) in system.disks.iter().enumerate() {
            let name = format!("disk{index}.qcow2");
            let target = dir.join(&name);
            let disk = &drive.disk;
            let source = disk
                .file_ref
                .as_deref()
                .and_then(href_of)
                .and_then(|href| fetched.files.get(href));
            match source {
                Some(source) => {
                    convert(package, &disk.id, disk.capacity, source, &target, progress)?
                }
                None => blank(package, &disk.id, disk.capacity, &target)?,
            }
            files.push(name);
        }
        Ok(())
    })();
    if fetched.extracted {
        for file in fetched.files.values() {
            let _ = std::fs::remove_file(file);
        }
    }
    made.map(|()| ImportedDisks {
        files,
        verified: fetched.verified,
        signed: fetched.signed,
    })
}

fn convert(
    package: &Package,
    disk: &str,
    capacity: u64,
    source: &Path,
    target: &Path,
    progress: &dyn Progress,
) -> Result<(), OvfError> {
    let imported = crate::disk_image::import(source, None, target, progress).map_err(|source| {
        OvfError::Disk {
            path: package.path().to_path_buf(),
            disk: disk.to_string(),
            source: Box::new(source),
        }
    })?;
    if capacity < imported.virtual_size {
        return Err(OvfError::CapacityTooSmall {
            path: package.path().to_path_buf(),
            disk: disk.to_string(),
            capacity,
            image: imported.virtual_size,
        });
    }
    if capacity > imported.virtual_size {
        // What the guest was given, as the exporting hypervisor did.
        let options = ResizeOptions {
            open: OpenOptions::writable().format(corral_disk::DiskFormat::Qcow2),
            force_shrink: false,
        };
        corral_disk::resize(target, capacity, options).map_err(|source| OvfError::Capacity {
            path: package.path().to_path_buf(),
            disk: disk.to_string(),
            capacity,
            source: Box::new(source),
        })?;
    }
    Ok(())
}

fn blank(package: &Package, disk: &str, capacity: u64, target: &Path) -> Result<(), OvfError> {
    corral_disk::create_qcow2(
        target,
        &Qcow2CreateOptions {
            size: Some(capacity),
            cluster_size: None,
            backing_file: None,
            backing_format: None,
            backing_policy: corral_disk::BackingPolicy::Within(Vec::new()),
        },
    )
    .map(drop)
    .map_err(|source| OvfError::Capacity {
        path: package.path().to_path_buf(),
        disk: disk.to_string(),
        capacity,
        source: Box::new(source),
    })
}
