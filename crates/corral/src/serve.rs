//! `corral serve`: the REST API (corral-api) on a unix socket, and over TLS when asked, over the
//! same corral root as the CLI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// The unix socket to listen on (mode 0660, group corral where that group exists).
    #[arg(long, default_value = corral_api::server::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The network an instance created without nics or a `default_network` joins, as for
    /// `corral create`; `none` for none.
    #[arg(
        long,
        env = "CORRAL_DEFAULT_NETWORK",
        default_value = corral_core::networks::DEFAULT_NETWORK,
        value_name = "NAME|none",
        add = crate::completion::networks()
    )]
    default_network: String,
    /// Also serve over TLS on this address and port (like 0.0.0.0:8443), to clients whose
    /// certificate is trusted (corral trust).
    #[arg(long, value_name = "ADDRESS:PORT")]
    listen: Option<std::net::SocketAddr>,
}

/// Serves the API, its event feed published to `events` (whose log layer the process's logging
/// already feeds).
pub fn run(
    root: &Path,
    args: ServeArgs,
    events: std::sync::Arc<corral_api::EventHub>,
) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    let listener = corral_api::server::bind(&args.socket)?;
    eprintln!("corral: serving the API on {}", args.socket.display());
    let tls = match args.listen {
        Some(address) => {
            let identity = corral_core::trust::server_identity(root, Some(address.ip()))?;
            let listener = corral_api::server::bind_tcp(address)?;
            eprintln!(
                "corral: serving the API over TLS on {}; the server's certificate fingerprint \
                 (SHA-256) is {}",
                listener.local_addr()?,
                identity.fingerprint()
            );
            Some(corral_api::server::TlsEndpoint {
                listener,
                acceptor: corral_api::tls::acceptor(&identity)?,
            })
        }
        None => None,
    };
    let api = corral_api::Api::with_events(manager, Some(args.default_network), events);
    corral_api::server::serve(api, listener, tls)?;
    Ok(ExitCode::SUCCESS)
}
