//! Raw images: a regular file (sparse: holes read as zeroes and take no space) or a host block
//! device ("dedicated VBD").

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};

use crate::error::{DiskError, Result};
use crate::{check_range, push_range, Disk, DiskFormat, DiskId};

// Block device ioctls from <linux/fs.h>.
nix::ioctl_read!(blk_get_size64, 0x12, 114, u64);
nix::ioctl_write_ptr_bad!(blk_discard, nix::request_code_none!(0x12, 119), [u64; 2]);
nix::ioctl_write_ptr_bad!(blk_zero_out, nix::request_code_none!(0x12, 127), [u64; 2]);

/// What a raw image lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// A regular file; discard punches holes.
    File,
    /// A host block device; size and discard come from the kernel's block ioctls.
    BlockDevice,
}

/// A raw image.
#[derive(Debug)]
pub struct RawDisk {
    file: File,
    path: PathBuf,
    kind: HostKind,
    size: u64,
    read_only: bool,
    id: DiskId,
    lock_handle: Option<crate::LockHandle>,
}

/// The block device ioctls that act on a byte range.
#[derive(Clone, Copy)]
enum RangeIoctl {
    Discard,
    ZeroOut,
}

/// Zeroes are written in pieces of this size where the host cannot zero a range itself.
const ZERO_CHUNK: usize = 1 << 20;

