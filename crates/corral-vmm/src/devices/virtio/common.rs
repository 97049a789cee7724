//! What every virtio device's front holds: its name, the features and queues it offers, its
//! configuration space and its I/O thread. [`super::VirtioDevice`]'s default methods serve the
//! transport from it, so a device states only what is its own: its type, how its configuration
//! space is laid out and its back end.

use super::worker::Worker;

pub struct VirtioCommon {
    /// A short name for logs and the I/O thread (`virtio-blk0`).
    pub name: String,
    /// Feature bits offered to the driver (`VIRTIO_F_VERSION_1` is added by the transport).
    pub features: u64,
    /// The largest size of each queue; the driver may choose smaller ones.
    pub queue_max_sizes: Vec<u16>,
    /// The device-specific configuration space, as the driver reads it.
    pub config: Vec<u8>,
    pub worker: Worker,
}

/// Implements [`super::VirtioDevice`] for a device struct that keeps its [`VirtioCommon`] in a
/// field named `common`, with virtio device ID `$device_type` (`VIRTIO_ID_*`) and, in braces,
/// the trait methods the device implements itself.
macro_rules! virtio_device {
    ($device:ty, $device_type:expr $(, { $($own:tt)* })?) => {
        impl $crate::devices::virtio::VirtioDevice for $device {
            fn device_type(&self) -> u32 {
                $device_type
            }
            fn common(&self) -> &$crate::devices::virtio::VirtioCommon {
                &self.common
            }
            fn common_mut(&mut self) -> &mut $crate::devices::virtio::VirtioCommon {
                &mut self.common
            }
            $($($own)*)?
        }
    };
}
pub(crate) use virtio_device;
