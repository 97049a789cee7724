//! `corral export NAME FILE.ova`: a stopped VM instance described as an OVF virtual system (its
//! CPUs, memory, writable disks in order, network adapters with their MACs on networks named
//! after corral's, the operating system of the image it came from) and packed with its disks by
//! corral-image (`ovf::export`). The instance is locked and never changed; the cloud-init seed
//! is not one of its disks (each start writes it), and read-only disks are left out and noted.

use std::path::Path;

use corral_disk::BackingPolicy;
use corral_image::ovf::envelope::{OperatingSystem, OvfVersion};
use corral_image::ovf::export::{
    export_ova, os, DiskFileFormat, ExportOptions, Machine, MachineDisk, MachineNic, OvfExportError,
};
use corral_image::progress::Progress;

use crate::definition::{Definition, DiskFormat, Kind};
use crate::error::CoreError;
use crate::lifecycle::Manager;

/// How the OVA is written.
#[derive(Clone, Copy, Debug)]
pub struct OvfExportOptions {
    pub version: OvfVersion,
    pub format: DiskFileFormat,
}

impl Default for OvfExportOptions {
    fn default() -> Self {
        Self {
            version: OvfVersion::V1,
            format: DiskFileFormat::StreamOptimizedVmdk,
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct OvfExport {
    pub disks: usize,
    pub nics: usize,
    /// What was left out, as sentences.
    pub notes: Vec<String>,
}

impl From<OvfExportError> for CoreError {
    fn from(err: OvfExportError) -> Self {
        CoreError::OvfExport(Box::new(err))
    }
}

impl Manager {
    /// Writes stopped VM instance `name` as an OVA at `target` (which must not exist).
    pub fn export_ovf(
        &self,
        name: &str,
        target: &Path,
        options: &OvfExportOptions,
        progress: &dyn Progress,
    ) -> Result<OvfExport, CoreError> {
        let _lock = self.lock(name)?;
        let definition = self.store().definition(name)?;
        if definition.kind == Kind::Container {
            return Err(CoreError::Unsupported(format!(
                "{name} is a container; OVF describes virtual machines (`corral publish {name}` \
                 makes an image of it, which `corral image export` writes)"
            )));
        }
        if self.reconciled(name)?.status.is_active() {
            return Err(CoreError::Unsupported(format!(
                "instance {name} is running; stop it first (`corral stop {name}`), so its disks \
                 are not changing while they are written"
            )));
        }
        let (machine, notes) = self.machine(&definition)?;
        export_ova(
            &machine,
            target,
            &ExportOptions {
                version: options.version,
                format: options.format,
            },
            progress,
        )?;
        Ok(OvfExport {
            disks: machine.disks.len(),
            nics: machine.nics.len(),
            notes,
        })
    }

    /// What of `definition` OVF describes, and notes on what it leaves out.
    fn machine(&self, definition: &Definition) -> Result<(Machine, Vec<String>), CoreError> {
        let name = &definition.name;
        let paths = self.paths(name)?;
        let pool = crate::volume::Pool::default_in(self.store().root());
        let mut notes = Vec::new();
        let mut disks = Vec::new();
        for (index, disk) in definition.disks.iter().enumerate() {
            if disk.readonly {
                notes.push(format!("disk {index} is read-only and was left out"));
                continue;
            }
            let (path, format) = crate::disks::disk_source(&pool, &paths, definition, index)?;
            disks.push(MachineDisk {
                path,
                format: format.and_then(DiskFormat::image_format),
                backing: BackingPolicy::Within(crate::disks::backing_places(
                    &pool, &paths, definition, index,
                )),
            });
        }
        if disks.is_empty() {
            return Err(CoreError::Unsupported(format!(
                "instance {name} has no writable disk; an OVF machine needs one"
            )));
        }
        let nics = definition
            .nics
            .iter()
            .enumerate()
            .map(|(index, nic)| MachineNic {
                mac: nic
                    .mac
                    .unwrap_or_else(|| crate::nic::stable_mac(&definition.uuid, index))
                    .to_string(),
                // The corral network, else the host bridge or tap it is plugged into.
                network: nic
                    .network
                    .clone()
                    .or_else(|| nic.bridge.clone())
                    .or_else(|| nic.tap.clone())
                    .unwrap_or_else(|| format!("{name}-nic{index}")),
            })
            .collect();
        if definition.cloud_init.is_some() {
            notes.push("the cloud-init seed was left out (corral writes it at each start)".into());
        }
        let machine = Machine {
            name: name.clone(),
            cpus: u64::from(definition.cpus),
            memory: definition.memory.0,
            disks,
            nics,
            os: self.operating_system(definition),
        };
        Ok((machine, notes))
    }

    /// The OS of the image the instance was made from, when that image is still stored and
    /// says.
    fn operating_system(&self, definition: &Definition) -> Option<OperatingSystem> {
        let source = definition.image.as_ref()?;
        let image = self.images().ok()?.resolve(&source.fingerprint).ok()?;
        let metadata = image.record.metadata;
        Some(os::operating_system(
            metadata.os.as_deref()?,
            metadata.release.as_deref(),
        ))
    }
}
