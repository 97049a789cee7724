//! Framing: every frame is a big-endian `u32` length and that many bytes of body.
//!
//! A body that starts with `{` is one JSON message; a body that starts with a [`Stream`] tag byte
//! (1, 2 or 3) carries raw bytes of that stream (file data, a command's stdin, stdout or stderr),
//! so bulk data is never inflated by JSON. Both ends refuse a frame longer than [`MAX_FRAME`]
//! before reading its body, and a data frame longer than [`MAX_CHUNK`] bytes of payload.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest frame either end accepts: 1 MiB.
pub const MAX_FRAME: usize = 1024 * 1024;
/// The most payload bytes one data frame carries: 128 KiB.
pub const MAX_CHUNK: usize = 128 * 1024;

/// What a data frame's bytes belong to (its first body byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// A file's content (push, pull) or a command's stdin.
    Data = 1,
    Stdout = 2,
    Stderr = 3,
}

impl Stream {
    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::Data),
            2 => Some(Self::Stdout),
            3 => Some(Self::Stderr),
            _ => None,
        }
    }
}

/// One frame as read: a JSON message not yet parsed, or data.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>),
    Data(Stream, Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the connection was closed")]
    Closed,
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME} bytes")]
    TooLong(u64),
    #[error("a data frame of {0} bytes is over the limit of {MAX_CHUNK} bytes")]
    ChunkTooLong(usize),
    #[error("a frame is empty")]
    Empty,
    #[error(
        "a frame starts with byte {0:#04x}, which is neither a JSON message nor a data stream"
    )]
    UnknownKind(u8),
    #[error("a message is not valid protocol JSON")]
    Json(#[source] serde_json::Error),
    #[error("expected a message, got {0:?} data")]
    UnexpectedData(Stream),
    #[error("timed out waiting for the other end")]
    TimedOut(#[source] std::io::Error),
    #[error("cannot read or write the connection")]
    Io(#[source] std::io::Error),
}

impl FrameError {
    fn from_io(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::UnexpectedEof => Self::Closed,
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Self::TimedOut(err),
            _ => Self::Io(err),
        }
    }
}

/// Reads one frame; `Closed` when the other end closed cleanly between frames.
pub fn read_frame(reader: &mut impl Read) -> Result<Frame, FrameError> {
    let mut header = [0u8; 4];
    reader
        .read_exact(&mut header)
        .map_err(FrameError::from_io)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len as u64));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).map_err(FrameError::from_io)?;
    match body.first() {
        None => Err(FrameError::Empty),
        Some(b'{') => Ok(Frame::Message(body)),
        Some(&tag) => {
            let stream = Stream::from_tag(tag).ok_or(FrameError::UnknownKind(tag))?;
            if len - 1 > MAX_CHUNK {
                return Err(FrameError::ChunkTooLong(len - 1));
            }
            body.remove(0);
            Ok(Frame::Data(stream, body))
        }
    }
}

/// Reads one frame that must be a JSON message of type `T`.
pub fn read_message<T: DeserializeOwned>(reader: &mut impl Read) -> Result<T, FrameError> {
    match read_frame(reader)? {
        Frame::Message(body) => parse(&body),
        Frame::Data(stream, _) => Err(FrameError::UnexpectedData(stream)),
    }
}

/// Parses a message frame's body.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(FrameError::Json)
}

/// Writes one JSON message as a frame.
pub fn write_message(writer: &mut impl Write, message: &impl Serialize) -> Result<(), FrameError> {
    let body = serde_json::to_vec(message).map_err(FrameError::Json)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLong(body.len() as u64));
    }
    write_body(writer, &[&body])
}

/// Writes `bytes` of `stream` as data frames of at most [`MAX_CHUNK`] bytes each.
pub fn write_data(writer: &mut impl Write, stream: Stream, bytes: &[u8]) -> Result<(), FrameError> {
    for chunk in bytes.chunks(MAX_CHUNK) {
        write_body(writer, &[&[stream as u8], chunk])?;
    }
    Ok(())
}

fn write_body(writer: &mut impl Write, parts: &[&[u8]]) -> Result<(), FrameError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut frame = Vec::with_capacity(4 + len);
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        frame.extend_from_slice(part);
    }
    writer.write_all(&frame).map_err(FrameError::from_io)?;
    writer.flush().map_err(FrameError::from_io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Request;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_message_and_data_come_back_as_written() {
        let mut wire = Vec::new();
        write_message(&mut wire, &Request::Ping).unwrap();
        write_data(&mut wire, Stream::Stderr, b"oops").unwrap();
        let mut reader = wire.as_slice();
        assert_eq!(read_message::<Request>(&mut reader).unwrap(), Request::Ping);
        assert_eq!(
            read_frame(&mut reader).unwrap(),
            Frame::Data(Stream::Stderr, b"oops".to_vec())
        );
        assert!(matches!(read_frame(&mut reader), Err(FrameError::Closed)));
    }

    #[test]
    fn data_is_split_into_bounded_chunks() {
        let data = vec![7u8; MAX_CHUNK * 2 + 5];
        let mut wire = Vec::new();
        write_data(&mut wire, Stream::Data, &data).unwrap();
        let mut reader = wire.as_slice();
        let mut sizes = Vec::new();
        while let Ok(Frame::Data(Stream::Data, bytes)) = read_frame(&mut reader) {
            sizes.push(bytes.len());
        }
        assert_eq!(sizes, [MAX_CHUNK, MAX_CHUNK, 5]);
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_body_is_read() {
        // Only the header is there: a reader that tried to read 4 GiB would report end of file.
        let wire = u32::MAX.to_be_bytes();
        let err = read_frame(&mut wire.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::TooLong(n) if n == u64::from(u32::MAX)));
    }

    #[test]
    fn a_data_frame_over_the_chunk_limit_is_refused() {
        let mut body = vec![Stream::Data as u8];
        body.resize(MAX_CHUNK + 2, 0);
        let err = read_frame(&mut framed(&body).as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::ChunkTooLong(n) if n == MAX_CHUNK + 1));
    }

    #[test]
    fn malformed_json_and_unknown_kinds_are_refused() {
        let err = read_message::<Request>(&mut framed(b"{\"type\": ping").as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Json(_)));
        let err =
            read_message::<Request>(&mut framed(b"{\"type\":\"launch\"}").as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Json(_)));
        let err = read_frame(&mut framed(b"\x09abc").as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::UnknownKind(9)));
        let err = read_frame(&mut framed(b"").as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Empty));
    }

    #[test]
    fn a_frame_cut_short_is_a_closed_connection() {
        let mut wire = framed(b"{\"type\":\"ping\"}");
        wire.truncate(8);
        assert!(matches!(
            read_frame(&mut wire.as_slice()),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn data_where_a_message_is_expected_is_refused() {
        let mut wire = Vec::new();
        write_data(&mut wire, Stream::Stdout, b"x").unwrap();
        assert!(matches!(
            read_message::<Request>(&mut wire.as_slice()),
            Err(FrameError::UnexpectedData(Stream::Stdout))
        ));
    }
}
