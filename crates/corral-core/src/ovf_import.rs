//! `corral import FILE.ova|FILE.ovf [NAME]`: each virtual system of an OVF package becomes a VM
//! instance. Its CPUs, memory, disks (in the guest's order) and network adapters (with their
//! MACs) are kept; what corral has no equivalent for is mapped to its own devices or dropped,
//! and every such change is listed in [`OvfImport::notes`]. The disks are converted into the
//! instance's directory while it is being created, so an import that fails or is killed leaves
//! nothing (the store's staging rule). With `--template` ([`Manager::import_ovf_template`]) the
//! system's first disk becomes a VM image in the image store instead.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use corral_control::size::MemorySize;
use corral_error::PathIoError;
use corral_image::import::ImportOptions;
use corral_image::metadata::{ImageMetadata, ImageType};
use corral_image::ovf::disks::{import_disks, ImportedDisks};
use corral_image::ovf::envelope::{ControllerKind, VirtualSystem};
use corral_image::ovf::package::Package;
use corral_image::ovf::OvfError;
use corral_image::progress::Progress;
use corral_image::store::Image;
use corral_vmm::config::MacAddress;

use crate::definition::{new_uuid, validate_name, BootFrom, Definition, Disk, DiskFormat, Kind};
use crate::error::CoreError;
use crate::lifecycle::Manager;
use crate::nic::fresh_mac;

/// What the user says about an import beyond the package.
#[derive(Clone, Debug, Default)]
pub struct OvfImportOptions {
    /// The instance's name; the virtual system's own when absent.
    pub name: Option<String>,
    /// The corral network every network adapter joins; `None` drops the adapters.
    pub network: Option<String>,
    /// A kernel to boot (with its initrd); without one, the kernel inside the first disk.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

/// What an import made.
#[derive(Clone, Debug)]
pub struct OvfImport {
    pub definition: Definition,
    /// Each thing of the package corral mapped to something else or dropped, as a sentence.
    pub notes: Vec<String>,
    /// Whether a manifest verified the package's files.
    pub verified: bool,
    /// Whether the package carries a certificate (its signature is not checked).
    pub signed: bool,
}

impl From<OvfError> for CoreError {
    fn from(err: OvfError) -> Self {
        CoreError::Ovf(Box::new(err))
    }
}

impl Manager {
    /// Imports each virtual system of the package at `source` as a new VM instance, in the
    /// envelope's order. Each is created atomically; when one fails, those made before it are
    /// deleted again.
    pub fn import_ovf(
        &self,
        source: &Path,
        options: &OvfImportOptions,
        progress: &dyn Progress,
    ) -> Result<Vec<OvfImport>, CoreError> {
        let package = Package::open(source)?;
        let names = instance_names(&package.envelope.systems, options.name.as_deref(), source)?;
        let mut made: Vec<OvfImport> = Vec::new();
        for (system, name) in package.envelope.systems.iter().zip(&names) {
            match self.import_system(&package, system, name, options, progress) {
                Ok(import) => made.push(import),
                Err(err) => {
                    for import in &made {
                        if let Err(undo) = self.store().remove(&import.definition.name) {
                            tracing::warn!(
                                "cannot delete instance {} again: {undo}",
                                import.definition.name
                            );
                        }
                    }
                    return Err(err);
                }
            }
        }
        Ok(made)
    }

