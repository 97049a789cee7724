//! `corral image`: the image store (list, info, aliases, delete, import, export).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use corral_core::Manager;
use corral_image::export::ExportFormat;
use corral_image::import::{Format as ImportFormat, ImportOptions};
use corral_image::store::Image;

use crate::completion;
use crate::output::{self, Format};

#[derive(Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub(crate) command: ImageCommand,
}

#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// List the stored images.
    #[command(alias = "ls")]
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Show an image (by alias, fingerprint or unique fingerprint prefix).
    #[command(alias = "show")]
    Info {
        #[arg(add = completion::images())]
        image: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Manage aliases: names for images (`debian-12`, `debian-12/amd64`).
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
    /// Build images from a spec (Packer-like: a source, provisioning steps, outputs).
    Build(crate::image_build::BuildArgs),
    /// Delete images no instance reads from (linked clones keep theirs).
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import an image: a rootfs directory or tarball (.tar, .tar.gz, .tar.xz, .tar.zst), an OCI
    /// layout or oci-archive, an Incus image (unified tarball, or metadata tarball + rootfs
    /// file), a disk image (raw, qcow2; vmdk, vdi, vhdx through qemu-img) or a Vagrant libvirt
    /// box. The format is detected unless given.
    Import(ImportArgs),
    /// Write an image out: a container as rootfs, incus (default), oci or oci-archive; a VM as
    /// qcow2 (default), raw or incus.
    Export {
        #[arg(add = completion::images())]
        image: String,
        /// The file (or directory, for oci and a VM's incus export) to create.
        target: PathBuf,
        /// rootfs, incus, oci, oci-archive, qcow2 or raw.
        #[arg(long, short)]
        format: Option<ExportFormat>,
    },
}

#[derive(Args)]
pub struct ImportArgs {
    /// The image: a file or directory.
    pub(crate) source: PathBuf,
    /// The root filesystem file (squashfs or qcow2) of a split Incus image.
    pub(crate) rootfs_file: Option<PathBuf>,
    /// Name it (repeatable).
    #[arg(long)]
    pub(crate) alias: Vec<String>,
    /// rootfs, oci, incus, disk or vagrant (default: told by the content).
    #[arg(long)]
    pub(crate) format: Option<ImportFormat>,
    /// Which image of an OCI layout holding several (its ref name, e.g. `latest`).
    #[arg(long)]
    pub(crate) reference: Option<String>,
    #[arg(long)]
    pub(crate) os: Option<String>,
    #[arg(long)]
    pub(crate) release: Option<String>,
    #[arg(long)]
    pub(crate) description: Option<String>,
    /// A VM image's own kernel (otherwise the one inside the disk boots).
    #[arg(long)]
    pub(crate) kernel: Option<PathBuf>,
    #[arg(long, requires = "kernel")]
    pub(crate) initrd: Option<PathBuf>,
    /// A VM image's kernel command line.
    #[arg(long)]
    pub(crate) cmdline: Option<String>,
    /// The most an archive may unpack to (stops decompression bombs), e.g. 10G.
    #[arg(long, value_name = "SIZE", default_value = "64G")]
    pub(crate) max_size: corral_control::size::MemorySize,
    #[arg(long, short, value_enum, default_value_t)]
    pub(crate) output: Format,
}

#[derive(Subcommand)]
pub(crate) enum AliasCommand {
    /// Point ALIAS at IMAGE (--force moves an alias naming another image).
    #[command(alias = "create")]
    Set {
        alias: String,
        image: String,
        #[arg(long)]
        force: bool,
    },
    /// Remove an alias (the image stays).
    #[command(alias = "rm")]
    Delete { alias: String },
    /// Every alias and the image it names.
    #[command(alias = "ls")]
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
}

