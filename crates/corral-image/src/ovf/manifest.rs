//! The package manifest (`.mf`): one digest per file, `SHA256(disk1.vmdk)= 3f...` as ovftool
//! writes it or `SHA1 (disk1.vmdk) = 3f...` as VirtualBox does. Every file of a package is
//! hashed with all three algorithms while it is read ([`Digests`]), so the manifest may come
//! first or last.

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// Manifests bigger than this are refused.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
const MAX_ENTRIES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is bigger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("line {line} of the manifest is not `SHA256(FILE)= HEX` (or SHA1, SHA512)")]
    Syntax { line: usize },
    #[error("the manifest has more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error("the manifest lists {file} twice")]
    Duplicate { file: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub file: String,
    pub algorithm: Algorithm,
    /// Lower-case hex.
    pub digest: String,
}

/// Parses manifest text.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    let mut entries: Vec<Entry> = Vec::new();
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let syntax = || ManifestError::Syntax { line: index + 1 };
        let line = std::str::from_utf8(line).map_err(|_| syntax())?.trim();
        if line.is_empty() {
            continue;
        }
        let (algorithm, rest) = if let Some(rest) = line.strip_prefix("SHA256") {
            (Algorithm::Sha256, rest)
        } else if let Some(rest) = line.strip_prefix("SHA512") {
            (Algorithm::Sha512, rest)
        } else if let Some(rest) = line.strip_prefix("SHA1") {
            (Algorithm::Sha1, rest)
        } else {
            return Err(syntax());
        };
        let rest = rest.trim_start().strip_prefix('(').ok_or_else(syntax)?;
        let (file, digest) = rest.rsplit_once(')').ok_or_else(syntax)?;
        let digest = digest
            .trim_start()
            .strip_prefix('=')
            .ok_or_else(syntax)?
            .trim()
            .to_ascii_lowercase();
        let length = match algorithm {
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        };
        if file.is_empty()
            || digest.len() != length
            || !digest.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(syntax());
        }
        if entries.len() == MAX_ENTRIES {
            return Err(ManifestError::TooMany);
        }
        if entries.iter().any(|e| e.file == file) {
            return Err(ManifestError::Duplicate {
                file: file.to_string(),
            });
        }
        entries.push(Entry {
            file: file.to_string(),
            algorithm,
            digest,
        });
    }
    Ok(entries)
}

/// A file's digests, computed as it streams by.
#[derive(Clone, Default)]
pub struct Digests {
    sha1: Sha1,
    sha256: Sha256,
    sha512: Sha512,
}

/// The finished digests of a file, lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDigests {
    pub sha1: String,
    pub sha256: String,
    pub sha512: String,
}

impl Digests {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha1.update(bytes);
        self.sha256.update(bytes);
        self.sha512.update(bytes);
    }

    pub fn finish(self) -> FileDigests {
        FileDigests {
            sha1: hex::encode(self.sha1.finalize()),
            sha256: hex::encode(self.sha256.finalize()),
            sha512: hex::encode(self.sha512.finalize()),
        }
    }
}

impl FileDigests {
    pub fn of(bytes: &[u8]) -> Self {
        let mut digests = Digests::default();
        digests.update(bytes);
        digests.finish()
    }

    pub fn get(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Sha1 => &self.sha1,
            Algorithm::Sha256 => &self.sha256,
            Algorithm::Sha512 => &self.sha512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovftool_and_virtualbox_lines_are_read() {
        let sha256 = "a".repeat(64);
        let sha1 = "B".repeat(40);
        let text = format!("SHA256(vm.ovf)= {sha256}\nSHA1 (disk 1.vmdk) = {sha1}\n\n");
        let entries = parse(text.as_bytes()).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    file: "vm.ovf".into(),
                    algorithm: Algorithm::Sha256,
                    digest: sha256,
                },
                Entry {
                    file: "disk 1.vmdk".into(),
                    algorithm: Algorithm::Sha1,
                    digest: "b".repeat(40),
                },
            ]
        );
    }

    #[test]
    fn malformed_lines_and_duplicates_are_refused() {
        assert!(matches!(
            parse(b"MD5(vm.ovf)= 00"),
            Err(ManifestError::Syntax { line: 1 })
        ));
        assert!(matches!(
            parse(b"SHA256(vm.ovf)= abcd"),
            Err(ManifestError::Syntax { .. })
        ));
        let line = format!("SHA1(a)= {}\n", "0".repeat(40));
        assert!(matches!(
            parse(line.repeat(2).as_bytes()),
            Err(ManifestError::Duplicate { .. })
        ));
    }

    #[test]
    fn digests_match_known_values() {
        let digests = FileDigests::of(b"abc");
        assert_eq!(digests.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            digests.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
