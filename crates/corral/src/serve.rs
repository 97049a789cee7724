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
}

pub fn run(root: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    let listener = corral_api::server::bind(&args.socket)?;
    eprintln!("corral: serving the API on {}", args.socket.display());
    corral_api::server::serve(corral_api::Api::new(manager), listener)?;
    Ok(ExitCode::SUCCESS)
}
