//! New SSH host keys made on the host with `ssh-keygen`, for a clone that should have its own
//! keys before its first boot (instead of sshd or cloud-init making them there).

use crate::command::SSH_KEYGEN;
use crate::error::{Result, SysprepError};

/// The key types sshd makes with `ssh-keygen -A` (DSA is gone from OpenSSH).
pub(crate) const KEY_TYPES: [&str; 3] = ["rsa", "ecdsa", "ed25519"];

/// A key pair as sshd names it in `/etc/ssh`.
pub(crate) struct HostKey {
    /// `ssh_host_ed25519_key`; the public half is this name with `.pub`.
    pub name: String,
    pub private: Vec<u8>,
    pub public: Vec<u8>,
}

/// Makes one key of each of `types` (names from [`KEY_TYPES`]) with `comment`, all at once (an
/// RSA key's prime search dominates; the others are made beside it). Each type is made on its
/// own (not with `ssh-keygen -A`) so the clone gets the types its template had, and the comment
/// names the clone rather than the host corral runs on.
pub(crate) fn generate(types: &[&str], comment: &str) -> Result<Vec<HostKey>> {
    let dir = tempfile::tempdir().map_err(|source| SysprepError::Scratch {
        dir: std::env::temp_dir(),
        source,
    })?;
    std::thread::scope(|scope| {
        let jobs: Vec<_> = types
            .iter()
            .map(|key_type| scope.spawn(|| generate_one(dir.path(), key_type, comment)))
            .collect();
        jobs.into_iter()
            .map(|job| {
                job.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Makes one key of `key_type` in `dir` and reads it back.
fn generate_one(dir: &std::path::Path, key_type: &str, comment: &str) -> Result<HostKey> {
    let name = format!("ssh_host_{key_type}_key");
    let path = dir.join(&name);
    SSH_KEYGEN.run_ok([
        "-q".as_ref(),
        "-t".as_ref(),
        key_type.as_ref(),
        "-N".as_ref(),
        "".as_ref(),
        "-C".as_ref(),
        comment.as_ref(),
        "-f".as_ref(),
        path.as_os_str(),
    ])?;
    let read = |path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|source| SysprepError::Scratch { dir: path, source })
    };
    Ok(HostKey {
        private: read(path.clone())?,
        public: read(path.with_extension("pub"))?,
        name,
    })
}
