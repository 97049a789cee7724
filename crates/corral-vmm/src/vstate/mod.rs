//! KVM state: the VM with its memory and irqchip, and the vCPUs.

pub mod memory;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;
