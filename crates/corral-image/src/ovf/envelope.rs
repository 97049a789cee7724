//! The OVF envelope (the `.ovf` XML) read into plain data: its file references, virtual disks,
//! networks and each virtual system's hardware. Elements are matched by namespace URI and local
//! name, never by prefix (VirtualBox writes `ovf:` and `rasd:`, ovftool a default namespace).
//! The text is untrusted: roxmltree refuses any DTD (so no external entity is ever fetched and
//! no entity expands), and the size, node count and every list are bounded.

use std::collections::HashMap;

use roxmltree::{Document, Node, ParsingOptions};

use super::units;

/// OVF 1.x's namespace.
pub const OVF1_NS: &str = "http://schemas.dmtf.org/ovf/envelope/1";
/// OVF 2.x's namespace.
pub const OVF2_NS: &str = "http://schemas.dmtf.org/ovf/envelope/2";
/// The CIM namespaces of an item's settings: `Item` (RASD), `StorageItem` (SASD),
/// `EthernetPortItem` (EPASD).
const CIM_NS: [&str; 3] = [
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData",
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData",
];

/// VirtualBox's own section (`vbox:Machine`), where its MAC addresses are.
const VBOX_NS: &str = "http://www.virtualbox.org/ovf/machine";

/// Envelopes bigger than this are refused (real ones are a few KiB).
pub const MAX_ENVELOPE_BYTES: usize = 4 << 20;
const MAX_NODES: u32 = 200_000;
const MAX_FILES: usize = 256;
const MAX_DISKS: usize = 64;
const MAX_SYSTEMS: usize = 16;
const MAX_ITEMS: usize = 1024;
const MAX_NICS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the envelope is bigger than {MAX_ENVELOPE_BYTES} bytes")]
    TooLarge,
    #[error("the envelope is not UTF-8 text")]
    NotText,
    #[error(
        "the envelope is not XML corral reads (a DTD or entity declaration is refused, as is \
         anything not well-formed)"
    )]
    Xml(#[source] roxmltree::Error),
    #[error(
        "the document is not an OVF envelope: its root is not an `Envelope` of OVF 1.x or 2.x"
    )]
    NotAnEnvelope,
    #[error("the envelope has more than {limit} {what}")]
    TooMany { what: &'static str, limit: usize },
    #[error("the envelope lacks {what}")]
    Missing { what: String },
    #[error("the envelope's {what} {value:?} is not valid: {expected}")]
    Invalid {
        what: String,
        value: String,
        expected: &'static str,
    },
    #[error("the envelope's {what}; corral does not import such packages yet")]
    Unsupported { what: String },
    #[error("the envelope's {what} names {id:?}, which it does not declare")]
    Dangling { what: String, id: String },
}

/// Which OVF version the envelope is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OvfVersion {
    V1,
    V2,
}

/// A file of the package (`References/File`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReference {
    pub id: String,
    /// Its name in the package: a plain file name, checked by the package reader.
    pub href: String,
    pub size: Option<u64>,
}

/// A virtual disk (`DiskSection/Disk`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualDisk {
    pub id: String,
    /// The file holding its content; none for a blank disk.
    pub file_ref: Option<String>,
    /// What the guest sees, in bytes.
    pub capacity: u64,
    /// The format URI (`...vmdk.html#streamOptimized`).
    pub format: Option<String>,
}

/// A controller disks hang on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerKind {
    Ide,
    Scsi,
    /// SATA, NVMe, virtio: CIM's "other storage device" (20) and its kin.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    pub kind: ControllerKind,
    /// `PIIX4`, `lsilogic`, `AHCI`, ...
    pub subtype: Option<String>,
}

/// A disk drive item, resolved to its disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskDrive {
    pub disk: VirtualDisk,
    pub controller: Option<Controller>,
}

/// An ethernet adapter item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkCard {
    /// The network it is connected to (`Connection`).
    pub network: Option<String>,
    /// `aa:bb:cc:dd:ee:ff`, when the envelope gives one.
    pub mac: Option<String>,
    /// `E1000`, `PCNet32`, `VmxNet3`, ...
    pub model: Option<String>,
}

/// An item corral does not map (a CD drive, a floppy, a sound card).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherDevice {
    pub resource_type: u32,
    pub name: Option<String>,
}

