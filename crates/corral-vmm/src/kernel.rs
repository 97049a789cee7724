//! Recognising and loading the guest kernel and initrd.
//!
//! [`inspect`] reads only the image's headers — untrusted input, so it is fuzzed — and says what
//! the image is, how much memory it needs and how long a command line it takes, so bad input is
//! refused with a clear message before a VM exists. Loading itself is linux-loader's. A Linux
//! vmlinux (its ELF notes say so) boots through the 64-bit boot protocol even where it offers a
//! PVH entry: only the boot protocol's zero page carries `setup_data`, where the random seed goes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress};

use crate::vstate::memory::GuestMemoryMmap;

use crate::arch::x86_64::layout::{CMDLINE_START, HIMEM_START};
use crate::arch::x86_64::regs::EntryPoint;
use crate::arch::x86_64::InitrdPlacement;
use crate::config::{ConfigError, MemorySize, MAX_CMDLINE_BYTES};

/// How many bytes of the image [`inspect`] looks at: ELF program headers and the bzImage setup
/// header sit well inside it.
pub const HEADER_BYTES: usize = 64 * 1024;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// The note name every Linux vmlinux carries (its build salt, `include/linux/build-salt.h`).
const LINUX_NOTE_NAME: &[u8] = b"Linux\0";
/// A kernel has a few notes (about a hundred bytes); a larger note segment is not read.
const MAX_NOTE_BYTES: u64 = 64 * 1024;
const BZIMAGE_BOOT_FLAG_OFFSET: usize = 0x1fe;
const BZIMAGE_HEADER_OFFSET: usize = 0x202;
/// The 64-bit entry point sits this far into the protected-mode code (boot protocol 2.12+).
const BZIMAGE_ENTRY_64_OFFSET: u64 = 0x200;
const XLF_KERNEL_64: u16 = 1;
const LOADED_HIGH: u8 = 1;
/// Boot protocol 2.12 introduced `xloadflags`, which says whether the 64-bit entry exists.
const MIN_BOOT_PROTOCOL: u16 = 0x020c;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot open kernel {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read kernel {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a kernel corral can boot: {reason}")]
    NotAKernel { path: PathBuf, reason: ImageError },
    #[error("cannot load kernel {path} into guest memory")]
    Load {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    #[error("cannot open initrd {path}")]
    OpenInitrd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load initrd {path} into guest memory")]
    LoadInitrd {
        path: PathBuf,
        source: vm_memory::GuestMemoryError,
    },
    #[error(
        "guest memory of {memory} is too small for the kernel ({kernel_mib} MiB from 1 MiB) \
         and initrd ({initrd_mib} MiB); give more memory"
    )]
    MemoryTooSmall {
        memory: MemorySize,
        kernel_mib: u64,
        initrd_mib: u64,
    },
    #[error("invalid kernel command line")]
    Cmdline(#[from] ConfigError),
    #[error("cannot write the kernel command line: {0}")]
    WriteCmdline(linux_loader::loader::Error),
}

/// Why an image's headers were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("it is neither an ELF vmlinux nor a bzImage")]
    UnknownFormat,
    #[error("it is a 32-bit or big-endian ELF file; corral boots x86_64 kernels")]
    ElfClass,
    #[error("it is an ELF file for machine {0}, not x86_64 (62)")]
    WrongArchitecture(u16),
    #[error("its ELF headers are truncated or inconsistent")]
    TruncatedElf,
    #[error("it has no loadable segment")]
    NothingToLoad,
    #[error("it loads below 1 MiB or beyond 4 GiB")]
    BadLoadAddress,
    #[error("its bzImage boot protocol {0:#x} is older than 2.12 (no 64-bit entry information)")]
    OldBootProtocol(u16),
    #[error("the bzImage has no 64-bit entry point (XLF_KERNEL_64 unset)")]
    No64BitEntry,
    #[error("the bzImage is not loadable high (LOADED_HIGH unset)")]
    NotLoadedHigh,
}

/// What an image is and what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    /// The highest guest-physical address the kernel occupies while booting.
    pub end: u64,
    /// The longest command line it accepts, including the terminating NUL.
    pub max_cmdline: usize,
    /// Highest address an initrd may end at.
    pub initrd_max: u64,
    /// Where an ELF image keeps its notes (file offset and length), when it has them.
    pub notes: Option<FileRange>,
}

/// A range of bytes in the image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRange {
    pub offset: u64,
    pub len: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Elf,
    BzImage,
}

