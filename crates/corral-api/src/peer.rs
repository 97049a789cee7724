//! Who is calling: over the unix socket, the uid of the process at the other end (SO_PEERCRED),
//! which the kernel vouches for; over TLS, the certificate the client proved it holds.
//! Operations act on a local caller's behalf, so the lifecycle events they cause name its uid.

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use corral_core::trust::Certificate;
use tokio::net::UnixListener;

use crate::tls::TlsListener;

/// What the server knows of a connection.
#[derive(Clone, Debug)]
pub enum Peer {
    /// A process of this host, over the unix socket.
    Local {
        /// Its uid; none when the kernel could not say.
        uid: Option<u32>,
    },
    /// A client over TLS.
    Remote {
        address: std::net::SocketAddr,
        /// The certificate whose key signed the handshake, if the client presented one.
        certificate: Option<Certificate>,
    },
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer::Local {
            uid: stream.io().peer_cred().ok().map(|cred| cred.uid()),
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer::Remote {
            address: *stream.remote_addr(),
            certificate: crate::tls::client_certificate(stream.io()),
        }
    }
}

impl Peer {
    /// The peer of a request; none for an in-process request (the tests' `oneshot`), which
    /// acts as this process.
    pub fn of(parts: &axum::http::Extensions) -> Option<&Peer> {
        parts
            .get::<ConnectInfo<Peer>>()
            .map(|ConnectInfo(peer)| peer)
    }
}

/// The caller of a request: its uid when it came over the unix socket (a TLS client and an
/// in-process request, as the tests make, have none: the server acts as itself).
#[derive(Clone, Copy, Debug)]
pub struct Caller(pub Option<u32>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let uid = match Peer::of(&parts.extensions) {
            Some(Peer::Local { uid }) => *uid,
            _ => None,
        };
        Ok(Caller(uid))
    }
}

impl Caller {
    /// Runs `work` on the caller's behalf (see `corral_core::events::on_behalf_of`).
    pub fn acting<T>(self, work: impl FnOnce() -> T) -> T {
        match self.0 {
            Some(uid) => corral_core::events::on_behalf_of(uid, work),
            None => work(),
        }
    }
}

/// The certificate a TLS caller presented; none for a local caller or a TLS one without.
pub struct PresentedCertificate(pub Option<Certificate>);

impl<S: Send + Sync> FromRequestParts<S> for PresentedCertificate {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PresentedCertificate(match Peer::of(&parts.extensions) {
            Some(Peer::Remote { certificate, .. }) => certificate.clone(),
            _ => None,
        }))
    }
}
