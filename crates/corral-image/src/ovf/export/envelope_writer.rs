//! The envelope model ([`Envelope`], what the importer reads) written back as OVF 1.x or 2.x XML,
//! in the shape VirtualBox and VMware's ovftool accept: `References`, `DiskSection`,
//! `NetworkSection` and the virtual system with its `OperatingSystemSection`,
//! `VirtualHardwareSection` (RASD items in the CIM schema's element order) and `ProductSection`.
//! Every name and value goes through quick-xml's escaping; the importer reads back what this
//! writes (tested both ways).

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use crate::ovf::envelope::{ControllerKind, Envelope, OvfVersion, VirtualSystem, OVF1_NS, OVF2_NS};

const RASD_NS: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
const VSSD_NS: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";

/// The hardware family the system asks for. VMware refuses a type it does not know, VirtualBox
/// takes any; version 7 hardware is what every VMware product since ESX 4 runs.
pub const VIRTUAL_SYSTEM_TYPE: &str = "vmx-07";

/// `envelope` as XML text.
pub fn write(envelope: &Envelope) -> Vec<u8> {
    let mut xml = Xml {
        writer: Writer::new_with_indent(Vec::new(), b' ', 2),
    };
    let ns = match envelope.version {
        OvfVersion::V1 => OVF1_NS,
        OvfVersion::V2 => OVF2_NS,
    };
    xml.event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    xml.start(
        "Envelope",
        &[
            ("xmlns", ns),
            ("xmlns:ovf", ns),
            ("xmlns:rasd", RASD_NS),
            ("xmlns:vssd", VSSD_NS),
        ],
    );
    xml.start("References", &[]);
    for file in &envelope.files {
        let size = file.size.map(|s| s.to_string());
        let mut attributes = vec![("ovf:id", file.id.as_str()), ("ovf:href", &file.href)];
        if let Some(size) = &size {
            attributes.push(("ovf:size", size));
        }
        xml.empty("File", &attributes);
    }
    xml.end("References");
    if !envelope.disks.is_empty() {
        xml.start("DiskSection", &[]);
        xml.text("Info", "The virtual disks");
        for disk in &envelope.disks {
            let capacity = disk.capacity.to_string();
            let mut attributes = vec![("ovf:diskId", disk.id.as_str())];
            if let Some(file) = &disk.file_ref {
                attributes.push(("ovf:fileRef", file));
            }
            attributes.push(("ovf:capacity", &capacity));
            attributes.push(("ovf:capacityAllocationUnits", "byte"));
            if let Some(format) = &disk.format {
                attributes.push(("ovf:format", format));
            }
            xml.empty("Disk", &attributes);
        }
        xml.end("DiskSection");
    }
    if !envelope.networks.is_empty() {
        xml.start("NetworkSection", &[]);
        xml.text("Info", "The networks the adapters are connected to");
        for network in &envelope.networks {
            xml.start("Network", &[("ovf:name", network)]);
            xml.text("Description", &format!("The network {network}"));
            xml.end("Network");
        }
        xml.end("NetworkSection");
    }
    match envelope.systems.as_slice() {
        [system] => xml.system(system),
        systems => {
            xml.start("VirtualSystemCollection", &[("ovf:id", "systems")]);
            xml.text("Info", "The virtual machines");
            for system in systems {
                xml.system(system);
            }
            xml.end("VirtualSystemCollection");
        }
    }
    xml.end("Envelope");
    let mut bytes = xml.writer.into_inner();
    bytes.push(b'\n');
    bytes
}

struct Xml {
    writer: Writer<Vec<u8>>,
}

impl Xml {
    fn event(&mut self, event: Event) {
        self.writer
            .write_event(event)
            .expect("writing to memory cannot fail");
    }

    fn start(&mut self, name: &str, attributes: &[(&str, &str)]) {
        let mut tag = BytesStart::new(name);
        for attribute in attributes {
            tag.push_attribute(*attribute);
        }
        self.event(Event::Start(tag));
    }

    fn end(&mut self, name: &str) {
        self.event(Event::End(BytesEnd::new(name)));
    }

    fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) {
        let mut tag = BytesStart::new(name);
        for attribute in attributes {
            tag.push_attribute(*attribute);
        }
        self.event(Event::Empty(tag));
    }

    /// `<name>text</name>`.
    fn text(&mut self, name: &str, text: &str) {
        self.start(name, &[]);
        self.event(Event::Text(BytesText::new(text)));
        self.end(name);
    }

    fn system(&mut self, system: &VirtualSystem) {
        self.start("VirtualSystem", &[("ovf:id", &system.id)]);
        self.text("Info", "A virtual machine");
        if let Some(name) = &system.name {
            self.text("Name", name);
        }
        if let Some(os) = &system.os {
            self.start("OperatingSystemSection", &[("ovf:id", &os.id.to_string())]);
            self.text("Info", "The guest operating system");
            if let Some(description) = &os.description {
                self.text("Description", description);
            }
            self.end("OperatingSystemSection");
        }
        self.hardware(system);
        if let Some(product) = &system.product {
            self.start("ProductSection", &[]);
            self.text("Info", "What this machine is");
            if let Some(name) = &product.product {
                self.text("Product", name);
            }
            if let Some(version) = &product.version {
                self.text("Version", version);
            }
            self.end("ProductSection");
        }
        self.end("VirtualSystem");
    }

    fn hardware(&mut self, system: &VirtualSystem) {
        self.start("VirtualHardwareSection", &[]);
        self.text("Info", "The virtual hardware");
        self.start("System", &[]);
        self.text("vssd:ElementName", "Virtual Hardware Family");
        self.text("vssd:InstanceID", "0");
        self.text(
            "vssd:VirtualSystemIdentifier",
            system.name.as_deref().unwrap_or(&system.id),
        );
        self.text("vssd:VirtualSystemType", VIRTUAL_SYSTEM_TYPE);
        self.end("System");
        // Items are numbered from 1 (the System is 0).
        let mut last_id = 0u32;
        let mut next_id = move || {
            last_id += 1;
            last_id.to_string()
        };
        if let Some(cpus) = system.cpus {
            self.item(&Item {
                allocation_units: Some("hertz * 10^6"),
                description: Some("Number of virtual CPUs"),
                element_name: &format!("{cpus} virtual CPU(s)"),
                instance_id: &next_id(),
                resource_type: 3,
                virtual_quantity: Some(cpus),
                ..Item::default()
            });
        }
        if let Some(memory) = system.memory {
            // MiB as VirtualBox and ovftool write it, bytes when it is not a whole number of them.
            let (units, quantity) = if memory % (1 << 20) == 0 {
                ("byte * 2^20", memory >> 20)
            } else {
                ("byte", memory)
            };
            self.item(&Item {
                allocation_units: Some(units),
                description: Some("Memory size"),
                element_name: &format!("{} MiB of memory", memory >> 20),
                instance_id: &next_id(),
                resource_type: 4,
                virtual_quantity: Some(quantity),
                ..Item::default()
            });
        }
        let mut controller_ids = Vec::new();
        for (index, controller) in system.controllers.iter().enumerate() {
            let (kind, resource_type) = match controller.kind {
                ControllerKind::Ide => ("IDE", 5),
                ControllerKind::Scsi => ("SCSI", 6),
                ControllerKind::Other => ("SATA", 20),
            };
            let id = next_id();
            self.item(&Item {
                address: Some(&index.to_string()),
                element_name: &format!("{kind} controller {index}"),
                instance_id: &id,
                resource_sub_type: controller.subtype.as_deref(),
                resource_type,
                ..Item::default()
            });
            controller_ids.push(id);
        }
        let mut used = vec![0u32; system.controllers.len()];
        for (index, drive) in system.disks.iter().enumerate() {
            // Its controller, else the first: the importer orders disks by both.
            let on = drive
                .controller
                .as_ref()
                .and_then(|c| system.controllers.iter().position(|known| known == c))
                .or((!system.controllers.is_empty()).then_some(0));
            let address = on.map(|at| {
                used[at] += 1;
                (used[at] - 1).to_string()
            });
            self.item(&Item {
                address_on_parent: address.as_deref(),
                element_name: &format!("Hard disk {}", index + 1),
                host_resource: Some(&format!("ovf:/disk/{}", drive.disk.id)),
                instance_id: &next_id(),
                parent: on.map(|at| controller_ids[at].as_str()),
                resource_type: 17,
                ..Item::default()
            });
        }
        for (index, card) in system.nics.iter().enumerate() {
            self.item(&Item {
                address: card.mac.as_deref(),
                automatic_allocation: Some("true"),
                connection: card.network.as_deref(),
                element_name: &format!("Network adapter {}", index + 1),
                instance_id: &next_id(),
                resource_sub_type: card.model.as_deref(),
                resource_type: 10,
                ..Item::default()
            });
        }
        self.end("VirtualHardwareSection");
    }

    /// An `Item`, its settings in the order CIM_ResourceAllocationSettingData's schema lists them.
    fn item(&mut self, item: &Item) {
        self.start("Item", &[]);
        let quantity = item.virtual_quantity.map(|q| q.to_string());
        let resource_type = item.resource_type.to_string();
        let settings = [
            ("rasd:Address", item.address),
            ("rasd:AddressOnParent", item.address_on_parent),
            ("rasd:AllocationUnits", item.allocation_units),
            ("rasd:AutomaticAllocation", item.automatic_allocation),
            ("rasd:Connection", item.connection),
            ("rasd:Description", item.description),
            ("rasd:ElementName", Some(item.element_name)),
            ("rasd:HostResource", item.host_resource),
            ("rasd:InstanceID", Some(item.instance_id)),
            ("rasd:Parent", item.parent),
            ("rasd:ResourceSubType", item.resource_sub_type),
            ("rasd:ResourceType", Some(&resource_type)),
            ("rasd:VirtualQuantity", quantity.as_deref()),
        ];
        for (name, value) in settings {
            if let Some(value) = value {
                self.text(name, value);
            }
        }
        self.end("Item");
    }
}

