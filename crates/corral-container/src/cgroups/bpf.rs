//! Loading a device-filter eBPF program and attaching it to a cgroup v2 directory, through the
//! `bpf(2)` system call (neither nix nor rustix wraps it; the program is a handful of
//! instructions, so a loader library would add much for little).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Other programs (systemd's, a nested runtime's) may be attached beside ours; all must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;
/// The kernel's license check only matters for GPL-only helpers, which the program calls none of.
const LICENSE: &[u8] = b"Apache-2.0\0";
/// Room for the verifier's explanation when it refuses a program.
const LOG_SIZE: usize = 64 * 1024;

/// The part of `union bpf_attr` that BPF_PROG_LOAD reads (the kernel zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The part of `union bpf_attr` that BPF_PROG_ATTACH reads.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// Calls `bpf(command, attr)`; returns the non-negative result.
///
/// # Safety
/// `attr` must be the attribute struct `command` expects, and every pointer in it must be valid
/// for the call's duration.
unsafe fn bpf<T>(command: libc::c_long, attr: &T) -> nix::Result<libc::c_long> {
    // SAFETY: the caller guarantees `attr` matches `command`; the size passed is its own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(nix::Error::last())
    } else {
        Ok(rc)
    }
}

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program (raw 8-byte instructions).
fn load_device_program(code: &[u8]) -> Result<OwnedFd> {
    let insn_cnt = u32::try_from(code.len() / 8)
        .map_err(|_| Error::Cgroup("the device filter program is too long".into()))?;
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: code.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: a PROG_LOAD attribute whose pointers (code, license) outlive the call.
    let first = unsafe { bpf(BPF_PROG_LOAD, &attr) };
    let error = match first {
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => e,
    };
    // Load again with the verifier's log, so a refusal says why.
    let mut log = vec![0u8; LOG_SIZE];
    attr.log_level = 1;
    attr.log_size = LOG_SIZE as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above; the log buffer is LOG_SIZE bytes and outlives the call.
    if let Ok(fd) = unsafe { bpf(BPF_PROG_LOAD, &attr) } {
        // SAFETY: as above.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let detail = String::from_utf8_lossy(&log[..end]);
    let detail = detail.lines().last().unwrap_or_default();
    Err(Error::DeviceFilter {
        detail: detail.to_owned(),
        source: error,
    })
}

/// Loads `code` and attaches it as the device filter of the cgroup directory `dir`. The
/// attachment keeps the program alive as long as the cgroup exists.
pub fn attach_device_filter(dir: &Path, code: &[u8]) -> Result<()> {
    let program = load_device_program(code)?;
    let cgroup = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open cgroup {}", dir.display()), e))?;
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: a PROG_ATTACH attribute holding two open descriptors and no pointers.
    unsafe { bpf(BPF_PROG_ATTACH, &attr) }
        .map(drop)
        .map_err(|e| Error::sys(format!("attach the device filter to {}", dir.display()), e))
}
