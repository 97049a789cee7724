//! `corral host`: validate and describe the host (virt-host-validate, virsh nodeinfo).

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use corral_host::check::{self, Status};
use corral_host::facts::{HostFacts, HostPaths, KvmBackend};

use crate::output::{self, Format};

#[derive(Args)]
pub struct HostArgs {
    #[command(subcommand)]
    command: HostCommand,
}

#[derive(Subcommand)]
enum HostCommand {
    /// Check that this host can run VMs and containers (PASS/WARN/FAIL with hints).
    ///
    /// Exits 0 when nothing FAILs, 1 otherwise.
    Check {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Describe the host: CPU, memory, kernel, KVM, cgroups, namespaces.
    Info {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
}

/// `root` is corral's root, whose permissions `check` judges too.
pub fn run(root: &Path, args: HostArgs) -> anyhow::Result<ExitCode> {
    let facts = HostFacts::gather(&HostPaths {
        corral_root: Some(root.to_path_buf()),
        ..HostPaths::default()
    });
    match args.command {
        HostCommand::Check { output } => check(&facts, output),
        HostCommand::Info { output } => info(&facts, output),
    }
}

fn check(facts: &HostFacts, format: Format) -> anyhow::Result<ExitCode> {
    let checks = check::evaluate(facts);
    let overall = check::overall(&checks);
    match format {
        Format::Json => output::print_json(&serde_json::json!({
            "result": overall,
            "checks": checks,
        }))?,
        Format::Text => {
            let width = checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
            for c in &checks {
                println!("{}  {:width$}  {}", c.status, c.id, c.detail);
                if let Some(hint) = &c.hint {
                    println!("{:6}{:width$}  hint: {hint}", "", "");
                }
            }
            let count = |s| checks.iter().filter(|c| c.status == s).count();
            println!();
            println!(
                "{overall}: {} passed, {}, {}{}",
                count(Status::Pass),
                output::plural(count(Status::Warn), "warning"),
                output::plural(count(Status::Fail), "failure"),
                if overall == Status::Fail {
                    " — fix the FAIL lines before running instances"
                } else {
                    " — this host can run VMs and containers"
                }
            );
        }
    }
    Ok(if overall == Status::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn info(facts: &HostFacts, format: Format) -> anyhow::Result<ExitCode> {
    if format == Format::Json {
        output::print_json(facts)?;
        return Ok(ExitCode::SUCCESS);
    }
    let cpu = &facts.cpu;
    let line = |label: &str, value: String| {
        let label = if label.is_empty() {
            String::new()
        } else {
            format!("{label}:")
        };
        println!("{label:<12}{value}");
    };
    line(
        "CPU",
        format!(
            "{} ({}), {} logical CPUs",
            cpu.model_name, cpu.vendor, cpu.logical_cpus
        ),
    );
    line("Flags", cpu.relevant_flags().join(" "));
    line(
        "Memory",
        facts
            .memory_total_bytes
            .map_or("unknown".to_string(), output::human_bytes),
    );
    line(
        "Kernel",
        format!("{} ({})", facts.kernel.release, facts.kernel.arch),
    );
    let kvm = &facts.kvm;
    let backend = match &facts.kvm_backend {
        KvmBackend::Hardware { extension, nested } => format!(
            "hardware {}{}",
            extension.product_name(),
            if *nested { ", nested" } else { "" }
        ),
        KvmBackend::Paravirtual { module } => {
            format!("paravirtual ({module}; guest kernels run emulated)")
        }
        KvmBackend::Unknown => "usable, backend unknown".to_string(),
        KvmBackend::Unusable => "not usable (see `corral host check`)".to_string(),
    };
    line("KVM", backend);
    if let (Some(api), Some(max)) = (kvm.api_version, kvm.max_vcpus) {
        line(
            "",
            format!(
                "API {api}; up to {max} vCPUs per VM (recommended {})",
                kvm.recommended_vcpus.unwrap_or(max)
            ),
        );
        let caps: Vec<String> = kvm
            .capabilities
            .iter()
            .map(|c| format!("{}{}", if c.present { "" } else { "!" }, c.name))
            .collect();
        line("", format!("capabilities: {}", caps.join(" ")));
    }
    line("Modules", facts.modules.kvm_modules().join(" "));
    let cgroups = &facts.cgroups;
    line(
        "cgroups",
        match cgroups.layout.v2_mount() {
            Some(mount) => format!("{} (v2 at {})", cgroups.mode, mount.display()),
            None => cgroups.mode.to_string(),
        },
    );
    for (name, support) in &cgroups.controllers {
        use corral_host::cgroups::ControllerSupport;
        let place = match support {
            Some(ControllerSupport::V1 { mount_point }) => format!("v1 {}", mount_point.display()),
            Some(ControllerSupport::V2) => "v2".to_string(),
            None => "unavailable".to_string(),
        };
        line("", format!("{name:<8} {place}"));
    }
    let namespaces: Vec<&str> = facts
        .namespaces
        .iter()
        .filter(|n| n.available)
        .map(|n| n.kind.as_str())
        .collect();
    line("Namespaces", namespaces.join(" "));
    line(
        "Network",
        format!(
            "tun {}, bridge {}",
            if facts.tun.present {
                "present"
            } else {
                "missing"
            },
            if facts.bridge { "available" } else { "missing" }
        ),
    );
    Ok(ExitCode::SUCCESS)
}
