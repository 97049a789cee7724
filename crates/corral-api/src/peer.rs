//! Who is calling: the uid of the process at the other end of the unix socket (SO_PEERCRED),
//! which the kernel vouches for. Operations act on the caller's behalf, so the lifecycle events
//! they cause name that uid.

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use tokio::net::UnixListener;

/// What the server knows of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The connecting process's uid; none when the kernel could not say.
    pub uid: Option<u32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer {
            uid: stream.io().peer_cred().ok().map(|cred| cred.uid()),
        }
    }
}

/// The caller of a request: its uid when it came over the socket (an in-process request, as
/// the tests make, has none, and acts as this process).
#[derive(Clone, Copy, Debug)]
pub struct Caller(pub Option<u32>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let uid = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .and_then(|ConnectInfo(peer)| peer.uid);
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
