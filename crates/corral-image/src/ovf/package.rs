//! An OVF package: an `.ova` (a tar of the envelope, an optional manifest and certificate, and
//! the disk files) or an `.ovf` with its files beside it. [`Package::open`] reads only the
//! envelope; [`Package::fetch`] brings the files a system needs into a directory (from an OVA;
//! an `.ovf`'s files are used where they are) and checks them against the manifest. Members
//! must be plain files at the archive's top level: a path (`..`, `/`, a subdirectory), a link
//! or a device refuses the whole package.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use corral_error::PathIoError;

use super::envelope::{self, Envelope, MAX_ENVELOPE_BYTES};
use super::error::OvfError;
use super::manifest::{self, Digests, FileDigests, MAX_MANIFEST_BYTES};
use crate::member::{self, MemberError};
use crate::progress::{Progress, ProgressReader};

/// A disk file bigger than this is refused (corral-disk's largest virtual size, 1 TiB, plus
/// metadata).
const MAX_DISK_FILE: u64 = (1 << 40) + (1 << 30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A tar archive.
    Ova,
    /// An `.ovf` file, its other files beside it.
    Directory,
}

/// A package whose envelope has been read.
#[derive(Debug)]
pub struct Package {
    path: PathBuf,
    kind: Kind,
    /// The envelope's file name (its member name in an OVA).
    envelope_name: String,
    envelope_digests: FileDigests,
    pub envelope: Envelope,
}

/// What [`Package::fetch`] found.
#[derive(Debug)]
pub struct Fetched {
    /// Where each wanted file (by `href`) is now.
    pub files: HashMap<String, PathBuf>,
    /// Whether the files were copied out (of an OVA) and are the caller's to remove.
    pub extracted: bool,
    /// Whether a manifest was there (and so verified every file).
    pub verified: bool,
    /// Whether the package carries a certificate (its signature is not checked).
    pub signed: bool,
}

