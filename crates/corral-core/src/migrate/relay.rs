//! The VMMs' own migration stream between the two corral ends. A VMM is jailed in its own
//! network namespace and reaches only its runtime directory, so each end's VMM talks to a unix
//! socket there and corral carries the bytes over the one authenticated connection between the
//! hosts, as `Stream` messages, one thread per direction.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use corral_vmm::migration::address::Connection;
use corral_vmm::migration::protocol::ProtocolError;

use super::protocol::{self, Kind, STREAM_CHUNK};

/// Carries what the local VMM writes to the peer, until the VMM closes its end (or it is
/// gone); then tells the peer with `StreamEnd`.
pub fn vmm_to_peer(mut vmm: UnixStream, mut peer: Connection) -> Result<(), ProtocolError> {
    let mut buffer = vec![0; STREAM_CHUNK];
    loop {
        let count = match vmm.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            // A VMM that died ended its stream.
            Err(_) => break,
        };
        if let Err(err) = protocol::write(&mut peer, Kind::Stream, &buffer[..count]) {
            // The peer is gone: the VMM must hear it at once, not when its own timeout ends.
            let _ = vmm.shutdown(Shutdown::Both);
            return Err(err);
        }
    }
    protocol::write(&mut peer, Kind::StreamEnd, &[])
}

/// Carries the peer's `Stream` messages to the local VMM until the peer's `StreamEnd`. An
/// `Error` from the peer, or a connection lost, cuts the VMM's stream, which makes the VMM give
/// up (a source VMM resumes its guest, a destination VMM exits).
pub fn peer_to_vmm(peer: &mut Connection, vmm: &UnixStream) -> Result<(), ProtocolError> {
    let cut = |err: ProtocolError| {
        let _ = vmm.shutdown(Shutdown::Both);
        err
    };
    loop {
        match protocol::read(peer).map_err(cut)? {
            (Kind::Stream, bytes) => {
                // Nothing comes after a VMM's last word, so a VMM gone is a migration failed:
                // the peer hears it when this end gives up.
                if let Err(err) = (&*vmm).write_all(&bytes) {
                    return Err(cut(ProtocolError::Io(err)));
                }
            }
            (Kind::StreamEnd, _) => {
                let _ = vmm.shutdown(Shutdown::Write);
                return Ok(());
            }
            (Kind::Error, message) => return Err(cut(protocol::refusal(&message))),
            (found, _) => {
                return Err(cut(ProtocolError::Refused(format!(
                    "sent a {found:?} message in the middle of the VMM's stream"
                ))))
            }
        }
    }
}