/// `OperatingSystemSection`: the guest's OS as a CIM OS type (`ovf:id`, CIM_OperatingSystem's
/// OSType: 96 is Debian 64-bit) and its description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatingSystem {
    pub id: u32,
    pub description: Option<String>,
}

/// `ProductSection`: what the appliance is and its version (corral writes the instance's name
/// and its own version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub product: Option<String>,
    pub version: Option<String>,
}

/// One `VirtualSystem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualSystem {
    pub id: String,
    pub name: Option<String>,
    pub cpus: Option<u64>,
    /// RAM in bytes.
    pub memory: Option<u64>,
    /// In the order a guest numbers them: by controller (in the envelope's order), then by
    /// address on it.
    pub disks: Vec<DiskDrive>,
    pub controllers: Vec<Controller>,
    pub nics: Vec<NetworkCard>,
    /// The MACs of the enabled adapters of VirtualBox's `vbox:Machine` section, by slot: its
    /// items carry none.
    pub vendor_macs: Vec<String>,
    pub others: Vec<OtherDevice>,
    pub os: Option<OperatingSystem>,
    pub product: Option<Product>,
}

/// A parsed envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub version: OvfVersion,
    pub files: Vec<FileReference>,
    pub disks: Vec<VirtualDisk>,
    pub networks: Vec<String>,
    pub systems: Vec<VirtualSystem>,
}

/// CIM resource types corral reads (DSP1041).
mod resource {
    pub const PROCESSOR: u32 = 3;
    pub const MEMORY: u32 = 4;
    pub const IDE: u32 = 5;
    pub const SCSI: u32 = 6;
    pub const ETHERNET: u32 = 10;
    pub const DISK: u32 = 17;
    pub const SATA: u32 = 20;
}

/// Parses envelope text.
pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| EnvelopeError::NotText)?;
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    let document = Document::parse_with_options(text, options).map_err(EnvelopeError::Xml)?;
    let root = document.root_element();
    let (version, ns) = match root.tag_name().namespace() {
        Some(OVF1_NS) => (OvfVersion::V1, OVF1_NS),
        Some(OVF2_NS) => (OvfVersion::V2, OVF2_NS),
        _ => return Err(EnvelopeError::NotAnEnvelope),
    };
    if root.tag_name().name() != "Envelope" {
        return Err(EnvelopeError::NotAnEnvelope);
    }
    let reader = Reader { ns };
    let files = reader.files(root)?;
    let disks = reader.disks(root, &files)?;
    let networks = reader.networks(root)?;
    let disk_ids: HashMap<&str, &VirtualDisk> = disks.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut systems = Vec::new();
    for system in root
        .descendants()
        .filter(|n| reader.is(*n, "VirtualSystem"))
    {
        if systems.len() == MAX_SYSTEMS {
            return Err(too_many("virtual systems", MAX_SYSTEMS));
        }
        systems.push(reader.system(system, &disk_ids)?);
    }
    if systems.is_empty() {
        return Err(EnvelopeError::Missing {
            what: "a VirtualSystem".into(),
        });
    }
    Ok(Envelope {
        version,
        files,
        disks,
        networks,
        systems,
    })
}

fn too_many(what: &'static str, limit: usize) -> EnvelopeError {
    EnvelopeError::TooMany { what, limit }
}

fn invalid(what: impl Into<String>, value: &str, expected: &'static str) -> EnvelopeError {
    EnvelopeError::Invalid {
        what: what.into(),
        value: value.chars().take(80).collect(),
        expected,
    }
}

struct Reader {
    ns: &'static str,
}

impl Reader {
    /// Whether `node` is the OVF element `name`.
    fn is(&self, node: Node, name: &str) -> bool {
        node.is_element()
            && node.tag_name().name() == name
            && node.tag_name().namespace() == Some(self.ns)
    }

