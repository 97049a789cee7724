//! `corral network-attach INSTANCE_DIR`: the createRuntime hook of a system container with its
//! own user namespace, which moves its prepared nics into its network namespace (see
//! `corral_core::container_net::attached_by_hook`). The OCI state arrives on stdin.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use corral_core::driver::InstancePaths;

pub fn run(instance_dir: &Path) -> anyhow::Result<ExitCode> {
    let state: serde_json::Value = serde_json::from_reader(std::io::stdin().lock())
        .context("cannot read the container's state from stdin (run by the container runtime)")?;
    let pid = state["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .context("the container's state on stdin has no pid")?;
    corral_core::container_net::attach(&InstancePaths::new(instance_dir), pid)?;
    Ok(ExitCode::SUCCESS)
}
