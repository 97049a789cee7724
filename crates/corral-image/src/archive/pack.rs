//! Packing a tree canonically: the same tree always gives the same bytes, so a packed rootfs
//! can be fingerprinted and two builds compared.
//!
//! The rules: entries in depth-first order with each directory's children sorted by the bytes
//! of their names, a directory before its content; GNU headers with numeric owners and empty
//! user and group names, no atime/ctime; names and link targets stored byte for byte (GNU
//! long-name entries past 100 bytes); hard links (same device and inode) written as links to the
//! first name; `user.*`/`security.*` extended attributes as PAX `SCHILY.xattr.` records in name
//! order; device nodes, fifos and sockets skipped; mtimes optionally clamped
//! (`SOURCE_DATE_EPOCH`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::{xattr_allowed, ArchiveError, PAX_XATTR};

#[derive(Clone, Debug, Default)]
pub struct PackOptions {
    /// No mtime later than this (seconds since the epoch): `SOURCE_DATE_EPOCH`.
    pub clamp_mtime: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackStats {
    pub entries: u64,
    /// The size of the regular files' data written.
    pub bytes: u64,
    /// Device nodes, fifos and sockets left out (relative to the root).
    pub skipped: Vec<PathBuf>,
}

/// The length of a GNU header's name and link name fields.
const NAME_FIELD: usize = 100;

/// Writes the tree under `root` into `builder`, each path under `prefix` (empty: none; the
/// root itself is then `./`). The caller finishes the archive (`builder.finish()`).
pub fn pack<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    prefix: &Path,
    options: &PackOptions,
) -> Result<PackStats, ArchiveError> {
    let mut stats = PackStats::default();
    let mut first_names: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    // Depth first, explicit stack: a deep tree cannot overflow the thread's stack.
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let path = root.join(&relative);
        let pack_error = |source| ArchiveError::Pack {
            path: path.clone(),
            source,
        };
        let meta = std::fs::symlink_metadata(&path).map_err(pack_error)?;
        let kind = meta.file_type();
        let mut name = archive_name(prefix, &relative);
        let mut header = Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        header.set_mtime(options.clamp_mtime.map_or(mtime, |clamp| mtime.min(clamp)));
        header.set_size(0);
        if kind.is_dir() {
            name.push(b'/');
            header.set_entry_type(EntryType::Directory);
            write_xattrs(builder, &path, &name)?;
            append(builder, &mut header, &name, None, std::io::empty()).map_err(pack_error)?;
            let mut children = std::fs::read_dir(&path)
                .and_then(|listing| {
                    listing
                        .map(|e| e.map(|e| e.file_name()))
                        .collect::<Result<Vec<OsString>, _>>()
                })
                .map_err(pack_error)?;
            children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            stack.extend(children.into_iter().rev().map(|child| relative.join(child)));
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(pack_error)?
                .into_os_string()
                .into_vec();
            header.set_entry_type(EntryType::Symlink);
            write_xattrs(builder, &path, &name)?;
            append(builder, &mut header, &name, Some(&target), std::io::empty())
                .map_err(pack_error)?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = first_names.get(&key) {
                    header.set_entry_type(EntryType::Link);
                    append(builder, &mut header, &name, Some(first), std::io::empty())
                        .map_err(pack_error)?;
                    stats.entries += 1;
                    continue;
                }
                first_names.insert(key, name.clone());
            }
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            let file = open_same(&path, &meta)?;
            write_xattrs(builder, &path, &name)?;
            let mut exact = Exact {
                inner: file.take(meta.len()),
                left: meta.len(),
            };
            append(builder, &mut header, &name, None, &mut exact).map_err(|source| {
                if exact.left > 0 {
                    ArchiveError::Changed { path: path.clone() }
                } else {
                    ArchiveError::Pack {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
            stats.bytes += meta.len();
        } else if kind.is_block_device()
            || kind.is_char_device()
            || kind.is_fifo()
            || kind.is_socket()
        {
            stats.skipped.push(relative);
            continue;
        }
        stats.entries += 1;
    }
    Ok(stats)
}

/// Appends a small generated file (`metadata.yaml`, an OCI blob) with the same header rules as
/// [`pack`]: owner 0:0, empty user and group names.
pub fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    bytes: &[u8],
    mode: u32,
    mtime: u64,
) -> Result<(), ArchiveError> {
    append_reader(builder, path, bytes, bytes.len() as u64, mode, mtime)
}

/// [`append_file`] for content too large to hold in memory: `size` bytes read from `reader`.
pub fn append_reader<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    reader: impl Read,
    size: u64,
    mode: u32,
    mtime: u64,
) -> Result<(), ArchiveError> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(mode & 0o7777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(size);
    let mut exact = Exact {
        inner: reader.take(size),
        left: size,
    };
    append(
        builder,
        &mut header,
        path.as_os_str().as_bytes(),
        None,
        &mut exact,
    )
    .map_err(|source| ArchiveError::Pack {
        path: path.to_path_buf(),
        source,
    })
}

