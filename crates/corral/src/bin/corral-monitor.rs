//! `corral-monitor`: corral's container monitor alone. It takes `corral monitor`'s arguments and
//! supervises one container instance, and holds nothing else of corral (no CLI, VMM, images or
//! API): every container's monitor maps it for the container's life, and its init until it
//! execs the container's program, so the instance manager launches it when it is installed
//! beside `corral` (bench/density measures both).

#[path = "../error_report.rs"]
mod error_report;
#[path = "../monitor.rs"]
mod monitor;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "corral-monitor",
    version,
    about = "Supervise one container instance (corral monitor)"
)]
struct Cli {
    /// Set by the instance manager: wait for its go-ahead on this descriptor first.
    #[arg(long, hide = true, value_name = "FD")]
    start_gate: Option<std::os::fd::RawFd>,
    #[command(flatten)]
    monitor: monitor::MonitorArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(fd) = cli.start_gate {
        corral_control::start_gate::pass_start_gate(fd);
    }
    corral_control::logging::init(true, None);
    if let Err(err) = corral_core::failpoints::arm_from_env() {
        return error_report::report_error(&err.into());
    }
    // A restart runs this executable again with the instance directory alone.
    match monitor::supervise(cli.monitor, &[]) {
        Ok(code) => code,
        Err(err) => error_report::report_error(&err),
    }
}
