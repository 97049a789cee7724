//! `/1.0/metrics` in Prometheus's text format (version 0.0.4): per instance its state, CPU time,
//! memory, restarts, its supervisor's counters (a VM's exits by kind and each disk's requests and
//! bytes, a container's pids and OOM kills) and each nic's bytes and packets; per host the
//! instance counts by type and status.

use std::collections::BTreeMap;
use std::fmt::Write;

use corral_core::metrics::InstanceMetrics;

/// The Content-Type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family: its samples (labels, value) in order.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    fn render(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {value}", self.name, labels.join(","));
        }
    }
}

/// A label value as the format needs it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The families of a VM disk's counters (`disk.DEVICE.FIELD` from its VMM), with their help.
const DISK_FAMILIES: [(&str, &str, &str); 6] = [
    (
        "reads",
        "corral_vm_disk_reads_total",
        "Reads the guest made of the disk.",
    ),
    (
        "read_bytes",
        "corral_vm_disk_read_bytes_total",
        "Bytes the guest read from the disk.",
    ),
    (
        "writes",
        "corral_vm_disk_writes_total",
        "Writes the guest made to the disk.",
    ),
    (
        "written_bytes",
        "corral_vm_disk_written_bytes_total",
        "Bytes the guest wrote to the disk.",
    ),
    (
        "flushes",
        "corral_vm_disk_flushes_total",
        "Flushes the guest asked of the disk.",
    ),
    (
        "errors",
        "corral_vm_disk_errors_total",
        "Disk requests answered with an error.",
    ),
];

/// A supervisor counter's family: a VM's exits by kind and its disks' requests, a container's
/// gauges and OOM kills, anything else as a named event count.
fn counter_family(counter: &str) -> (&'static str, Option<(&'static str, String)>) {
    let disk = (counter.strip_prefix("disk.")).and_then(|counter| counter.rsplit_once('.'));
    if let Some((device, field)) = disk {
        if let Some((_, name, _)) = DISK_FAMILIES.iter().find(|(f, _, _)| *f == field) {
            return (name, Some(("disk", device.to_owned())));
        }
    }
    match counter {
        "pids_current" => ("corral_container_pids", None),
        "memory_max_usage_bytes" => ("corral_container_memory_max_usage_bytes", None),
        "oom_kills" => ("corral_container_oom_kills_total", None),
        _ => match counter.strip_prefix("exits_") {
            Some(reason) => ("corral_vm_exits_total", Some(("reason", reason.to_owned()))),
            None => (
                "corral_supervisor_events_total",
                Some(("event", counter.to_owned())),
            ),
        },
    }
}