    fn children<'a, 'input>(
        &self,
        node: Node<'a, 'input>,
        name: &'static str,
    ) -> impl Iterator<Item = Node<'a, 'input>> + use<'a, 'input, '_> {
        node.children().filter(move |n| self.is(*n, name))
    }

    fn section<'a, 'input>(&self, root: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
        root.children().find(|n| self.is(*n, name))
    }

    /// An OVF attribute: `ovf:NAME`, or `NAME` unqualified as some producers write it.
    fn attribute<'a>(&self, node: Node<'a, '_>, name: &str) -> Option<&'a str> {
        node.attribute((self.ns, name))
            .or_else(|| node.attribute(name))
    }

    fn required<'a>(&self, node: Node<'a, '_>, name: &str) -> Result<&'a str, EnvelopeError> {
        self.attribute(node, name)
            .ok_or_else(|| EnvelopeError::Missing {
                what: format!("the ovf:{name} of a {}", node.tag_name().name()),
            })
    }

    fn files(&self, root: Node) -> Result<Vec<FileReference>, EnvelopeError> {
        let mut files: Vec<FileReference> = Vec::new();
        let Some(references) = self.section(root, "References") else {
            return Ok(files);
        };
        for file in self.children(references, "File") {
            if files.len() == MAX_FILES {
                return Err(too_many("file references", MAX_FILES));
            }
            let id = self.required(file, "id")?.to_string();
            if files.iter().any(|f| f.id == id) {
                return Err(invalid("File ovf:id", &id, "each file's id is unique"));
            }
            let size = self
                .attribute(file, "size")
                .map(|s| {
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| invalid("File ovf:size", s, "a number of bytes"))
                })
                .transpose()?;
            let compression = self.attribute(file, "compression").unwrap_or("identity");
            if compression != "identity" || self.attribute(file, "chunkSize").is_some() {
                return Err(EnvelopeError::Unsupported {
                    what: format!("file {id} is compressed ({compression}) or split in chunks"),
                });
            }
            files.push(FileReference {
                id,
                href: self.required(file, "href")?.to_string(),
                size,
            });
        }
        Ok(files)
    }

    fn disks(
        &self,
        root: Node,
        files: &[FileReference],
    ) -> Result<Vec<VirtualDisk>, EnvelopeError> {
        let mut disks: Vec<VirtualDisk> = Vec::new();
        let Some(section) = self.section(root, "DiskSection") else {
            return Ok(disks);
        };
        for disk in self.children(section, "Disk") {
            if disks.len() == MAX_DISKS {
                return Err(too_many("disks", MAX_DISKS));
            }
            let id = self.required(disk, "diskId")?.to_string();
            let file_ref = self.attribute(disk, "fileRef").map(str::to_string);
            if let Some(file) = &file_ref {
                if !files.iter().any(|f| &f.id == file) {
                    return Err(EnvelopeError::Dangling {
                        what: format!("disk {id}"),
                        id: file.clone(),
                    });
                }
            }
            let text = self.required(disk, "capacity")?;
            let quantity: u64 = text.trim().parse().map_err(|_| {
                invalid(
                    format!("capacity of disk {id}"),
                    text,
                    "a number (corral does not fill in ${property} references)",
                )
            })?;
            let unit = self
                .attribute(disk, "capacityAllocationUnits")
                .unwrap_or("byte");
            let capacity = units::to_bytes(quantity, unit).ok_or_else(|| {
                invalid(
                    format!("capacityAllocationUnits of disk {id}"),
                    unit,
                    "a byte unit such as `byte * 2^30`",
                )
            })?;
            if disks.iter().any(|d| d.id == id) {
                return Err(invalid("Disk ovf:diskId", &id, "each disk's id is unique"));
            }
            disks.push(VirtualDisk {
                id,
                file_ref,
                capacity,
                format: self.attribute(disk, "format").map(str::to_string),
            });
        }
        Ok(disks)
    }

    fn networks(&self, root: Node) -> Result<Vec<String>, EnvelopeError> {
        let Some(section) = self.section(root, "NetworkSection") else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for network in self.children(section, "Network") {
            if names.len() == MAX_NICS {
                return Err(too_many("networks", MAX_NICS));
            }
            names.push(self.required(network, "name")?.to_string());
        }
        Ok(names)
    }

    /// The text of OVF child element `name` of `node`, trimmed, when not empty.
    fn child_text(&self, node: Node, name: &'static str) -> Option<String> {
        self.children(node, name)
            .next()
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    fn operating_system(&self, system: Node) -> Result<Option<OperatingSystem>, EnvelopeError> {
        let Some(section) = self.section(system, "OperatingSystemSection") else {
            return Ok(None);
        };
        let text = self.required(section, "id")?;
        let id = text.trim().parse().map_err(|_| {
            invalid(
                "OperatingSystemSection ovf:id",
                text,
                "a CIM OS type number",
            )
        })?;
        Ok(Some(OperatingSystem {
            id,
            description: self.child_text(section, "Description"),
        }))
    }

    fn product(&self, system: Node) -> Option<Product> {
        let section = self.section(system, "ProductSection")?;
        Some(Product {
            product: self.child_text(section, "Product"),
            version: self.child_text(section, "Version"),
        })
    }

    fn system(
        &self,
        system: Node,
        disks: &HashMap<&str, &VirtualDisk>,
    ) -> Result<VirtualSystem, EnvelopeError> {
        let id = self.required(system, "id")?.to_string();
        let name = self.child_text(system, "Name");
        let hardware = self
            .section(system, "VirtualHardwareSection")
            .ok_or_else(|| EnvelopeError::Missing {
                what: format!("the VirtualHardwareSection of virtual system {id}"),
            })?;
        let items: Vec<Item> = hardware
            .children()
            .filter(|n| {
                self.is(*n, "Item") || self.is(*n, "StorageItem") || self.is(*n, "EthernetPortItem")
            })
            .take(MAX_ITEMS + 1)
            .map(Item::read)
            .collect::<Result<_, _>>()?;
        if items.len() > MAX_ITEMS {
            return Err(too_many("hardware items", MAX_ITEMS));
        }
        let mut built = VirtualSystem {
            id,
            name,
            cpus: None,
            memory: None,
            disks: Vec::new(),
            controllers: Vec::new(),
            nics: Vec::new(),
            vendor_macs: virtualbox_macs(system)?,
            others: Vec::new(),
            os: self.operating_system(system)?,
            product: self.product(system),
        };
        // Controllers by InstanceID, with their position, for the disks' order.
        let mut controllers: HashMap<&str, (usize, Controller)> = HashMap::new();
        let mut drives = Vec::new();
        for (position, item) in items.iter().enumerate() {
            match item.resource_type {
                resource::PROCESSOR => built.cpus = Some(item.quantity("processor")?),
                resource::MEMORY => {
                    let quantity = item.quantity("memory")?;
                    let unit = item.get("AllocationUnits").unwrap_or("byte");
                    built.memory = Some(units::to_bytes(quantity, unit).ok_or_else(|| {
                        invalid(
                            "memory AllocationUnits",
                            unit,
                            "a byte unit such as `byte * 2^20` or `MegaBytes`",
                        )
                    })?);
                }
                resource::IDE | resource::SCSI | resource::SATA => {
                    let controller = Controller {
                        kind: match item.resource_type {
                            resource::IDE => ControllerKind::Ide,
                            resource::SCSI => ControllerKind::Scsi,
                            _ => ControllerKind::Other,
                        },
                        subtype: item.get("ResourceSubType").map(str::to_string),
                    };
                    if let Some(instance) = item.get("InstanceID") {
                        controllers.insert(instance, (position, controller.clone()));
                    }
                    built.controllers.push(controller);
                }
                resource::DISK => drives.push((position, item)),
                resource::ETHERNET => {
                    if built.nics.len() == MAX_NICS {
                        return Err(too_many("network adapters", MAX_NICS));
                    }
                    built.nics.push(NetworkCard {
                        network: item.get("Connection").map(str::to_string),
                        mac: item.get("Address").map(normalize_mac).transpose()?,
                        model: item.get("ResourceSubType").map(str::to_string),
                    });
                }
                other => built.others.push(OtherDevice {
                    resource_type: other,
                    name: item
                        .get("ElementName")
                        .or_else(|| item.get("Caption"))
                        .map(str::to_string),
                }),
            }
        }
        let mut ordered = Vec::new();
        for (position, item) in drives {
            let host = item
                .get("HostResource")
                .ok_or_else(|| EnvelopeError::Missing {
                    what: format!("the HostResource of disk drive item {position}"),
                })?;
            let disk_id = host
                .strip_prefix("ovf:/disk/")
                .or_else(|| host.strip_prefix("/disk/"))
                .ok_or_else(|| {
                    invalid(
                        "disk drive HostResource",
                        host,
                        "ovf:/disk/ID naming a disk of the DiskSection",
                    )
                })?;
            let disk = disks.get(disk_id).ok_or_else(|| EnvelopeError::Dangling {
                what: "a disk drive's HostResource".into(),
                id: disk_id.to_string(),
            })?;
            let controller = item.get("Parent").and_then(|p| controllers.get(p));
            let address = item
                .get("AddressOnParent")
                .and_then(|a| a.trim().parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            let order = (
                controller.map_or(usize::MAX, |(at, _)| *at),
                address,
                position,
            );
            ordered.push((
                order,
                DiskDrive {
                    disk: (*disk).clone(),
                    controller: controller.map(|(_, c)| c.clone()),
                },
            ));
        }
        ordered.sort_by_key(|(order, _)| *order);
        built.disks = ordered.into_iter().map(|(_, drive)| drive).collect();
        Ok(built)
    }
}

/// The MACs of `vbox:Machine/Hardware/Network/Adapter` elements that are enabled, by slot.
fn virtualbox_macs(system: Node) -> Result<Vec<String>, EnvelopeError> {
    let Some(machine) = system.children().find(|n| {
        n.is_element()
            && n.tag_name().namespace() == Some(VBOX_NS)
            && n.tag_name().name() == "Machine"
    }) else {
        return Ok(Vec::new());
    };
    let mut adapters = Vec::new();
    for adapter in machine
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "Adapter")
    {
        if adapters.len() == MAX_NICS {
            return Err(too_many("VirtualBox adapters", MAX_NICS));
        }
        if adapter.attribute("enabled") != Some("true") {
            continue;
        }
        let slot: u32 = adapter
            .attribute("slot")
            .and_then(|s| s.parse().ok())
            .unwrap_or(u32::MAX);
        if let Some(mac) = adapter.attribute("MACAddress") {
            adapters.push((slot, normalize_mac(mac)?));
        }
    }
    adapters.sort_by_key(|(slot, _)| *slot);
    Ok(adapters.into_iter().map(|(_, mac)| mac).collect())
}