    /// Imports the one virtual system of the package at `source` as a VM template image: its
    /// first disk (the others are dropped and noted), booting the kernel found inside it or
    /// `options.kernel`. Returns the image, whether it is new (the same content may be stored
    /// already) and the notes.
    pub fn import_ovf_template(
        &self,
        source: &Path,
        options: &OvfImportOptions,
        progress: &dyn Progress,
    ) -> Result<(Image, bool, Vec<String>), CoreError> {
        let package = Package::open(source)?;
        let [system] = package.envelope.systems.as_slice() else {
            return Err(CoreError::Unsupported(format!(
                "{} holds {} virtual systems; a template is made of one (import them as \
                 instances without --template)",
                source.display(),
                package.envelope.systems.len()
            )));
        };
        let mut notes = Vec::new();
        let mut first = system.clone();
        if first.disks.is_empty() {
            return Err(CoreError::Unsupported(
                "the virtual system has no disk; a template image is made of its first".into(),
            ));
        }
        for (index, _) in first.disks.iter().enumerate().skip(1) {
            notes.push(format!(
                "disk {index} dropped: a template image holds one disk"
            ));
        }
        first.disks.truncate(1);
        let images = self.images()?;
        let staging = images.staging()?;
        import_disks(&package, &first, staging.dir(), progress)?;
        let staged = staging.dir().join("disk0.qcow2");
        let disk = staging.dir().join(corral_image::store::DISK);
        std::fs::rename(&staged, &disk)
            .map_err(|source| CoreError::Io(PathIoError::new("rename", staged, source)))?;
        let mut metadata = ImageMetadata::new(ImageType::Vm);
        let own = system.name.as_deref().unwrap_or(&system.id);
        let file = source.file_name().unwrap_or(source.as_os_str());
        metadata.description = Some(format!(
            "imported from {} (virtual system {own})",
            file.to_string_lossy()
        ));
        let import_options = ImportOptions {
            kernel: options.kernel.clone(),
            initrd: options.initrd.clone(),
            cmdline: options.cmdline.clone(),
            ..ImportOptions::default()
        };
        let template_error = |error| CoreError::OvfTemplate {
            path: source.to_path_buf(),
            source: Box::new(error),
        };
        let metadata =
            corral_image::import::vm_metadata(staging.dir(), &import_options, Some(metadata))
                .map_err(template_error)?;
        let (image, new) = corral_image::import::commit_vm(
            &images,
            staging,
            metadata,
            format!("ovf:{}", source.display()),
        )
        .map_err(template_error)?;
        Ok((image, new, notes))
    }

