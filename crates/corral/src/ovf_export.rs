//! `corral export NAME FILE.ova [--ovf-version 1|2] [--format vmdk|qcow2]`: parses, calls
//! corral-core's OVF export, prints what was written and what was left out.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use corral_core::ovf_export::OvfExportOptions;
use corral_image::ovf::envelope::OvfVersion;
use corral_image::ovf::export::DiskFileFormat;

#[derive(Args)]
pub struct ExportArgs {
    /// The stopped VM instance.
    name: String,
    /// The OVA to create (it must not exist).
    file: PathBuf,
    /// The OVF version of the envelope: 1 (OVF 1.x, what every hypervisor reads) or 2.
    #[arg(long, value_enum, default_value = "1")]
    ovf_version: VersionArg,
    /// How the disks are stored: vmdk (streamOptimized, for VMware and VirtualBox; written
    /// straight into the OVA) or qcow2 (for oVirt, virt-v2v and corral; staged beside FILE
    /// first).
    #[arg(long, value_enum, default_value = "vmdk")]
    format: FormatArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum VersionArg {
    #[value(name = "1")]
    V1,
    #[value(name = "2")]
    V2,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Vmdk,
    Qcow2,
}

pub fn run(root: &std::path::Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    let options = OvfExportOptions {
        version: match args.ovf_version {
            VersionArg::V1 => OvfVersion::V1,
            VersionArg::V2 => OvfVersion::V2,
        },
        format: match args.format {
            FormatArg::Vmdk => DiskFileFormat::StreamOptimizedVmdk,
            FormatArg::Qcow2 => DiskFileFormat::Qcow2,
        },
    };
    let bars = crate::progress::Bars::new();
    let exported = manager.export_ovf(&args.name, &args.file, &options, &bars);
    bars.finish();
    let exported = exported?;
    println!(
        "exported vm {} to {}: {} disk(s), {} nic(s)",
        args.name,
        args.file.display(),
        exported.disks,
        exported.nics
    );
    for note in &exported.notes {
        println!("  {note}");
    }
    Ok(ExitCode::SUCCESS)
}
