//! The migration stream's framing: every message is a 12-byte header (magic, protocol version
//! u16, message kind u16, payload length u32, little endian) and its payload. The reader checks
//! the header before it allocates anything, and bounds each kind's length, so a peer sending
//! garbage or a hostile length is refused with one sentence. The VMM's stream ([`Kind`], magic
//! `CMIG`) and the instance-level one of corral-core (its own magic and kinds) share the
//! framing ([`Framing`], [`write_frame`], [`read_frame`]).

use std::io::{ErrorKind, Read, Write};

use crate::snapshot::file::MAX_FILE;
use crate::vstate::memory::PAGE_SIZE;

pub const MAGIC: [u8; 4] = *b"CMIG";
/// Bumped whenever a message changes incompatibly; a peer of another version is refused.
pub const VERSION: u16 = 1;
/// The VMM stream's framing.
const VMM: Framing = Framing {
    magic: MAGIC,
    version: VERSION,
};
const HEADER_LEN: usize = 12;
/// The longest token accepted.
pub const MAX_TOKEN: usize = 1024;
/// Pages per `Pages` message: 1 MiB of memory.
pub const PAGES_PER_BATCH: usize = 256;
/// A page in a batch: its guest address (u64) then its bytes.
const PAGE_ENTRY: usize = 8 + PAGE_SIZE;
const MAX_CONFIG: usize = 1 << 20;
/// The longest `Error` message.
pub const MAX_ERROR: usize = 4096;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Source → destination, first: the token.
    Hello,
    /// Destination → source: the token matched, send the VM.
    Ready,
    /// Source → destination: the VM's configuration (JSON).
    Config,
    /// Source → destination: a batch of pages (count u32, then address u64 + 4 KiB each).
    Pages,
    /// Source → destination, last: the VM's state, framed as a snapshot `state` file.
    State,
    /// Destination → source: the VM runs here now.
    Running,
    /// Either way: why the sender gives up (UTF-8).
    Error,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Hello,
        Kind::Ready,
        Kind::Config,
        Kind::Pages,
        Kind::State,
        Kind::Running,
        Kind::Error,
    ];

    fn wire(self) -> u16 {
        match self {
            Kind::Hello => 1,
            Kind::Ready => 2,
            Kind::Config => 3,
            Kind::Pages => 4,
            Kind::State => 5,
            Kind::Running => 6,
            Kind::Error => 7,
        }
    }

    fn from_wire(value: u16) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.wire() == value)
    }

    /// The longest payload a message of this kind may have.
    fn max_len(self) -> usize {
        match self {
            Kind::Hello => MAX_TOKEN,
            Kind::Ready | Kind::Running => 0,
            Kind::Config => MAX_CONFIG,
            Kind::Pages => 4 + PAGES_PER_BATCH * PAGE_ENTRY,
            Kind::State => MAX_FILE as usize,
            Kind::Error => MAX_ERROR,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the migration connection failed")]
    Io(#[source] std::io::Error),
    #[error("the migration peer closed the connection")]
    Closed,
    #[error("the migration peer is not a corral migration endpoint (wrong magic)")]
    Magic,
    #[error(
        "the migration peer speaks protocol version {found}; this corral speaks version \
         {speaks} only: migrate between the same corral versions"
    )]
    Version { found: u16, speaks: u16 },
    #[error("the migration peer sent a message of unknown kind {0}")]
    UnknownKind(u16),
    #[error("the migration peer sent a message of kind {kind} of {len} bytes, more than {max}")]
    TooLong { kind: u16, len: usize, max: usize },
    #[error("the migration peer sent a {found:?} message where {expected:?} belongs")]
    Unexpected { expected: Kind, found: Kind },
    #[error("the migration peer sent a malformed page batch ({0})")]
    BadPages(&'static str),
    #[error("the migration peer gave up: {0}")]
    Refused(String),
}

fn io_error(err: std::io::Error) -> ProtocolError {
    match err.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::BrokenPipe
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted => ProtocolError::Closed,
        _ => ProtocolError::Io(err),
    }
}

/// What tells one protocol's messages from another's: its magic and version.
#[derive(Clone, Copy, Debug)]
pub struct Framing {
    pub magic: [u8; 4],
    pub version: u16,
}

