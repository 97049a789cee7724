//! The `memory` file: guest RAM, region after region, sparse. A full snapshot's file leaves
//! pages that are all zeros as holes, so a guest that touched little of its RAM makes a small
//! file; a diff snapshot's holds only the pages written since its base, zero or not, and its holes
//! mean "unchanged". Reading uses `SEEK_DATA`/`SEEK_HOLE` to visit the data only.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use corral_error::PathIoError;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::vstate::memory::{DirtyPages, GuestMemoryMmap, PAGE_SIZE as PAGE};

/// Bytes copied between guest memory and the file at a time.
pub(crate) const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{path} holds {actual} bytes, but the saved VM has {expected} bytes of memory")]
    Size {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("cannot access guest memory at {address:#x}")]
    Guest {
        address: u64,
        source: vm_memory::GuestMemoryError,
    },
}

fn io(action: &'static str, path: &Path) -> impl Fn(std::io::Error) -> MemoryFileError {
    let path = path.to_path_buf();
    move |source| MemoryFileError::Io(PathIoError::new(action, path.clone(), source))
}

/// Each region's guest address, length and offset in the file.
fn layout(memory: &GuestMemoryMmap) -> Vec<(GuestAddress, u64, u64)> {
    let mut offset = 0;
    memory
        .iter()
        .map(|region| {
            let entry = (region.start_addr(), region.len(), offset);
            offset += region.len();
            entry
        })
        .collect()
}

fn guest_error(address: GuestAddress) -> impl Fn(vm_memory::GuestMemoryError) -> MemoryFileError {
    move |source| MemoryFileError::Guest {
        address: address.0,
        source,
    }
}

/// Whether `bytes` are all zeros. An OR over every byte, not a search that stops at the first
/// non-zero one: the compiler turns it into vector instructions, several times faster on the
/// zero pages that make up most of an idle guest's memory.
fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |any, &byte| any | byte) == 0
}

/// Which pages of guest memory a memory file holds.
#[derive(Clone, Copy)]
pub enum Pages<'a> {
    /// Every page that is not all zeros (a full snapshot).
    NonZero,
    /// Exactly these pages, zero or not (a diff snapshot).
    Dirty(&'a DirtyPages),
}

impl Pages<'_> {
    pub(crate) fn holds(&self, region: usize, page: usize, bytes: &[u8]) -> bool {
        match self {
            Pages::NonZero => !is_zero(bytes),
            Pages::Dirty(dirty) => dirty.is_dirty(region, page),
        }
    }

    /// Whether any of the `count` pages from `first` of `region` may be held (a diff skips
    /// reading chunks it holds nothing of).
    pub(crate) fn may_hold_any(&self, region: usize, first: usize, count: usize) -> bool {
        match self {
            Pages::NonZero => true,
            Pages::Dirty(dirty) => (first..first + count).any(|page| dirty.is_dirty(region, page)),
        }
    }
}

/// Writes `pages` of `memory` to a new file at `path` (refused if it exists), leaving holes for
/// the rest; returns the bytes actually written.
pub fn save(
    memory: &GuestMemoryMmap,
    path: &Path,
    pages: Pages<'_>,
) -> Result<u64, MemoryFileError> {
    let mut file = create(path)?;
    let mut buffer = vec![0u8; CHUNK];
    let mut written = 0;
    let mut total = 0;
    for (region, (start, len, file_offset)) in layout(memory).into_iter().enumerate() {
        let mut done = 0;
        while done < len {
            let size = (len - done).min(CHUNK as u64) as usize;
            let first_page = (done / PAGE as u64) as usize;
            if pages.may_hold_any(region, first_page, size.div_ceil(PAGE)) {
                let address = start.unchecked_add(done);
                let chunk = &mut buffer[..size];
                memory
                    .read_slice(chunk, address)
                    .map_err(guest_error(address))?;
                for (index, page) in chunk.chunks(PAGE).enumerate() {
                    if !pages.holds(region, first_page + index, page) {
                        continue;
                    }
                    let at = file_offset + done + (index * PAGE) as u64;
                    file.write_all_at(page, at).map_err(io("write", path))?;
                    written += page.len() as u64;
                }
            }
            done += size as u64;
        }
        total = file_offset + len;
    }
    // The length covers trailing pages not held, which stay a hole.
    file.set_len(total).map_err(io("size", path))?;
    file.flush().map_err(io("write", path))?;
    file.sync_all().map_err(io("sync", path))?;
    Ok(written)
}

