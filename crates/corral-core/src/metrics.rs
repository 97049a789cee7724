//! What each instance uses, for `/1.0/metrics`: its CPU time and memory (a container's from its
//! cgroup through its monitor, a VM's from its VMM process, which does all the guest's work),
//! its supervisor's restarts and event counters (a VM's exits by kind), and each nic's bytes and
//! packets, counted from the instance's side (what its host interface sent, the instance
//! received).

use std::collections::BTreeMap;

use corral_net::counters::{interface_counters, InterfaceCounters};
use serde::Serialize;

use crate::definition::Kind;
use crate::state::Status;
use crate::{CoreError, Manager};

/// One instance's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceMetrics {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub status: Status,
    pub cpus: u8,
    pub memory_limit_bytes: u64,
    /// While it runs (or is paused).
    pub usage: Option<Usage>,
    pub nics: Vec<NicMetrics>,
}

/// What a running instance uses.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// Guest restarts within this run (the `on_*` policies).
    pub restarts: u64,
    /// The supervisor's own counters (a VM's exits by kind; a container's pids, OOM kills).
    pub counters: BTreeMap<String, u64>,
}

/// One nic's traffic, from the instance's side.
#[derive(Clone, Debug, Serialize)]
pub struct NicMetrics {
    pub index: usize,
    /// The host's end (a VM's tap, a container's veth).
    pub host_interface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

impl NicMetrics {
    /// The instance's side of host interface `interface` whose own counters are `host`: what
    /// the host's end sent, the instance received.
    fn seen_from_inside(index: usize, interface: String, host: InterfaceCounters) -> NicMetrics {
        NicMetrics {
            index,
            host_interface: interface,
            rx_bytes: host.tx_bytes,
            rx_packets: host.tx_packets,
            tx_bytes: host.rx_bytes,
            tx_packets: host.rx_packets,
        }
    }
}

/// Container counters that are usage, not events: reported as such rather than as counters.
const CPU_NS: &str = "cpu_usage_ns";
const MEMORY_BYTES: &str = "memory_usage_bytes";

impl Manager {
    /// Every instance's numbers. Host interfaces are read in this process's network namespace,
    /// the one its supervisors' nics are made in.
    pub fn metrics(&self) -> Result<Vec<InstanceMetrics>, CoreError> {
        let interfaces = interface_counters().unwrap_or_default();
        let mut all = Vec::new();
        for summary in self.list()? {
            let name = summary.name;
            let usage = match (summary.status.is_active(), summary.pid) {
                (true, Some(pid)) => self.live_info(&name).map(|info| {
                    let mut counters = info.counters;
                    let (cpu_seconds, memory_bytes) = match summary.kind {
                        Kind::Container => (
                            counters.remove(CPU_NS).map(|ns| ns as f64 / 1e9),
                            counters.remove(MEMORY_BYTES),
                        ),
                        Kind::Vm => (
                            corral_host::process::cpu_seconds(pid),
                            corral_host::process::resident_bytes(pid),
                        ),
                    };
                    Usage {
                        cpu_seconds,
                        memory_bytes,
                        restarts: info.restarts,
                        counters,
                    }
                }),
                _ => None,
            };
            let nics = match usage {
                Some(_) => self
                    .nic_status(&name)?
                    .into_iter()
                    .filter_map(|nic| {
                        let host = *interfaces.get(&nic.host_interface)?;
                        Some(NicMetrics::seen_from_inside(
                            nic.index,
                            nic.host_interface,
                            host,
                        ))
                    })
                    .collect(),
                None => Vec::new(),
            };
            all.push(InstanceMetrics {
                name,
                kind: summary.kind,
                status: summary.status,
                cpus: summary.cpus,
                memory_limit_bytes: summary.memory_bytes,
                usage,
                nics,
            });
        }
        Ok(all)
    }
}
