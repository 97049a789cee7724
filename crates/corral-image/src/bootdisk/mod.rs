//! A VM's kernel, initrd and command line, found inside its disk the way pygrub does it: the
//! partition table and the ext2/3/4 filesystems are read in userspace through [`Disk`] (so raw
//! and qcow2 images with backing chains both work), never mounted on the host: the disk is the
//! guest's and so is everything in it.
//!
//! The root is the first filesystem (in partition order, or the whole disk when it has no
//! partition table) that says what boots (see `search.rs` for the order of places). A separate
//! `/boot` partition works when it holds a grub.cfg or BLS entries naming its files.

mod grub;
mod reader;
mod search;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use corral_disk::partition::{self, PartitionError};
use corral_disk::Disk;
use ext4_view::{Ext4, Ext4Error};

use reader::Extent;
use search::Found;

pub use search::{MAX_CONFIG, MAX_INITRD, MAX_KERNEL};

/// What a disk boots, with paths inside its filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootEntry {
    /// The kernel's path in the filesystem (`/boot/vmlinuz-6.1.0-18-amd64`).
    pub kernel: String,
    /// The initrd's path in the filesystem.
    pub initrd: Option<String>,
    /// The command line: the boot entry's options, plus `console=ttyS0` when they name no
    /// console and `root=UUID=` of the filesystem when they name no root.
    pub cmdline: String,
    /// The partition (1-based, as Linux numbers them) holding the files; `None` when the disk
    /// has no partition table.
    pub partition: Option<u32>,
}

/// A disk's kernel and initrd, copied out to host files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractedBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

/// Why a disk's kernel cannot be found or copied out.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Partitions(#[from] PartitionError),
    #[error(
        "the disk has no ext2/3/4 filesystem corral can read ({tried}): corral finds kernels only \
         on ext filesystems; give the kernel yourself (--kernel, [boot] kernel)"
    )]
    NoFilesystem { tried: String },
    #[error(
        "the disk has no kernel (no grub.cfg entry, boot loader entry, /boot/vmlinuz-* or \
         /vmlinuz): install a kernel in the image or give the kernel yourself (--kernel, [boot] \
         kernel)"
    )]
    NoKernel,
    #[error("partition {partition} of the disk")]
    InPartition {
        partition: u32,
        #[source]
        source: Box<BootError>,
    },
    #[error("cannot read {path} on the disk's filesystem")]
    Filesystem {
        path: String,
        #[source]
        source: Ext4Error,
    },
    #[error("{path} on the disk is {size} bytes, more than the {limit} corral reads")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path} on the disk is not UTF-8 text")]
    NotUtf8 { path: String },
    #[error(
        "{config} on the disk boots entry `{title}`, which has no `linux` line; make the default \
         entry a Linux one"
    )]
    EntryWithoutKernel { config: String, title: String },
    #[error("{config} on the disk names the {what} {path}, which is not a file on the disk")]
    NamedFileMissing {
        config: String,
        what: &'static str,
        path: String,
    },
    #[error("cannot write {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the filesystem reader")]
    Thread(#[source] std::io::Error),
    #[error("the filesystem reader failed on a malformed filesystem")]
    ReaderPanicked,
}

/// Finds what `disk` boots.
pub fn find_boot(disk: &dyn Disk) -> Result<BootEntry, BootError> {
    let (entry, ()) = search_disk(disk, &|_, _| Ok(()))?;
    Ok(entry)
}

/// Finds what `disk` boots and copies the kernel to `dir/kernel` and the initrd (if any) to
/// `dir/initrd`: new files of mode 0600 (an old file of that name is replaced, never written
/// through). A stale `dir/initrd` is removed when the entry has none. Nothing is left behind on
/// error.
pub fn extract_boot(disk: &dyn Disk, dir: &Path) -> Result<ExtractedBoot, BootError> {
    let kernel_path = dir.join("kernel");
    let initrd_path = dir.join("initrd");
    let copy = |fs: &Ext4, found: &Found| -> Result<Option<PathBuf>, BootError> {
        copy_out(fs, &found.kernel, MAX_KERNEL, &kernel_path)?;
        remove_stale(&initrd_path)?;
        match &found.initrd {
            Some(initrd) => copy_out(fs, initrd, MAX_INITRD, &initrd_path)
                .map(|()| Some(initrd_path.clone()))
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&kernel_path);
                }),
            None => Ok(None),
        }
    };
    let (entry, initrd) = search_disk(disk, &copy)?;
    Ok(ExtractedBoot {
        kernel: kernel_path,
        initrd,
        cmdline: entry.cmdline,
    })
}

