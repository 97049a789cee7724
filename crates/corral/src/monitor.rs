//! `corral monitor DIR`: the supervisor of one container instance (corral-core's
//! `monitor::run`), with the arguments `corral-monitor` shares.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct MonitorArgs {
    /// The instance directory.
    pub dir: PathBuf,
    /// Restore the container from these CRIU images (a stateful snapshot) instead of creating
    /// it.
    #[arg(long)]
    pub restore: Option<PathBuf>,
    /// Keep compiled seccomp programs in this directory, shared with the other containers'
    /// monitors.
    #[arg(long, value_name = "DIR")]
    pub seccomp_cache: Option<PathBuf>,
}

/// Supervises the container of instance directory `args.dir` until it ends for good; `command`
/// is what precedes `DIR` on this executable's command line.
pub fn supervise(args: MonitorArgs, command: &[&str]) -> anyhow::Result<ExitCode> {
    corral_core::monitor::run(
        &args.dir,
        args.restore.as_deref(),
        args.seccomp_cache.as_deref(),
        command,
    )?;
    Ok(ExitCode::SUCCESS)
}