fn create(path: &Path) -> Result<File, MemoryFileError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(corral_host::atomic::PRIVATE_FILE_MODE)
        .open(path)
        .map_err(io("create", path))
}

/// The length of the memory file `file` at `path`, refused unless it is `expected`.
pub fn check_size(file: &File, path: &Path, expected: u64) -> Result<(), MemoryFileError> {
    let actual = file.metadata().map_err(io("read", path))?.len();
    if actual != expected {
        return Err(MemoryFileError::Size {
            path: path.to_path_buf(),
            expected,
            actual,
        });
    }
    Ok(())
}

/// Fills fresh (zeroed) `memory` from the file at `path`, which must be exactly its size.
pub fn load(file: &File, path: &Path, memory: &GuestMemoryMmap) -> Result<(), MemoryFileError> {
    check_size(file, path, memory.iter().map(|region| region.len()).sum())?;
    let regions = layout(memory);
    for_each_data_chunk(file, path, |offset, chunk| {
        // The file is the regions back to back: write each one's part of the chunk.
        let chunk_end = offset + chunk.len() as u64;
        for &(start, len, file_offset) in &regions {
            let from = offset.max(file_offset);
            let to = chunk_end.min(file_offset + len);
            if from >= to {
                continue;
            }
            let address = start.unchecked_add(from - file_offset);
            let bytes = &chunk[(from - offset) as usize..(to - offset) as usize];
            memory
                .write_slice(bytes, address)
                .map_err(guest_error(address))?;
        }
        Ok(())
    })
}

/// Calls `visit` with the offset and bytes of each chunk of data (not holes) of `file`, at most
/// [`CHUNK`] bytes.
fn for_each_data_chunk(
    file: &File,
    path: &Path,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), MemoryFileError>,
) -> Result<(), MemoryFileError> {
    let end = file.metadata().map_err(io("read", path))?.len();
    let mut buffer = vec![0u8; CHUNK];
    let mut at = 0;
    while at < end {
        let Some(data) = seek(file, path, at, Whence::SeekData)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = seek(file, path, data, Whence::SeekHole)?
            .unwrap_or(end)
            .min(end);
        let mut offset = data;
        while offset < hole {
            let size = (hole - offset).min(CHUNK as u64) as usize;
            let chunk = &mut buffer[..size];
            file.read_exact_at(chunk, offset)
                .map_err(io("read", path))?;
            visit(offset, chunk)?;
            offset += size as u64;
        }
        at = hole;
    }
    Ok(())
}

/// Writes a new memory file at `path` that is `base` (a full snapshot's) with the data of
/// `diff` (a diff snapshot's) laid over it; both are `size` bytes. Zero pages become holes.
pub fn merge(
    base: (&File, &Path),
    diff: (&File, &Path),
    path: &Path,
    size: u64,
) -> Result<(), MemoryFileError> {
    check_size(base.0, base.1, size)?;
    check_size(diff.0, diff.1, size)?;
    let file = create(path)?;
    file.set_len(size).map_err(io("size", path))?;
    for (from, from_path) in [base, diff] {
        for_each_data_chunk(from, from_path, |offset, chunk| {
            for (index, page) in chunk.chunks(PAGE).enumerate() {
                let at = offset + (index * PAGE) as u64;
                if !is_zero(page) {
                    file.write_all_at(page, at).map_err(io("write", path))?;
                } else {
                    punch_hole(&file, path, at, page.len())?;
                }
            }
            Ok(())
        })?;
    }
    file.sync_all().map_err(io("sync", path))
}

/// Makes `len` bytes at `offset` of `file` a hole (they read as zeros).
fn punch_hole(file: &File, path: &Path, offset: u64, len: usize) -> Result<(), MemoryFileError> {
    let overflow =
        || io("punch a hole in", path)(std::io::Error::from_raw_os_error(libc::EOVERFLOW));
    let offset = i64::try_from(offset).map_err(|_| overflow())?;
    let len = i64::try_from(len).map_err(|_| overflow())?;
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    fallocate(file, flags, offset, len).map_err(|errno| io("punch a hole in", path)(errno.into()))
}

