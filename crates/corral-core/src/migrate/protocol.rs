//! The instance-level migration protocol between two corral ends (`corral migrate` and
//! `corral migrate receive`): the VMM stream's framing (`corral_vmm::migration::protocol`) with
//! its own magic, version and kinds. The source authenticates with the token, sends the
//! instance's definition and files; the destination answers with the token of its VMM's
//! incoming socket; then the VMMs' own stream passes through in `Stream` messages (each end
//! relays it to its VMM's unix socket in the instance's runtime directory, where a jailed VMM
//! can reach it); last, the destination says the instance runs there.

use std::io::{Read, Write};

use super::error::MigrateError;
use corral_vmm::migration::protocol::{
    self as vmm_protocol, read_frame, write_frame, Framing, ProtocolError, MAX_ERROR, MAX_TOKEN,
};

const FRAMING: Framing = Framing {
    magic: *b"CINM",
    version: 1,
};
/// The most bytes of a file in one `File` message (its name comes first).
pub const FILE_CHUNK: usize = 1 << 20;
const MAX_NAME: usize = 255;
/// The most bytes of the VMM stream in one `Stream` message.
pub const STREAM_CHUNK: usize = 256 << 10;
const MAX_DEFINITION: usize = 1 << 20;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Source → destination, first: the token.
    Hello,
    /// Destination → source: the token matched.
    Ready,
    /// Source → destination, after the token: the instance definition (TOML).
    Definition,
    /// Source → destination: a piece of an instance file (name length u16, name, bytes).
    File,
    /// Source → destination, after the definition's files.
    FilesDone,
    /// Destination → source: the instance is made and its VMM waits; the payload is the
    /// token of the VMM hop.
    Accepted,
    /// Either way: bytes of the VMMs' stream.
    Stream,
    /// Either way: the sender's VMM closed its end of the stream.
    StreamEnd,
    /// Destination → source, last: the instance runs there.
    Running,
    /// Either way: why the sender gives up (UTF-8).
    Error,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Hello,
        Kind::Ready,
        Kind::Definition,
        Kind::File,
        Kind::FilesDone,
        Kind::Accepted,
        Kind::Stream,
        Kind::StreamEnd,
        Kind::Running,
        Kind::Error,
    ];

    fn wire(self) -> u16 {
        Kind::ALL
            .iter()
            .position(|kind| *kind == self)
            .map_or(0, |index| index as u16 + 1)
    }

    fn from_wire(wire: u16) -> Option<Kind> {
        Kind::ALL.get(usize::from(wire).checked_sub(1)?).copied()
    }

    fn max_len(self) -> usize {
        match self {
            Kind::Hello | Kind::Accepted => MAX_TOKEN,
            Kind::Ready | Kind::FilesDone | Kind::StreamEnd | Kind::Running => 0,
            Kind::File => 2 + MAX_NAME + FILE_CHUNK,
            Kind::Definition => MAX_DEFINITION,
            Kind::Stream => STREAM_CHUNK,
            Kind::Error => MAX_ERROR,
        }
    }
}

pub fn write(stream: &mut impl Write, kind: Kind, payload: &[u8]) -> Result<(), ProtocolError> {
    debug_assert!(payload.len() <= kind.max_len());
    write_frame(stream, FRAMING, kind.wire(), payload)
}

pub fn read(stream: &mut impl Read) -> Result<(Kind, Vec<u8>), ProtocolError> {
    let (wire, payload) = read_frame(stream, FRAMING, |wire| {
        Kind::from_wire(wire).map(Kind::max_len)
    })?;
    let kind = Kind::from_wire(wire).ok_or(ProtocolError::UnknownKind(wire))?;
    Ok((kind, payload))
}

/// Reads one message that must be of `expected` kind; an `Error` message is the peer's refusal.
pub fn expect(stream: &mut impl Read, expected: Kind) -> Result<Vec<u8>, ProtocolError> {
    match read(stream)? {
        (kind, payload) if kind == expected => Ok(payload),
        (Kind::Error, message) => Err(refusal(&message)),
        (found, _) => Err(ProtocolError::Refused(format!(
            "sent a {found:?} message where {expected:?} belongs"
        ))),
    }
}

/// The peer's `Error` message as an error.
pub fn refusal(message: &[u8]) -> ProtocolError {
    ProtocolError::Refused(String::from_utf8_lossy(message).into_owned())
}

