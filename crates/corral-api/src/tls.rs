//! The API over TCP with TLS (`corral serve --listen`). The server presents its identity (core's
//! `trust::server_identity`, made at first use; clients pin its fingerprint, as Incus's do); a
//! client proves it holds a certificate's key in the handshake, and the request is then
//! authorised by that certificate's fingerprint against the root's trust store
//! ([`crate::auth`]). Any certificate is accepted by the handshake itself, so an untrusted
//! client gets an HTTP answer (403 with a sentence, or enrolment with a join token) rather
//! than a TLS alert.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corral_core::trust::{Certificate, Identity};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes finished but not yet taken by the server.
const ACCEPTED_BACKLOG: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot set up TLS with the server's certificate")]
    Config(#[source] rustls::Error),
}

/// The TLS acceptor presenting `identity` (core's `server_identity`) and asking every client
/// for a certificate.
pub fn acceptor(identity: &Identity) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let provider = corral_tls::provider();
    let verifier = Arc::new(corral_tls::AnyClientCertificate(corral_tls::Signatures(
        Arc::clone(&provider),
    )));
    let chain = vec![CertificateDer::from(identity.certificate.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// TCP connections whose TLS handshake has finished, for `axum::serve`. Handshakes run on
/// their own tasks, so a slow client does not hold up the others.
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener`, completing handshakes with `acceptor`.
    pub fn new(
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (sender, accepted) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
        tokio::spawn(async move {
            loop {
                let (tcp, address) = match listener.accept().await {
                    Ok(connection) => connection,
                    Err(err) => {
                        tracing::warn!("accepting a TCP connection failed: {err}");
                        // EMFILE and the like pass; don't spin on them.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, address)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::info!("TLS handshake with {address} failed: {err}")
                        }
                        Err(_) => tracing::info!("TLS handshake with {address} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accepting task is gone only when the runtime stops.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The certificate a TLS client presented, if it presented one.
pub fn client_certificate(stream: &TlsStream<TcpStream>) -> Option<Certificate> {
    let (_, connection) = stream.get_ref();
    let der = connection.peer_certificates()?.first()?;
    Certificate::from_der(der.to_vec()).ok()
}
