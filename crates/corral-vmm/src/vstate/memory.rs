//! Guest memory: anonymous host mappings (vm-memory) registered as KVM memory slots, optionally
//! with dirty-page tracking for diff snapshots.
//!
//! Tracking has two halves, as in Firecracker: KVM logs the pages the guest writes
//! (`KVM_MEM_LOG_DIRTY_PAGES`, read and reset with `KVM_GET_DIRTY_LOG`), and each region carries
//! a vm-memory [`AtomicBitmap`] that every write through vm-memory marks: the VMM's own writes
//! (virtio devices filling buffers and used rings, the loader), which KVM never sees.

use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::Arc;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::{FromRangesError, MmapRegionBuilder};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, MmapRegion,
};

use crate::arch::x86_64::ram_regions;

/// Guest memory as corral maps it: each region with a dirty bitmap when tracking is on.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<Option<AtomicBitmap>>;

/// The unit of dirty tracking and of the snapshot memory files.
pub const PAGE_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot allocate {size} bytes of guest memory")]
    Allocate { size: u64, source: FromRangesError },
    #[error("cannot register guest memory slot {slot} with KVM")]
    Register {
        slot: u32,
        source: kvm_ioctls::Error,
    },
    #[error("cannot read KVM's dirty-page log of guest memory slot {slot}")]
    DirtyLog {
        slot: u32,
        source: kvm_ioctls::Error,
    },
}

/// Maps `ranges` (guest address, length), each with a dirty bitmap if `track_dirty`.
pub fn from_ranges(
    ranges: &[(GuestAddress, usize)],
    track_dirty: bool,
) -> Result<GuestMemoryMmap, FromRangesError> {
    map_ranges(ranges, track_dirty, None)
}

/// Maps `ranges` as [`from_ranges`] does: private anonymous memory (what vm-memory's own
/// `from_ranges` maps, not reserved), or with `backing` the pages of that file, shared, the
/// ranges back to back in it.
fn map_ranges(
    ranges: &[(GuestAddress, usize)],
    track_dirty: bool,
    backing: Option<&Arc<File>>,
) -> Result<GuestMemoryMmap, FromRangesError> {
    let page = const { NonZeroUsize::new(PAGE_SIZE).unwrap() };
    let mut file_offset = 0;
    let regions = ranges
        .iter()
        .map(|&(start, len)| {
            let bitmap = track_dirty.then(|| AtomicBitmap::new(len, page));
            let builder = MmapRegionBuilder::new_with_bitmap(len, bitmap)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE);
            let builder = match backing {
                Some(file) => builder
                    .with_file_offset(FileOffset::from_arc(file.clone(), file_offset))
                    .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE),
                None => builder
                    .with_mmap_flags(libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_PRIVATE),
            };
            file_offset += len as u64;
            GuestRegionMmap::new(builder.build()?, start).ok_or(FromRangesError::InvalidGuestRegion)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GuestMemoryMmap::from_regions(regions)?)
}

/// Allocates `size` bytes of guest RAM laid out around the MMIO gap.
pub fn create(size: u64, track_dirty: bool) -> Result<GuestMemoryMmap, MemoryError> {
    from_ranges(&ram_regions(size), track_dirty)
        .map_err(|source| MemoryError::Allocate { size, source })
}

/// Guest RAM of `size` bytes that is `file`'s pages, shared (laid out as a snapshot's memory
/// file): nothing is copied. Only for a file this process alone holds, a migration's memfd: a
/// file others may change would change the guest's memory.
pub fn map_file(file: File, size: u64, track_dirty: bool) -> Result<GuestMemoryMmap, MemoryError> {
    map_ranges(&ram_regions(size), track_dirty, Some(&Arc::new(file)))
        .map_err(|source| MemoryError::Allocate { size, source })
}

/// True if `memory` was created with dirty tracking.
pub fn tracks_dirty(memory: &GuestMemoryMmap) -> bool {
    memory.iter().all(|region| own_writes(region).is_some())
}