/// Tells the peer why this end gives up (best effort: it may be gone).
pub fn send_error(stream: &mut impl Write, message: &str) {
    let mut end = message.len().min(MAX_ERROR);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let _ = write(stream, Kind::Error, &message.as_bytes()[..end]);
}

/// Sends the file `name` (read from `content`, the file at `path`) in `File` messages, a
/// piece at a time.
pub fn send_file(
    stream: &mut impl Write,
    name: &str,
    mut content: impl Read,
    path: &std::path::Path,
) -> Result<(), MigrateError> {
    debug_assert!(name.len() <= MAX_NAME);
    let mut chunk = vec![0; FILE_CHUNK];
    let mut first = true;
    loop {
        let count =
            read_full(&mut content, &mut chunk).map_err(|source| MigrateError::SendFile {
                path: path.display().to_string(),
                source,
            })?;
        // An empty file still goes, as one empty piece.
        if count > 0 || first {
            write(stream, Kind::File, &file_message(name, &chunk[..count]))?;
        }
        first = false;
        if count < chunk.len() {
            return Ok(());
        }
    }
}

/// Fills `buffer` from `reader` unless it ends first; how much was read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn file_message(name: &str, chunk: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + name.len() + chunk.len());
    payload.extend_from_slice(&(name.len() as u16).to_le_bytes());
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(chunk);
    payload
}

/// The name and bytes of a `File` payload.
pub fn file_piece(payload: &[u8]) -> Result<(String, &[u8]), ProtocolError> {
    let bad = || ProtocolError::Refused("sent a malformed file message".into());
    let (len, rest) = payload.split_first_chunk::<2>().ok_or_else(bad)?;
    let len = usize::from(u16::from_le_bytes(*len));
    if len > rest.len() {
        return Err(bad());
    }
    let (name, bytes) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| bad())?;
    Ok((name.to_owned(), bytes))
}

/// Whether `given` is the token (constant time, as the VMM checks its own).
pub fn token_matches(given: &[u8], token: &str) -> bool {
    vmm_protocol::token_matches(given, token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_on_the_wire_and_unknown_ones_are_refused() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_wire(kind.wire()), Some(kind));
        }
        assert_eq!(Kind::from_wire(0), None);
        assert_eq!(Kind::from_wire(11), None);
        let mut bytes = Vec::new();
        write(&mut bytes, Kind::Running, &[]).unwrap();
        bytes[6] = 42;
        assert!(matches!(
            read(&mut &bytes[..]),
            Err(ProtocolError::UnknownKind(42))
        ));
    }

    #[test]
    fn a_vmm_stream_message_is_not_an_instance_message() {
        let mut bytes = Vec::new();
        vmm_protocol::write(&mut bytes, vmm_protocol::Kind::Ready, &[]).unwrap();
        assert!(matches!(read(&mut &bytes[..]), Err(ProtocolError::Magic)));
    }

    #[test]
    fn files_travel_in_pieces_and_read_back_whole() {
        let content: Vec<u8> = (0..FILE_CHUNK + 10).map(|i| i as u8).collect();
        let mut bytes = Vec::new();
        let path = std::path::Path::new("x");
        send_file(&mut bytes, "cidata.img", &content[..], path).unwrap();
        send_file(&mut bytes, "empty", &[][..], path).unwrap();
        let mut stream = &bytes[..];
        let mut whole = Vec::new();
        for _ in 0..2 {
            let (name, piece) = file_piece(&expect(&mut stream, Kind::File).unwrap())
                .map(|(name, piece)| (name, piece.to_vec()))
                .unwrap();
            assert_eq!(name, "cidata.img");
            whole.extend(piece);
        }
        assert_eq!(whole, content);
        let (name, piece) = file_piece(&expect(&mut stream, Kind::File).unwrap())
            .map(|(name, piece)| (name, piece.len()))
            .unwrap();
        assert_eq!((name.as_str(), piece), ("empty", 0));
        assert!(file_piece(&[9, 0, b'a']).is_err());
    }

    #[test]
    fn an_error_message_is_the_peers_refusal() {
        let mut bytes = Vec::new();
        send_error(&mut bytes, "an instance named web exists");
        let err = expect(&mut &bytes[..], Kind::Ready).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the migration peer gave up: an instance named web exists"
        );
    }
}