/// One hardware item's settings, by local name.
struct Item<'a> {
    resource_type: u32,
    settings: Vec<(&'a str, &'a str)>,
}

impl<'a> Item<'a> {
    fn read(node: Node<'a, '_>) -> Result<Self, EnvelopeError> {
        let settings: Vec<(&str, &str)> = node
            .children()
            .filter(|n| {
                n.is_element()
                    && n.tag_name()
                        .namespace()
                        .is_some_and(|ns| CIM_NS.contains(&ns))
            })
            .map(|n| (n.tag_name().name(), n.text().unwrap_or("").trim()))
            .collect();
        let get = |name| settings.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let text = get("ResourceType").ok_or_else(|| EnvelopeError::Missing {
            what: "the ResourceType of a hardware item".into(),
        })?;
        let resource_type = text
            .parse()
            .map_err(|_| invalid("ResourceType", text, "a CIM resource type number"))?;
        Ok(Self {
            resource_type,
            settings,
        })
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.settings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_empty())
    }

    fn quantity(&self, what: &str) -> Result<u64, EnvelopeError> {
        let text = self
            .get("VirtualQuantity")
            .ok_or_else(|| EnvelopeError::Missing {
                what: format!("the VirtualQuantity of the {what} item"),
            })?;
        text.parse()
            .map_err(|_| invalid(format!("{what} VirtualQuantity"), text, "a number"))
    }
}

/// `00:50:56:aa:bb:cc`, `00-50-56-AA-BB-CC` or `005056AABBCC` as `00:50:56:aa:bb:cc`.
fn normalize_mac(text: &str) -> Result<String, EnvelopeError> {
    let digits: String = text
        .chars()
        .filter(|c| *c != ':' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "network adapter Address",
            text,
            "a MAC address of six hex bytes",
        ));
    }
    let pairs: Vec<&str> = (0..6).map(|i| &digits[2 * i..2 * i + 2]).collect();
    Ok(pairs.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_normalized_and_bad_ones_refused() {
        assert_eq!(normalize_mac("0800271C0D2A").unwrap(), "08:00:27:1c:0d:2a");
        assert_eq!(
            normalize_mac("00-50-56-AA-BB-CC").unwrap(),
            "00:50:56:aa:bb:cc"
        );
        assert!(normalize_mac("00:50:56").is_err());
        assert!(normalize_mac("zz:50:56:aa:bb:cc").is_err());
    }
}
