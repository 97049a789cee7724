//! `corral sysprep`: reset the identity of a stopped instance, a disk image or a root directory
//! offline (corral-core and corral-sysprep do the work); `corral guest sysprep` shares the options.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use corral_sysprep::{HostKeyMode, MachineIdMode, Operation, Options, Report};

use crate::output::{self, Format};

/// How the reset is done: the same for every target.
#[derive(Args)]
pub struct ResetArgs {
    /// The operations, comma-separated: `defaults` (every operation not marked opt-in), names
    /// to add (`+fs-uuids` or just `fs-uuids`) or leave out (`-logfiles`). --list-operations
    /// names them.
    #[arg(long, value_name = "LIST", default_value = "defaults")]
    operations: String,
    /// List the operations (name, default or opt-in, what it does) and exit.
    #[arg(long)]
    list_operations: bool,
    /// Say what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The hostname to write (/etc/hostname, /etc/hosts); without it `hostname` leaves them.
    #[arg(long)]
    hostname: Option<String>,
    /// `reset` leaves /etc/machine-id empty (systemd makes one at first boot); `new` writes a
    /// new random id now.
    #[arg(long, value_enum, default_value_t = MachineIdArg::Reset)]
    machine_id: MachineIdArg,
    /// `remove` deletes the SSH host keys (sshd or cloud-init make new ones at first boot);
    /// `new` makes new keys of the same types now, with the host's ssh-keygen.
    #[arg(long = "ssh-hostkeys", value_enum, default_value_t = HostKeysArg::Remove)]
    host_keys: HostKeysArg,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum MachineIdArg {
    Reset,
    New,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum HostKeysArg {
    Remove,
    New,
}

impl From<HostKeysArg> for HostKeyMode {
    fn from(arg: HostKeysArg) -> Self {
        match arg {
            HostKeysArg::Remove => HostKeyMode::Remove,
            HostKeysArg::New => HostKeyMode::New,
        }
    }
}

impl ResetArgs {
    fn options(&self) -> anyhow::Result<Options> {
        Ok(Options {
            operations: Operation::parse_list(&self.operations)?,
            hostname: self.hostname.clone(),
            machine_id: match self.machine_id {
                MachineIdArg::Reset => MachineIdMode::Reset,
                MachineIdArg::New => MachineIdMode::New,
            },
            host_keys: self.host_keys.into(),
            dry_run: self.dry_run,
            scratch_dir: None,
        })
    }

    /// Runs `reset` with these options and prints its report; or lists the operations.
    pub fn run(
        &self,
        reset: impl FnOnce(&Options) -> anyhow::Result<Report>,
    ) -> anyhow::Result<ExitCode> {
        if self.list_operations {
            list_operations(self.output)?;
            return Ok(ExitCode::SUCCESS);
        }
        let report = reset(&self.options()?)?;
        match self.output {
            Format::Json => output::print_json(&report)?,
            Format::Text if report.changes.is_empty() => println!("nothing to reset"),
            Format::Text => print!("{report}"),
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn list_operations(format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => output::print_json(
            &Operation::ALL
                .iter()
                .map(|op| {
                    serde_json::json!({
                        "name": op.name(),
                        "default": op.is_default(),
                        "description": op.description(),
                    })
                })
                .collect::<Vec<_>>(),
        ),
        Format::Text => {
            for op in Operation::ALL {
                let when = if op.is_default() { "default" } else { "opt-in" };
                println!("{:<20} {when:<8} {}", op.name(), op.description());
            }
            Ok(())
        }
    }
}

/// `corral sysprep`.
#[derive(Args)]
pub struct SysprepArgs {
    /// A stopped instance: its container root filesystem, or its VM's root disk (the first).
    #[arg(required_unless_present_any = ["disk", "rootfs", "list_operations"], conflicts_with_all = ["disk", "rootfs"])]
    instance: Option<String>,
    /// A disk image (raw or qcow2) instead; a qcow2 file's backing files must be in its
    /// directory.
    #[arg(long, conflicts_with = "rootfs")]
    disk: Option<PathBuf>,
    /// The disk's format; detected from the file when not given.
    #[arg(long, value_enum, requires = "disk")]
    format: Option<DiskFormatArg>,
    /// A root directory (a container's) instead.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    #[command(flatten)]
    reset: ResetArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum DiskFormatArg {
    Raw,
    Qcow2,
}

pub fn run(root: &Path, args: SysprepArgs) -> anyhow::Result<ExitCode> {
    args.reset.run(|options| {
        if let Some(dir) = &args.rootfs {
            return corral_sysprep::sysprep_rootfs(dir, options)
                .with_context(|| format!("cannot reset the identity of {}", dir.display()));
        }
        if let Some(path) = &args.disk {
            let format = args.format.map(|format| match format {
                DiskFormatArg::Raw => corral_core::definition::DiskFormat::Raw,
                DiskFormatArg::Qcow2 => corral_core::definition::DiskFormat::Qcow2,
            });
            return corral_core::sysprep::reset_named_disk(path, format, options)
                .with_context(|| format!("cannot reset the identity of {}", path.display()));
        }
        let name = args.instance.as_deref().unwrap_or_default();
        let manager = crate::instance::manager(root)?;
        Ok(manager.sysprep(name, options)?)
    })
}
