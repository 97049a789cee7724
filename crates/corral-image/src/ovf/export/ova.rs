//! Packing an OVA as it is produced, in one pass over the output: USTAR members in the order
//! OVF asks for (the envelope, then the manifest, then the disks), each disk written straight
//! into the archive by its converter with nothing staged beside it.
//!
//! Two things are known only at the end, and their places are kept until then: a streamed
//! member's size (its header is a zeroed block, filled in once its data is written) and the
//! manifest, which precedes the disks but holds their digests (its length is fixed by the names
//! it will list, so it is reserved as zeroes and written last). Both are filled with positioned
//! writes into the output file; every byte of a member is hashed (SHA-256) as it goes out.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

const BLOCK: u64 = 512;

/// An OVA being written into `file` from its start.
pub struct OvaWriter<'a> {
    file: &'a File,
    out: BufWriter<&'a File>,
    /// Bytes handed to `out` so far: where the next byte lands.
    position: u64,
    mtime: u64,
    /// The member being written.
    open: Option<OpenMember>,
    /// Each finished member's name and SHA-256, in order.
    digests: Vec<(String, String)>,
    manifest: Option<ReservedManifest>,
}

struct OpenMember {
    name: String,
    header_at: u64,
    data_at: u64,
    sha256: Sha256,
}

struct ReservedManifest {
    /// Where its data starts.
    at: u64,
    /// The files it lists, in order.
    files: Vec<String>,
    length: u64,
}

/// One manifest line, in ovftool's form.
fn manifest_line(file: &str, sha256: &str) -> String {
    format!("SHA256({file})= {sha256}\n")
}

impl<'a> OvaWriter<'a> {
    /// Writes into `file` (new and empty); members get `mtime` (seconds since the epoch).
    pub fn new(file: &'a File, mtime: u64) -> Self {
        Self {
            file,
            out: BufWriter::with_capacity(1 << 20, file),
            position: 0,
            mtime,
            open: None,
            digests: Vec::new(),
            manifest: None,
        }
    }

    /// A member held in memory.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.begin(name)?;
        self.write_all(bytes)?;
        self.end()
    }

    /// Reserves member `name`, the manifest: one `SHA256(FILE)= HEX` line for each of `files`
    /// (written before and after it), filled in by [`OvaWriter::finish`].
    pub fn reserve_manifest(&mut self, name: &str, files: &[&str]) -> io::Result<()> {
        let length: u64 = files
            .iter()
            .map(|file| manifest_line(file, &"0".repeat(64)).len() as u64)
            .sum();
        self.header(name, length)?;
        let at = self.position;
        self.raw(&vec![0; length as usize])?;
        self.pad()?;
        self.manifest = Some(ReservedManifest {
            at,
            files: files.iter().map(|f| f.to_string()).collect(),
            length,
        });
        Ok(())
    }

    /// Starts member `name`, of a size not known yet: its data is what is written to `self`
    /// until [`OvaWriter::end`].
    pub fn begin(&mut self, name: &str) -> io::Result<()> {
        if self.open.is_some() {
            return Err(io::Error::other("a member is already being written"));
        }
        let header_at = self.position;
        self.raw(&[0; BLOCK as usize])?;
        self.open = Some(OpenMember {
            name: name.to_string(),
            header_at,
            data_at: self.position,
            sha256: Sha256::new(),
        });
        Ok(())
    }

    /// Ends the member begun last: pads it and writes its header in the place kept for it.
    pub fn end(&mut self) -> io::Result<()> {
        let member = self
            .open
            .take()
            .ok_or_else(|| io::Error::other("no member is being written"))?;
        let size = self.position - member.data_at;
        self.pad()?;
        // The header's place must be on disk before it is overwritten there.
        self.out.flush()?;
        let header = ustar_header(&member.name, size, self.mtime)?;
        self.file
            .write_all_at(header.as_bytes(), member.header_at)?;
        self.digests
            .push((member.name, hex::encode(member.sha256.finalize())));
        Ok(())
    }

    /// Ends the archive: its two zero blocks, then the manifest in its place, then everything
    /// flushed to the file (not synced: the caller decides).
    pub fn finish(mut self) -> io::Result<()> {
        if self.open.is_some() {
            return Err(io::Error::other("the last member was not ended"));
        }
        self.raw(&[0; 2 * BLOCK as usize])?;
        self.out.flush()?;
        if let Some(manifest) = &self.manifest {
            let mut text = String::new();
            for file in &manifest.files {
                let (_, sha256) = self
                    .digests
                    .iter()
                    .find(|(name, _)| name == file)
                    .ok_or_else(|| {
                        io::Error::other(format!(
                            "the manifest lists {file}, which was not written"
                        ))
                    })?;
                text.push_str(&manifest_line(file, sha256));
            }
            if text.len() as u64 != manifest.length {
                return Err(io::Error::other(
                    "the manifest does not fit its reserved place",
                ));
            }
            self.file.write_all_at(text.as_bytes(), manifest.at)?;
        }
        Ok(())
    }

    /// Bytes outside any member's data (headers, padding): not hashed.
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn header(&mut self, name: &str, size: u64) -> io::Result<()> {
        let header = ustar_header(name, size, self.mtime)?;
        self.raw(header.as_bytes())
    }

    /// Zeroes up to the next block boundary.
    fn pad(&mut self) -> io::Result<()> {
        let rest = (BLOCK - self.position % BLOCK) % BLOCK;
        self.raw(&vec![0; rest as usize])
    }
}

/// The data of the member begun last: written and hashed.
impl Write for OvaWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let member = self
            .open
            .as_mut()
            .ok_or_else(|| io::Error::other("no member is being written"))?;
        let n = self.out.write(buf)?;
        member.sha256.update(&buf[..n]);
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A plain file's USTAR header: mode 0644, owned by 0:0. A size past USTAR's 8 GiB is written
/// in the base-256 form GNU tar, bsdtar and VirtualBox read.
fn ustar_header(name: &str, size: u64, mtime: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_cksum();
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn members_come_in_order_with_their_sizes_and_the_manifest_filled_in() {
        let file = tempfile::tempfile().unwrap();
        let mut ova = OvaWriter::new(&file, 1_700_000_000);
        ova.add("vm.ovf", b"<Envelope/>").unwrap();
        ova.reserve_manifest("vm.mf", &["vm.ovf", "disk1.vmdk"])
            .unwrap();
        ova.begin("disk1.vmdk").unwrap();
        let data = vec![7u8; 1000];
        ova.write_all(&data).unwrap();
        ova.end().unwrap();
        ova.finish().unwrap();

        (&file).rewind().unwrap();
        let mut archive = tar::Archive::new(&file);
        let mut seen = Vec::new();
        for entry in archive.entries_with_seek().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            seen.push((name, bytes));
        }
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["vm.ovf", "vm.mf", "disk1.vmdk"]);
        assert_eq!(seen[2].1, data);
        let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
        let expected = format!(
            "SHA256(vm.ovf)= {}\nSHA256(disk1.vmdk)= {}\n",
            sha(b"<Envelope/>"),
            sha(&data)
        );
        assert_eq!(String::from_utf8(seen[1].1.clone()).unwrap(), expected);
    }

    #[test]
    fn a_manifest_naming_a_file_never_written_is_an_error() {
        let file = tempfile::tempfile().unwrap();
        let mut ova = OvaWriter::new(&file, 0);
        ova.reserve_manifest("vm.mf", &["missing.vmdk"]).unwrap();
        assert!(ova.finish().is_err());
    }
}
