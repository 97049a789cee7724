//! The `memory` file: guest RAM, region after region, sparse. Pages that are all zeros are not
//! written (holes), so a guest that touched little of its RAM makes a small file; reading uses
//! `SEEK_DATA`/`SEEK_HOLE` to skip the holes, whose bytes a fresh guest mapping already has.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use corral_error::PathIoError;
use nix::unistd::{lseek, Whence};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

/// What is written or skipped as a whole.
const PAGE: usize = 4096;
/// Bytes copied between guest memory and the file at a time.
const CHUNK: usize = 1 << 20;

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

/// Writes all of `memory` to a new file at `path` (refused if it exists), leaving holes for
/// zero pages; returns the bytes actually written.
pub fn save(memory: &GuestMemoryMmap, path: &Path) -> Result<u64, MemoryFileError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(corral_host::atomic::PRIVATE_FILE_MODE)
        .open(path)
        .map_err(io("create", path))?;
    let mut buffer = vec![0u8; CHUNK];
    let mut written = 0;
    let mut total = 0;
    for (start, len, file_offset) in layout(memory) {
        let mut done = 0;
        while done < len {
            let size = (len - done).min(CHUNK as u64) as usize;
            let address = start.unchecked_add(done);
            let chunk = &mut buffer[..size];
            memory
                .read_slice(chunk, address)
                .map_err(guest_error(address))?;
            for (index, page) in chunk.chunks(PAGE).enumerate() {
                if page.iter().all(|&byte| byte == 0) {
                    continue;
                }
                let at = file_offset + done + (index * PAGE) as u64;
                file.write_all_at(page, at).map_err(io("write", path))?;
                written += page.len() as u64;
            }
            done += size as u64;
        }
        total = file_offset + len;
    }
    // The length covers trailing zero pages, which stay a hole.
    file.set_len(total).map_err(io("size", path))?;
    file.flush().map_err(io("write", path))?;
    file.sync_all().map_err(io("sync", path))?;
    Ok(written)
}

/// Fills fresh (zeroed) `memory` from the file at `path`, which must be exactly its size.
pub fn load(file: &File, path: &Path, memory: &GuestMemoryMmap) -> Result<(), MemoryFileError> {
    let expected = memory.iter().map(|region| region.len()).sum::<u64>();
    let actual = file.metadata().map_err(io("read", path))?.len();
    if actual != expected {
        return Err(MemoryFileError::Size {
            path: path.to_path_buf(),
            expected,
            actual,
        });
    }
    let mut buffer = vec![0u8; CHUNK];
    for (start, len, file_offset) in layout(memory) {
        let end = file_offset + len;
        let mut at = file_offset;
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
                let address = start.unchecked_add(offset - file_offset);
                memory
                    .write_slice(chunk, address)
                    .map_err(guest_error(address))?;
                offset += size as u64;
            }
            at = hole;
        }
    }
    Ok(())
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

    #[test]
    fn memory_round_trips_and_zero_pages_stay_holes() {
        let regions = [(GuestAddress(0), 4 << 20), (GuestAddress(1 << 30), 2 << 20)];
        let memory = GuestMemoryMmap::from_ranges(&regions).unwrap();
        memory.write_slice(b"first page", GuestAddress(0)).unwrap();
        memory
            .write_slice(&[7u8; 9000], GuestAddress(3 << 20))
            .unwrap();
        memory
            .write_slice(b"last", GuestAddress((1 << 30) + (2 << 20) - 4))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        let written = save(&memory, &path).unwrap();
        assert_eq!(
            written,
            5 * PAGE as u64,
            "only the non-zero pages are written"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 6 << 20);
        assert!(
            save(&memory, &path).is_err(),
            "an existing file is not overwritten"
        );

        let restored = GuestMemoryMmap::from_ranges(&regions).unwrap();
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
        let memory = GuestMemoryMmap::from_ranges(&regions).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        std::fs::write(&path, vec![1u8; 4096]).unwrap();
        let err = load(&File::open(&path).unwrap(), &path, &memory).unwrap_err();
        assert!(
            matches!(err, MemoryFileError::Size { actual: 4096, .. }),
            "{err}"
        );
    }
}
