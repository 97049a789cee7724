//! Serving the API on a unix socket: bound as the supervisors' sockets are (a stale one
//! replaced, a live one refused), then opened to the `corral` group where it exists (mode 0660,
//! root:corral) so its members can manage instances without being root; and, when asked, on a
//! TCP address with TLS ([`crate::tls`]). Ends gracefully on SIGTERM or SIGINT: requests in
//! flight are answered, operations already started run on.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Api;

/// Where `corral serve` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/corral/corral.sock";
/// How long a stopping server gives its event clients to get their close frame.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// The group whose members may use the socket.
pub const SOCKET_GROUP: &str = "corral";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the socket's directory {}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: corral_control::ControlError,
    },
    #[error("cannot open {} to the {SOCKET_GROUP} group", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {address}; pick a free address and port (corral serve --listen)")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the server's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the server failed")]
    Serve(#[source] std::io::Error),
}

/// Binds `socket` and opens it to the `corral` group (mode 0660) when that group exists.
pub fn bind(socket: &Path) -> Result<std::os::unix::net::UnixListener, ServeError> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Directory {
            path: dir.to_owned(),
            source,
        })?;
    }
    let listener = corral_control::bind(socket).map_err(|source| ServeError::Bind {
        path: socket.to_owned(),
        source,
    })?;
    let group = nix::unistd::Group::from_name(SOCKET_GROUP).ok().flatten();
    if let Some(group) = group {
        let permissions = || -> std::io::Result<()> {
            nix::unistd::chown(socket, None, Some(group.gid)).map_err(std::io::Error::from)?;
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        };
        permissions().map_err(|source| ServeError::Permissions {
            path: socket.to_owned(),
            source,
        })?;
    }
    Ok(listener)
}

/// Binds the TCP address `address` for the TLS listener.
pub fn bind_tcp(address: std::net::SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let listener = std::net::TcpListener::bind(address)
        .map_err(|source| ServeError::Listen { address, source })?;
    listener.set_nonblocking(true).map_err(ServeError::Serve)?;
    Ok(listener)
}

/// The TCP side of a server: where it listens and how it does TLS.
pub struct TlsEndpoint {
    pub listener: std::net::TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// Serves `api` on the unix socket `listener`, and over TLS on `tls` when given, until SIGTERM
/// or SIGINT.
pub fn serve(
    api: Arc<Api>,
    listener: std::os::unix::net::UnixListener,
    tls: Option<TlsEndpoint>,
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        listener.set_nonblocking(true).map_err(ServeError::Serve)?;
        let listener = tokio::net::UnixListener::from_std(listener).map_err(ServeError::Serve)?;
        let (stopping, stop) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            }
        };
        let router = crate::router(Arc::clone(&api));
        let local = axum::serve(
            listener,
            router
                .clone()
                .into_make_service_with_connect_info::<crate::peer::Peer>(),
        )
        .with_graceful_shutdown(stopped());
        let remote = async {
            let Some(tls) = tls else {
                return Ok(());
            };
            let tcp = tokio::net::TcpListener::from_std(tls.listener).map_err(ServeError::Serve)?;
            let listener =
                crate::tls::TlsListener::new(tcp, tls.acceptor).map_err(ServeError::Serve)?;
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<crate::peer::Peer>(),
            )
            .with_graceful_shutdown(stopped())
            .await
            .map_err(ServeError::Serve)
        };
        let signal = async {
            stop_signal().await;
            // Event clients are closed ("going away") before the listeners stop: upgraded
            // connections are not the graceful shutdown's to wait for.
            api.events.stop();
            api.events.clients_gone(CLOSE_GRACE).await;
            let _ = stopping.send(true);
            Ok(())
        };
        let local = async { local.await.map_err(ServeError::Serve) };
        tokio::try_join!(local, remote, signal).map(|_| ())
    })
}

/// Resolves at the first SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping: answering the requests in flight");
}