pub fn run(root: &Path, args: ImageArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    let images = manager.images()?;
    match args.command {
        ImageCommand::List { output } => print_list(&images.list()?, output)?,
        ImageCommand::Info { image, output } => print_info(&images.resolve(&image)?, output)?,
        ImageCommand::Alias { command } => match command {
            AliasCommand::Set {
                alias,
                image,
                force,
            } => {
                let image = images.set_alias(&alias, &image, force)?;
                println!("alias {alias} -> {}", image.short_fingerprint());
            }
            AliasCommand::Delete { alias } => {
                images.remove_alias(&alias)?;
                println!("removed alias {alias}");
            }
            AliasCommand::List { output } => {
                let aliases = images.aliases()?;
                if output == Format::Json {
                    output::print_json(&aliases)?;
                } else {
                    let rows: Vec<[String; 2]> = aliases
                        .iter()
                        .map(|(alias, fp)| {
                            [alias.clone(), corral_image::store::short(fp).to_string()]
                        })
                        .collect();
                    output::print_table(["ALIAS", "FINGERPRINT"], &rows);
                }
            }
        },
        ImageCommand::Build(args) => return crate::image_build::build(root, args),
        ImageCommand::Import(args) => return import(&manager, args),
        ImageCommand::Export {
            image,
            target,
            format,
        } => {
            let bars = crate::progress::Bars::new();
            let exported = manager.export_image(&image, &target, format, &bars);
            bars.finish();
            let (image, _) = exported?;
            print_exported(&image, &target);
        }
        ImageCommand::Delete { images: references } => {
            for reference in references {
                print_deleted(&manager.delete_image(&reference)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_exported(image: &Image, target: &Path) {
    println!(
        "exported image {} to {}",
        image.display_name(),
        target.display()
    );
}

pub(crate) fn print_deleted(image: &Image) {
    println!("deleted image {}", image.display_name());
}

fn import(manager: &Manager, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        format: args.format,
        rootfs_file: args.rootfs_file,
        reference: args.reference,
        os: args.os,
        release: args.release,
        description: args.description,
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        limits: corral_image::archive::Limits {
            max_bytes: args.max_size.0,
            ..Default::default()
        },
    };
    let bars = crate::progress::Bars::new();
    let imported = manager.import_image(&args.source, &options, &args.alias, &bars);
    bars.finish();
    let (image, new) = imported?;
    print_imported(&image, new, args.output)?;
    Ok(ExitCode::SUCCESS)
}

/// What `image import` says; `new` when the store did not hold the image before.
pub(crate) fn print_imported(image: &Image, new: bool, output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        output::print_json(image)?;
    } else if new {
        println!("imported image {}", image.display_name());
    } else {
        println!("image {} was already stored", image.display_name());
    }
    Ok(())
}

pub(crate) fn print_list(images: &[Image], output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return output::print_json(&images);
    }
    let rows: Vec<[String; 7]> = images.iter().map(row).collect();
    output::print_table(
        [
            "ALIAS",
            "FINGERPRINT",
            "TYPE",
            "ARCH",
            "OS",
            "SIZE",
            "DESCRIPTION",
        ],
        &rows,
    );
    Ok(())
}

fn row(image: &Image) -> [String; 7] {
    let meta = image.metadata();
    let os = [meta.os.as_deref(), meta.release.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    [
        if image.aliases.is_empty() {
            "-".into()
        } else {
            image.aliases.join(", ")
        },
        image.short_fingerprint().to_string(),
        meta.image_type.to_string(),
        meta.architecture.clone(),
        if os.is_empty() { "-".into() } else { os },
        output::human_bytes(image.record.size),
        meta.description.clone().unwrap_or_else(|| "-".into()),
    ]
}

pub(crate) fn print_info(image: &Image, output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return output::print_json(image);
    }
    let meta = image.metadata();
    let line = |key: &str, value: &dyn std::fmt::Display| println!("{key:<13}{value}");
    line("Fingerprint:", &image.fingerprint());
    if !image.aliases.is_empty() {
        line("Aliases:", &image.aliases.join(", "));
    }
    line("Type:", &meta.image_type);
    line("Architecture:", &meta.architecture);
    for (key, value) in [
        ("OS:", &meta.os),
        ("Release:", &meta.release),
        ("Description:", &meta.description),
        ("Created:", &meta.created),
    ] {
        if let Some(value) = value {
            line(key, value);
        }
    }
    line("Source:", &image.record.source);
    line("Imported:", &output::timestamp(image.record.imported_at));
    line("Size:", &output::human_bytes(image.record.size));
    let command = meta.container.command();
    if !command.is_empty() {
        line("Command:", &command.join(" "));
    }
    if meta.container.init {
        line("Init:", &"yes (a system container)");
    }
    if !meta.container.env.is_empty() {
        line("Environment:", &meta.container.env.join(" "));
    }
    if let Some(dir) = &meta.container.working_dir {
        line("Working dir:", dir);
    }
    if let Some(user) = &meta.container.user {
        line("User:", user);
    }
    if meta.vm.kernel {
        line("Kernel:", &"carried by the image");
    } else if meta.image_type == corral_image::metadata::ImageType::Vm {
        line("Kernel:", &"found inside the disk at each start");
    }
    if let Some(cmdline) = &meta.vm.cmdline {
        line("Cmdline:", cmdline);
    }
    Ok(())
}

/// `corral publish`.
#[derive(Args)]
pub struct PublishArgs {
    /// A stopped instance.
    #[arg(add = completion::instances())]
    instance: String,
    /// Name the new image (repeatable).
    #[arg(long)]
    alias: Vec<String>,
    /// Remove the instance's identity from the image (a template): the copy is reset as
    /// `corral sysprep` does by default; the instance itself is not changed.
    #[arg(long)]
    seal: bool,
}

impl PublishArgs {
    /// The same publish, sealed (`corral template`).
    pub fn sealed(self) -> Self {
        Self { seal: true, ..self }
    }
}

pub fn publish(root: &Path, args: PublishArgs) -> anyhow::Result<ExitCode> {
    for alias in &args.alias {
        corral_image::store::validate_alias(alias)?;
    }
    let manager = crate::instance::manager(root)?;
    let bars = crate::progress::Bars::new();
    let (mut image, _, identity) = manager.publish(&args.instance, args.seal, &bars)?;
    bars.finish();
    if let Some(report) = identity {
        print!("{report}");
    }
    let images = manager.images()?;
    for alias in &args.alias {
        image = images.set_alias(alias, image.fingerprint(), true)?;
    }
    println!(
        "published instance {} as {}image {}",
        args.instance,
        if args.seal { "template " } else { "" },
        image.display_name()
    );
    Ok(ExitCode::SUCCESS)
}
