//! Writing a machine as an OVA that VirtualBox, VMware and corral's own import read: the
//! envelope ([`envelope_writer`]) from the [`Envelope`] model the importer reads, then the
//! manifest and the disks, packed in one pass ([`ova`]).
//!
//! Disks go in as streamOptimized VMDK, converted by corral-disk straight into the archive:
//! no temporary disk file, so a 20 GiB disk needs no space beyond the OVA itself. With
//! [`DiskFileFormat::Qcow2`] each disk is converted to a temporary qcow2 file beside the
//! target first and then copied in (qcow2 cannot be written without seeking). The OVA is
//! built under a temporary name beside the target and renamed into place at the end; on any
//! error the temporaries are removed, and an export that was killed is swept by the next
//! export to the same name.

pub mod envelope_writer;
mod error;
pub mod os;
pub mod ova;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use corral_disk::{BackingPolicy, ConvertOptions, Disk, OpenOptions};
use corral_error::PathIoError;

pub use error::OvfExportError;

use crate::export::{sweep_killed_exports, temp_name, temp_name_with};
use crate::ovf::envelope::{
    Controller, ControllerKind, DiskDrive, Envelope, FileReference, NetworkCard, OperatingSystem,
    OvfVersion, Product, VirtualDisk, VirtualSystem,
};
use crate::progress::{DiskCopy, Progress, ProgressReader};
use ova::OvaWriter;

/// The `ovf:format` of a streamOptimized VMDK.
pub const VMDK_STREAM_OPTIMIZED: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
/// The `ovf:format` of a qcow2 disk, as oVirt and virt-v2v write it.
pub const QCOW2: &str = "http://www.gnome.org/~markmc/qcow-image-format.html";

/// How the disks are stored in the OVA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskFileFormat {
    /// What VMware and VirtualBox import; streamed into the archive.
    #[default]
    StreamOptimizedVmdk,
    /// What oVirt, virt-v2v and corral read; staged beside the target.
    Qcow2,
}

/// A disk of the machine, as corral-disk opens it.
#[derive(Clone, Debug)]
pub struct MachineDisk {
    pub path: PathBuf,
    /// Its format as recorded (`None` detects it).
    pub format: Option<corral_disk::DiskFormat>,
    /// Where its backing files may be.
    pub backing: BackingPolicy,
}

/// A network adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineNic {
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The network it is connected to.
    pub network: String,
}

/// What is exported.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The system's name, and the stem of the OVA's member names.
    pub name: String,
    pub cpus: u64,
    /// RAM in bytes.
    pub memory: u64,
    /// In the guest's order.
    pub disks: Vec<MachineDisk>,
    pub nics: Vec<MachineNic>,
    pub os: Option<OperatingSystem>,
}

#[derive(Clone, Copy, Debug)]
pub struct ExportOptions {
    pub version: OvfVersion,
    pub format: DiskFileFormat,
}

/// Writes `machine` as an OVA at `target`, which must not exist.
pub fn export_ova(
    machine: &Machine,
    target: &Path,
    options: &ExportOptions,
    progress: &dyn Progress,
) -> Result<(), OvfExportError> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(OvfExportError::Exists {
            target: target.to_path_buf(),
        });
    }
    sweep_killed_exports(target);
    let mut disks = Vec::new();
    for (index, disk) in machine.disks.iter().enumerate() {
        let open = OpenOptions {
            format: disk.format,
            backing: disk.backing.clone(),
            ..OpenOptions::read_only()
        };
        let opened =
            corral_disk::open(&disk.path, open).map_err(|source| OvfExportError::Disk {
                index,
                path: disk.path.clone(),
                source: Box::new(source),
            })?;
        disks.push(opened);
    }
    let capacities: Vec<u64> = disks.iter().map(|d| d.virtual_size()).collect();
    let (envelope, names) = describe(machine, &capacities, options);
    let envelope = envelope_writer::write(&envelope);
    let temp = temp_name(target);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|source| OvfExportError::Io(PathIoError::new("create", temp.clone(), source)))?;
    let packed = Packer {
        machine,
        target,
        temp: &temp,
        format: options.format,
        progress,
    }
    .pack(&file, &names, &envelope, &disks)
    .and_then(|()| {
        file.sync_all()
            .map_err(|source| OvfExportError::Io(PathIoError::new("write", temp.clone(), source)))
    })
    .and_then(|()| {
        corral_host::atomic::rename_noreplace(&temp, target).map_err(|source| {
            if source.raw_os_error() == Some(libc::EEXIST) {
                OvfExportError::Exists {
                    target: target.to_path_buf(),
                }
            } else {
                OvfExportError::Io(PathIoError::new("publish", target.to_path_buf(), source))
            }
        })
    });
    if packed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    packed
}

/// The member names of an OVA.
struct Names {
    envelope: String,
    manifest: String,
    disks: Vec<String>,
}

