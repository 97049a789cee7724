//! The hidden commands of a network's DHCP and DNS service (corral-netservice): its supervisor,
//! which `corral network` starts, and the lease hook its dnsmasq runs.

use std::path::Path;
use std::process::ExitCode;

/// `corral network-service STATE_DIR`.
pub fn supervise(state_dir: &Path) -> anyhow::Result<ExitCode> {
    corral_netservice::run_supervisor(state_dir)?;
    Ok(ExitCode::SUCCESS)
}

/// `corral network-lease-hook STATE_DIR ACTION ARGS...`: dnsmasq's lease script; `init` prints
/// the stored leases on stdout for dnsmasq.
pub fn lease_hook(state_dir: &Path, args: &[String]) -> anyhow::Result<ExitCode> {
    corral_netservice::run_lease_hook(state_dir, args, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}
