//! Compiled seccomp programs kept by their profile's content: one file per profile, named by a
//! digest of the profile, the libseccomp version and the architecture, holding the program after
//! a digest of it. A file whose digest does not match (a torn write, a disk error) is never
//! loaded: it is compiled again and replaced. A lock on the directory lets one process compile
//! while the others wait.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest, Sha256};

/// Bumped when the file layout or what the program is compiled from changes.
const FORMAT: &str = "corral seccomp cache 1";
pub(super) const DIGEST_LEN: usize = 32;

/// The cache key of `profile`: what it compiles to depends on it, on libseccomp and on the
/// architecture, so all three name the file.
pub fn key(profile: &LinuxSeccomp) -> String {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT);
    if let Ok(version) = libseccomp::ScmpVersion::current() {
        hasher.update(format!(
            "\nlibseccomp {}.{}.{}",
            version.major, version.minor, version.micro
        ));
    }
    hasher.update(format!("\n{}\n", std::env::consts::ARCH));
    // Serialising a spec struct cannot fail; were it to, the key still names the rest.
    hasher.update(serde_json::to_vec(profile).unwrap_or_default());
    hex::encode(hasher.finalize())
}

fn path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.bpf"))
}

/// The program kept under `key`, if there is one whose digest matches.
pub fn read(dir: &Path, key: &str) -> Option<Vec<u8>> {
    let file = std::fs::read(path(dir, key)).ok()?;
    if file.len() <= DIGEST_LEN {
        return None;
    }
    let (digest, program) = file.split_at(DIGEST_LEN);
    if Sha256::digest(program).as_slice() != digest {
        tracing::warn!(
            "seccomp cache: {} does not match its digest; compiling the profile again",
            path(dir, key).display()
        );
        return None;
    }
    Some(program.to_vec())
}

/// Holds the cache's lock (on its directory) until dropped, so that one process compiles a
/// program while others wait for it; `None` (no waiting) when the lock cannot be taken.
pub fn lock(dir: &Path) -> Option<Flock<File>> {
    let file = corral_host::atomic::create_private_dir_all(dir)
        .and_then(|()| File::open(dir))
        .inspect_err(|err| tracing::warn!("seccomp cache: cannot open {}: {err}", dir.display()))
        .ok()?;
    Flock::lock(file, FlockArg::LockExclusive).ok()
}

/// Keeps `program` under `key`. A failure is logged and otherwise ignored: the next container
/// compiles the profile again.
pub fn write(dir: &Path, key: &str, program: &[u8]) {
    let mut file = Sha256::digest(program).to_vec();
    file.extend_from_slice(program);
    if let Err(err) = corral_host::atomic::write_file(&path(dir, key), &file, 0o600) {
        tracing::warn!("seccomp cache: {}", corral_host::error_chain(&err));
    }
}
