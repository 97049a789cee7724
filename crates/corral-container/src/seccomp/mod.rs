//! Seccomp filters from the spec: compiled with libseccomp ([`compile`]), kept by their
//! profile's content ([`cache`]) so that containers sharing a profile compile it once (podman's
//! default profile takes libseccomp about 30 ms, most of a container's start), and loaded as
//! raw BPF.

mod cache;
mod compile;

use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompFilterFlag};

use crate::error::{Error, Result};

/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const MAX_INSTRUCTIONS: usize = 4096;

/// A profile compiled: the BPF program and the flags the profile asks it to be loaded with.
#[derive(Clone)]
pub struct Program {
    instructions: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("instructions", &self.instructions.len())
            .field("flags", &self.flags)
            .finish()
    }
}

impl Program {
    /// The program of `profile`: from `cache` (a directory of programs kept by their profile's
    /// content) when it holds it, else compiled and then kept there. A cache that cannot be read
    /// or written only costs the compilation.
    pub fn for_profile(profile: &LinuxSeccomp, cache: Option<&Path>) -> Result<Self> {
        let flags = load_flags(profile);
        let program = |instructions| Self {
            instructions,
            flags,
        };
        let Some(dir) = cache else {
            return Ok(program(compile_program(profile)?.1));
        };
        let key = cache::key(profile);
        let cached = || cache::read(dir, &key).and_then(|bytes| instructions(&bytes));
        if let Some(instructions) = cached() {
            return Ok(program(instructions));
        }
        // Containers started together would all compile it: one does, the others wait for it
        // and read what it kept.
        let _compiling = cache::lock(dir);
        if let Some(instructions) = cached() {
            return Ok(program(instructions));
        }
        let (bytes, instructions) = compile_program(profile)?;
        cache::write(dir, &key, &bytes);
        Ok(program(instructions))
    }

    /// Loads the program into the calling thread (and with the profile's tsync flag, its
    /// others); from here on the profile applies. The caller holds CAP_SYS_ADMIN or has set
    /// no_new_privs, as the kernel requires.
    pub fn load(&self) -> Result<()> {
        let program = libc::sock_fprog {
            // `instructions` checked the length against the kernel's limit.
            len: self.instructions.len() as libc::c_ushort,
            filter: self.instructions.as_ptr().cast_mut(),
        };
        // SAFETY: `program` points at `self.instructions`, alive for the call; the kernel copies
        // the program and writes nothing through the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &program as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::sys("load the seccomp filter", nix::Error::last()))
        }
    }
}

/// The seccomp(2) flags the profile's `flags` ask for.
fn load_flags(profile: &LinuxSeccomp) -> libc::c_ulong {
    profile
        .flags()
        .iter()
        .flatten()
        .map(|flag| match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Only meaningful with a notify listener, which corral does not provide.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        })
        .fold(0, |flags, flag| flags | flag)
}

/// The profile compiled: the program's bytes, as the cache keeps them, and its instructions.
fn compile_program(profile: &LinuxSeccomp) -> Result<(Vec<u8>, Vec<libc::sock_filter>)> {
    let bytes = compile::compile(profile)?;
    let instructions = instructions(&bytes).ok_or_else(|| {
        Error::Seccomp(format!(
            "libseccomp produced {} bytes, not a program of at most {MAX_INSTRUCTIONS} instructions",
            bytes.len()
        ))
    })?;
    Ok((bytes, instructions))
}

/// `bytes` as BPF instructions, if they are a whole number of them, at least one and within the
/// kernel's limit.
fn instructions(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    const SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty()
        || !bytes.len().is_multiple_of(SIZE)
        || bytes.len() / SIZE > MAX_INSTRUCTIONS
    {
        return None;
    }
    Some(
        bytes
            .chunks_exact(SIZE)
            .map(|raw| libc::sock_filter {
                code: u16::from_ne_bytes([raw[0], raw[1]]),
                jt: raw[2],
                jf: raw[3],
                k: u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
