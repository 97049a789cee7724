//! Where a Linux system on one filesystem says what it boots, tried in this order: GRUB's
//! `grub.cfg`, Boot Loader Specification entries, the newest `/boot/vmlinuz-*` with
//! `/etc/kernel/cmdline`, and Debian's `/vmlinuz` symlinks. Each place is looked for in `/boot`
//! of a root filesystem and at the top of a separate `/boot` filesystem.
//!
//! Every file is read with a size bound; ext4-view bounds symlink chains (40) and path lengths.

use ext4_view::{Ext4, Ext4Error};
use std::cmp::Ordering;

use super::{grub, BootError};

/// A kernel file bigger than this is refused (distribution kernels are 10-15 MiB).
pub const MAX_KERNEL: u64 = 256 << 20;
/// An initrd bigger than this is refused.
pub const MAX_INITRD: u64 = 1 << 30;
/// A configuration file (grub.cfg, a BLS entry, /etc/kernel/cmdline) bigger than this is refused.
pub const MAX_CONFIG: u64 = 1 << 20;
/// Directory entries looked at in `/boot` or `loader/entries`.
const MAX_DIR_ENTRIES: usize = 4096;

/// What boots, as found on one filesystem (paths inside it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: String,
}

/// The boot directories: `/boot` of a root filesystem, then the top of a `/boot` filesystem.
const BOOT_DIRS: [&str; 2] = ["/boot", ""];

/// What `fs` boots, or `None` if it holds no kernel.
pub(crate) fn find(fs: &Ext4) -> Result<Option<Found>, BootError> {
    for dir in BOOT_DIRS {
        for config in ["grub/grub.cfg", "grub2/grub.cfg"] {
            let path = format!("{dir}/{config}");
            if let Some(found) = from_grub(fs, dir, &path)? {
                return Ok(Some(found));
            }
        }
        if let Some(found) = from_bls(fs, dir)? {
            return Ok(Some(found));
        }
    }
    if let Some(found) = newest_kernel(fs)? {
        return Ok(Some(found));
    }
    debian_symlinks(fs)
}

fn from_grub(fs: &Ext4, dir: &str, path: &str) -> Result<Option<Found>, BootError> {
    let Some(text) = read_config(fs, path)? else {
        return Ok(None);
    };
    let Some(entry) = grub::default_entry(&text) else {
        // A grub.cfg without menu entries (`blscfg`): the BLS entries say what boots.
        return Ok(None);
    };
    let Some(kernel) = entry.kernel else {
        return Err(BootError::EntryWithoutKernel {
            config: path.to_string(),
            title: entry.title,
        });
    };
    let kernel = locate(fs, dir, path, "kernel", &kernel)?;
    let initrd = entry
        .initrd
        .map(|initrd| locate(fs, dir, path, "initrd", &initrd))
        .transpose()?;
    Ok(Some(Found {
        kernel,
        initrd,
        cmdline: entry.options.join(" "),
    }))
}

/// Boot Loader Specification entries: the one with the highest version (by file name, as
/// systemd-boot and GRUB's blscfg sort them) boots.
fn from_bls(fs: &Ext4, dir: &str) -> Result<Option<Found>, BootError> {
    let entries_dir = format!("{dir}/loader/entries");
    let mut names: Vec<String> = list(fs, &entries_dir)?
        .into_iter()
        .filter(|name| name.ends_with(".conf"))
        .collect();
    names.sort_by(|a, b| version_cmp(b, a));
    for name in names {
        let path = format!("{entries_dir}/{name}");
        let Some(text) = read_config(fs, &path)? else {
            continue;
        };
        let (mut kernel, mut initrd, mut options) = (None, None, Vec::new());
        for line in text.lines() {
            let line = line.trim();
            let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let value = value.trim();
            match key {
                "linux" => kernel = Some(value.to_string()),
                // The last initrd is the system's; earlier ones are microcode updates.
                "initrd" => initrd = Some(value.to_string()),
                "options" => options.extend(
                    value
                        .split_whitespace()
                        .filter(|word| !word.contains('$'))
                        .map(str::to_string),
                ),
                _ => {}
            }
        }
        let Some(kernel) = kernel else {
            continue;
        };
        let kernel = locate(fs, dir, &path, "kernel", &kernel)?;
        let initrd = initrd
            .map(|initrd| locate(fs, dir, &path, "initrd", &initrd))
            .transpose()?;
        return Ok(Some(Found {
            kernel,
            initrd,
            cmdline: options.join(" "),
        }));
    }
    Ok(None)
}

/// The newest `/boot/vmlinuz-VERSION` (version order), its initrd by the usual names, and
/// `/etc/kernel/cmdline` (kernel-install's and Debian's place for the command line).
fn newest_kernel(fs: &Ext4) -> Result<Option<Found>, BootError> {
    let mut versions: Vec<String> = list(fs, "/boot")?
        .into_iter()
        .filter_map(|name| name.strip_prefix("vmlinuz-").map(str::to_string))
        .collect();
    versions.sort_by(|a, b| version_cmp(b, a));
    let mut newest = None;
    for version in versions {
        // A dangling link is passed over; a link loop is an error.
        if is_file(fs, &format!("/boot/vmlinuz-{version}"))? {
            newest = Some(version);
            break;
        }
    }
    let Some(version) = newest else {
        return Ok(None);
    };
    let kernel = format!("/boot/vmlinuz-{version}");
    let mut initrd = None;
    for candidate in [
        format!("/boot/initrd.img-{version}"),
        format!("/boot/initramfs-{version}.img"),
        format!("/boot/initrd-{version}.img"),
        format!("/boot/initrd-{version}"),
    ] {
        if is_file(fs, &candidate)? {
            initrd = Some(candidate);
            break;
        }
    }
    Ok(Some(Found {
        kernel,
        initrd,
        cmdline: kernel_cmdline(fs)?,
    }))
}