/// The `N` bytes at `offset`, if all of them are inside `bytes`.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}
fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    field(bytes, offset).map(u16::from_le_bytes)
}
fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    field(bytes, offset).map(u32::from_le_bytes)
}
fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    field(bytes, offset).map(u64::from_le_bytes)
}

/// Recognises an image from its first bytes (up to [`HEADER_BYTES`]) and its total length.
pub fn inspect(head: &[u8], file_len: u64) -> Result<ImageInfo, ImageError> {
    if head.starts_with(ELF_MAGIC) {
        inspect_elf(head)
    } else if read_u16(head, BZIMAGE_BOOT_FLAG_OFFSET) == Some(0xaa55)
        && read_u32(head, BZIMAGE_HEADER_OFFSET) == Some(0x5372_6448)
    {
        inspect_bzimage(head, file_len)
    } else {
        Err(ImageError::UnknownFormat)
    }
}

fn inspect_elf(head: &[u8]) -> Result<ImageInfo, ImageError> {
    if head.get(4) != Some(&ELFCLASS64) || head.get(5) != Some(&ELFDATA2LSB) {
        return Err(ImageError::ElfClass);
    }
    let machine = read_u16(head, 18).ok_or(ImageError::TruncatedElf)?;
    if machine != EM_X86_64 {
        return Err(ImageError::WrongArchitecture(machine));
    }
    let phoff = read_u64(head, 32).ok_or(ImageError::TruncatedElf)?;
    let phentsize = read_u16(head, 54).ok_or(ImageError::TruncatedElf)?;
    let phnum = read_u16(head, 56).ok_or(ImageError::TruncatedElf)?;
    if phentsize != 56 {
        return Err(ImageError::TruncatedElf);
    }
    let mut end = 0u64;
    let mut notes = None;
    for index in 0..u64::from(phnum) {
        let offset = phoff
            .checked_add(index * 56)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(ImageError::TruncatedElf)?;
        let kind = read_u32(head, offset).ok_or(ImageError::TruncatedElf)?;
        let at = |field: usize| offset.checked_add(field).ok_or(ImageError::TruncatedElf);
        if kind == PT_NOTE && notes.is_none() {
            let file_offset = read_u64(head, at(8)?).ok_or(ImageError::TruncatedElf)?;
            let len = read_u64(head, at(32)?).ok_or(ImageError::TruncatedElf)?;
            notes = (len <= MAX_NOTE_BYTES).then_some(FileRange {
                offset: file_offset,
                len,
            });
        }
        if kind != PT_LOAD {
            continue;
        }
        let paddr = read_u64(head, at(24)?).ok_or(ImageError::TruncatedElf)?;
        let memsz = read_u64(head, at(40)?).ok_or(ImageError::TruncatedElf)?;
        let segment_end = paddr.checked_add(memsz).ok_or(ImageError::BadLoadAddress)?;
        if paddr < HIMEM_START || segment_end > 1 << 32 {
            return Err(ImageError::BadLoadAddress);
        }
        end = end.max(segment_end);
    }
    if end == 0 {
        return Err(ImageError::NothingToLoad);
    }
    Ok(ImageInfo {
        format: ImageFormat::Elf,
        end,
        max_cmdline: MAX_CMDLINE_BYTES,
        initrd_max: u64::from(u32::MAX),
        notes,
    })
}

fn inspect_bzimage(head: &[u8], file_len: u64) -> Result<ImageInfo, ImageError> {
    // Offsets are those of the setup header fields in the boot protocol document.
    let header_u32 = |offset| read_u32(head, offset).ok_or(ImageError::UnknownFormat);
    let version = read_u16(head, 0x206).ok_or(ImageError::UnknownFormat)?;
    if version < MIN_BOOT_PROTOCOL {
        return Err(ImageError::OldBootProtocol(version));
    }
    let loadflags = *head.get(0x211).ok_or(ImageError::UnknownFormat)?;
    if loadflags & LOADED_HIGH == 0 {
        return Err(ImageError::NotLoadedHigh);
    }
    let xloadflags = read_u16(head, 0x236).ok_or(ImageError::UnknownFormat)?;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(ImageError::No64BitEntry);
    }
    let setup_sects = match *head.get(0x1f1).ok_or(ImageError::UnknownFormat)? {
        0 => 4,
        n => u64::from(n),
    };
    let code32_start = u64::from(header_u32(0x214)?);
    if code32_start < HIMEM_START {
        return Err(ImageError::BadLoadAddress);
    }
    let payload = file_len.saturating_sub((setup_sects + 1) * 512);
    let init_size = u64::from(header_u32(0x260)?);
    Ok(ImageInfo {
        format: ImageFormat::BzImage,
        end: code32_start + payload.max(init_size),
        max_cmdline: header_u32(0x238)? as usize + 1,
        initrd_max: u64::from(header_u32(0x22c)?),
        notes: None,
    })
}