fn archive_name(prefix: &Path, relative: &Path) -> Vec<u8> {
    if prefix.as_os_str().is_empty() {
        if relative.as_os_str().is_empty() {
            return b".".to_vec();
        }
        return relative.as_os_str().as_bytes().to_vec();
    }
    prefix.join(relative).into_os_string().into_vec()
}

/// Opens a regular file for reading without following a link, and checks it is the file that
/// was looked at.
fn open_same(path: &Path, meta: &Metadata) -> Result<File, ArchiveError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| ArchiveError::Pack {
            path: path.to_path_buf(),
            source,
        })?;
    let now = file.metadata().map_err(|source| ArchiveError::Pack {
        path: path.to_path_buf(),
        source,
    })?;
    if now.ino() != meta.ino() || now.dev() != meta.dev() || now.len() != meta.len() {
        return Err(ArchiveError::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

/// Writes the PAX record header carrying `path`'s extended attributes, if it has any.
fn write_xattrs<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    name: &[u8],
) -> Result<(), ArchiveError> {
    let pack_error = |source| ArchiveError::Pack {
        path: path.to_path_buf(),
        source,
    };
    let mut names: Vec<OsString> = match xattr::list(path) {
        Ok(names) => names.filter(|n| xattr_allowed(n.as_bytes())).collect(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(pack_error(e)),
    };
    if names.is_empty() {
        return Ok(());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut records = Vec::new();
    for key in names {
        let Some(value) = xattr::get(path, &key).map_err(pack_error)? else {
            continue;
        };
        let mut record_key = PAX_XATTR.as_bytes().to_vec();
        record_key.extend_from_slice(key.as_bytes());
        records.extend(pax_record(&record_key, &value));
    }
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::XHeader);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(records.len() as u64);
    // Like GNU tar's `%d/PaxHeaders/%f`, cut to fit: readers ignore this name.
    let mut pax_name = b"PaxHeaders/".to_vec();
    pax_name.extend(name.iter().rev().take(NAME_FIELD - 12).rev());
    set_field(&mut header.as_old_mut().name, &pax_name);
    header.set_cksum();
    builder.append(&header, &records[..]).map_err(pack_error)
}

/// One PAX record: `LENGTH key=value\n`, LENGTH counting the whole record, itself included.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut length = body + 1;
    while length != body + length.to_string().len() {
        length = body + length.to_string().len();
    }
    let mut record = length.to_string().into_bytes();
    record.push(b' ');
    record.extend_from_slice(key);
    record.push(b'=');
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// Appends an entry whose name (and link target) are written byte for byte, through GNU
/// long-name entries when they do not fit the header.
fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &mut Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: impl Read,
) -> std::io::Result<()> {
    if name.len() > NAME_FIELD {
        long_name(builder, b'L', name)?;
    }
    set_field(&mut header.as_old_mut().name, name);
    if let Some(link) = link {
        if link.len() > NAME_FIELD {
            long_name(builder, b'K', link)?;
        }
        set_field(&mut header.as_old_mut().linkname, link);
    }
    header.set_cksum();
    builder.append(header, data)
}

fn long_name<W: Write>(
    builder: &mut tar::Builder<W>,
    kind: u8,
    name: &[u8],
) -> std::io::Result<()> {
    let mut header = Header::new_gnu();
    set_field(&mut header.as_old_mut().name, b"././@LongLink");
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(name.len() as u64 + 1);
    header.set_entry_type(EntryType::new(kind));
    header.set_cksum();
    builder.append(&header, name.chain(&[0u8][..]))
}

/// Copies `value` into a fixed-size header field, cut to fit, the rest zeros.
fn set_field(field: &mut [u8], value: &[u8]) {
    let length = value.len().min(field.len());
    field.fill(0);
    field[..length].copy_from_slice(&value[..length]);
}

/// A reader that fails when its file ends before the size its header declared (the file
/// shrank while it was packed), rather than leaving the archive short.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        assert_eq!(pax_record(b"a", b"b"), b"6 a=b\n");
        let record = pax_record(b"SCHILY.xattr.user.k", &[b'v'; 90]);
        let length: usize = std::str::from_utf8(record.split(|&b| b == b' ').next().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, record.len());
    }
}