/// Writes one message of kind `kind` (on the wire) framed as `framing` says.
pub fn write_frame(
    stream: &mut impl Write,
    framing: Framing,
    kind: u16,
    payload: &[u8],
) -> Result<(), ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&framing.magic);
    header[4..6].copy_from_slice(&framing.version.to_le_bytes());
    header[6..8].copy_from_slice(&kind.to_le_bytes());
    header[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    stream.write_all(&header).map_err(io_error)?;
    stream.write_all(payload).map_err(io_error)
}

/// Reads one message framed as `framing` says: its kind (on the wire) and payload, once the
/// header is checked. `max_len` bounds each known kind's payload (`None`: an unknown kind).
pub fn read_frame(
    stream: &mut impl Read,
    framing: Framing,
    max_len: impl Fn(u16) -> Option<usize>,
) -> Result<(u16, Vec<u8>), ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).map_err(io_error)?;
    if header[0..4] != framing.magic {
        return Err(ProtocolError::Magic);
    }
    let field = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
    let version = field(4);
    if version != framing.version {
        return Err(ProtocolError::Version {
            found: version,
            speaks: framing.version,
        });
    }
    let kind = field(6);
    let max = max_len(kind).ok_or(ProtocolError::UnknownKind(kind))?;
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if len > max {
        return Err(ProtocolError::TooLong { kind, len, max });
    }
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).map_err(io_error)?;
    Ok((kind, payload))
}

/// Writes one message.
pub fn write(stream: &mut impl Write, kind: Kind, payload: &[u8]) -> Result<(), ProtocolError> {
    debug_assert!(payload.len() <= kind.max_len());
    write_frame(stream, VMM, kind.wire(), payload)
}

/// Reads one message: its kind and payload, once the header is checked.
pub fn read(stream: &mut impl Read) -> Result<(Kind, Vec<u8>), ProtocolError> {
    let (wire, payload) = read_frame(stream, VMM, |wire| Kind::from_wire(wire).map(Kind::max_len))?;
    // Known: `read_frame` refuses a kind `max_len` does not know.
    let kind = Kind::from_wire(wire).ok_or(ProtocolError::UnknownKind(wire))?;
    Ok((kind, payload))
}

/// Reads one message that must be of `expected` kind; an `Error` message is the peer's refusal.
pub fn expect(stream: &mut impl Read, expected: Kind) -> Result<Vec<u8>, ProtocolError> {
    match read(stream)? {
        (kind, payload) if kind == expected => Ok(payload),
        (Kind::Error, message) => Err(ProtocolError::Refused(
            String::from_utf8_lossy(&message).into_owned(),
        )),
        (found, _) => Err(ProtocolError::Unexpected { expected, found }),
    }
}

/// Tells the peer why this end gives up (best effort: it may be gone).
pub fn send_error(stream: &mut impl Write, message: &str) {
    let mut end = message.len().min(MAX_ERROR);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let _ = write(stream, Kind::Error, &message.as_bytes()[..end]);
}

/// A `Pages` payload being filled.
pub struct PageBatch(Vec<u8>);

impl Default for PageBatch {
    fn default() -> Self {
        PageBatch(vec![0; 4])
    }
}

impl PageBatch {
    pub fn len(&self) -> usize {
        (self.0.len() - 4) / PAGE_ENTRY
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.len() == PAGES_PER_BATCH
    }

    pub fn push(&mut self, address: u64, page: &[u8]) {
        debug_assert!(page.len() == PAGE_SIZE && !self.is_full());
        self.0.extend_from_slice(&address.to_le_bytes());
        self.0.extend_from_slice(page);
    }

    /// The payload, ready to write; the batch is empty again.
    pub fn take(&mut self) -> Vec<u8> {
        let count = self.len() as u32;
        self.0[0..4].copy_from_slice(&count.to_le_bytes());
        std::mem::take(self).0
    }
}

/// The pages of a `Pages` payload: (guest address, 4 KiB), each address page-aligned.
pub fn pages(payload: &[u8]) -> Result<impl Iterator<Item = (u64, &[u8])>, ProtocolError> {
    let (count, entries) = payload
        .split_first_chunk::<4>()
        .ok_or(ProtocolError::BadPages("no page count"))?;
    let count = u32::from_le_bytes(*count) as usize;
    if count > PAGES_PER_BATCH || entries.len() != count * PAGE_ENTRY {
        return Err(ProtocolError::BadPages(
            "its length does not match its page count",
        ));
    }
    let entries = entries.chunks_exact(PAGE_ENTRY).map(|entry| {
        let (address, page) = entry.split_at(8);
        let address = u64::from_le_bytes(address.try_into().unwrap_or_default());
        (address, page)
    });
    if entries
        .clone()
        .any(|(address, _)| address % PAGE_SIZE as u64 != 0)
    {
        return Err(ProtocolError::BadPages("an address is not page-aligned"));
    }
    Ok(entries)
}

