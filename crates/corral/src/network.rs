//! `corral network`: managed bridges with NAT (and unmanaged ones corral only attaches to).

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use corral_net::cidr::{Ipv4Cidr, Ipv6Cidr};
use corral_net::definition::{DhcpRange, NetworkDefinition, NetworkKind};
use corral_net::networks::NetworkRequest;

use crate::completion;
use crate::output::{self, Format};

#[derive(Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    pub(crate) command: NetworkCommand,
}

#[derive(Subcommand)]
pub(crate) enum NetworkCommand {
    /// Create a network: a bridge with a gateway address and NAT to the host's uplinks (or,
    /// with --unmanaged, an existing bridge corral only attaches instances to).
    Create(CreateArgs),
    /// List the networks.
    #[command(alias = "ls")]
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Show a network, its bridge and its port forwards.
    Info {
        #[arg(add = completion::networks())]
        name: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Delete a network no instance uses: its bridge, rules and files.
    #[command(alias = "rm")]
    Delete {
        #[arg(add = completion::networks())]
        name: String,
    },
    /// Change settings: nat=true|false, dhcp-range=FIRST-LAST, domain=D, dns-upstream=IP,...
    Set {
        #[arg(add = completion::networks())]
        name: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

/// `corral network create`.
#[derive(Args)]
pub(crate) struct CreateArgs {
    name: String,
    /// The gateway address and prefix, like 10.0.3.1/24 (default: a free 10.X.Y.1/24).
    #[arg(long)]
    subnet: Option<Ipv4Cidr>,
    /// Masquerade the network's traffic to the host's uplinks (the default).
    #[arg(long, overrides_with = "no_nat")]
    nat: bool,
    /// Route the subnet without NAT.
    #[arg(long)]
    no_nat: bool,
    /// The DHCP pool, FIRST-LAST (default: the subnet without the gateway).
    #[arg(long)]
    dhcp_range: Option<DhcpRange>,
    /// The DNS domain instances are named in (default: corral).
    #[arg(long)]
    domain: Option<String>,
    /// An IPv6 gateway address and /64 prefix, like fd42:1:2::1/64.
    #[arg(long)]
    ipv6: Option<Ipv6Cidr>,
    /// DNS servers names outside the network are forwarded to (default: the host's).
    #[arg(long, value_delimiter = ',')]
    dns_upstream: Vec<IpAddr>,
    /// The bridge: the one to create (default: corral-NAME), or with --unmanaged the
    /// existing one to use.
    #[arg(long)]
    bridge: Option<String>,
    /// Use an existing bridge (bridged to the physical network, say) as it is.
    #[arg(long, requires = "bridge")]
    unmanaged: bool,
}

impl CreateArgs {
    /// The network the flags ask for, as core (and the API) takes it.
    pub(crate) fn into_request(self) -> anyhow::Result<NetworkRequest> {
        if self.nat && self.no_nat {
            bail!("give --nat or --no-nat, not both");
        }
        Ok(NetworkRequest {
            name: self.name,
            subnet: self.subnet,
            nat: (self.nat || self.no_nat).then_some(self.nat),
            dhcp_range: self.dhcp_range,
            domain: self.domain,
            ipv6: self.ipv6,
            dns_upstream: self.dns_upstream,
            bridge: self.bridge,
            unmanaged: self.unmanaged,
        })
    }
}

pub fn run(root: &Path, args: NetworkArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    match args.command {
        NetworkCommand::Create(args) => {
            print_created(&manager.network_create(&args.into_request()?)?);
        }
        NetworkCommand::List { output } => print_list(&manager.network_list()?, output)?,
        NetworkCommand::Info { name, output } => {
            let info = manager.network_info(&name)?;
            let service = manager.network_service(&name)?;
            if output == Format::Json {
                #[derive(serde::Serialize)]
                struct Shown<'a> {
                    #[serde(flatten)]
                    info: &'a corral_net::networks::NetworkInfo,
                    service: &'a Option<corral_core::network_service::ServiceStatus>,
                }
                output::print_json(&Shown {
                    info: &info,
                    service: &service,
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            let n = &info.definition;
            let line = |key: &str, value: &str| println!("{:<13} {value}", format!("{key}:"));
            line("Name", &n.name);
            line("Kind", kind(n));
            let state = info.bridge_state.as_deref().unwrap_or("missing");
            line("Bridge", &format!("{} ({state})", n.bridge));
            if let Some(v4) = n.ipv4 {
                line("IPv4", &v4.to_string());
            }
            if let Some(v6) = n.ipv6 {
                line("IPv6", &v6.to_string());
            }
            line("NAT", yes_no(n.nat));
            if let Some(range) = n.effective_dhcp_range() {
                line("DHCP range", &range.to_string());
            }
            line("Domain", &n.domain);
            if !n.dns_upstream.is_empty() {
                let servers: Vec<String> = n.dns_upstream.iter().map(IpAddr::to_string).collect();
                line("DNS upstream", &servers.join(", "));
            }
            if info.ports.is_empty() {
                line("Ports", "-");
            } else {
                line("Ports", &info.ports.join(", "));
            }
            if let Some(service) = &service {
                let state = if service.running {
                    "running"
                } else {
                    "stopped"
                };
                line("DHCP/DNS", state);
                for r in &service.reservations {
                    line(
                        "Reserved",
                        &format!("{} {} ({})", r.ipv4, r.hostname, r.mac),
                    );
                }
                for lease in &service.leases {
                    let name = lease.hostname.as_deref().unwrap_or("-");
                    line("Lease", &format!("{} {name} ({})", lease.ip, lease.mac));
                }
            }
            for (owner, nic) in &info.forwards {
                for forward in &nic.forwards {
                    line(
                        "Forward",
                        &format!(
                            "{}/{} -> {}:{} ({owner})",
                            forward.protocol, forward.host_port, nic.address, forward.guest_port
                        ),
                    );
                }
            }
        }
        NetworkCommand::Delete { name } => {
            manager.network_delete(&name)?;
            print_deleted(&name);
        }
        NetworkCommand::Set { name, settings } => {
            let changes = settings
                .iter()
                .map(|setting| match setting.split_once('=') {
                    Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
                    None => bail!("{setting:?} is not a setting: write KEY=VALUE, like nat=false"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let network = manager.network_set(&name, &changes)?;
            println!("changed network {} ({})", network.name, describe(&network));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_created(network: &NetworkDefinition) {
    println!("created network {} ({})", network.name, describe(network));
}

pub(crate) fn print_deleted(name: &str) {
    println!("deleted network {name}");
}

pub(crate) fn print_list(networks: &[NetworkDefinition], output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return output::print_json(&networks);
    }
    let rows: Vec<[String; 5]> = networks
        .iter()
        .map(|n| {
            [
                n.name.clone(),
                kind(n).to_owned(),
                n.bridge.clone(),
                n.ipv4.map_or_else(|| "-".into(), |v4| v4.to_string()),
                yes_no(n.nat).to_owned(),
            ]
        })
        .collect();
    output::print_table(["NAME", "KIND", "BRIDGE", "IPV4", "NAT"], &rows);
    Ok(())
}

fn kind(network: &NetworkDefinition) -> &'static str {
    match network.kind {
        NetworkKind::Managed => "managed",
        NetworkKind::Unmanaged => "unmanaged",
    }
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// `bridge corral-lab, 10.0.3.1/24, NAT` for a create's or set's report.
fn describe(network: &NetworkDefinition) -> String {
    let mut parts = vec![format!("bridge {}", network.bridge)];
    parts.extend(network.ipv4.map(|v4| v4.to_string()));
    parts.extend(network.ipv6.map(|v6| v6.to_string()));
    if network.nat {
        parts.push("NAT".into());
    }
    parts.join(", ")
}
