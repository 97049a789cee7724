//! `corral file push|pull` and `corral agent ping|fsfreeze|thaw|sysprep`: verbs that go through an instance's guest
//! agent (docs/agent.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::instance::manager;

#[derive(Args)]
pub struct FileArgs {
    #[command(subcommand)]
    command: FileCommand,
}

#[derive(Subcommand)]
enum FileCommand {
    /// Copy a local file into a running instance (through its guest agent).
    ///
    /// The file appears whole at REMOTE or not at all.
    Push {
        name: String,
        local: PathBuf,
        /// An absolute path in the guest.
        remote: String,
        /// Permission bits in octal (default: the local file's).
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
        /// Owner in the guest, as numeric UID:GID (default: the agent's user).
        #[arg(long, value_parser = parse_owner)]
        owner: Option<(u32, u32)>,
    },
    /// Copy a file out of a running instance (through its guest agent).
    ///
    /// LOCAL (or, for a directory, the remote file's name in it) appears whole or not at all,
    /// with the remote file's permission bits (set-id bits dropped).
    Pull {
        name: String,
        /// An absolute path in the guest.
        remote: String,
        local: PathBuf,
    },
}

#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Check that an instance's guest agent answers, and how fast.
    Ping { name: String },
    /// Freeze a running instance's writable filesystems (for a consistent snapshot of its
    /// disks); the agent thaws them itself after 60 s if `corral agent thaw` does not.
    Fsfreeze { name: String },
    /// Thaw what `corral agent fsfreeze` froze.
    Thaw { name: String },
    /// Reset a running instance's identity from inside (the operations of `corral sysprep`,
    /// run by its agent on the guest's root; the machine-id gets a new id at once).
    Sysprep {
        name: String,
        /// The operations, comma-separated, as `corral sysprep --operations` takes them.
        #[arg(long, value_name = "LIST")]
        operations: Option<String>,
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn file(root: &Path, args: FileArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    match args.command {
        FileCommand::Push {
            name,
            local,
            remote,
            mode,
            owner,
        } => {
            let bytes = manager.push_file(&name, &local, &remote, mode, owner)?;
            println!(
                "pushed {} to {name}:{remote} ({bytes} bytes)",
                local.display()
            );
        }
        FileCommand::Pull {
            name,
            remote,
            local,
        } => {
            let file = manager.pull_file(&name, &remote, &local)?;
            println!(
                "pulled {name}:{remote} to {} ({} bytes)",
                corral_core::agent::pull_destination(&remote, &local).display(),
                file.size
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn agent(root: &Path, args: AgentArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(root)?;
    match args.command {
        AgentCommand::Ping { name } => {
            let start = Instant::now();
            let mut client = manager.agent(&name, corral_core::agent::AGENT_TIMEOUT)?;
            client
                .ping()
                .map_err(|source| corral_core::CoreError::Agent {
                    name: name.clone(),
                    source,
                })?;
            println!(
                "the guest agent of {name} answered in {:.1} ms",
                start.elapsed().as_secs_f64() * 1000.0
            );
        }
        AgentCommand::Fsfreeze { name } => {
            for mountpoint in manager.freeze_guest(&name)? {
                println!("frozen {mountpoint}");
            }
        }
        AgentCommand::Thaw { name } => {
            let thawed = manager.thaw_guest(&name)?;
            if thawed.is_empty() {
                println!("nothing was frozen in {name}");
            }
            for mountpoint in thawed {
                println!("thawed {mountpoint}");
            }
        }
        AgentCommand::Sysprep {
            name,
            operations,
            dry_run,
        } => {
            let changes = manager.sysprep_guest(&name, operations.as_deref(), dry_run)?;
            if changes.is_empty() {
                println!("nothing to reset");
            }
            for change in changes {
                println!("{change}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_mode(text: &str) -> anyhow::Result<u32> {
    let mode = u32::from_str_radix(text, 8)
        .with_context(|| format!("{text:?} is not an octal mode such as 644"))?;
    anyhow::ensure!(mode <= 0o7777, "{text:?} is not a mode: at most 7777");
    Ok(mode)
}

fn parse_owner(text: &str) -> anyhow::Result<(u32, u32)> {
    let (uid, gid) = text
        .split_once(':')
        .with_context(|| format!("{text:?} is not UID:GID (numbers, e.g. 1000:1000)"))?;
    let number = |part: &str| {
        part.parse::<u32>()
            .with_context(|| format!("{text:?} is not UID:GID (numbers, e.g. 1000:1000)"))
    };
    Ok((number(uid)?, number(gid)?))
}
