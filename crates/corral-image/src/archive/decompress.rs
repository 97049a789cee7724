//! Compression detected from the first bytes of a stream, never from a file name.

use std::io::{Cursor, Read};

use super::ArchiveError;

const GZIP: &[u8] = &[0x1f, 0x8b];
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// Where a tar header keeps its magic (`ustar\0` for POSIX, `ustar ` for GNU).
const TAR_MAGIC: std::ops::Range<usize> = 257..262;
const BLOCK: usize = 512;
/// The memory the xz decoder may use: a crafted header cannot make it allocate gigabytes.
const XZ_MEMORY_LIMIT: u64 = 512 << 20;

/// Returns a reader of the tar stream inside `reader`: gzip (one or more members), xz, zstd or
/// plain tar, recognised by their magic bytes. The bytes looked at are not lost: they are
/// replayed in front of the rest of the stream.
pub fn decompress<'a>(
    reader: impl Read + Send + 'a,
) -> Result<Box<dyn Read + Send + 'a>, ArchiveError> {
    let mut reader = reader;
    let mut head = Vec::with_capacity(BLOCK);
    (&mut reader)
        .take(BLOCK as u64)
        .read_to_end(&mut head)
        .map_err(ArchiveError::Read)?;
    if head.is_empty() {
        return Err(ArchiveError::Empty);
    }
    let whole = Cursor::new(head.clone()).chain(reader);
    if head.starts_with(GZIP) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(whole)));
    }
    if head.starts_with(XZ) {
        let stream =
            xz2::stream::Stream::new_stream_decoder(XZ_MEMORY_LIMIT, xz2::stream::CONCATENATED)
                .map_err(|source| ArchiveError::Decompressor {
                    format: "xz",
                    source: source.into(),
                })?;
        return Ok(Box::new(xz2::read::XzDecoder::new_stream(whole, stream)));
    }
    if head.starts_with(ZSTD) {
        let decoder = zstd::stream::read::Decoder::new(whole).map_err(|source| {
            ArchiveError::Decompressor {
                format: "zstd",
                source,
            }
        })?;
        return Ok(Box::new(decoder));
    }
    if looks_like_tar(&head) {
        return Ok(Box::new(whole));
    }
    let magic = head
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(ArchiveError::UnknownCompression { magic })
}

/// A tar stream starts with a header carrying the ustar magic, or an old-style (v7) header with
/// a valid checksum, or the end-of-archive zeros of an empty archive.
fn looks_like_tar(head: &[u8]) -> bool {
    let Some(block) = head.get(..BLOCK) else {
        return false;
    };
    if block.iter().all(|&b| b == 0) || block[TAR_MAGIC] == *b"ustar" {
        return true;
    }
    let header = tar::Header::from_byte_slice(block);
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    header.cksum().is_ok_and(|cksum| cksum == sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: Vec<u8>) -> Result<Vec<u8>, ArchiveError> {
        let mut out = Vec::new();
        decompress(Cursor::new(bytes))?
            .read_to_end(&mut out)
            .unwrap();
        Ok(out)
    }

    fn tar_of(data: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append_data(&mut header, "file", data).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn gzip_xz_zstd_and_plain_tar_are_recognised() {
        use std::io::Write;
        let plain = tar_of(b"hello");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&plain).unwrap();
        let xz = xz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        for compressed in [plain.clone(), gz, xz, zst] {
            assert_eq!(read_all(compressed).unwrap(), plain);
        }
    }

    #[test]
    fn an_unknown_compression_names_its_magic() {
        let err = read_all(b"BZh91AY&SY rest of a bzip2 stream".to_vec()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::UnknownCompression { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("42 5a 68 39"), "{err}");
        assert!(matches!(read_all(Vec::new()), Err(ArchiveError::Empty)));
    }
}
