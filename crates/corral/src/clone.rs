//! `corral clone SRC DST`: a new instance from a stopped one, with an identity of its own
//! (corral-core's `Manager::clone_instance` decides and does everything).

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use corral_core::clone::{CloneOptions, ClonedDisk};
use corral_core::definition::ImageStorage;
use corral_core::images::CloneMode;

use crate::completion;
use crate::output::{self, Format};
use crate::sysprep::HostKeysArg;

/// `corral clone`.
#[derive(Args)]
pub struct CloneArgs {
    /// The instance to copy: stopped, or paused with --force.
    #[arg(add = completion::instances())]
    source: String,
    /// The new instance's name.
    name: String,
    /// A VM's disks become qcow2 overlays on read-only bases: a disk that stands alone is frozen
    /// into a base (no copy), on which the source also continues; the store keeps a base while
    /// an instance uses it.
    #[arg(long, conflicts_with = "full")]
    linked: bool,
    /// Independent copies of the VM's disks (the default, as virt-clone and incus copy do):
    /// reflinked where the filesystem can, else only their data copied (holes stay holes). A
    /// disk that is an overlay (on an image, say) is copied and keeps its backing image.
    #[arg(long)]
    full: bool,
    /// Start the clone once made.
    #[arg(long)]
    start: bool,
    /// The clone's hostname (default: its name).
    #[arg(long)]
    hostname: Option<String>,
    /// Leave the identity inside the copied content (machine-id, host keys, hostname, logs ...)
    /// as the source's. Without it the copy is reset as `corral sysprep` does (its default
    /// operations, new SSH host keys, the clone's hostname); a VM's root disk must then hold an
    /// ext2/3/4 root filesystem corral can edit offline.
    #[arg(long)]
    keep_identity: bool,
    /// What the identity reset does with the SSH host keys: `new` makes new keys of the
    /// source's types now (sshd starts at once; RSA takes most of a second), `remove` leaves
    /// none, for the guest's sshd or cloud-init to make at first boot (clones in milliseconds).
    #[arg(long = "ssh-hostkeys", value_enum, default_value_t = HostKeysArg::New, conflicts_with = "keep_identity")]
    host_keys: HostKeysArg,
    /// Clone a paused instance: its content as it is now (crash-consistent).
    #[arg(long)]
    force: bool,
    /// The clone's network interfaces instead of the source's: network=NAME[,ip=ADDRESS],
    /// tap=NAME or bridge=NAME, optionally ,mac=MAC (repeatable). Needed when the source uses
    /// a fixed tap device.
    #[arg(long = "nic")]
    nics: Vec<corral_core::nic::Nic>,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

pub fn run(root: &Path, args: CloneArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    let options = CloneOptions {
        mode: if args.full || !args.linked {
            CloneMode::Full
        } else {
            CloneMode::Linked
        },
        hostname: args.hostname,
        force: args.force,
        keep_identity: args.keep_identity,
        host_keys: args.host_keys.into(),
        nics: (!args.nics.is_empty()).then_some(args.nics),
        ..CloneOptions::new(&args.name)
    };
    let bars = crate::progress::Bars::new();
    let cloned = manager.clone_instance(&args.source, &options, &bars)?;
    bars.finish();
    if args.start {
        manager.start(&args.name)?;
    }
    if args.output == Format::Json {
        output::print_json(&serde_json::json!({
            "definition": cloned.definition,
            "disks": cloned.disks,
            "identity": cloned.identity,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "cloned {} {} as {}{}",
        cloned.definition.kind,
        args.source,
        args.name,
        if args.start { "; started it" } else { "" }
    );
    for disk in &cloned.disks {
        println!("{}", disk_line(disk));
    }
    if let Some(report) = &cloned.identity {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// How a disk was made, in words: whether a full copy shared blocks is worth a line, since a
/// copy costs the disk's data in time and space where a reflink costs neither.
fn disk_line(disk: &ClonedDisk) -> String {
    let how = match disk.storage {
        ImageStorage::Reflink => "reflinked: its blocks are shared with the source's until written",
        ImageStorage::Copy | ImageStorage::Full => {
            "copied (its data only): this filesystem cannot share blocks (reflink); XFS with \
             reflink=1 or btrfs can"
        }
        ImageStorage::Linked => "linked: a qcow2 overlay on a read-only base",
    };
    format!("disk {}: {how}", disk.path.display())
}