impl Package {
    /// Opens `path` (`.ova` or `.ovf`, told apart by content) and parses its envelope.
    pub fn open(path: &Path) -> Result<Self, OvfError> {
        let read_error =
            |source| OvfError::Io(PathIoError::new("read", path.to_path_buf(), source));
        let mut start = Vec::new();
        File::open(path)
            .and_then(|file| file.take(512).read_to_end(&mut start))
            .map_err(read_error)?;
        let is_tar = start.get(257..262) == Some(b"ustar".as_slice());
        let (kind, envelope_name, bytes) = if is_tar {
            let file = File::open(path).map_err(read_error)?;
            let (name, bytes) = first_envelope(path, file)?;
            (Kind::Ova, name, bytes)
        } else {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = start.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&start);
            if !text.trim_ascii_start().starts_with(b"<") {
                return Err(OvfError::NotAPackage {
                    path: path.to_path_buf(),
                });
            }
            let file = File::open(path).map_err(read_error)?;
            let bytes = read_bounded(path, &name, file, MAX_ENVELOPE_BYTES)?;
            (Kind::Directory, name, bytes)
        };
        let envelope = envelope::parse(&bytes).map_err(|source| OvfError::Envelope {
            path: path.to_path_buf(),
            source,
        })?;
        for file in &envelope.files {
            if !plain_name(&file.href) {
                return Err(OvfError::UnsafeReference {
                    path: path.to_path_buf(),
                    href: file.href.clone(),
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            kind,
            envelope_name,
            envelope_digests: FileDigests::of(&bytes),
            envelope,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings the files named by `hrefs` where they can be read: from an OVA into `dir` (an
    /// existing private directory; what was written is removed on error), from beside an `.ovf`
    /// nowhere (they are read in place). Every file is checked against the manifest when there
    /// is one, and against its declared size.
    pub fn fetch(
        &self,
        hrefs: &[&str],
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Fetched, OvfError> {
        let mut written = Vec::new();
        let fetched = match self.kind {
            Kind::Ova => self.fetch_ova(hrefs, dir, progress, &mut written),
            Kind::Directory => self.fetch_beside(hrefs, progress),
        };
        if fetched.is_err() {
            for file in written {
                let _ = std::fs::remove_file(file);
            }
        }
        fetched
    }

    fn fetch_ova(
        &self,
        hrefs: &[&str],
        dir: &Path,
        progress: &dyn Progress,
        written: &mut Vec<PathBuf>,
    ) -> Result<Fetched, OvfError> {
        let path = &self.path;
        let read_error =
            |source| OvfError::Io(PathIoError::new("read", path.to_path_buf(), source));
        let file = File::open(path).map_err(read_error)?;
        let size = file.metadata().map_err(read_error)?.len();
        progress.begin("reading the package", Some(size));
        let mut archive = tar::Archive::new(BufReader::new(ProgressReader::new(file, progress)));
        let mut members: HashMap<String, FileDigests> = HashMap::new();
        let mut files = HashMap::new();
        let mut manifest = None;
        let mut signed = false;
        for entry in archive.entries().map_err(read_error)? {
            let mut entry = entry.map_err(read_error)?;
            let Some(name) = member_name(path, &entry)? else {
                continue;
            };
            if members.contains_key(&name) {
                return Err(OvfError::Duplicate {
                    path: path.to_path_buf(),
                    member: name,
                });
            }
            let member = if let Some(href) = hrefs.iter().find(|h| **h == name) {
                let target = dir.join(format!(".package-{}", files.len()));
                written.push(target.clone());
                let expected = entry.size();
                let digests = copy_out(path, &name, &mut entry, expected, &target)?;
                files.insert(href.to_string(), target);
                digests
            } else if name == self.envelope_name || name.ends_with(".ovf") {
                let bytes = read_bounded(path, &name, &mut entry, MAX_ENVELOPE_BYTES)?;
                if name != self.envelope_name {
                    return Err(OvfError::Duplicate {
                        path: path.to_path_buf(),
                        member: "an .ovf envelope".into(),
                    });
                }
                FileDigests::of(&bytes)
            } else if name.ends_with(".mf") {
                if manifest.is_some() {
                    return Err(OvfError::Duplicate {
                        path: path.to_path_buf(),
                        member: "a .mf manifest".into(),
                    });
                }
                let bytes = read_bounded(path, &name, &mut entry, MAX_MANIFEST_BYTES)?;
                let digests = FileDigests::of(&bytes);
                manifest = Some(bytes);
                digests
            } else {
                signed |= name.ends_with(".cert");
                // Other members are only hashed: a manifest may list them.
                hash_reader(path, &mut entry)?
            };
            members.insert(name, member);
        }
        self.check(hrefs, &members, manifest.as_deref())?;
        self.check_sizes(&files)?;
        Ok(Fetched {
            files,
            extracted: true,
            verified: manifest.is_some(),
            signed,
        })
    }

    fn fetch_beside(&self, hrefs: &[&str], progress: &dyn Progress) -> Result<Fetched, OvfError> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let stem = self
            .envelope_name
            .strip_suffix(".ovf")
            .unwrap_or(&self.envelope_name);
        let manifest_path = dir.join(format!("{stem}.mf"));
        let manifest = match open_nofollow(&manifest_path) {
            Ok(file) => Some(read_bounded(
                &self.path,
                &format!("{stem}.mf"),
                file,
                MAX_MANIFEST_BYTES,
            )?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(OvfError::Io(PathIoError::new(
                    "read",
                    manifest_path,
                    source,
                )))
            }
        };
        let mut members = HashMap::new();
        let mut files = HashMap::new();
        // Only what the manifest lists or the system needs is hashed.
        let listed = match &manifest {
            Some(text) => manifest::parse(text).map_err(|source| OvfError::Manifest {
                path: self.path.clone(),
                source,
            })?,
            None => Vec::new(),
        };
        let mut names: Vec<&str> = hrefs.to_vec();
        names.extend(listed.iter().map(|e| e.file.as_str()));
        for name in names {
            if members.contains_key(name) || name == self.envelope_name {
                continue;
            }
            if !plain_name(name) {
                return Err(OvfError::UnsafeReference {
                    path: self.path.clone(),
                    href: name.to_string(),
                });
            }
            let file_path = dir.join(name);
            let file = match open_nofollow(&file_path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(OvfError::Io(PathIoError::new("read", file_path, source)))
                }
            };
            let size = file.metadata().map(|m| m.len()).ok();
            progress.begin(&format!("checking {name}"), size);
            let digests = hash_reader(&file_path, ProgressReader::new(file, progress))?;
            if hrefs.contains(&name) {
                files.insert(name.to_string(), file_path);
            }
            members.insert(name.to_string(), digests);
        }
        self.check(hrefs, &members, manifest.as_deref())?;
        self.check_sizes(&files)?;
        Ok(Fetched {
            files,
            extracted: false,
            verified: manifest.is_some(),
            signed: dir.join(format!("{stem}.cert")).is_file(),
        })
    }

    /// Every wanted file is there; with a manifest, every file it lists is there with its digest,
    /// and it lists the envelope and every wanted file.
    fn check(
        &self,
        hrefs: &[&str],
        members: &HashMap<String, FileDigests>,
        manifest: Option<&[u8]>,
    ) -> Result<(), OvfError> {
        let path = || self.path.clone();
        for href in hrefs {
            if !members.contains_key(*href) {
                return Err(OvfError::MissingFile {
                    path: path(),
                    file: href.to_string(),
                    by: "envelope",
                });
            }
        }
        if let Some(digests) = members.get(&self.envelope_name) {
            // Read twice from an OVA: the definition was made from the first reading.
            if *digests != self.envelope_digests {
                return Err(OvfError::Changed { path: path() });
            }
        }
        let Some(text) = manifest else {
            return Ok(());
        };
        let entries = manifest::parse(text).map_err(|source| OvfError::Manifest {
            path: path(),
            source,
        })?;
        for entry in &entries {
            let digests = if entry.file == self.envelope_name {
                &self.envelope_digests
            } else {
                match members.get(&entry.file) {
                    Some(digests) => digests,
                    None => {
                        return Err(OvfError::MissingFile {
                            path: path(),
                            file: entry.file.clone(),
                            by: "manifest",
                        })
                    }
                }
            };
            if digests.get(entry.algorithm) != entry.digest {
                return Err(OvfError::DigestMismatch {
                    path: path(),
                    file: entry.file.clone(),
                    algorithm: entry.algorithm,
                });
            }
        }
        for file in hrefs.iter().copied().chain([self.envelope_name.as_str()]) {
            if !entries.iter().any(|e| e.file == file) {
                return Err(OvfError::NotInManifest {
                    path: path(),
                    file: file.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Each file's size is what `References` declares, when it declares one.
    fn check_sizes(&self, files: &HashMap<String, PathBuf>) -> Result<(), OvfError> {
        for reference in &self.envelope.files {
            let (Some(declared), Some(file)) = (reference.size, files.get(&reference.href)) else {
                continue;
            };
            let actual = std::fs::metadata(file)
                .map_err(|source| OvfError::Io(PathIoError::new("read", file.clone(), source)))?
                .len();
            if actual != declared {
                return Err(OvfError::SizeMismatch {
                    path: self.path.clone(),
                    file: reference.href.clone(),
                    declared,
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// A file name with no path in it.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// The name of a plain-file member, `None` for what is skipped (the archive's `./` directory),
/// an error for anything else.
fn member_name<R: Read>(path: &Path, entry: &tar::Entry<R>) -> Result<Option<String>, OvfError> {
    let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let name = raw.strip_prefix("./").unwrap_or(&raw);
    let kind = entry.header().entry_type();
    let top_directory = kind.is_dir() && (name.is_empty() || name == "." || name == "./");
    // A pax global header (git archive writes one) only annotates the archive.
    if top_directory || kind.is_pax_global_extensions() {
        return Ok(None);
    }
    if !kind.is_file() || !plain_name(name) {
        return Err(OvfError::UnsafeMember {
            path: path.to_path_buf(),
            member: raw.clone(),
        });
    }
    Ok(Some(name.to_string()))
}

/// The first `.ovf` member of an OVA and its bytes; the members before it must be safe too.
fn first_envelope(path: &Path, file: File) -> Result<(String, Vec<u8>), OvfError> {
    let read_error = |source| OvfError::Io(PathIoError::new("read", path.to_path_buf(), source));
    let mut archive = tar::Archive::new(BufReader::new(file));
    for entry in archive.entries().map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let Some(name) = member_name(path, &entry)? else {
            continue;
        };
        if name.ends_with(".ovf") {
            let bytes = read_bounded(path, &name, entry, MAX_ENVELOPE_BYTES)?;
            return Ok((name, bytes));
        }
    }
    Err(OvfError::NoEnvelope {
        path: path.to_path_buf(),
    })
}

fn read_bounded(
    path: &Path,
    name: &str,
    reader: impl Read,
    limit: usize,
) -> Result<Vec<u8>, OvfError> {
    member::read_small(reader, limit as u64).map_err(|e| member_error(path, name, None, e))
}

fn open_nofollow(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn hash_reader(path: &Path, mut reader: impl Read) -> Result<FileDigests, OvfError> {
    let mut digests = Digests::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|source| OvfError::Io(PathIoError::new("read", path.to_path_buf(), source)))?;
        if n == 0 {
            return Ok(digests.finish());
        }
        digests.update(&buf[..n]);
    }
}

/// Copies member `name` (`expected` bytes, as its header says) to a new file at `target`,
/// bounded, returning its digests.
fn copy_out(
    path: &Path,
    name: &str,
    entry: &mut impl Read,
    expected: u64,
    target: &Path,
) -> Result<FileDigests, OvfError> {
    let mut digests = Digests::default();
    member::copy_to_new_file(entry, expected, MAX_DISK_FILE, target, |chunk| {
        digests.update(chunk)
    })
    .map_err(|e| member_error(path, name, Some(target), e))?;
    Ok(digests.finish())
}

/// `error` of member `name` of the package at `path` (copied to `target`).
fn member_error(path: &Path, name: &str, target: Option<&Path>, error: MemberError) -> OvfError {
    match error {
        MemberError::Read(source) => {
            OvfError::Io(PathIoError::new("read", path.to_path_buf(), source))
        }
        MemberError::Write(source) => OvfError::Io(PathIoError::new(
            "write",
            target.unwrap_or(path).to_path_buf(),
            source,
        )),
        MemberError::TooLarge { limit } => OvfError::TooLarge {
            path: path.to_path_buf(),
            file: name.to_string(),
            limit,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_pass() {
        assert!(plain_name("disk1.vmdk"));
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b"] {
            assert!(!plain_name(bad), "{bad}");
        }
    }
}
