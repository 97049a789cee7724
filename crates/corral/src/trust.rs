//! `corral trust`: the client certificates `corral serve --listen` trusts, and join tokens with
//! which a client enrols its own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use corral_core::trust::{Certificate, TrustStore, DEFAULT_TOKEN_LIFETIME};

use crate::output::{self, Format};

#[derive(Args)]
pub struct TrustArgs {
    #[command(subcommand)]
    command: TrustCommand,
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Trust a client: its certificate (--certificate), or whichever certificate enrols with
    /// the one-time join token printed (POST /1.0/certificates/enrol over TLS).
    Add {
        /// What to call the client.
        name: String,
        /// The client's certificate (PEM).
        #[arg(long, value_name = "FILE")]
        certificate: Option<PathBuf>,
        /// How long the join token is good for, like 1h, 30m, 7d (default: a day).
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "certificate")]
        expires: Option<Duration>,
    },
    /// List the trusted clients and the pending join tokens.
    #[command(alias = "ls")]
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Stop trusting a client (at once, for its open connections too), or revoke its join
    /// token.
    #[command(alias = "rm")]
    Remove { name: String },
}

pub fn run(root: &Path, args: TrustArgs) -> anyhow::Result<ExitCode> {
    let store = TrustStore::of_root(root);
    match args.command {
        TrustCommand::Add {
            name,
            certificate: Some(file),
            ..
        } => {
            let pem = std::fs::read(&file)
                .with_context(|| format!("cannot read the certificate {}", file.display()))?;
            let certificate = Certificate::from_pem(&pem)
                .with_context(|| format!("cannot trust {}", file.display()))?;
            let client = store.add(&name, &certificate)?;
            println!(
                "{} is trusted (fingerprint {})",
                client.name, client.fingerprint
            );
        }
        TrustCommand::Add {
            name,
            certificate: None,
            expires,
        } => {
            // The token carries the server's fingerprint, so the client pins this server.
            let server = corral_core::trust::server_identity(root, None)?;
            let token = store.issue_token(&name, expires.unwrap_or(DEFAULT_TOKEN_LIFETIME))?;
            eprintln!(
                "corral: a join token for {} (one use, until {}); on the client: corral remote \
                 add REMOTE ADDRESS:PORT TOKEN (or POST /1.0/certificates/enrol over TLS)",
                token.name,
                output::timestamp(token.expires)
            );
            println!("{}", token.text(&server.fingerprint()));
        }
        TrustCommand::List { output } => {
            let (clients, tokens) = (store.clients()?, store.pending_tokens()?);
            if output == Format::Json {
                output::print_json(&serde_json::json!({
                    "clients": clients,
                    "pending_tokens": tokens,
                }))?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows: Vec<[String; 3]> = (clients.iter())
                .map(|c| {
                    let added = format!("trusted since {}", output::timestamp(c.added));
                    [c.name.clone(), c.fingerprint.to_string(), added]
                })
                .collect();
            rows.extend(tokens.iter().map(|t| {
                let until = format!("join token until {}", output::timestamp(t.expires));
                [t.name.clone(), "-".into(), until]
            }));
            output::print_table(["NAME", "FINGERPRINT", "STATUS"], &rows);
        }
        TrustCommand::Remove { name } => {
            store.remove(&name)?;
            println!("{name} is no longer trusted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
