//! Guest memory: anonymous host mappings (vm-memory) registered as KVM memory slots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::ram_regions;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot allocate {size} bytes of guest memory")]
    Allocate {
        size: u64,
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("cannot register guest memory slot {slot} with KVM")]
    Register {
        slot: u32,
        source: kvm_ioctls::Error,
    },
}

/// Allocates `size` bytes of guest RAM laid out around the MMIO gap.
pub fn create(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    GuestMemoryMmap::from_ranges(&ram_regions(size))
        .map_err(|source| MemoryError::Allocate { size, source })
}

/// Makes every region of `memory` visible to the guest, one KVM slot per region.
pub fn register(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<(), MemoryError> {
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
            flags: 0,
        };
        // SAFETY: the host range is a live mapping owned by `memory`, which the caller keeps
        // alive for as long as the VM exists (both are fields of `Vm`, memory dropped last).
        unsafe { vm.set_user_memory_region(region_info) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(())
}