/// `lseek` to the next data or hole from `offset`; `None` when there is no more data.
fn seek(
    file: &File,
    path: &Path,
    offset: u64,
    whence: Whence,
) -> Result<Option<u64>, MemoryFileError> {
    let offset = i64::try_from(offset)
        .map_err(|_| io("seek in", path)(std::io::Error::from_raw_os_error(libc::EOVERFLOW)))?;
    match lseek(file, offset, whence) {
        Ok(position) => Ok(Some(position as u64)),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(errno) => Err(io("seek in", path)(errno.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::from_ranges;

    #[test]
    fn a_page_is_zero_only_when_every_byte_is() {
        let mut page = vec![0u8; PAGE];
        assert!(is_zero(&page));
        for at in [0, 1, PAGE / 2, PAGE - 1] {
            page[at] = 0x80;
            assert!(!is_zero(&page), "byte {at}");
            page[at] = 0;
        }
        assert!(is_zero(&[]));
    }

    #[test]
    fn memory_round_trips_and_zero_pages_stay_holes() {
        let regions = [(GuestAddress(0), 4 << 20), (GuestAddress(1 << 30), 2 << 20)];
        let memory = from_ranges(&regions, false).unwrap();
        memory.write_slice(b"first page", GuestAddress(0)).unwrap();
        memory
            .write_slice(&[7u8; 9000], GuestAddress(3 << 20))
            .unwrap();
        memory
            .write_slice(b"last", GuestAddress((1 << 30) + (2 << 20) - 4))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        let written = save(&memory, &path, Pages::NonZero).unwrap();
        assert_eq!(
            written,
            5 * PAGE as u64,
            "only the non-zero pages are written"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 6 << 20);
        assert!(
            save(&memory, &path, Pages::NonZero).is_err(),
            "an existing file is not overwritten"
        );

        let restored = from_ranges(&regions, false).unwrap();
        load(&File::open(&path).unwrap(), &path, &restored).unwrap();
        for (start, len) in regions {
            let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
            memory.read_slice(&mut a, start).unwrap();
            restored.read_slice(&mut b, start).unwrap();
            assert!(a == b, "region at {start:?} differs after the round trip");
        }
    }

    #[test]
    fn a_file_of_another_size_is_refused() {
        let regions = [(GuestAddress(0), 1 << 20)];
        let memory = from_ranges(&regions, false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        std::fs::write(&path, vec![1u8; 4096]).unwrap();
        let err = load(&File::open(&path).unwrap(), &path, &memory).unwrap_err();
        assert!(
            matches!(err, MemoryFileError::Size { actual: 4096, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_diff_holds_its_dirty_pages_zero_or_not_and_merges_over_its_base() {
        let page = |n: u64| GuestAddress(n * PAGE as u64);
        let regions = [(GuestAddress(0), 2 << 20)];
        let memory = from_ranges(&regions, false).unwrap();
        memory.write_slice(&[1u8; 3 * PAGE], page(0)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        save(&memory, &base, Pages::NonZero).unwrap();

        // Page 1 zeroed, page 2 rewritten with the same bytes, page 5 written.
        memory.write_slice(&[0u8; PAGE], page(1)).unwrap();
        memory.write_slice(&[2u8; 10], page(5)).unwrap();
        let dirty = DirtyPages::from_words(vec![vec![0b100110]]);
        let diff = dir.path().join("diff");
        let written = save(&memory, &diff, Pages::Dirty(&dirty)).unwrap();
        assert_eq!(
            written,
            3 * PAGE as u64,
            "exactly the dirty pages, zero or not"
        );

        let full = dir.path().join("full");
        save(&memory, &full, Pages::NonZero).unwrap();
        let merged = dir.path().join("merged");
        let open = |path: &Path| File::open(path).unwrap();
        let (base_file, diff_file) = (open(&base), open(&diff));
        merge((&base_file, &base), (&diff_file, &diff), &merged, 2 << 20).unwrap();
        assert!(std::fs::read(&merged).unwrap() == std::fs::read(&full).unwrap());
        // The page the diff zeroed is a hole again.
        let merged_file = open(&merged);
        let data = seek(&merged_file, &merged, PAGE as u64, Whence::SeekData).unwrap();
        assert_eq!(data, Some(2 * PAGE as u64));

        let err = merge((&base_file, &base), (&diff_file, &diff), &merged, 4 << 20).unwrap_err();
        assert!(matches!(err, MemoryFileError::Size { .. }), "{err}");
    }
}
