//! Port-I/O and MMIO buses: address ranges mapped to devices.
//!
//! A bus is built before the vCPUs start and is read-only afterwards, so vCPU threads share it
//! without a lock; each device has its own lock. An access no device claims behaves like an
//! empty slot on real hardware (reads return all ones, writes vanish) and is logged once per
//! address.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

/// A device on a bus. `offset` is relative to the base address the device was inserted at.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{bus} range {base:#x}+{len:#x} overlaps a device already there")]
pub struct BusOverlap {
    bus: &'static str,
    base: u64,
    len: u64,
}

/// At most this many distinct unknown addresses are logged, so a guest scanning the address
/// space cannot grow the VMM's memory without bound.
const MAX_LOGGED_UNKNOWN: usize = 4096;

struct Slot {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// An address space (`pio` or `mmio`) with devices in it.
pub struct Bus {
    name: &'static str,
    slots: BTreeMap<u64, Slot>,
    unknown_logged: Mutex<HashSet<u64>>,
}

impl Bus {
    pub fn new(name: &'static str) -> Bus {
        Bus {
            name,
            slots: BTreeMap::new(),
            unknown_logged: Mutex::new(HashSet::new()),
        }
    }

    /// Maps `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusOverlap> {
        let overlap = BusOverlap {
            bus: self.name,
            base,
            len,
        };
        let end = base.checked_add(len).ok_or(overlap.clone())?;
        if len == 0
            || self
                .slots
                .range(..end)
                .next_back()
                .is_some_and(|(b, s)| b + s.len > base)
        {
            return Err(overlap);
        }
        self.slots.insert(base, Slot { len, device });
        Ok(())
    }

    fn find(&self, address: u64) -> Option<(u64, &Slot)> {
        let (base, slot) = self.slots.range(..=address).next_back()?;
        (address - base < slot.len).then_some((*base, slot))
    }

    /// Reads from the device at `address`; false when no device is there.
    pub fn read(&self, address: u64, data: &mut [u8]) -> bool {
        match self.find(address) {
            Some((base, slot)) => {
                lock(&slot.device).read(address - base, data);
                true
            }
            None => {
                data.fill(0xff);
                self.log_unknown("read", address, data.len());
                false
            }
        }
    }

    /// Writes to the device at `address`; false when no device is there.
    pub fn write(&self, address: u64, data: &[u8]) -> bool {
        match self.find(address) {
            Some((base, slot)) => {
                lock(&slot.device).write(address - base, data);
                true
            }
            None => {
                self.log_unknown("write", address, data.len());
                false
            }
        }
    }

    fn log_unknown(&self, access: &str, address: u64, len: usize) {
        let mut logged = lock(&self.unknown_logged);
        if logged.len() < MAX_LOGGED_UNKNOWN && logged.insert(address) {
            tracing::info!(
                "guest {access} of {len} bytes at unmapped {} address {address:#x} ignored \
                 (logged once per address)",
                self.name
            );
        }
    }
}

/// Locks a device. A device whose lock was poisoned by a panicking vCPU thread is still used:
/// its state is plain data and the VM is being torn down anyway.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Register(u8);
    impl BusDevice for Register {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0 + offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let mut bus = Bus::new("pio");
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Register(0x10))))
            .unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fa, &mut data));
        assert_eq!(data, [0x12]);
        assert!(bus.write(0x3f8, &[0x20]));
        assert!(bus.read(0x3f8, &mut data));
        assert_eq!(data, [0x20]);
        // Outside the range: open bus.
        assert!(!bus.read(0x400, &mut data));
        assert_eq!(data, [0xff]);
        assert!(!bus.write(0x3f7, &[1]));
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = Bus::new("mmio");
        let device = Arc::new(Mutex::new(Register(0)));
        bus.insert(0x1000, 0x1000, device.clone()).unwrap();
        assert!(bus.insert(0x1fff, 1, device.clone()).is_err());
        assert!(bus.insert(0x800, 0x801, device.clone()).is_err());
        assert!(bus.insert(0, 0, device.clone()).is_err());
        assert!(bus.insert(u64::MAX, 2, device.clone()).is_err());
        bus.insert(0x2000, 0x1000, device).unwrap();
    }
}
