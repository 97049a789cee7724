//! `corral image build SPEC.toml`: the Packer-like image build (corral_core::build).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::output::{self, Format};

#[derive(Args)]
pub struct BuildArgs {
    /// The build spec (TOML; docs/images.md describes it).
    spec: PathBuf,
    /// Name the stored images ALIAS instead of the spec's `name` and `alias`es (repeatable).
    #[arg(long = "alias", value_name = "ALIAS")]
    aliases: Vec<String>,
    /// Set a variable of the spec's [variables] (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_variable)]
    variables: Vec<(String, String)>,
    /// Write the build log here (default: ROOT/image-builds/NAME.log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The corral binary `agent = true` steps install as the guest agent (default: this
    /// corral). A static build (scripts/build-static.sh) runs in any Linux guest.
    #[arg(long, value_name = "PATH", env = "CORRAL_AGENT_BINARY")]
    agent_binary: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

fn parse_variable(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    Ok((name.to_string(), value.to_string()))
}

pub fn build(root: &Path, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => Some(text.trim().parse::<u64>().with_context(|| {
            format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds since 1970")
        })?),
        Err(_) => None,
    };
    // On a terminal the steps' output scrolls by (it is the progress); scripts get only the
    // result, and the log has everything.
    let echo = std::io::stderr().is_terminal();
    let options = corral_core::build::BuildOptions {
        aliases: (!args.aliases.is_empty()).then_some(args.aliases),
        log: args.log,
        variables: args.variables,
        runtime: std::env::current_exe().context("cannot find the corral binary")?,
        agent_binary: args.agent_binary,
        echo,
        source_date_epoch,
    };
    let images = corral_core::build::build(
        root,
        &args.spec,
        &options,
        &corral_image::progress::NoProgress,
    )?;
    if args.output == Format::Json {
        output::print_json(&images)?;
    } else {
        for image in &images {
            println!(
                "built {} image {}",
                image.metadata().image_type,
                image.display_name()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
