//! `corral volume`: volumes of the default storage pool.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use corral_core::definition::DiskFormat;
use corral_core::volume::{NewVolume, Pool, VolumeInfo};
use corral_vmm::config::MemorySize;

use crate::output::{self, Format};

#[derive(Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    command: VolumeCommand,
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// Create a volume: a sparse raw file, a qcow2 image (optionally over a backing image) or a
    /// directory for containers.
    Create {
        name: String,
        /// Virtual size, e.g. 10G (a qcow2 overlay defaults to its backing image's size).
        #[arg(long, short)]
        size: Option<MemorySize>,
        #[arg(long, short, value_enum, default_value = "raw")]
        format: VolumeFormat,
        /// Base image of a qcow2 overlay (linked clone): a volume's name or an image path.
        #[arg(long, short)]
        backing: Option<String>,
    },
    /// List the pool's volumes.
    #[command(alias = "ls")]
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Show a volume (or any image or block device, by path).
    Info {
        name: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Change a volume's virtual size (shrinking only raw volumes, with --force).
    Resize {
        name: String,
        size: MemorySize,
        #[arg(long)]
        force: bool,
    },
    /// Delete a volume no instance or overlay uses.
    #[command(alias = "rm")]
    Delete { name: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum VolumeFormat {
    Raw,
    Qcow2,
    Dir,
}

pub fn run(root: &Path, args: VolumeArgs) -> anyhow::Result<ExitCode> {
    let pool = Pool::default_in(root);
    match args.command {
        VolumeCommand::Create {
            name,
            size,
            format,
            backing,
        } => {
            let size = size.map(|s| s.0);
            let volume = match (format, backing) {
                (VolumeFormat::Raw, Some(_)) | (VolumeFormat::Dir, Some(_)) => {
                    bail!("only qcow2 volumes can have a backing image; add --format qcow2")
                }
                (VolumeFormat::Raw, None) => NewVolume::Raw {
                    size: size.ok_or_else(|| {
                        anyhow::anyhow!("a raw volume needs --size, e.g. --size 10G")
                    })?,
                },
                (VolumeFormat::Qcow2, backing) => {
                    let backing = backing.map(|b| pool.resolve_backing(&b)).transpose()?;
                    if size.is_none() && backing.is_none() {
                        bail!("a qcow2 volume needs --size or --backing");
                    }
                    NewVolume::Qcow2 { size, backing }
                }
                (VolumeFormat::Dir, None) => {
                    if size.is_some() {
                        bail!("a directory volume has no size; leave out --size");
                    }
                    NewVolume::Dir
                }
            };
            let info = pool.create(&name, &volume)?;
            println!("created volume {name} ({})", describe(&info));
        }
        VolumeCommand::List { output } => {
            let volumes = pool.list()?;
            if output == Format::Json {
                output::print_json(&volumes)?;
            } else {
                let rows: Vec<[String; 5]> = volumes
                    .iter()
                    .map(|v| {
                        [
                            v.name.clone(),
                            format_name(v.format).to_string(),
                            v.virtual_size
                                .map(output::human_bytes)
                                .unwrap_or_else(|| "-".into()),
                            output::human_bytes(v.actual_size),
                            v.backing_chain
                                .first()
                                .map(|b| b.display().to_string())
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                output::print_table(["NAME", "FORMAT", "SIZE", "USED", "BACKING"], &rows);
            }
        }
        VolumeCommand::Info { name, output } => {
            let info = match pool.info(&name) {
                Ok(info) => serde_json::to_value(info)?,
                // Not a pool volume: any image or block device by path (dedicated VBDs).
                Err(err) if Path::new(&name).exists() => {
                    tracing::debug!("{name} is not a pool volume ({err}); reading it as an image");
                    serde_json::to_value(corral_disk::info(&PathBuf::from(&name))?)?
                }
                Err(err) => return Err(err.into()),
            };
            if output == Format::Json {
                output::print_json(&info)?;
            } else {
                print_info(&info);
            }
        }
        VolumeCommand::Resize { name, size, force } => {
            let info = pool.resize(&name, size.0, force)?;
            println!("resized volume {name} ({})", describe(&info));
        }
        VolumeCommand::Delete { name } => {
            let users = crate::instance::volume_users(root, &pool, &name)?;
            pool.delete(&name, &users)?;
            println!("deleted volume {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn format_name(format: DiskFormat) -> &'static str {
    match format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
        DiskFormat::Dir => "dir",
    }
}

fn describe(info: &VolumeInfo) -> String {
    match info.virtual_size {
        Some(size) => format!(
            "{}, {}",
            format_name(info.format),
            output::human_bytes(size)
        ),
        None => format_name(info.format).to_string(),
    }
}

fn print_info(info: &serde_json::Value) {
    let Some(fields) = info.as_object() else {
        return;
    };
    for (key, value) in fields {
        let text = match (key.as_str(), value) {
            ("virtual_size" | "actual_size", serde_json::Value::Number(n)) => {
                n.as_u64().map(output::human_bytes).unwrap_or_default()
            }
            (_, serde_json::Value::String(s)) => s.clone(),
            (_, serde_json::Value::Array(items)) if items.is_empty() => "-".into(),
            (_, other) => other.to_string(),
        };
        println!("{:<16}{text}", format!("{key}:"));
    }
}
