//! Unpacking an untrusted tar stream into a directory, optionally as an OCI layer (whiteouts).
//!
//! Nothing is written outside the target: `..` components are refused, every entry is created
//! through handles that never follow a symlink (`beneath`), hard links must name a non-directory
//! unpacked before them. Owners (when running as root), modes with setuid/setgid, mtimes,
//! symlinks, hard links and `user.*`/`security.*` extended attributes are kept. Directories get
//! their mode and mtime last, once their content is in place.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};
use tar::EntryType;
use xattr::FileExt;

use super::beneath::{self, Beneath, WalkError};
use super::{xattr_allowed, ArchiveError, Limits, PAX_XATTR};

/// The most bytes the extension headers before one entry (GNU long names, PAX records, sparse
/// maps) may take: the tar crate reads them into memory.
const HEADER_BUDGET: u64 = 1 << 20;
/// Linux's PATH_MAX: longer entry names are refused.
const NAME_MAX_BYTES: usize = 4096;
const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

#[derive(Clone, Debug, Default)]
pub struct UnpackOptions {
    pub limits: Limits,
    /// The archive is an OCI image layer: `.wh.NAME` removes NAME put in the target by earlier
    /// layers, `.wh..wh..opq` hides everything earlier layers put in its directory.
    pub layer: bool,
}

/// What an unpack created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    /// The apparent size of the regular files written.
    pub bytes: u64,
    /// Device nodes and fifos under `dev/`, skipped: containers get a fresh `/dev`.
    pub skipped_devices: Vec<PathBuf>,
}

/// Unpacks the tar stream `reader` (decompressed already: see [`super::decompress`]) into the
/// directory `target`, which must exist. On error the target holds part of the archive: the
/// caller removes it (an import unpacks into a staging directory and deletes it on failure, so
/// no half image remains).
pub fn unpack(
    reader: impl Read,
    target: &Path,
    options: &UnpackOptions,
) -> Result<Unpacked, ArchiveError> {
    let tree = Beneath::open(target).map_err(|source| ArchiveError::Target {
        path: target.to_path_buf(),
        source,
    })?;
    let budget = Rc::new(Budget::default());
    let mut archive = tar::Archive::new(Budgeted {
        inner: reader,
        budget: budget.clone(),
    });
    let mut unpacker = Unpacker {
        tree,
        options,
        as_root: nix::unistd::geteuid().is_root(),
        result: Unpacked::default(),
        directories: BTreeMap::new(),
        this_layer: HashSet::new(),
    };
    let mut entries = archive.entries().map_err(ArchiveError::Malformed)?;
    // The padding after the previous entry's data: a stream may end inside it.
    let mut padding = 0;
    loop {
        budget.start_headers();
        let next = entries.next();
        let ended = budget.eof.get();
        let consumed = budget.consumed.get();
        budget.unlimited();
        // Like Go's archive/tar and the tar crate, a stream that ends between entries (no
        // end-of-archive blocks, even no padding: `umoci insert` writes such layers) is
        // complete; one that ends inside a header or inside data is truncated.
        let mut entry = match next {
            None => break,
            Some(Err(_)) if budget.tripped.get() => {
                return Err(ArchiveError::HeaderTooLarge { max: HEADER_BUDGET })
            }
            Some(Err(_)) if ended && consumed <= padding => break,
            Some(Err(_)) if ended => return Err(ArchiveError::Truncated { entry: None }),
            Some(Err(e)) => return Err(ArchiveError::Malformed(e)),
            Some(Ok(entry)) => entry,
        };
        unpacker.result.entries += 1;
        if unpacker.result.entries > options.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                max: options.limits.max_entries,
            });
        }
        padding = entry.size().wrapping_neg() % 512;
        unpacker.entry(&mut entry, &budget)?;
    }
    unpacker.finish_directories()?;
    Ok(unpacker.result)
}

/// Shared between the unpacker and the reader under the tar crate: how much the tar crate may
/// read before the next entry is handed out, and whether the stream ended.
#[derive(Default)]
struct Budget {
    remaining: Cell<Option<u64>>,
    tripped: Cell<bool>,
    eof: Cell<bool>,
    /// Bytes read since `start_headers`.
    consumed: Cell<u64>,
}

impl Budget {
    fn start_headers(&self) {
        self.remaining.set(Some(HEADER_BUDGET + 2 * 512));
        self.eof.set(false);
        self.consumed.set(0);
    }

    fn unlimited(&self) {
        self.remaining.set(None);
    }
}