    fn import_system(
        &self,
        package: &Package,
        system: &VirtualSystem,
        name: &str,
        options: &OvfImportOptions,
        progress: &dyn Progress,
    ) -> Result<OvfImport, CoreError> {
        let (mut definition, mut notes) = map_system(name, system, options)?;
        if let Some(network) = &options.network {
            let mut used = self.store().macs_in_use();
            for (card, mac) in system.nics.iter().zip(nic_macs(system)?) {
                self.join_network(&mut definition, network)?;
                let card = describe_card(card.model.as_deref(), card.network.as_deref());
                // Two guests with one MAC on a network take each other's frames and leases, so
                // an address another instance (or an earlier adapter) has is replaced.
                let mac = mac.map(|mac| {
                    if used.insert(mac) {
                        return mac;
                    }
                    let fresh = fresh_mac(&mut used);
                    notes.push(format!(
                        "network adapter {card}: its MAC address {mac} is already used by \
                         another instance of this corral root, so it gets {fresh}"
                    ));
                    fresh
                });
                if let Some(nic) = definition.nics.last_mut() {
                    nic.mac = mac;
                }
                notes.push(format!(
                    "network adapter {card} → virtio-net on network {network}"
                ));
            }
        } else {
            for card in &system.nics {
                notes.push(format!(
                    "network adapter {} dropped (--network none)",
                    describe_card(card.model.as_deref(), card.network.as_deref())
                ));
            }
        }
        let imported = RefCell::new(None::<ImportedDisks>);
        self.create(&definition, |dir| {
            *imported.borrow_mut() = Some(import_disks(package, system, dir, progress)?);
            Ok(())
        })?;
        let imported = imported.into_inner();
        let verified = imported.as_ref().is_some_and(|i| i.verified);
        let signed = imported.as_ref().is_some_and(|i| i.signed);
        if signed {
            notes.push("the package is signed; corral does not check the signature".into());
        }
        Ok(OvfImport {
            definition: self.store().definition(name)?,
            notes,
            verified,
            signed,
        })
    }
}

/// The instance name of each system: `name`, or the system's own (its `Name`, else its id, which
/// is VirtualBox's VM name); with several systems, each its own, prefixed `NAME-` when `name` is
/// given. All are checked before anything is made.
fn instance_names(
    systems: &[VirtualSystem],
    name: Option<&str>,
    source: &Path,
) -> Result<Vec<String>, CoreError> {
    let mut names: Vec<String> = Vec::new();
    for system in systems {
        let own = system.name.as_deref().unwrap_or(&system.id);
        let chosen = match name {
            Some(name) if systems.len() == 1 => name.to_string(),
            Some(prefix) => format!("{prefix}-{own}"),
            None => own.to_string(),
        };
        if validate_name(&chosen).is_err() {
            return Err(CoreError::Unsupported(format!(
                "the virtual system {own:?} would be the instance {chosen:?}, which is not an \
                 instance name (1 to 63 letters, digits, '-', '_', '.'); give a name: corral \
                 import {} NAME",
                source.display()
            )));
        }
        if names.contains(&chosen) {
            return Err(CoreError::Unsupported(format!(
                "two virtual systems of {} would both be the instance {chosen}",
                source.display()
            )));
        }
        names.push(chosen);
    }
    Ok(names)
}

/// The definition of `system` (without its nics) and the notes on what was mapped.
fn map_system(
    name: &str,
    system: &VirtualSystem,
    options: &OvfImportOptions,
) -> Result<(Definition, Vec<String>), CoreError> {
    validate_name(name).map_err(crate::store::StoreError::from)?;
    let mut notes = Vec::new();
    let mut definition = Definition::new(
        name,
        Kind::Vm,
        new_uuid().map_err(crate::store::StoreError::from)?,
    );
    match system.cpus {
        Some(cpus) => {
            definition.cpus = u8::try_from(cpus)
                .ok()
                .filter(|c| (1..=corral_vmm::config::MAX_VCPUS).contains(c))
                .ok_or_else(|| {
                    CoreError::Unsupported(format!(
                        "the virtual system has {cpus} CPUs; corral gives a VM 1 to {}",
                        corral_vmm::config::MAX_VCPUS
                    ))
                })?;
        }
        None => notes.push(format!(
            "no CPU count in the envelope: {} CPU(s)",
            definition.cpus
        )),
    }
    match system.memory {
        Some(bytes) => definition.memory = MemorySize(bytes),
        None => notes.push(format!(
            "no memory size in the envelope: {}",
            definition.memory
        )),
    }
    if system.disks.is_empty() {
        return Err(CoreError::Unsupported(
            "the virtual system has no disk; corral imports machines with at least one".into(),
        ));
    }
    for index in 0..system.disks.len() {
        definition.disks.push(Disk {
            path: Some(PathBuf::from(format!("disk{index}.qcow2"))),
            volume: None,
            format: Some(DiskFormat::Qcow2),
            allow_backing: Vec::new(),
            readonly: false,
            serial: None,
            target: None,
        });
    }
    for controller in &system.controllers {
        let kind = match controller.kind {
            ControllerKind::Ide => "IDE",
            ControllerKind::Scsi => "SCSI",
            ControllerKind::Other => "SATA/other",
        };
        let subtype = controller
            .subtype
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        notes.push(format!("{kind} controller{subtype} → virtio-blk"));
    }
    for device in &system.others {
        let what = match device.resource_type {
            14 => "floppy drive",
            15 | 16 => "CD/DVD drive",
            23 => "USB controller",
            24 => "graphics adapter",
            35 => "sound card",
            _ => "device",
        };
        let name = device
            .name
            .as_deref()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        notes.push(format!(
            "{what}{name} (resource type {}) dropped",
            device.resource_type
        ));
    }
    // `Definition::new` gives a VM its [boot].
    if let Some(boot) = definition.boot.as_mut() {
        match &options.kernel {
            Some(kernel) => {
                boot.from = BootFrom::Kernel;
                boot.kernel = kernel.clone();
                boot.initrd = options.initrd.clone();
            }
            None => boot.from = BootFrom::Disk,
        }
        boot.cmdline = options.cmdline.clone();
    }
    Ok((definition, notes))
}

/// Each adapter's MAC: its item's `Address`, else (VirtualBox) the adapter of the same rank
/// in `vbox:Machine`, else none (corral derives one from the instance's UUID).
fn nic_macs(system: &VirtualSystem) -> Result<Vec<Option<MacAddress>>, CoreError> {
    system
        .nics
        .iter()
        .enumerate()
        .map(|(index, card)| {
            let text = card
                .mac
                .as_deref()
                .or_else(|| system.vendor_macs.get(index).map(String::as_str));
            text.map(|text| {
                let mac: MacAddress = text.parse().map_err(|_| {
                    CoreError::Unsupported(format!(
                        "network adapter {index} has the bad MAC {text}"
                    ))
                })?;
                if mac.is_unusable() {
                    return Err(CoreError::Unsupported(format!(
                        "network adapter {index} has the MAC {text}, which no adapter may use \
                         (multicast or zero)"
                    )));
                }
                Ok(mac)
            })
            .transpose()
        })
        .collect()
}

fn describe_card(model: Option<&str>, network: Option<&str>) -> String {
    let model = model.unwrap_or("(no model)");
    match network {
        Some(network) => format!("{model} on {network:?}"),
        None => model.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_image::ovf::envelope::{
        Controller, DiskDrive, NetworkCard, OtherDevice, VirtualDisk,
    };

    fn system() -> VirtualSystem {
        VirtualSystem {
            id: "vm".into(),
            name: None,
            cpus: Some(2),
            memory: Some(256 << 20),
            disks: vec![DiskDrive {
                disk: VirtualDisk {
                    id: "d1".into(),
                    file_ref: Some("f1".into()),
                    capacity: 1 << 30,
                    format: None,
                },
                controller: None,
            }],
            controllers: vec![Controller {
                kind: ControllerKind::Scsi,
                subtype: Some("lsilogic".into()),
            }],
            nics: vec![NetworkCard {
                network: Some("NAT".into()),
                mac: None,
                model: Some("E1000".into()),
            }],
            vendor_macs: vec!["08:00:27:00:00:01".into()],
            others: vec![OtherDevice {
                resource_type: 14,
                name: Some("Floppy 1".into()),
            }],
            os: None,
            product: None,
        }
    }

    #[test]
    fn hardware_is_mapped_and_what_changes_is_noted() {
        let (definition, notes) =
            map_system("vm", &system(), &OvfImportOptions::default()).unwrap();
        assert_eq!(definition.cpus, 2);
        assert_eq!(definition.memory, MemorySize(256 << 20));
        assert_eq!(definition.disks.len(), 1);
        assert_eq!(
            definition.boot.as_ref().map(|b| b.from),
            Some(BootFrom::Disk)
        );
        assert_eq!(
            notes,
            vec![
                "SCSI controller (lsilogic) → virtio-blk".to_string(),
                "floppy drive \"Floppy 1\" (resource type 14) dropped".to_string(),
            ]
        );
        let macs = nic_macs(&system()).unwrap();
        assert_eq!(macs, vec![Some("08:00:27:00:00:01".parse().unwrap())]);
    }

    #[test]
    fn impossible_hardware_is_refused() {
        let options = OvfImportOptions::default();
        let mut many = system();
        many.cpus = Some(1000);
        assert!(map_system("vm", &many, &options).is_err());
        let mut diskless = system();
        diskless.disks.clear();
        assert!(map_system("vm", &diskless, &options).is_err());
        let mut multicast = system();
        multicast.vendor_macs = vec!["01:00:5e:00:00:01".into()];
        assert!(nic_macs(&multicast).is_err());
    }
}