/// The RASD settings corral writes.
#[derive(Default)]
struct Item<'a> {
    address: Option<&'a str>,
    address_on_parent: Option<&'a str>,
    allocation_units: Option<&'a str>,
    automatic_allocation: Option<&'a str>,
    connection: Option<&'a str>,
    description: Option<&'a str>,
    element_name: &'a str,
    host_resource: Option<&'a str>,
    instance_id: &'a str,
    parent: Option<&'a str>,
    resource_sub_type: Option<&'a str>,
    resource_type: u32,
    virtual_quantity: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovf::envelope::{
        self, Controller, DiskDrive, FileReference, NetworkCard, OperatingSystem, Product,
        VirtualDisk,
    };

    fn sample(version: OvfVersion) -> Envelope {
        let disk = |n: u32| VirtualDisk {
            id: format!("vmdisk{n}"),
            file_ref: Some(format!("file{n}")),
            capacity: (n as u64) << 30,
            format: Some(crate::ovf::export::VMDK_STREAM_OPTIMIZED.into()),
        };
        let controller = Controller {
            kind: ControllerKind::Scsi,
            subtype: Some("lsilogic".into()),
        };
        Envelope {
            version,
            files: (1..=2)
                .map(|n| FileReference {
                    id: format!("file{n}"),
                    href: format!("a&b <{n}>.vmdk"),
                    size: None,
                })
                .collect(),
            disks: vec![disk(1), disk(2)],
            networks: vec!["lab \"one\"".into()],
            systems: vec![VirtualSystem {
                id: "web & co".into(),
                name: Some("web & co".into()),
                cpus: Some(2),
                memory: Some(768 << 20),
                disks: vec![
                    DiskDrive {
                        disk: disk(1),
                        controller: Some(controller.clone()),
                    },
                    DiskDrive {
                        disk: disk(2),
                        controller: Some(controller.clone()),
                    },
                ],
                controllers: vec![controller],
                nics: vec![NetworkCard {
                    network: Some("lab \"one\"".into()),
                    mac: Some("52:54:00:12:34:56".into()),
                    model: None,
                }],
                vendor_macs: Vec::new(),
                others: Vec::new(),
                os: Some(OperatingSystem {
                    id: 96,
                    description: Some("debian 12 <bookworm>".into()),
                }),
                product: Some(Product {
                    product: Some("web & co".into()),
                    version: Some("0.1.0".into()),
                }),
            }],
        }
    }

    #[test]
    fn the_importer_reads_back_what_is_written_in_both_versions() {
        for version in [OvfVersion::V1, OvfVersion::V2] {
            let written = sample(version);
            let read = envelope::parse(&write(&written)).unwrap();
            assert_eq!(read, written, "{version:?}");
        }
    }

    #[test]
    fn odd_memory_sizes_stay_exact() {
        let mut odd = sample(OvfVersion::V1);
        odd.systems[0].memory = Some((512 << 20) + 4096);
        let read = envelope::parse(&write(&odd)).unwrap();
        assert_eq!(read.systems[0].memory, Some((512 << 20) + 4096));
    }
}