struct Budgeted<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let allowed = match self.budget.remaining.get() {
            Some(0) if !buf.is_empty() => {
                self.budget.tripped.set(true);
                return Err(std::io::Error::other("extension header over budget"));
            }
            Some(n) => buf.len().min(usize::try_from(n).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..allowed])?;
        if n == 0 && allowed > 0 {
            self.budget.eof.set(true);
        }
        self.budget
            .consumed
            .set(self.budget.consumed.get() + n as u64);
        if let Some(remaining) = self.budget.remaining.get() {
            self.budget.remaining.set(Some(remaining - n as u64));
        }
        Ok(n)
    }
}

/// An entry's metadata, read from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Unpacker<'a> {
    tree: Beneath,
    options: &'a UnpackOptions,
    as_root: bool,
    result: Unpacked,
    /// Directories' modes and mtimes, applied at the end (deepest first), once nothing more is
    /// created inside them. The last entry for a directory wins.
    directories: BTreeMap<PathBuf, (u32, TimeSpec)>,
    /// Everything this layer created (with its ancestors): whiteouts spare it.
    this_layer: HashSet<PathBuf>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        budget: &Budget,
    ) -> Result<(), ArchiveError> {
        let raw = entry.path().map_err(ArchiveError::Malformed)?.into_owned();
        let path = clean(&raw)?;
        let entry_type = entry.header().entry_type();
        if self.options.layer && self.whiteout(&path)? {
            return self.drain(entry, &path, budget);
        }
        let meta = metadata(entry, &path)?;
        match entry_type {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, &path, &meta, budget)?
            }
            EntryType::Directory => self.directory(&path, &meta)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|target| !target.is_empty())
                    .ok_or_else(|| bad_header(&path, "a symbolic link without a target"))?
                    .into_owned();
                self.symlink(&path, &target, &meta)?
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|source| ArchiveError::BadHeader {
                        entry: path.clone(),
                        source,
                    })?
                    .ok_or_else(|| bad_header(&path, "a hard link without a target"))?;
                let target = clean(&target)?;
                self.hard_link(&path, &target)?
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if path.components().next() != Some(Component::Normal(OsStr::new("dev"))) {
                    return Err(ArchiveError::DeviceOutsideDev { entry: path });
                }
                self.result.skipped_devices.push(path.clone());
            }
            // PAX global headers describe the archive, not an entry.
            EntryType::XGlobalHeader => {}
            other => {
                return Err(ArchiveError::UnsupportedEntry {
                    entry: path,
                    kind: format!("type {:?}", other.as_byte() as char),
                })
            }
        }
        self.drain(entry, &path, budget)
    }

    /// Reads what is left of an entry's data (entries other than files should have none), so
    /// the next header is read within its budget. It counts against `max_bytes`.
    fn drain<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        budget: &Budget,
    ) -> Result<(), ArchiveError> {
        let mut sink = std::io::sink();
        self.copy(entry, &mut sink, path, budget).map(drop)
    }

    /// Copies an entry's remaining data into `out`, counting it against `max_bytes`.
    fn copy<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        out: &mut dyn Write,
        path: &Path,
        budget: &Budget,
    ) -> Result<u64, ArchiveError> {
        let mut buf = vec![0u8; 128 * 1024];
        let mut copied = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) if budget.eof.get() => return Err(truncated(path)),
                Err(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(truncated(path))
                }
                Err(source) => return Err(ArchiveError::Read(source)),
            };
            self.result.bytes += n as u64;
            if self.result.bytes > self.options.limits.max_bytes {
                return Err(ArchiveError::TooManyBytes {
                    entry: path.to_path_buf(),
                    max: self.options.limits.max_bytes,
                });
            }
            out.write_all(&buf[..n])
                .map_err(|source| unpack_error(path, source))?;
            copied += n as u64;
        }
        if budget.eof.get() {
            return Err(truncated(path));
        }
        Ok(copied)
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        meta: &Meta,
        budget: &Budget,
    ) -> Result<(), ArchiveError> {
        let size = entry.size();
        if self.result.bytes.saturating_add(size) > self.options.limits.max_bytes {
            return Err(ArchiveError::TooManyBytes {
                entry: path.to_path_buf(),
                max: self.options.limits.max_bytes,
            });
        }
        let (parent, name) = self.replace(path, false)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(parent, name, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| unpack_error(path, e.into()))?;
        let mut file = File::from(fd);
        let written = self.copy(entry, &mut file, path, budget)?;
        if written != size {
            return Err(truncated(path));
        }
        self.apply(&file, path, meta)
    }

    fn directory(&mut self, path: &Path, meta: &Meta) -> Result<(), ArchiveError> {
        let dir = if path.as_os_str().is_empty() {
            beneath::open_dir(self.tree.root(), OsStr::new("."))
        } else {
            let (parent, name) = self.replace(path, true)?;
            match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(unpack_error(path, e.into())),
            }
            beneath::open_dir(parent, name)
        }
        .map_err(|e| unpack_error(path, e.into()))?;
        self.owner_and_xattrs(&File::from(dir), path, meta)?;
        self.directories
            .insert(path.to_path_buf(), (meta.mode, meta.mtime));
        Ok(())
    }

    fn symlink(&mut self, path: &Path, target: &[u8], meta: &Meta) -> Result<(), ArchiveError> {
        let as_root = self.as_root;
        let (parent, name) = self.replace(path, false)?;
        let io = |e: Errno| unpack_error(path, e.into());
        symlinkat(OsStr::from_bytes(target), parent, name).map_err(io)?;
        if as_root {
            fchownat(
                parent,
                name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io)?;
        }
        if !meta.xattrs.is_empty() {
            // A link cannot be opened for fsetxattr; its parent's handle can be named.
            let through = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
            for (key, value) in &meta.xattrs {
                xattr::set(&through, OsStr::from_bytes(key), value)
                    .map_err(|source| unpack_error(path, source))?;
            }
        }
        utimensat(
            parent,
            name,
            &TimeSpec::UTIME_OMIT,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io)
    }

    fn hard_link(&mut self, path: &Path, target: &Path) -> Result<(), ArchiveError> {
        let missing = || ArchiveError::HardLinkMissing {
            entry: path.to_path_buf(),
            target: target.to_path_buf(),
        };
        let (target_dir, target_name) = split(target).ok_or_else(missing)?;
        if target == path {
            return Ok(());
        }
        // The link's source is looked up without creating anything.
        let source = match self.tree.dir(target_dir, false) {
            Ok(Some(dir)) => dir
                .try_clone_to_owned()
                .map_err(|e| unpack_error(path, e))?,
            Ok(None) | Err(WalkError::NotDirectory(_)) => return Err(missing()),
            Err(e) => return Err(walk_error(target, e)),
        };
        match beneath::stat(&source, target_name).map_err(|e| unpack_error(path, e))? {
            None => return Err(missing()),
            Some(st) if beneath::kind(&st) == SFlag::S_IFDIR => {
                return Err(ArchiveError::HardLinkToDirectory {
                    entry: path.to_path_buf(),
                    target: target.to_path_buf(),
                })
            }
            Some(_) => {}
        }
        let (parent, name) = self.replace(path, false)?;
        linkat(&source, target_name, parent, name, AtFlags::empty())
            .map_err(|e| unpack_error(path, e.into()))
    }

    /// Clears the way for `path`: its parent directory is opened (created where missing) and
    /// whatever is at `path` removed, except a directory when a directory is wanted. Returns
    /// the parent's handle and the entry's name in it.
    fn replace<'p>(
        &mut self,
        path: &'p Path,
        keep_directory: bool,
    ) -> Result<(BorrowedFd<'_>, &'p OsStr), ArchiveError> {
        let (dir, name) = split(path).ok_or_else(|| {
            bad_header(path, "an entry named like the root that is not a directory")
        })?;
        if self.options.layer {
            for ancestor in path.ancestors() {
                if !self.this_layer.insert(ancestor.to_path_buf()) {
                    break;
                }
            }
        }
        let existing = {
            let parent = self.parent(path, dir, true)?;
            beneath::stat(parent, name).map_err(|e| unpack_error(path, e))?
        };
        if let Some(st) = existing {
            if !(keep_directory && beneath::kind(&st) == SFlag::S_IFDIR) {
                let parent = self
                    .parent(path, dir, true)?
                    .try_clone_to_owned()
                    .map_err(|e| unpack_error(path, e))?;
                beneath::remove_tree(&parent, name).map_err(|e| unpack_error(path, e))?;
                self.tree.forget();
            }
        }
        Ok((self.parent(path, dir, true)?, name))
    }

    fn parent(
        &mut self,
        path: &Path,
        dir: &Path,
        create: bool,
    ) -> Result<BorrowedFd<'_>, ArchiveError> {
        match self.tree.dir(dir, create) {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => Err(unpack_error(path, Errno::ENOENT.into())),
            Err(e) => Err(walk_error(path, e)),
        }
    }

    /// Handles `path` if it is a whiteout (returns whether it was).
    fn whiteout(&mut self, path: &Path) -> Result<bool, ArchiveError> {
        let Some((dir, name)) = split(path) else {
            return Ok(false);
        };
        let name = name.as_bytes();
        if name == OPAQUE.as_bytes() {
            let parent = match self.tree.dir(dir, false) {
                Ok(Some(fd)) => fd.try_clone_to_owned().map_err(|e| unpack_error(path, e))?,
                Ok(None) => return Ok(true),
                Err(e) => return Err(walk_error(path, e)),
            };
            self.clear_lower(&parent, dir)
                .map_err(|e| unpack_error(path, e))?;
            self.tree.forget();
            return Ok(true);
        }
        let Some(hidden) = name.strip_prefix(WHITEOUT.as_bytes()) else {
            return Ok(false);
        };
        if hidden.starts_with(WHITEOUT.as_bytes()) {
            // Other `.wh..wh.` names are aufs bookkeeping (hard link directories): not content.
            return Ok(true);
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(ArchiveError::BadWhiteout {
                entry: path.to_path_buf(),
                what: "a whiteout must name a file",
            });
        }
        let hidden_path = dir.join(OsStr::from_bytes(hidden));
        // A whiteout hides what earlier layers made, not what this one made.
        if self.this_layer.contains(&hidden_path) {
            return Ok(true);
        }
        let parent = match self.tree.dir(dir, false) {
            Ok(Some(fd)) => fd.try_clone_to_owned().map_err(|e| unpack_error(path, e))?,
            Ok(None) | Err(WalkError::NotDirectory(_)) => return Ok(true),
            Err(e) => return Err(walk_error(path, e)),
        };
        beneath::remove_tree(&parent, OsStr::from_bytes(hidden))
            .map_err(|e| unpack_error(path, e))?;
        self.tree.forget();
        Ok(true)
    }

    /// Removes from `dir` everything earlier layers made, keeping this layer's entries.
    fn clear_lower(&self, dir: &OwnedFd, path: &Path) -> std::io::Result<()> {
        for name in beneath::children(dir)? {
            let child = path.join(&name);
            if !self.this_layer.contains(&child) {
                beneath::remove_tree(dir, &name)?;
                continue;
            }
            if let Some(st) = beneath::stat(dir, &name)? {
                if beneath::kind(&st) == SFlag::S_IFDIR {
                    let inner = beneath::open_dir(dir, &name)?;
                    self.clear_lower(&inner, &child)?;
                }
            }
        }
        Ok(())
    }

    /// A file's metadata: owner, then mode (a chown clears setuid), then extended attributes
    /// (a chown clears file capabilities), then mtime.
    fn apply(&self, file: &File, path: &Path, meta: &Meta) -> Result<(), ArchiveError> {
        self.owner_and_xattrs(file, path, meta)?;
        futimens(file, &TimeSpec::UTIME_OMIT, &meta.mtime).map_err(|e| unpack_error(path, e.into()))
    }

    fn owner_and_xattrs(&self, file: &File, path: &Path, meta: &Meta) -> Result<(), ArchiveError> {
        let io = |e: Errno| unpack_error(path, e.into());
        if self.as_root {
            fchown(
                file,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(io)?;
        }
        if !file.metadata().map_err(|e| unpack_error(path, e))?.is_dir() {
            fchmod(file, Mode::from_bits_truncate(meta.mode)).map_err(io)?;
        }
        for (key, value) in &meta.xattrs {
            file.set_xattr(OsStr::from_bytes(key), value)
                .map_err(|source| unpack_error(path, source))?;
        }
        Ok(())
    }

    /// Gives directories their modes and mtimes, children before parents.
    fn finish_directories(&mut self) -> Result<(), ArchiveError> {
        let directories = std::mem::take(&mut self.directories);
        for (path, (mode, mtime)) in directories.iter().rev() {
            let dir = if path.as_os_str().is_empty() {
                beneath::open_dir(self.tree.root(), OsStr::new("."))
            } else {
                let Some((parent, name)) = split(path) else {
                    continue;
                };
                let parent = match self.tree.dir(parent, false) {
                    Ok(Some(fd)) => fd,
                    // Replaced or whited out after it was unpacked.
                    Ok(None) | Err(_) => continue,
                };
                match beneath::open_dir(parent, name) {
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                    other => other,
                }
            }
            .map_err(|e| unpack_error(path, e.into()))?;
            let io = |e: Errno| unpack_error(path, e.into());
            fchmod(&dir, Mode::from_bits_truncate(*mode)).map_err(io)?;
            futimens(dir.as_fd(), &TimeSpec::UTIME_OMIT, mtime).map_err(io)?;
        }
        Ok(())
    }
}