/// Whether ELF notes (`notes`, a note segment's bytes) include one named "Linux". Stops at the
/// first note that does not fit.
pub fn names_linux(notes: &[u8]) -> bool {
    let align = |len: u32| usize::try_from(len).ok()?.checked_next_multiple_of(4);
    let mut at = 0usize;
    while let (Some(name_len), Some(desc_len)) = (read_u32(notes, at), read_u32(notes, at + 4)) {
        let name_start = at + 12;
        let Some(name_end) = usize::try_from(name_len)
            .ok()
            .and_then(|len| name_start.checked_add(len))
        else {
            return false;
        };
        if notes.get(name_start..name_end) == Some(LINUX_NOTE_NAME) {
            return true;
        }
        let next = align(name_len)
            .zip(align(desc_len))
            .and_then(|(name, desc)| name_start.checked_add(name)?.checked_add(desc));
        match next {
            Some(next) if next <= notes.len() => at = next,
            _ => return false,
        }
    }
    false
}

/// An opened, recognised kernel image.
pub struct KernelImage {
    path: PathBuf,
    file: File,
    pub info: ImageInfo,
    /// An ELF vmlinux of Linux (a note named "Linux").
    linux: bool,
}

impl KernelImage {
    pub fn open(path: &Path) -> Result<KernelImage, KernelError> {
        let mut file = File::open(path).map_err(|source| KernelError::Open {
            path: path.to_owned(),
            source,
        })?;
        let read_error = |source| KernelError::Read {
            path: path.to_owned(),
            source,
        };
        let file_len = file.metadata().map_err(read_error)?.len();
        let mut head = Vec::with_capacity(HEADER_BYTES);
        (&mut file)
            .take(HEADER_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(read_error)?;
        let info = inspect(&head, file_len).map_err(|reason| KernelError::NotAKernel {
            path: path.to_owned(),
            reason,
        })?;
        let linux = match info.notes {
            Some(notes) => {
                let mut bytes = Vec::with_capacity(notes.len as usize);
                file.seek(SeekFrom::Start(notes.offset))
                    .and_then(|_| (&mut file).take(notes.len).read_to_end(&mut bytes))
                    .map_err(read_error)?;
                names_linux(&bytes)
            }
            None => false,
        };
        Ok(KernelImage {
            path: path.to_owned(),
            file,
            info,
            linux,
        })
    }

    /// Loads the image; returns its entry point and, for a bzImage, its setup header.
    pub fn load(
        &mut self,
        memory: &GuestMemoryMmap,
    ) -> Result<(EntryPoint, Option<setup_header>), KernelError> {
        let load_error = |source| KernelError::Load {
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|source| KernelError::Read {
                path: self.path.clone(),
                source,
            })?;
        let highmem = Some(GuestAddress(HIMEM_START));
        match self.info.format {
            ImageFormat::Elf => {
                let loaded =
                    Elf::load(memory, None, &mut self.file, highmem).map_err(load_error)?;
                let entry = match loaded.pvh_boot_cap {
                    PvhBootCapability::PvhEntryPresent(address) if !self.linux => {
                        EntryPoint::Pvh(address)
                    }
                    _ => EntryPoint::Linux64(loaded.kernel_load),
                };
                Ok((entry, None))
            }
            ImageFormat::BzImage => {
                let loaded =
                    BzImage::load(memory, None, &mut self.file, highmem).map_err(load_error)?;
                let entry = EntryPoint::Linux64(GuestAddress(
                    loaded.kernel_load.0 + BZIMAGE_ENTRY_64_OFFSET,
                ));
                Ok((entry, loaded.setup_header))
            }
        }
    }
}

/// An opened initrd.
pub struct Initrd {
    path: PathBuf,
    file: File,
    pub size: u64,
}

impl Initrd {
    pub fn open(path: &Path) -> Result<Initrd, KernelError> {
        let open_error = |source| KernelError::OpenInitrd {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let size = file.metadata().map_err(open_error)?.len();
        Ok(Initrd {
            path: path.to_owned(),
            file,
            size,
        })
    }

    /// Loads the initrd at `placement`.
    pub fn load(
        &mut self,
        memory: &GuestMemoryMmap,
        placement: InitrdPlacement,
    ) -> Result<(), KernelError> {
        let load_error = |source| KernelError::LoadInitrd {
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|err| load_error(vm_memory::GuestMemoryError::IOError(err)))?;
        memory
            .read_exact_volatile_from(placement.address, &mut self.file, placement.size as usize)
            .map_err(load_error)?;
        Ok(())
    }
}

/// Chooses where the initrd goes: as high as possible below `low_ram_end` and the kernel's limit,
/// page aligned, and above the kernel. Fails when kernel and initrd do not both fit.
pub fn place_initrd(
    image: &ImageInfo,
    initrd_size: u64,
    memory: MemorySize,
    low_ram_end: u64,
) -> Result<Option<InitrdPlacement>, KernelError> {
    const PAGE: u64 = 4096;
    let kernel_end = image.end.div_ceil(PAGE) * PAGE;
    let too_small = || KernelError::MemoryTooSmall {
        memory,
        kernel_mib: (image.end - HIMEM_START).div_ceil(1 << 20),
        initrd_mib: initrd_size.div_ceil(1 << 20),
    };
    if kernel_end > low_ram_end {
        return Err(too_small());
    }
    if initrd_size == 0 {
        return Ok(None);
    }
    let top = low_ram_end.min(image.initrd_max.saturating_add(1));
    let start = top.checked_sub(initrd_size).ok_or_else(too_small)? / PAGE * PAGE;
    if start < kernel_end {
        return Err(too_small());
    }
    Ok(Some(InitrdPlacement {
        address: GuestAddress(start),
        size: initrd_size,
    }))
}

/// Writes the command line at its boot address after checking it against the kernel's limit.
pub fn write_cmdline(
    memory: &GuestMemoryMmap,
    text: &str,
    image: &ImageInfo,
) -> Result<(), KernelError> {
    crate::config::check_cmdline(text, image.max_cmdline)?;
    let cmdline =
        Cmdline::try_from(text, image.max_cmdline).map_err(|_| ConfigError::CmdlineInvalid)?;
    linux_loader::loader::load_cmdline(memory, GuestAddress(CMDLINE_START), &cmdline)
        .map_err(KernelError::WriteCmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_header(machine: u16, paddr: u64, memsz: u64) -> Vec<u8> {
        let mut image = vec![0u8; 0x40 + 56];
        image[..4].copy_from_slice(ELF_MAGIC);
        image[4] = ELFCLASS64;
        image[5] = ELFDATA2LSB;
        image[18..20].copy_from_slice(&machine.to_le_bytes());
        image[32..40].copy_from_slice(&0x40u64.to_le_bytes());
        image[54..56].copy_from_slice(&56u16.to_le_bytes());
        image[56..58].copy_from_slice(&1u16.to_le_bytes());
        image[0x40..0x44].copy_from_slice(&PT_LOAD.to_le_bytes());
        image[0x40 + 24..0x40 + 32].copy_from_slice(&paddr.to_le_bytes());
        image[0x40 + 40..0x40 + 48].copy_from_slice(&memsz.to_le_bytes());
        image
    }

    #[test]
    fn elf_images_are_recognised_and_checked() {
        let info = inspect(&elf_header(EM_X86_64, 0x100_0000, 0x20_0000), 0).unwrap();
        assert_eq!(info.format, ImageFormat::Elf);
        assert_eq!(info.end, 0x120_0000);
        let arm = inspect(&elf_header(183, 0x100_0000, 0x1000), 0);
        assert_eq!(arm, Err(ImageError::WrongArchitecture(183)));
        let low = inspect(&elf_header(EM_X86_64, 0x1000, 0x1000), 0);
        assert_eq!(low, Err(ImageError::BadLoadAddress));
        let mut elf32 = elf_header(EM_X86_64, 0x100_0000, 0x1000);
        elf32[4] = 1;
        assert_eq!(inspect(&elf32, 0), Err(ImageError::ElfClass));
        let mut far = elf_header(EM_X86_64, 0x100_0000, 0x1000);
        far[32..40].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
        assert_eq!(inspect(&far, 0), Err(ImageError::TruncatedElf));
        let truncated = &elf_header(EM_X86_64, 0x100_0000, 0x1000)[..0x50];
        assert_eq!(inspect(truncated, 0), Err(ImageError::TruncatedElf));
        assert_eq!(inspect(b"#!/bin/sh\n", 10), Err(ImageError::UnknownFormat));
    }

    /// `elf_header` with a second program header: a note segment at `offset`, `len` bytes.
    fn elf_with_notes(offset: u64, len: u64) -> Vec<u8> {
        let mut image = elf_header(EM_X86_64, 0x100_0000, 0x1000);
        image[56..58].copy_from_slice(&2u16.to_le_bytes());
        let mut note = vec![0u8; 56];
        note[..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        note[8..16].copy_from_slice(&offset.to_le_bytes());
        note[32..40].copy_from_slice(&len.to_le_bytes());
        image.extend(note);
        image
    }

    #[test]
    fn an_elf_images_note_segment_is_found_unless_oversized() {
        let info = inspect(&elf_with_notes(0xac_7700, 0x6c), 0).unwrap();
        assert_eq!(
            info.notes,
            Some(FileRange {
                offset: 0xac_7700,
                len: 0x6c
            })
        );
        let huge = inspect(&elf_with_notes(0x1000, MAX_NOTE_BYTES + 1), 0).unwrap();
        assert_eq!(huge.notes, None);
        let plain = inspect(&elf_header(EM_X86_64, 0x100_0000, 0x1000), 0).unwrap();
        assert_eq!(plain.notes, None);
    }

    fn note(name: &[u8], desc: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend((name.len() as u32).to_le_bytes());
        bytes.extend((desc.len() as u32).to_le_bytes());
        bytes.extend(1u32.to_le_bytes());
        for part in [name, desc] {
            bytes.extend(part);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
        bytes
    }

    #[test]
    fn a_linux_vmlinux_is_told_by_its_notes() {
        // As in a vmlinux: the build id, Linux's notes, the PVH entry.
        let gnu = note(b"GNU\0", &[7; 20]);
        let vmlinux = [
            gnu.clone(),
            note(b"Linux\0", &[0; 4]),
            note(b"Xen\0", &[0; 8]),
        ]
        .concat();
        assert!(names_linux(&vmlinux));
        // A freestanding PVH guest: only the Xen note.
        assert!(!names_linux(&note(b"Xen\0", &[0; 8])));
        assert!(!names_linux(
            &[gnu.clone(), note(b"Linuxish\0", &[])].concat()
        ));
        // Hostile sizes end the walk instead of reading past the segment or wrapping around.
        let mut huge_desc = gnu.clone();
        huge_desc[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!names_linux(&[huge_desc, note(b"Linux\0", &[])].concat()));
        let mut huge_name = note(b"Linux\0", &[]);
        huge_name[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!names_linux(&huge_name));
        assert!(!names_linux(&vmlinux[..gnu.len() + 14]));
        assert!(!names_linux(&[]));
    }

    fn bzimage_header(version: u16, xloadflags: u16) -> Vec<u8> {
        let mut image = vec![0u8; 1024];
        image[0x1f1] = 1;
        image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        image[0x211] = LOADED_HIGH;
        image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        image[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        image[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        image[0x238..0x23c].copy_from_slice(&255u32.to_le_bytes());
        image[0x260..0x264].copy_from_slice(&0x30_0000u32.to_le_bytes());
        image
    }

    #[test]
    fn bzimages_need_a_64_bit_entry() {
        let info = inspect(&bzimage_header(0x020f, XLF_KERNEL_64), 1024 + 4096).unwrap();
        assert_eq!(info.format, ImageFormat::BzImage);
        assert_eq!(
            info.end, 0x40_0000,
            "init_size counts, not just the payload"
        );
        assert_eq!(info.max_cmdline, 256);
        assert_eq!(
            inspect(&bzimage_header(0x020f, 0), 2048),
            Err(ImageError::No64BitEntry)
        );
        assert_eq!(
            inspect(&bzimage_header(0x0206, 1), 2048),
            Err(ImageError::OldBootProtocol(0x0206))
        );
    }

    #[test]
    fn initrd_goes_high_and_must_clear_the_kernel() {
        let image = ImageInfo {
            format: ImageFormat::Elf,
            end: 0x20_0000,
            max_cmdline: MAX_CMDLINE_BYTES,
            initrd_max: u64::from(u32::MAX),
            notes: None,
        };
        let memory = MemorySize(16 << 20);
        let placed = place_initrd(&image, 5000, memory, 16 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(placed.address.0 % 4096, 0);
        assert!(placed.address.0 + 5000 <= 16 << 20);
        assert!(placed.address.0 >= 0x20_0000);
        assert!(matches!(
            place_initrd(&image, 15 << 20, memory, 16 << 20),
            Err(KernelError::MemoryTooSmall { .. })
        ));
        assert!(matches!(
            place_initrd(&image, 0, MemorySize(1 << 20), 1 << 20),
            Err(KernelError::MemoryTooSmall { .. })
        ));
    }
}
