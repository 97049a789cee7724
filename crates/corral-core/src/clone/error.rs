//! Why a clone is refused before anything is made.

use std::path::PathBuf;

/// A clone refused before anything is made.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error(
        "instance {0} is running; stop it first (`corral stop {0}`), or pause it (`corral pause \
         {0}`) and clone it with --force for a crash-consistent copy"
    )]
    Running(String),
    #[error(
        "instance {0} is paused; clone it with --force for a crash-consistent copy of its content \
         as it is now, or stop it first"
    )]
    Paused(String),
    #[error(
        "instance {0} is paused, and a linked clone would make the disk its VM is writing a \
         read-only base; stop it first, or make a full copy (--full)"
    )]
    PausedLinked(String),
    #[error(
        "the root disk of instance {0} is read-only and shared with its clones, so a clone's \
         identity cannot be reset on it; clone with --keep-identity and reset it inside the \
         guest (`corral guest sysprep`)"
    )]
    SharedRootDisk(String),
    #[error(
        "nics[{index}] of instance {name} is the tap device {tap}, which its clone cannot use at \
         the same time; give the clone interfaces of its own with --nic (e.g. --nic \
         bridge=BRIDGE)"
    )]
    FixedTap {
        name: String,
        index: usize,
        tap: String,
    },
    #[error(
        "disks[{index}] of instance {name} ({disk}) is writable and outside the instance's \
         directory: corral does not copy it, and two instances writing it would corrupt it; make \
         it `readonly = true` to share it, or detach it (`corral config edit {name}`) and give \
         the clone a copy of its own afterwards"
    )]
    SharedDisk {
        name: String,
        index: usize,
        disk: String,
    },
    #[error("disks[{index}] of instance {name} ({path}) is not a disk image file")]
    NotAFile {
        name: String,
        index: usize,
        path: PathBuf,
    },
    #[error(
        "disks[{index}] of instance {name} reads the backing file {backing} inside the \
         instance's own directory, which its clone's copy would read too; make the disk stand \
         alone (`qemu-img convert`) or keep its backing file in the storage pool"
    )]
    BackingInside {
        name: String,
        index: usize,
        backing: PathBuf,
    },
    #[error(
        "instance {name} names {path}, inside its own directory, by an absolute path, which its \
         clone would use too; make it relative to the instance directory (`corral config edit \
         {name}`)"
    )]
    AbsolutePath { name: String, path: PathBuf },
    #[error(
        "the root filesystem {rootfs} of instance {name} is outside its directory; corral clones \
         containers that hold their own (made with --rootfs or --image)"
    )]
    RootfsOutside { name: String, rootfs: PathBuf },
}