/// Debian's `/vmlinuz` and `/initrd.img`, symlinks to the current kernel.
fn debian_symlinks(fs: &Ext4) -> Result<Option<Found>, BootError> {
    if !is_file(fs, "/vmlinuz")? {
        return Ok(None);
    }
    let initrd = is_file(fs, "/initrd.img")?.then(|| "/initrd.img".to_string());
    Ok(Some(Found {
        kernel: "/vmlinuz".to_string(),
        initrd,
        cmdline: kernel_cmdline(fs)?,
    }))
}

fn kernel_cmdline(fs: &Ext4) -> Result<String, BootError> {
    Ok(read_config(fs, "/etc/kernel/cmdline")?
        .map(|text| text.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default())
}

/// The file a boot configuration names: as written, or relative to the boot directory (a
/// configuration written for a separate `/boot` partition names `/vmlinuz-...`).
fn locate(
    fs: &Ext4,
    dir: &str,
    config: &str,
    what: &'static str,
    path: &str,
) -> Result<String, BootError> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let candidates = [path.clone(), format!("{dir}{path}")];
    for candidate in candidates {
        if is_file(fs, &candidate)? {
            return Ok(candidate);
        }
    }
    Err(BootError::NamedFileMissing {
        config: config.to_string(),
        what,
        path,
    })
}

/// True when `path` is a regular file (after symlinks); false when it does not exist.
fn is_file(fs: &Ext4, path: &str) -> Result<bool, BootError> {
    match fs.metadata(path) {
        Ok(metadata) => Ok(metadata.file_type().is_regular_file()),
        Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => Ok(false),
        Err(source) => Err(fs_error(path, source)),
    }
}

/// The names in directory `path` (at most [`MAX_DIR_ENTRIES`]); empty when it does not exist.
fn list(fs: &Ext4, path: &str) -> Result<Vec<String>, BootError> {
    let entries = match fs.read_dir(path) {
        Ok(entries) => entries,
        Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => return Ok(Vec::new()),
        Err(source) => return Err(fs_error(path, source)),
    };
    let mut names = Vec::new();
    for entry in entries.take(MAX_DIR_ENTRIES) {
        let entry = entry.map_err(|source| fs_error(path, source))?;
        if let Ok(name) = entry.file_name().as_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// A configuration file's text; `None` when it does not exist.
fn read_config(fs: &Ext4, path: &str) -> Result<Option<String>, BootError> {
    if !is_file(fs, path)? {
        return Ok(None);
    }
    let mut text = Vec::new();
    copy_bounded(fs, path, MAX_CONFIG, &mut |bytes| {
        text.extend_from_slice(bytes);
        Ok(())
    })?;
    String::from_utf8(text)
        .map(Some)
        .map_err(|_| BootError::NotUtf8 {
            path: path.to_string(),
        })
}

/// Hands the file at `path` to `sink` piece by piece, refusing it (before reading) when it is
/// over `limit`. Returns the bytes copied.
pub(crate) fn copy_bounded(
    fs: &Ext4,
    path: &str,
    limit: u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), BootError>,
) -> Result<u64, BootError> {
    let mut file = fs.open(path).map_err(|source| fs_error(path, source))?;
    let size = file.metadata().len();
    if size > limit {
        return Err(BootError::TooLarge {
            path: path.to_string(),
            size,
            limit,
        });
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut copied = 0u64;
    loop {
        let n = file
            .read_bytes(&mut buf)
            .map_err(|source| fs_error(path, source))?;
        if n == 0 {
            return Ok(copied);
        }
        copied += n as u64;
        // The inode's size was checked; its extents could still hold more.
        if copied > limit {
            return Err(BootError::TooLarge {
                path: path.to_string(),
                size: copied,
                limit,
            });
        }
        sink(&buf[..n])?;
    }
}

fn fs_error(path: &str, source: Ext4Error) -> BootError {
    BootError::Filesystem {
        path: path.to_string(),
        source,
    }
}

/// Version order (`sort -V`'s idea): runs of digits compare as numbers, everything else
/// byte-wise, so `6.1.0-18` is newer than `6.1.0-9`.
pub(crate) fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (digits(a), digits(b));
                let (da, db) = (trim_zeros(&a[..na]), trim_zeros(&b[..nb]));
                let order = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        assert_eq!(
            version_cmp("6.1.0-18-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(version_cmp("6.10", "6.9"), Ordering::Greater);
        assert_eq!(version_cmp("6.1.0-x", "6.1.0-y"), Ordering::Less);
        assert_eq!(version_cmp("5.010", "5.10"), Ordering::Equal);
        assert_eq!(version_cmp("6.1", "6.1.1"), Ordering::Less);
    }
}