/// The text of `instances`' metrics.
pub fn render(instances: &[InstanceMetrics]) -> String {
    let mut counts = Family::new("corral_instances", "gauge", "Instances by type and status.");
    let mut info = Family::new(
        "corral_instance_info",
        "gauge",
        "1 for each instance, with its type and status.",
    );
    let mut cpus = Family::new(
        "corral_instance_cpus",
        "gauge",
        "CPUs the instance is given.",
    );
    let mut memory_limit = Family::new(
        "corral_instance_memory_limit_bytes",
        "gauge",
        "Memory the instance is given.",
    );
    let mut cpu = Family::new(
        "corral_instance_cpu_seconds_total",
        "counter",
        "CPU time the running instance used in this run (a VM: its VMM process).",
    );
    let mut memory = Family::new(
        "corral_instance_memory_bytes",
        "gauge",
        "Memory the running instance uses (a container: its cgroup; a VM: its VMM's resident set).",
    );
    let mut restarts = Family::new(
        "corral_instance_restarts_total",
        "counter",
        "Guest restarts within the current run (the on_* policies).",
    );
    let mut supervisor: BTreeMap<&'static str, Family> = BTreeMap::new();
    let nic_families = [
        (
            "corral_instance_nic_receive_bytes_total",
            "Bytes the instance received on the nic.",
        ),
        (
            "corral_instance_nic_receive_packets_total",
            "Packets the instance received on the nic.",
        ),
        (
            "corral_instance_nic_transmit_bytes_total",
            "Bytes the instance sent on the nic.",
        ),
        (
            "corral_instance_nic_transmit_packets_total",
            "Packets the instance sent on the nic.",
        ),
    ];
    let mut nics: Vec<Family> = nic_families
        .iter()
        .map(|(name, help)| Family::new(name, "counter", help))
        .collect();

    let mut by_state: BTreeMap<(String, String), u64> = BTreeMap::new();
    for instance in instances {
        let (kind, status) = (instance.kind.to_string(), instance.status.to_string());
        *by_state.entry((kind.clone(), status.clone())).or_default() += 1;
        let id = || vec![("name", instance.name.clone()), ("type", kind.clone())];
        let mut with_status = id();
        with_status.push(("status", status));
        info.samples.push((with_status, 1.0));
        cpus.samples.push((id(), f64::from(instance.cpus)));
        memory_limit
            .samples
            .push((id(), instance.memory_limit_bytes as f64));
        if let Some(usage) = &instance.usage {
            if let Some(seconds) = usage.cpu_seconds {
                cpu.samples.push((id(), seconds));
            }
            if let Some(bytes) = usage.memory_bytes {
                memory.samples.push((id(), bytes as f64));
            }
            restarts.samples.push((id(), usage.restarts as f64));
            for (counter, value) in &usage.counters {
                let (name, label) = counter_family(counter);
                let family = supervisor.entry(name).or_insert_with(|| {
                    let (kind, help) = match name {
                        "corral_container_pids" => ("gauge", "Processes in the container."),
                        "corral_container_memory_max_usage_bytes" => {
                            ("gauge", "The container's peak memory use.")
                        }
                        "corral_container_oom_kills_total" => (
                            "counter",
                            "Processes of the container the OOM killer ended.",
                        ),
                        "corral_vm_exits_total" => {
                            ("counter", "The VM's exits to its VMM by kind.")
                        }
                        name => match DISK_FAMILIES.iter().find(|(_, n, _)| *n == name) {
                            Some((_, _, help)) => ("counter", *help),
                            None => ("counter", "Events the instance's supervisor counted."),
                        },
                    };
                    Family::new(name, kind, help)
                });
                let mut labels = id();
                labels.extend(label);
                family.samples.push((labels, *value as f64));
            }
        }
        for nic in &instance.nics {
            let labels = || {
                let mut labels = id();
                labels.push(("nic", nic.index.to_string()));
                labels.push(("interface", nic.host_interface.clone()));
                labels
            };
            for (family, value) in
                nics.iter_mut()
                    .zip([nic.rx_bytes, nic.rx_packets, nic.tx_bytes, nic.tx_packets])
            {
                family.samples.push((labels(), value as f64));
            }
        }
    }
    for ((kind, status), count) in by_state {
        counts
            .samples
            .push((vec![("type", kind), ("status", status)], count as f64));
    }

    let mut out = String::new();
    for family in [
        &counts,
        &info,
        &cpus,
        &memory_limit,
        &cpu,
        &memory,
        &restarts,
    ]
    .into_iter()
    .chain(supervisor.values())
    .chain(nics.iter())
    {
        family.render(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::definition::Kind;
    use corral_core::metrics::{NicMetrics, Usage};
    use corral_core::state::Status;

    fn instance(name: &str, kind: Kind, usage: Option<Usage>) -> InstanceMetrics {
        InstanceMetrics {
            name: name.into(),
            kind,
            status: if usage.is_some() {
                Status::Running
            } else {
                Status::Stopped
            },
            cpus: 2,
            memory_limit_bytes: 256 << 20,
            usage,
            nics: Vec::new(),
        }
    }

    #[test]
    fn families_have_help_and_type_and_label_values_are_escaped() {
        let mut running = instance(
            "web",
            Kind::Vm,
            Some(Usage {
                cpu_seconds: Some(1.5),
                memory_bytes: Some(1000),
                restarts: 2,
                counters: [
                    ("exits_io_out".to_owned(), 7),
                    ("disk.virtio-blk0.read_bytes".to_owned(), 4096),
                    ("disk.virtio-blk0.writes".to_owned(), 3),
                    ("disk.virtio-blk1.writes".to_owned(), 5),
                ]
                .into(),
            }),
        );
        running.nics.push(NicMetrics {
            index: 0,
            host_interface: "tap\"0".into(),
            rx_bytes: 10,
            rx_packets: 1,
            tx_bytes: 20,
            tx_packets: 2,
        });
        let text = render(&[running, instance("db", Kind::Container, None)]);
        for line in [
            "# TYPE corral_instances gauge",
            "corral_instances{type=\"container\",status=\"stopped\"} 1",
            "corral_instances{type=\"vm\",status=\"running\"} 1",
            "corral_instance_cpu_seconds_total{name=\"web\",type=\"vm\"} 1.5",
            "corral_instance_restarts_total{name=\"web\",type=\"vm\"} 2",
            "corral_vm_exits_total{name=\"web\",type=\"vm\",reason=\"io_out\"} 7",
            "# TYPE corral_vm_disk_read_bytes_total counter",
            "corral_vm_disk_read_bytes_total{name=\"web\",type=\"vm\",disk=\"virtio-blk0\"} 4096",
            "corral_vm_disk_writes_total{name=\"web\",type=\"vm\",disk=\"virtio-blk0\"} 3",
            "corral_vm_disk_writes_total{name=\"web\",type=\"vm\",disk=\"virtio-blk1\"} 5",
            "corral_instance_nic_receive_bytes_total{name=\"web\",type=\"vm\",nic=\"0\",interface=\"tap\\\"0\"} 10",
            "corral_instance_nic_transmit_packets_total{name=\"web\",type=\"vm\",nic=\"0\",interface=\"tap\\\"0\"} 2",
            "corral_instance_memory_limit_bytes{name=\"db\",type=\"container\"} 268435456",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // A stopped instance has no usage samples.
        assert!(!text.contains("corral_instance_cpu_seconds_total{name=\"db\""));
        // Every sample's family was introduced by HELP and TYPE before it.
        let mut introduced = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                introduced.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split('{').next().unwrap();
                assert!(introduced.contains(name), "{name} has no TYPE");
            }
        }
    }
}
