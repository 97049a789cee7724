//! corral's virtual machine monitor: boots an x86_64 Linux kernel (ELF vmlinux through PVH, or a
//! bzImage through the 64-bit boot protocol) or a freestanding test guest on KVM, with a serial
//! console, an i8042 controller and a debug-exit port, one thread per vCPU, and a control socket.
//!
//! The layout follows Firecracker's: [`arch`] (x86_64 boot structures), [`vstate`] (VM, memory,
//! vCPUs), [`devices`] (buses, interrupt routing, legacy devices). [`run`] ties them together.

pub mod arch;
pub mod config;
mod console;
mod control;
pub mod devices;
pub mod exit;
pub mod jail;
pub mod kernel;
pub mod migration;
pub mod seccomp;
pub mod snapshot;
mod vmm;
pub mod vstate;

pub use config::VmConfig;
pub use exit::ExitReason;
pub use vmm::{restore, restore_incoming, run, RunOptions, VmExit, VmmError};
