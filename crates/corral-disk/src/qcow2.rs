//! qcow2 images on top of imago, with corral opening the backing chain itself: every backing file
//! is opened read-only (and locked shared), only where the caller's [`BackingPolicy`] allows, its
//! format comes from the header's backing-format extension (detected by magic only when the
//! extension is missing), and loops or absurdly deep chains are refused.

use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::format::{Format, PreallocateMode};
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, ShallowMapping, StorageOpenOptions};

use crate::check;
use crate::error::{DiskError, Result};
use crate::header::{self, Qcow2Header, V3_HEADER_LEN};
use crate::raw::file_data_ranges;
use crate::{
    check_range, detect_format_of, push_range, read_start, Disk, DiskFormat, DiskId, OpenOptions,
};

/// The longest backing chain corral opens (the top image not counted). Deeper chains exist only by
/// mistake or malice; each level keeps a file and caches open.
pub const MAX_BACKING_DEPTH: usize = 64;

/// One image below another in a backing chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackingInfo {
    /// Where it was found (the name in the header, resolved against the image naming it).
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
}

/// An open qcow2 image and its backing chain.
pub struct Qcow2Disk {
    access: FormatAccess<ImagoFile>,
    path: PathBuf,
    header: Qcow2Header,
    backing_chain: Vec<BackingInfo>,
    /// The raw image at the bottom of the chain, if it ends in one: imago maps all of a raw file
    /// as data, its holes are found here.
    raw_base: Option<fs::File>,
    read_only: bool,
    id: DiskId,
    lock_handle: Option<crate::LockHandle>,
}

impl std::fmt::Debug for Qcow2Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Disk")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("backing_chain", &self.backing_chain)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// The images met so far while opening a chain, to refuse loops and runaway depth. Images are told
/// apart by device and inode, so neither symlinks nor hard links hide a loop.
struct ChainWalk<'a> {
    top: &'a Path,
    seen: Vec<DiskId>,
    layers: Vec<BackingInfo>,
    raw_base: Option<fs::File>,
}

impl ChainWalk<'_> {
    fn enter(&mut self, path: &Path, format: DiskFormat) -> Result<()> {
        let metadata = fs::metadata(path).map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let id = DiskId::of(&metadata);
        if self.seen.contains(&id) {
            return Err(DiskError::BackingLoop {
                path: self.top.to_path_buf(),
                repeated: path.to_path_buf(),
            });
        }
        if self.layers.len() >= MAX_BACKING_DEPTH {
            return Err(DiskError::BackingTooDeep {
                path: self.top.to_path_buf(),
                limit: MAX_BACKING_DEPTH,
            });
        }
        self.seen.push(id);
        self.layers.push(BackingInfo {
            path: path.to_path_buf(),
            format,
        });
        Ok(())
    }
}

impl Qcow2Disk {
    /// Opens the qcow2 image at `path` and its whole backing chain (read-only); `options.format`
    /// is not looked at.
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Self> {
        let top = fs::metadata(path).map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut walk = ChainWalk {
            top: path,
            seen: vec![DiskId::of(&top)],
            layers: Vec::new(),
            raw_base: None,
        };
        let file = options.open_file(path)?;
        let lock_handle = options.lock_handle(&file, path)?;
        let layer = layer_on_file(path, file, options, &mut walk)?;
        Ok(Qcow2Disk {
            access: FormatAccess::new(layer.image),
            path: path.to_path_buf(),
            header: layer.header,
            backing_chain: walk.layers,
            raw_base: walk.raw_base,
            read_only: !options.writable,
            id: layer.id,
            lock_handle,
        })
    }

    /// The backing images below this one, nearest first.
    pub fn backing_chain(&self) -> &[BackingInfo] {
        &self.backing_chain
    }