impl RawDisk {
    /// Opens the raw file or block device at `path` (`options.format` is not looked at).
    pub fn open(path: &Path, options: &crate::OpenOptions) -> Result<Self> {
        let open_err = |source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        };
        let writable = options.writable;
        let file = options.open_file(path)?;
        let lock_handle = options.lock_handle(&file, path)?;
        let metadata = file.metadata().map_err(open_err)?;
        let (kind, size) = if metadata.file_type().is_block_device() {
            (
                HostKind::BlockDevice,
                block_device_size(&file).map_err(open_err)?,
            )
        } else if metadata.is_file() {
            (HostKind::File, metadata.len())
        } else {
            return Err(open_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or a block device",
            )));
        };
        Ok(RawDisk {
            file,
            path: path.to_path_buf(),
            kind,
            size,
            read_only: !writable,
            id: DiskId::of(&metadata),
            lock_handle,
        })
    }

    /// What the image lives in.
    pub fn host_kind(&self) -> HostKind {
        self.kind
    }

    /// Sets the size of a raw file (not a block device) and makes it durable.
    pub(crate) fn set_len(&self, size: u64) -> Result<()> {
        self.check_writable()?;
        self.file
            .set_len(size)
            .and_then(|()| self.file.sync_all())
            .map_err(|source| self.err("resize", source))
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(DiskError::ReadOnly {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    fn err(&self, operation: &'static str, source: io::Error) -> DiskError {
        DiskError::io(operation, &self.path, source)
    }

    /// Makes a range read as zeroes the host's way: a punched hole in a file (which also frees the
    /// space), the given block ioctl on a device. `Ok(false)` when the host cannot do it.
    fn clear_range(
        &self,
        operation: &'static str,
        offset: u64,
        length: u64,
        ioctl: RangeIoctl,
    ) -> Result<bool> {
        self.check_writable()?;
        check_range(&self.path, self.size, offset, length)?;
        if length == 0 {
            return Ok(true);
        }
        let result = match self.kind {
            HostKind::File => punch_hole(&self.file, offset, length),
            HostKind::BlockDevice => {
                let range = [offset, length];
                let fd = self.file.as_raw_fd();
                // SAFETY: the fd is open and `range` is the [start, length] pair both ioctls read.
                unsafe {
                    match ioctl {
                        RangeIoctl::Discard => blk_discard(fd, &range),
                        RangeIoctl::ZeroOut => blk_zero_out(fd, &range),
                    }
                }
                .map(drop)
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(err) if is_unsupported(&err) => Ok(false),
            Err(err) => Err(self.err(operation, err.into())),
        }
    }

    /// Writes zero bytes over the range, for hosts that cannot zero a range themselves.
    fn write_zero_bytes(&self, offset: u64, length: u64) -> Result<()> {
        let zeroes = vec![0u8; ZERO_CHUNK.min(length as usize)];
        let mut done = 0;
        while done < length {
            let piece = (length - done).min(zeroes.len() as u64) as usize;
            self.file
                .write_all_at(&zeroes[..piece], offset + done)
                .map_err(|source| self.err("write zeroes to", source))?;
            done += piece as u64;
        }
        Ok(())
    }
}

/// The size of a block device, from BLKGETSIZE64.
fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size = 0u64;
    // SAFETY: the fd is open for the duration of the call and `size` is a valid u64 the kernel
    // writes the device size into.
    unsafe { blk_get_size64(file.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// True for the errors that mean "this host cannot do that operation", as opposed to failures.
fn is_unsupported(err: &nix::Error) -> bool {
    matches!(
        err,
        nix::Error::EOPNOTSUPP | nix::Error::ENOTTY | nix::Error::EINVAL | nix::Error::ENOSYS
    )
}

impl Disk for RawDisk {
    fn format(&self) -> DiskFormat {
        DiskFormat::Raw
    }

    fn take_lock_handle(&mut self) -> Option<crate::LockHandle> {
        self.lock_handle.take()
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn id(&self) -> DiskId {
        self.id
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.path, self.size, offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| self.err("read", source))
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        check_range(&self.path, self.size, offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|source| self.err("write", source))
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|source| self.err("flush", source))
    }

    fn discard(&mut self, offset: u64, length: u64) -> Result<()> {
        if self.clear_range("discard", offset, length, RangeIoctl::Discard)? {
            return Ok(());
        }
        Err(DiskError::OperationUnsupported {
            path: self.path.clone(),
            operation: "discard",
        })
    }

    fn write_zeroes(&mut self, offset: u64, length: u64) -> Result<()> {
        if self.clear_range("write zeroes to", offset, length, RangeIoctl::ZeroOut)? {
            return Ok(());
        }
        self.write_zero_bytes(offset, length)
    }

    fn data_ranges(&self, offset: u64, length: u64) -> Result<Vec<Range<u64>>> {
        check_range(&self.path, self.size, offset, length)?;
        match self.kind {
            HostKind::File => file_data_ranges(&self.file, offset, length)
                .map_err(|source| self.err("find the data of", source)),
            // A device keeps no record of what was written: all of it may be data.
            HostKind::BlockDevice => {
                let mut ranges = Vec::new();
                push_range(&mut ranges, offset..offset + length);
                Ok(ranges)
            }
        }
    }
}

/// The parts of `offset..offset + length` of the regular file `file` that hold data (the rest
/// are holes, or past its end), in order, from `SEEK_DATA`/`SEEK_HOLE`; a filesystem that keeps
/// no holes reports all of the file as data.
pub fn file_data_ranges(file: &File, offset: u64, length: u64) -> io::Result<Vec<Range<u64>>> {
    let too_far = || io::Error::from(io::ErrorKind::InvalidInput);
    let end = offset.checked_add(length).ok_or_else(too_far)?;
    let position = |at: u64| i64::try_from(at).map_err(|_| too_far());
    let mut ranges = Vec::new();
    let mut at = offset;
    while at < end {
        let data = match lseek(file, position(at)?, Whence::SeekData) {
            Ok(data) => data as u64,
            // Nothing but holes from `at` to the end of the file.
            Err(Errno::ENXIO) => break,
            Err(errno) => return Err(errno.into()),
        };
        if data >= end {
            break;
        }
        let hole = (lseek(file, position(data)?, Whence::SeekHole)? as u64).min(end);
        push_range(&mut ranges, data..hole);
        at = hole;
    }
    Ok(ranges)
}

fn punch_hole(file: &File, offset: u64, length: u64) -> nix::Result<()> {
    let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
        return Err(nix::Error::EINVAL);
    };
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset,
        length,
    )
}