/// Tries the disk's filesystems in order and runs `work` on the first one that boots something.
fn search_disk<T: Send>(
    disk: &dyn Disk,
    work: &(dyn Fn(&Ext4, &Found) -> Result<T, BootError> + Sync),
) -> Result<(BootEntry, T), BootError> {
    let partitions = partition::partitions(disk)?;
    let candidates: Vec<(Option<u32>, Extent)> = if partitions.is_empty() {
        vec![(None, Extent::whole(disk))]
    } else {
        partitions
            .iter()
            .map(|p| (Some(p.number), Extent::of(p)))
            .collect()
    };
    let mut first_error = None;
    let mut saw_filesystem = false;
    let mut not_ext = Vec::new();
    for (number, extent) in candidates {
        let outcome = reader::with_ext4(disk, extent, |fs| -> Result<_, BootError> {
            let Some(mut found) = search::find(fs)? else {
                return Ok(None);
            };
            found.cmdline = complete_cmdline(&found.cmdline, &fs.uuid().to_string());
            let extra = work(fs, &found)?;
            Ok(Some((found, extra)))
        })?;
        let in_partition = |error: BootError| match number {
            Some(partition) => BootError::InPartition {
                partition,
                source: Box::new(error),
            },
            None => error,
        };
        match outcome {
            Ok(Ok(Some((found, extra)))) => {
                let entry = BootEntry {
                    kernel: found.kernel,
                    initrd: found.initrd,
                    cmdline: found.cmdline,
                    partition: number,
                };
                return Ok((entry, extra));
            }
            Ok(Ok(None)) => saw_filesystem = true,
            Ok(Err(error)) => {
                saw_filesystem = true;
                first_error.get_or_insert(in_partition(error));
            }
            Err(error) => {
                let place =
                    number.map_or("the whole disk".to_string(), |n| format!("partition {n}"));
                not_ext.push(format!("{place}: {error}"));
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if saw_filesystem {
        return Err(BootError::NoKernel);
    }
    Err(BootError::NoFilesystem {
        tried: not_ext.join("; "),
    })
}

/// The entry's options with a serial console when they name none (corral's console is the first
/// serial port) and the filesystem as root when they name none.
fn complete_cmdline(options: &str, uuid: &str) -> String {
    let mut words: Vec<String> = options.split_whitespace().map(str::to_string).collect();
    if !words.iter().any(|word| word.starts_with("root=")) {
        words.insert(0, format!("root=UUID={uuid}"));
    }
    if !words.iter().any(|word| word.starts_with("console=")) {
        words.push("console=ttyS0".to_string());
    }
    words.join(" ")
}

/// Copies `source` (in the filesystem) to a new file at `target`, removing it again on error.
fn copy_out(fs: &Ext4, source: &str, limit: u64, target: &Path) -> Result<(), BootError> {
    remove_stale(target)?;
    let output_error = |source| BootError::Output {
        path: target.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(target)
        .map_err(output_error)?;
    let copied = search::copy_bounded(fs, source, limit, &mut |bytes| {
        file.write_all(bytes).map_err(output_error)
    })
    .and_then(|_| file.sync_all().map_err(output_error));
    if copied.is_err() {
        let _ = std::fs::remove_file(target);
    }
    copied
}

/// Removes `path` (a file or a link, never what a link points to) if it exists.
fn remove_stale(path: &Path) -> Result<(), BootError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BootError::Output {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_and_a_root_are_added_only_when_missing() {
        assert_eq!(
            complete_cmdline("root=UUID=abc ro quiet", "x"),
            "root=UUID=abc ro quiet console=ttyS0"
        );
        assert_eq!(
            complete_cmdline("console=hvc0 ro", "x"),
            "root=UUID=x console=hvc0 ro"
        );
    }
}
