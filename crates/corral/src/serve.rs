//! `corral serve`: the REST API (corral-api) on a unix socket, over the same corral root as
//! the CLI.

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
}

pub fn run(root: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    let listener = corral_api::server::bind(&args.socket)?;
    eprintln!("corral: serving the API on {}", args.socket.display());
    let api = corral_api::Api::new(manager, Some(args.default_network));
    corral_api::server::serve(api, listener)?;
    Ok(ExitCode::SUCCESS)
}