/// The bitmap of the VMM's writes to `region`, if it has one.
fn own_writes(region: &GuestRegionMmap<Option<AtomicBitmap>>) -> Option<&AtomicBitmap> {
    let mapping: &MmapRegion<Option<AtomicBitmap>> = region;
    mapping.bitmap().as_ref()
}

/// Makes every region of `memory` visible to the guest, one KVM slot per region, with KVM's
/// dirty log on when `memory` tracks dirty pages.
pub fn register(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<(), MemoryError> {
    let flags = if tracks_dirty(memory) {
        KVM_MEM_LOG_DIRTY_PAGES
    } else {
        0
    };
    for (slot, region) in memory.iter().enumerate() {
        let slot = slot as u32;
        let host_address = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| MemoryError::Register {
                slot,
                source: kvm_ioctls::Error::new(libc::EFAULT),
            })?;
        let region_info = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host_address as u64,
            flags,
        };
        // SAFETY: the host range is a live mapping owned by `memory`, which the caller keeps
        // alive for as long as the VM exists (both are fields of `Vm`, memory dropped last).
        unsafe { vm.set_user_memory_region(region_info) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(())
}

/// The pages written since the last call, per region in `memory`'s order: one bit per page
/// (bit `i % 64` of word `i / 64`), KVM's log ORed with the VMM's bitmap. Both are reset.
pub fn take_dirty_pages(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<DirtyPages, MemoryError> {
    let mut regions = Vec::new();
    for (slot, region) in memory.iter().enumerate() {
        let slot = slot as u32;
        let mut bits = vm
            .get_dirty_log(slot, region.len() as usize)
            .map_err(|source| MemoryError::DirtyLog { slot, source })?;
        if let Some(bitmap) = own_writes(region) {
            for (word, own) in bits.iter_mut().zip(bitmap.get_and_reset()) {
                *word |= own;
            }
        }
        regions.push(bits);
    }
    Ok(DirtyPages(regions))
}

/// Forgets the VMM's own writes so far (after a restore filled memory from a file: those pages
/// are the snapshot's, not changes since it).
pub fn clear_own_writes(memory: &GuestMemoryMmap) {
    for region in memory.iter() {
        if let Some(bitmap) = own_writes(region) {
            bitmap.reset();
        }
    }
}

/// Dirty pages per memory region, from [`take_dirty_pages`].
#[derive(Clone, Debug, Default)]
pub struct DirtyPages(Vec<Vec<u64>>);

impl DirtyPages {
    /// Dirty pages as [`take_dirty_pages`] returns them, for tests without a VM.
    #[cfg(test)]
    pub(crate) fn from_words(regions: Vec<Vec<u64>>) -> DirtyPages {
        DirtyPages(regions)
    }

    /// Whether page `page` of region `region` was written.
    pub fn is_dirty(&self, region: usize, page: usize) -> bool {
        self.0
            .get(region)
            .and_then(|words| words.get(page / 64))
            .is_some_and(|word| word & (1 << (page % 64)) != 0)
    }

    /// How many pages are dirty.
    pub fn count(&self) -> u64 {
        self.0
            .iter()
            .flatten()
            .map(|word| u64::from(word.count_ones()))
            .sum()
    }

    /// Adds the pages of `other` (taken later from the same memory).
    pub fn add(&mut self, other: &DirtyPages) {
        if self.0.is_empty() {
            self.0 = other.0.clone();
            return;
        }
        for (words, others) in self.0.iter_mut().zip(&other.0) {
            for (word, other) in words.iter_mut().zip(others) {
                *word |= other;
            }
        }
    }

    /// Marks these pages written again in the VMM's bitmap, so that a snapshot that failed after
    /// taking them leaves the next diff complete.
    pub fn give_back(&self, memory: &GuestMemoryMmap) {
        for (region, words) in memory.iter().zip(&self.0) {
            let Some(bitmap) = own_writes(region) else {
                continue;
            };
            for (index, word) in words.iter().enumerate() {
                for bit in 0..64 {
                    if word & (1 << bit) != 0 {
                        bitmap.set_bit(index * 64 + bit);
                    }
                }
            }
        }
    }
}
