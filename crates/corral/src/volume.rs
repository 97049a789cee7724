//! `corral volume`: volumes of the default storage pool.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use corral_control::size::MemorySize;
use corral_core::definition::DiskFormat;
use corral_core::volume::{Pool, VolumeError, VolumeInfo};
use corral_core::volume_request::{VolumeFormat, VolumeRequest};
use corral_disk::OpenOptions;

use crate::completion;
use crate::output::{self, Format};

#[derive(Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    pub(crate) command: VolumeCommand,
}

#[derive(Subcommand)]
pub(crate) enum VolumeCommand {
    /// Create a volume: a sparse raw file, a qcow2 image (optionally over a backing image) or a
    /// directory for containers.
    Create(CreateArgs),
    /// Copy an image (raw or qcow2, its backing chain flattened) into the pool as a new volume.
    Import {
        name: String,
        /// The image to copy.
        path: PathBuf,
        /// The new volume's format, raw or qcow2 (default: the image's own).
        #[arg(long, short)]
        format: Option<VolumeFormat>,
        /// A directory or file the image's backing chain may use besides the image's own
        /// directory (repeatable).
        #[arg(long)]
        allow_backing: Vec<PathBuf>,
    },
    /// Check a qcow2 volume like `qemu-img check`; --repair gives leaked clusters back (a
    /// crash leaves them). Exit status 0: clean, 2: corruptions, 3: leaks left.
    Check {
        #[arg(add = completion::volumes())]
        name: String,
        #[arg(long)]
        repair: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// List the pool's volumes.
    #[command(alias = "ls")]
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Show a volume (or any image or block device, by path).
    Info {
        #[arg(add = completion::volumes())]
        name: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Change a volume's virtual size (shrinking only raw volumes, with --force).
    Resize {
        #[arg(add = completion::volumes())]
        name: String,
        size: MemorySize,
        #[arg(long)]
        force: bool,
    },
    /// Delete a volume no instance or overlay uses.
    #[command(alias = "rm")]
    Delete {
        #[arg(add = completion::volumes())]
        name: String,
    },
}

/// `corral volume create`.
#[derive(Args)]
pub(crate) struct CreateArgs {
    name: String,
    /// Virtual size, e.g. 10G (a qcow2 overlay defaults to its backing image's size).
    #[arg(long, short)]
    size: Option<MemorySize>,
    /// raw (a sparse file), qcow2 or dir.
    #[arg(long, short, default_value = "raw")]
    format: VolumeFormat,
    /// Base image of a qcow2 overlay (linked clone): a volume of the pool, by name or path
    /// (images from elsewhere come in with `corral volume import`).
    #[arg(long, short, add = completion::volumes())]
    backing: Option<String>,
}

impl From<CreateArgs> for VolumeRequest {
    fn from(args: CreateArgs) -> VolumeRequest {
        VolumeRequest {
            name: args.name,
            size: args.size,
            format: args.format,
            backing: args.backing,
        }
    }
}

pub fn run(root: &Path, args: VolumeArgs) -> anyhow::Result<ExitCode> {
    let pool = Pool::default_in(root);
    match args.command {
        VolumeCommand::Create(args) => {
            let request = VolumeRequest::from(args);
            let info = pool.create_requested(&request)?;
            print_created(&request.name, &info);
        }
        VolumeCommand::List { output } => print_list(&pool.list()?, output)?,
        VolumeCommand::Import {
            name,
            path,
            format,
            allow_backing,
        } => {
            let format = match format {
                Some(format) => DiskFormat::from(format),
                None => corral_disk::detect_format(&path)?.into(),
            };
            let spinner = crate::progress::Spinner::start(&format!("importing {}", path.display()));
            let imported = pool.import(&name, &path, format, &allow_backing, &mut |_| {
                std::ops::ControlFlow::Continue(())
            });
            spinner.finish();
            println!("imported volume {name} ({})", describe(&imported?));
        }
        VolumeCommand::Check {
            name,
            repair,
            output,
        } => {
            let report = pool.check(&name, repair)?;
            if output == Format::Json {
                output::print_json(&report)?;
            } else {
                print_check(&name, &report);
            }
            // qemu-img check's exit statuses.
            return Ok(ExitCode::from(if report.corruptions > 0 {
                2
            } else if report.leaks > report.leaks_fixed {
                3
            } else {
                0
            }));
        }
        VolumeCommand::Info { name, output } => {
            let info = match pool.info(&name) {
                Ok(info) => serde_json::to_value(info)?,
                // Not a pool volume: any image or block device by path (dedicated VBDs), as
                // `qemu-img info` describes it: format by magic, backing chain wherever it leads.
                Err(VolumeError::NotFound(_)) if Path::new(&name).exists() => {
                    let path = PathBuf::from(&name);
                    serde_json::to_value(corral_disk::info(&path, OpenOptions::read_only())?)?
                }
                Err(err) => return Err(err.into()),
            };
            print_info(&info, output)?;
        }
        VolumeCommand::Resize { name, size, force } => {
            print_resized(&name, &pool.resize(&name, size.0, force)?);
        }
        VolumeCommand::Delete { name } => {
            crate::instance::manager(root)?.delete_volume(&pool, &name)?;
            print_deleted(&name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_created(name: &str, info: &VolumeInfo) {
    println!("created volume {name} ({})", describe(info));
}

pub(crate) fn print_resized(name: &str, info: &VolumeInfo) {
    println!("resized volume {name} ({})", describe(info));
}

pub(crate) fn print_deleted(name: &str) {
    println!("deleted volume {name}");
}

pub(crate) fn print_list(volumes: &[VolumeInfo], output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return output::print_json(&volumes);
    }
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
                match (&v.problem, v.backing_chain.first()) {
                    (Some(problem), _) => format!("unusable: {problem}"),
                    (None, Some(backing)) => backing.display().to_string(),
                    (None, None) => "-".into(),
                },
            ]
        })
        .collect();
    output::print_table(["NAME", "FORMAT", "SIZE", "USED", "BACKING"], &rows);
    Ok(())
}

/// `qemu-img check`'s summary, in its words where they fit.
fn print_check(name: &str, report: &corral_disk::CheckReport) {
    for problem in &report.problems {
        println!("{problem}");
    }
    if report.corruptions > 0 {
        println!(
            "{} errors were found on volume {name}; repair it with `qemu-img check -r all {}`",
            report.corruptions,
            report.filename.display()
        );
    }
    if report.leaks_fixed > 0 {
        println!("{} leaked clusters were given back", report.leaks_fixed);
    } else if report.leaks > 0 {
        println!(
            "{} leaked clusters were found on volume {name}: they waste space but harm nothing; \
             `corral volume check --repair {name}` gives them back",
            report.leaks
        );
    }
    if report.corruptions == 0 && report.leaks == 0 {
        println!("No errors were found on volume {name}.");
    }
    println!(
        "{}/{} clusters allocated, image end offset {}",
        report.allocated_clusters, report.total_clusters, report.image_end_offset
    );
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

/// A volume's description, or a disk image's by path (as JSON, whichever it is).
pub(crate) fn print_info(info: &serde_json::Value, output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return output::print_json(info);
    }
    let Some(fields) = info.as_object() else {
        return Ok(());
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
    Ok(())
}