    /// The qcow2 version of the top image (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The cluster size of the top image in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// Grows the virtual disk to `new_size`; the new range reads as zeroes even where a larger
    /// backing image lies below.
    pub(crate) fn grow(&mut self, new_size: u64) -> Result<()> {
        self.check_writable()?;
        self.access
            .resize_grow(new_size, PreallocateMode::Zero)
            .map_err(|source| DiskError::imago("resize", &self.path, source))
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(DiskError::ReadOnly {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    fn check_write(&self, offset: u64, length: u64) -> Result<()> {
        self.check_writable()?;
        check_range(&self.path, self.access.size(), offset, length)
    }

    /// Adds to `ranges` the parts of `length` bytes at `offset` of `layer` (this image or one
    /// below it) that it or a layer below it allocates, as offsets of this image, where `offset`
    /// is `top`. Zero clusters are holes: they hide what lies below.
    fn collect_data(
        &self,
        layer: &FormatAccess<ImagoFile>,
        offset: u64,
        length: u64,
        top: u64,
        ranges: &mut Vec<Range<u64>>,
    ) -> io::Result<()> {
        if layer.inner().format() == Format::Raw {
            if let Some(raw) = &self.raw_base {
                for data in file_data_ranges(raw, offset, length)? {
                    push_range(ranges, data.start - offset + top..data.end - offset + top);
                }
                return Ok(());
            }
        }
        let mut done = 0;
        while done < length {
            let (mapping, run) = layer.get_shallow_mapping(offset + done, length - done)?;
            let here = top + done;
            match mapping {
                // The end of a backing image shorter than this one: the rest reads as zeroes.
                ShallowMapping::Eof { .. } => break,
                // Only the end maps no bytes; should anything else, the rest counts as data.
                _ if run == 0 => {
                    push_range(ranges, here..top + length);
                    break;
                }
                ShallowMapping::Zero { .. } => {}
                ShallowMapping::Indirect {
                    layer: below,
                    offset: at,
                    ..
                } => self.collect_data(below, at, run, here, ranges)?,
                // Data clusters, compressed ones, and whatever a later imago adds.
                _ => push_range(ranges, here..here + run),
            }
            done += run;
        }
        Ok(())
    }
}

struct OpenedLayer {
    image: Qcow2<ImagoFile>,
    header: Qcow2Header,
    id: DiskId,
}

/// Opens the qcow2 layer `path`, already open (and locked) as `file`, after checking its header,
/// then (recursively) its backing image.
fn layer_on_file(
    path: &Path,
    file: fs::File,
    options: &OpenOptions,
    walk: &mut ChainWalk<'_>,
) -> Result<OpenedLayer> {
    let open_err = |source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    };
    let writable = options.writable;
    let metadata = file.metadata().map_err(open_err)?;
    let id = DiskId::of(&metadata);
    let header = header::parse(path, &read_start(path, &file, V3_HEADER_LEN)?)?;
    if writable && header.snapshot_count > 0 {
        return Err(DiskError::Unsupported {
            path: path.to_path_buf(),
            feature: "internal snapshots".into(),
            fix: "open it read-only, or delete them with `qemu-img snapshot -d`",
        });
    }
    if writable {
        check::check_before_writing(path, &file, &header)?;
    }
    let storage_options = StorageOpenOptions::new().filename(path).write(writable);
    let storage = ImagoFile::from_open_file(file, storage_options).map_err(open_err)?;
    let mut image = Qcow2::<ImagoFile>::open_image(storage, writable)
        .map_err(|source| DiskError::imago("open", path, source))?;

    let backing = match image.implicit_backing_file() {
        None => None,
        Some(name) => {
            let backing_path = resolve_backing_path(path, name);
            // Nothing is read from (or locked on) a file outside the allowed places.
            let backing_file = fs::File::open(&backing_path).map_err(|source| DiskError::Open {
                path: backing_path.clone(),
                source,
            })?;
            options.backing.check(path, &backing_path, &backing_file)?;
            let format = match image.implicit_backing_format().map(String::as_str) {
                Some("qcow2") => DiskFormat::Qcow2,
                Some("raw") | Some("file") => DiskFormat::Raw,
                Some(other) => {
                    return Err(DiskError::Unsupported {
                        path: path.to_path_buf(),
                        feature: format!("a backing image in format `{other}`"),
                        fix: "convert the backing image to raw or qcow2",
                    })
                }
                // Images qemu-img creates always name the format; older ones may not.
                None => detect_format_of(&backing_path, &backing_file)?,
            };
            walk.enter(&backing_path, format)?;
            Some(open_backing(
                &backing_path,
                backing_file,
                options,
                format,
                walk,
            )?)
        }
    };
    image.set_backing(backing);
    // The header gate refused external data files, so nothing implicit is left to open.
    image
        .open_implicit_dependencies_gated(DenyImplicitOpenGate::default())
        .map_err(|source| DiskError::imago("open", path, source))?;
    Ok(OpenedLayer { image, header, id })
}

/// Opens the backing file `path` (open read-only as `file`, its place already checked) in
/// `format`, locked as a backing file.
fn open_backing(
    path: &Path,
    file: fs::File,
    options: &OpenOptions,
    format: DiskFormat,
    walk: &mut ChainWalk<'_>,
) -> Result<FormatAccess<ImagoFile>> {
    let options = options.for_backing(format);
    options.lock_file(&file, path)?;
    match format {
        DiskFormat::Qcow2 => Ok(FormatAccess::new(
            layer_on_file(path, file, &options, walk)?.image,
        )),
        DiskFormat::Raw => {
            // The same open file (and so the same locks), for finding its holes.
            walk.raw_base = Some(file.try_clone().map_err(|source| DiskError::Open {
                path: path.to_path_buf(),
                source,
            })?);
            let options = StorageOpenOptions::new().filename(path).write(false);
            let storage = ImagoFile::from_open_file(file, options)
                .map_err(|source| DiskError::imago("open", path, source))?;
            let raw = Raw::open_image(storage, false)
                .map_err(|source| DiskError::imago("open", path, source))?;
            Ok(FormatAccess::new(raw))
        }
    }
}

/// qemu's rule: a relative backing file name is relative to the directory of the image naming it.
pub(crate) fn resolve_backing_path(image: &Path, backing_name: &str) -> PathBuf {
    let backing = Path::new(backing_name);
    if backing.is_absolute() {
        return backing.to_path_buf();
    }
    image
        .parent()
        .map_or_else(|| backing.to_path_buf(), |dir| dir.join(backing))
}

impl Disk for Qcow2Disk {
    fn take_lock_handle(&mut self) -> Option<crate::LockHandle> {
        self.lock_handle.take()
    }

    fn format(&self) -> DiskFormat {
        DiskFormat::Qcow2
    }

    fn virtual_size(&self) -> u64 {
        self.access.size()
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn id(&self) -> DiskId {
        self.id
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(
            &self.path,
            self.header.virtual_size,
            offset,
            buf.len() as u64,
        )?;
        self.access
            .read(buf, offset)
            .map_err(|source| DiskError::imago("read", &self.path, source))
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_write(offset, buf.len() as u64)?;
        self.access
            .write(buf, offset)
            .map_err(|source| DiskError::imago("write", &self.path, source))
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        // imago's flush only writes its metadata caches back; sync is the fsync. Syncing first
        // makes guest data durable before the L2/refcount updates that point at it are written,
        // and the final sync makes those durable.
        self.access
            .sync()
            .and_then(|()| self.access.flush())
            .and_then(|()| self.access.sync())
            .map_err(|source| DiskError::imago("flush", &self.path, source))
    }

    fn discard(&mut self, offset: u64, length: u64) -> Result<()> {
        self.check_write(offset, length)?;
        // Zeroes rather than "any": after a discard the guest must not see the backing image's
        // data reappear, which it would if the clusters simply fell through to it.
        self.access
            .discard_to_zero(offset, length)
            .map_err(|source| DiskError::imago("discard", &self.path, source))
    }

    fn write_zeroes(&mut self, offset: u64, length: u64) -> Result<()> {
        self.check_write(offset, length)?;
        self.access
            .write_zeroes(offset, length)
            .map_err(|source| DiskError::imago("write zeroes to", &self.path, source))
    }

    fn data_ranges(&self, offset: u64, length: u64) -> Result<Vec<Range<u64>>> {
        check_range(&self.path, self.access.size(), offset, length)?;
        let mut ranges = Vec::new();
        self.collect_data(&self.access, offset, length, offset, &mut ranges)
            .map_err(|source| DiskError::imago("find the data of", &self.path, source))?;
        Ok(ranges)
    }
}
