//! `corral import FILE.ova|FILE.ovf [NAME] [--template]`: parses, calls corral-core's OVF import
//! (an instance, or with `--template` a VM image), prints what was made and what was mapped or
//! dropped.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use corral_core::ovf_import::OvfImportOptions;

#[derive(Args)]
pub struct ImportArgs {
    /// The package: an .ova archive, or an .ovf envelope with its files beside it (as
    /// VirtualBox, VMware's ovftool and other hypervisors export them).
    file: PathBuf,
    /// The instance's name (default: the virtual system's name in the envelope); with several
    /// systems in the package, each is named NAME-SYSTEM. With --template, the image's alias.
    name: Option<String>,
    /// Make a VM template image (in the image store, for `corral create --image`) of the
    /// system's first disk instead of an instance.
    #[arg(long, conflicts_with = "start")]
    template: bool,
    /// The corral network every network adapter joins (`default` is created on first use);
    /// `none` drops the adapters. Their MACs are kept.
    #[arg(
        long,
        env = "CORRAL_DEFAULT_NETWORK",
        default_value = corral_core::networks::DEFAULT_NETWORK,
        value_name = "NAME|none"
    )]
    network: String,
    /// A kernel to boot (ELF vmlinux or bzImage); without one, the kernel found inside the
    /// first disk is booted (grub.cfg, BLS entries, /boot/vmlinuz-*).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The initrd of --kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Start the instance once imported.
    #[arg(long)]
    start: bool,
}

pub fn run(root: &std::path::Path, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let options = OvfImportOptions {
        name: args.name,
        network: (args.network != "none").then_some(args.network),
        kernel: args.kernel.map(absolute),
        initrd: args.initrd.map(absolute),
        cmdline: args.cmdline,
    };
    if args.template {
        return template(&manager, &args.file, options);
    }
    let bars = crate::progress::Bars::new();
    let imported = manager.import_ovf(&args.file, &options, &bars);
    bars.finish();
    let imported = imported?;
    if imported.iter().any(|i| !i.verified) {
        eprintln!(
            "warning: {} has no manifest; its files were not verified",
            args.file.display()
        );
    }
    for import in &imported {
        let definition = &import.definition;
        println!(
            "imported vm {} from {}: {} CPU(s), {} memory, {} disk(s), {} nic(s)",
            definition.name,
            args.file.display(),
            definition.cpus,
            definition.memory,
            definition.disks.len(),
            definition.nics.len()
        );
        for note in &import.notes {
            println!("  {note}");
        }
    }
    if args.start {
        for import in &imported {
            manager.start(&import.definition.name)?;
            println!("started {}", import.definition.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn template(
    manager: &corral_core::Manager,
    file: &std::path::Path,
    options: OvfImportOptions,
) -> anyhow::Result<ExitCode> {
    // The alias is checked before the work, not refused after it.
    if let Some(alias) = &options.name {
        corral_image::store::validate_alias(alias)?;
    }
    let bars = crate::progress::Bars::new();
    let imported = manager.import_ovf_template(file, &options, &bars);
    bars.finish();
    let (mut image, new, notes) = imported?;
    if let Some(alias) = &options.name {
        image = manager
            .images()?
            .set_alias(alias, image.fingerprint(), false)?;
    }
    if new {
        println!("imported template image {}", image.display_name());
    } else {
        println!("template image {} was already stored", image.display_name());
    }
    for note in &notes {
        println!("  {note}");
    }
    Ok(ExitCode::SUCCESS)
}
