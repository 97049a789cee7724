//! One member of an untrusted package (a Vagrant box, an OVA) read into memory or copied out
//! to a file, never past a size limit, and only as long as its archive header said.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What went wrong with a member; the caller adds which package and which member.
#[derive(Debug)]
pub(crate) enum MemberError {
    /// Reading the package failed, or it ended inside the member.
    Read(std::io::Error),
    /// Writing the copy failed.
    Write(std::io::Error),
    /// The member is larger than the limit.
    TooLarge { limit: u64 },
}

/// The whole of `reader`, at most `limit` bytes.
pub(crate) fn read_small(reader: impl Read, limit: u64) -> Result<Vec<u8>, MemberError> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(MemberError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(MemberError::TooLarge { limit });
    }
    Ok(bytes)
}

/// Copies `entry` (`expected` bytes, as its header says; at most `limit`) to a new file at
/// `target` (mode 0600, never through a link), fsynced; `each_chunk` sees the bytes as they
/// pass (to hash them).
pub(crate) fn copy_to_new_file(
    entry: &mut dyn Read,
    expected: u64,
    limit: u64,
    target: &Path,
    mut each_chunk: impl FnMut(&[u8]),
) -> Result<(), MemberError> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(target)
        .map_err(MemberError::Write)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(MemberError::Read)?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if copied > limit {
            return Err(MemberError::TooLarge { limit });
        }
        each_chunk(&buf[..n]);
        out.write_all(&buf[..n]).map_err(MemberError::Write)?;
    }
    if copied != expected {
        // The archive ended inside the member.
        return Err(MemberError::Read(std::io::ErrorKind::UnexpectedEof.into()));
    }
    out.sync_all().map_err(MemberError::Write)
}