/// The envelope describing `machine` whose disks have `capacities`, and the members' names.
fn describe(machine: &Machine, capacities: &[u64], options: &ExportOptions) -> (Envelope, Names) {
    let (extension, format) = match options.format {
        DiskFileFormat::StreamOptimizedVmdk => ("vmdk", VMDK_STREAM_OPTIMIZED),
        DiskFileFormat::Qcow2 => ("qcow2", QCOW2),
    };
    let name = &machine.name;
    let names = Names {
        envelope: format!("{name}.ovf"),
        manifest: format!("{name}.mf"),
        disks: (1..=capacities.len())
            .map(|n| format!("{name}-disk{n}.{extension}"))
            .collect(),
    };
    let files = names
        .disks
        .iter()
        .enumerate()
        .map(|(index, href)| FileReference {
            id: format!("file{}", index + 1),
            href: href.clone(),
            // The size is known only once the disk has been streamed, after the envelope.
            size: None,
        })
        .collect();
    let disks: Vec<VirtualDisk> = capacities
        .iter()
        .enumerate()
        .map(|(index, capacity)| VirtualDisk {
            id: format!("vmdisk{}", index + 1),
            file_ref: Some(format!("file{}", index + 1)),
            capacity: *capacity,
            format: Some(format.to_string()),
        })
        .collect();
    // One SCSI controller: the one every VMware product and VirtualBox offer Linux guests.
    let controller = Controller {
        kind: ControllerKind::Scsi,
        subtype: Some("lsilogic".into()),
    };
    let mut networks: Vec<String> = Vec::new();
    for nic in &machine.nics {
        if !networks.contains(&nic.network) {
            networks.push(nic.network.clone());
        }
    }
    let system = VirtualSystem {
        id: name.clone(),
        name: Some(name.clone()),
        cpus: Some(machine.cpus),
        memory: Some(machine.memory),
        disks: disks
            .iter()
            .map(|disk| DiskDrive {
                disk: disk.clone(),
                controller: Some(controller.clone()),
            })
            .collect(),
        controllers: if disks.is_empty() {
            Vec::new()
        } else {
            vec![controller]
        },
        nics: machine
            .nics
            .iter()
            .map(|nic| NetworkCard {
                network: Some(nic.network.clone()),
                mac: Some(nic.mac.clone()),
                model: None,
            })
            .collect(),
        vendor_macs: Vec::new(),
        others: Vec::new(),
        os: machine.os.clone(),
        product: Some(Product {
            product: Some(name.clone()),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
        }),
    };
    let envelope = Envelope {
        version: options.version,
        files,
        disks,
        networks,
        systems: vec![system],
    };
    (envelope, names)
}

/// Packs one OVA.
struct Packer<'a> {
    machine: &'a Machine,
    target: &'a Path,
    temp: &'a Path,
    format: DiskFileFormat,
    progress: &'a dyn Progress,
}

impl Packer<'_> {
    fn pack(
        &self,
        file: &File,
        names: &Names,
        envelope: &[u8],
        disks: &[Box<dyn Disk>],
    ) -> Result<(), OvfExportError> {
        let write_error =
            |source| OvfExportError::Io(PathIoError::new("write", self.temp.to_path_buf(), source));
        let mtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut ova = OvaWriter::new(file, mtime);
        ova.add(&names.envelope, envelope).map_err(write_error)?;
        let listed: Vec<&str> = std::iter::once(names.envelope.as_str())
            .chain(names.disks.iter().map(String::as_str))
            .collect();
        ova.reserve_manifest(&names.manifest, &listed)
            .map_err(write_error)?;
        for (index, (disk, name)) in disks.iter().zip(&names.disks).enumerate() {
            ova.begin(name).map_err(write_error)?;
            match self.format {
                DiskFileFormat::StreamOptimizedVmdk => {
                    let what = format!("writing disk {} as VMDK", index + 1);
                    let mut copy = DiskCopy::new(self.progress, &what);
                    corral_disk::write_stream_optimized_vmdk(disk.as_ref(), &mut ova, &mut |s| {
                        copy.step(s)
                    })
                    .map_err(|source| self.convert_error(index, source))?;
                }
                DiskFileFormat::Qcow2 => self.copy_qcow2(index, &mut ova)?,
            }
            ova.end().map_err(write_error)?;
        }
        ova.finish().map_err(write_error)
    }

    /// Disk `index` converted to a qcow2 file beside the target, copied into the member begun
    /// in `ova`, removed again.
    fn copy_qcow2(&self, index: usize, ova: &mut OvaWriter) -> Result<(), OvfExportError> {
        let disk = &self.machine.disks[index];
        let staged = temp_name_with(self.target, &format!("disk{}.qcow2", index + 1));
        let what = format!("converting disk {} to qcow2", index + 1);
        let mut copy = DiskCopy::new(self.progress, &what);
        let copied = corral_disk::convert(
            &disk.path,
            &staged,
            ConvertOptions {
                source_format: disk.format,
                source_backing: disk.backing.clone(),
                target_format: corral_disk::DiskFormat::Qcow2,
                cluster_size: None,
            },
            &mut |step| copy.step(step),
        )
        .map_err(|source| self.convert_error(index, source))
        .and_then(|()| {
            let io = |action| {
                let path = staged.clone();
                move |source| OvfExportError::Io(PathIoError::new(action, path, source))
            };
            let file = File::open(&staged).map_err(io("read"))?;
            let size = file.metadata().map_err(io("read"))?.len();
            self.progress
                .begin(&format!("packing disk {}", index + 1), Some(size));
            std::io::copy(&mut ProgressReader::new(file, self.progress), ova)
                .map(drop)
                .map_err(|source| {
                    OvfExportError::Io(PathIoError::new("write", self.temp.to_path_buf(), source))
                })
        });
        let _ = std::fs::remove_file(&staged);
        copied
    }

    fn convert_error(&self, index: usize, source: corral_disk::DiskError) -> OvfExportError {
        OvfExportError::Convert {
            index,
            path: self.machine.disks[index].path.clone(),
            target: self.target.to_path_buf(),
            source: Box::new(source),
        }
    }
}