/// Whether `given` equals `expected`, in a time that does not depend on where they differ.
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = u8::from(given.len() != expected.len());
    for (index, byte) in expected.iter().enumerate() {
        difference |= byte ^ given.get(index).copied().unwrap_or(!byte);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        write(&mut bytes, kind, payload).unwrap();
        bytes
    }

    fn refused(bytes: &[u8]) -> ProtocolError {
        read(&mut &bytes[..]).unwrap_err()
    }

    #[test]
    fn a_message_reads_back_as_written() {
        let bytes = framed(Kind::Hello, b"secret");
        assert_eq!(bytes.len(), HEADER_LEN + 6);
        let (kind, payload) = read(&mut &bytes[..]).unwrap();
        assert_eq!((kind, payload.as_slice()), (Kind::Hello, &b"secret"[..]));
    }

    #[test]
    fn wrong_magic_other_version_and_unknown_kind_are_refused() {
        let good = framed(Kind::Ready, b"");
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(matches!(refused(&magic), ProtocolError::Magic));
        let mut version = good.clone();
        version[4..6].copy_from_slice(&2u16.to_le_bytes());
        let err = refused(&version);
        assert!(matches!(err, ProtocolError::Version { found: 2, .. }));
        assert!(err.to_string().contains("version 2;"), "{err}");
        let mut kind = good.clone();
        kind[6..8].copy_from_slice(&99u16.to_le_bytes());
        assert!(matches!(refused(&kind), ProtocolError::UnknownKind(99)));
    }

    #[test]
    fn a_length_beyond_its_kinds_bound_is_refused_before_reading_it() {
        let mut bytes = framed(Kind::Hello, b"");
        bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = refused(&bytes);
        assert!(
            matches!(err, ProtocolError::TooLong { kind: 1, len, max } if len == u32::MAX as usize && max == MAX_TOKEN),
            "{err}"
        );
        let mut ready = framed(Kind::Ready, b"");
        ready[8] = 1;
        assert!(matches!(refused(&ready), ProtocolError::TooLong { .. }));
    }

    #[test]
    fn truncated_streams_are_a_closed_connection() {
        let bytes = framed(Kind::Config, b"{\"memory\":1}");
        for cut in [0, 5, HEADER_LEN, bytes.len() - 1] {
            assert!(
                matches!(refused(&bytes[..cut]), ProtocolError::Closed),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_error_message_is_the_peers_refusal_and_other_kinds_are_unexpected() {
        let bytes = framed(Kind::Error, b"the token does not match");
        let err = expect(&mut &bytes[..], Kind::Ready).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the migration peer gave up: the token does not match"
        );
        let bytes = framed(Kind::State, b"");
        assert!(matches!(
            expect(&mut &bytes[..], Kind::Ready).unwrap_err(),
            ProtocolError::Unexpected {
                expected: Kind::Ready,
                found: Kind::State
            }
        ));
    }

    #[test]
    fn page_batches_round_trip_and_bad_ones_are_refused() {
        let mut batch = PageBatch::default();
        batch.push(0x1000, &[7; PAGE_SIZE]);
        batch.push(0x5000, &[9; PAGE_SIZE]);
        let payload = batch.take();
        assert_eq!(batch.len(), 0);
        let read: Vec<_> = pages(&payload).unwrap().collect();
        assert_eq!(read.len(), 2);
        assert_eq!((read[1].0, read[1].1[0]), (0x5000, 9));

        let mut short = payload.clone();
        short.pop();
        assert!(matches!(pages(&short), Err(ProtocolError::BadPages(_))));
        let mut count = payload.clone();
        count[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(pages(&count), Err(ProtocolError::BadPages(_))));
        let mut unaligned = payload.clone();
        unaligned[4] = 1;
        assert!(matches!(pages(&unaligned), Err(ProtocolError::BadPages(_))));
        assert!(matches!(pages(&[1, 0]), Err(ProtocolError::BadPages(_))));
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
        assert!(!token_matches(b"abcd", b"abc"));
        assert!(!token_matches(b"", b"abc"));
    }
}