/// The entry's name made relative, without `.` components; `..` is refused.
fn clean(raw: &Path) -> Result<PathBuf, ArchiveError> {
    if raw.as_os_str().len() > NAME_MAX_BYTES {
        return Err(ArchiveError::NameTooLong {
            entry: raw.to_path_buf(),
            max: NAME_MAX_BYTES,
        });
    }
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ArchiveError::PathEscape {
                    entry: raw.to_path_buf(),
                })
            }
        }
    }
    Ok(clean)
}

/// The parent directory and the file name of a cleaned, non-empty path.
fn split(path: &Path) -> Option<(&Path, &OsStr)> {
    Some((path.parent()?, path.file_name()?))
}

fn metadata<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<Meta, ArchiveError> {
    let header = entry.header();
    let field = |source| ArchiveError::BadHeader {
        entry: path.to_path_buf(),
        source,
    };
    let id =
        |value: u64| u32::try_from(value).map_err(|_| bad_header(path, "an owner id over 32 bits"));
    let mode = header.mode().map_err(field)? & 0o7777;
    let uid = id(header.uid().map_err(field)?)?;
    let gid = id(header.gid().map_err(field)?)?;
    let mut mtime = TimeSpec::new(clamp_seconds(header.mtime().map_err(field)?), 0);
    let mut xattrs = Vec::new();
    if let Some(records) = entry.pax_extensions().map_err(field)? {
        for record in records {
            let record = record.map_err(field)?;
            let key = record.key_bytes();
            if key == b"mtime" {
                mtime = pax_time(record.value_bytes())
                    .ok_or_else(|| bad_header(path, "a PAX mtime that is not a number"))?;
            } else if let Some(name) = key.strip_prefix(PAX_XATTR.as_bytes()) {
                if xattr_allowed(name) {
                    xattrs.push((name.to_vec(), record.value_bytes().to_vec()));
                } else {
                    tracing::debug!(entry = %path.display(), xattr = %String::from_utf8_lossy(name), "extended attribute skipped");
                }
            }
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

fn clamp_seconds(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// A PAX time: decimal seconds with an optional fraction (`1700000000.123456789`).
fn pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: i64 = seconds.parse().ok()?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let nanos: i64 = digits.parse().ok()?;
    // A negative time with a fraction counts the fraction back from the second.
    Some(if seconds < 0 && nanos > 0 {
        TimeSpec::new(seconds - 1, 1_000_000_000 - nanos)
    } else {
        TimeSpec::new(seconds, nanos)
    })
}

fn bad_header(path: &Path, what: &str) -> ArchiveError {
    ArchiveError::BadHeader {
        entry: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
    }
}

fn truncated(path: &Path) -> ArchiveError {
    ArchiveError::Truncated {
        entry: Some(path.to_path_buf()),
    }
}

fn unpack_error(path: &Path, source: std::io::Error) -> ArchiveError {
    ArchiveError::Unpack {
        entry: path.to_path_buf(),
        source,
    }
}

fn walk_error(path: &Path, error: WalkError) -> ArchiveError {
    match error {
        WalkError::Symlink(through) => ArchiveError::ThroughSymlink {
            entry: path.to_path_buf(),
            through,
        },
        WalkError::NotDirectory(through) => ArchiveError::NotADirectory {
            entry: path.to_path_buf(),
            through,
        },
        WalkError::Io(source) => unpack_error(path, source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_their_fraction() {
        assert_eq!(
            pax_time(b"1700000000.5"),
            Some(TimeSpec::new(1_700_000_000, 500_000_000))
        );
        assert_eq!(pax_time(b"12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(pax_time(b"-1.25"), Some(TimeSpec::new(-2, 750_000_000)));
        assert_eq!(pax_time(b"1.x"), None);
    }

    #[test]
    fn names_are_made_relative_and_dotdot_is_refused() {
        assert_eq!(
            clean(Path::new("/etc/./passwd")).unwrap(),
            Path::new("etc/passwd")
        );
        assert_eq!(clean(Path::new("./")).unwrap(), Path::new(""));
        assert!(matches!(
            clean(Path::new("a/../../b")),
            Err(ArchiveError::PathEscape { .. })
        ));
    }
}
