//! `corral-vmm`: corral's VMM alone. It takes `corral vmm run`'s arguments and runs one VM, and
//! holds nothing else of corral (no CLI, container engine, images or API), so a VM's process
//! pages in only VMM code: the instance manager launches it when it is installed beside
//! `corral` (bench/vmm-start measures both).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "corral-vmm",
    version,
    about = "Run one VM until it stops (corral vmm run)"
)]
struct Cli {
    /// Set by the instance manager: wait for its go-ahead on this descriptor first.
    #[arg(long, hide = true, value_name = "FD")]
    start_gate: Option<std::os::fd::RawFd>,
    #[command(flatten)]
    run: corral_vmm_cli::RunArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(fd) = cli.start_gate {
        corral_control::start_gate::pass_start_gate(fd);
    }
    // The VMM rotates its log from its main thread (`--log-file`): its other threads' seccomp
    // filters forbid what rotating takes.
    corral_control::logging::init(false, None);
    match corral_vmm_cli::run(cli.run) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("corral-vmm: {err:#}");
            ExitCode::FAILURE
        }
    }
}
