//! What a build produces from its staged rootfs: files first (a canonical rootfs tarball),
//! then the VM disk (staged apart), and only when everything is made, the store commits and
//! aliases, so a failure leaves no half result in the store.

use std::io::Write;
use std::path::{Path, PathBuf};

use corral_control::size::MemorySize;
use corral_disk::{BackingPolicy, ConvertOptions, DiskFormat};
use corral_host::fsroot::FsRoot;
use corral_image::archive::{self, PackOptions};
use corral_image::metadata::{ContainerDefaults, ImageMetadata, ImageType, VmDefaults};
use corral_image::store::{Image, Staging, DISK, ROOTFS};

use super::provision::write_inside;
use super::spec::{Output, DEFAULT_VM_CMDLINE};
use super::{BuildError, Context};
use corral_image::import::{self, ImportOptions};

/// Where a VM output's disk carries the kernel and initrd it boots (found there by
/// `corral_image::bootdisk`).
pub const DISK_KERNEL: &str = "/boot/vmlinuz-corral";
pub const DISK_INITRD: &str = "/boot/initrd.img-corral";

/// Makes every output; `staging` holds the provisioned rootfs.
pub fn produce(
    context: &mut Context,
    staging: Staging,
    defaults: ContainerDefaults,
    aliases: Option<&[String]>,
) -> Result<Vec<Image>, BuildError> {
    let plan = context.plan;
    let rootfs = staging.dir().join(ROOTFS);
    let base = ImageMetadata {
        created: context.source_date_epoch.map(rfc3339),
        container: plan.container.clone().unwrap_or(defaults),
        ..ImageMetadata::new(ImageType::Container)
    };
    let options = ImportOptions {
        os: plan.os.clone(),
        release: plan.release.clone(),
        description: plan.description.clone(),
        ..ImportOptions::default()
    };
    let metadata = import::container_metadata(&rootfs, &options, Some(base));

    let mut files = Vec::new();
    let mut vm = None;
    let mut container = None;
    for output in &plan.outputs {
        match output {
            Output::Tarball { path } => {
                let target = plan.path(path);
                context
                    .log
                    .note(&format!("writing the rootfs tarball {}", target.display()));
                let clamp_mtime = context.source_date_epoch;
                let pending = PendingFile::write(&target, |file| {
                    let mut builder = tar::Builder::new(file);
                    let options = PackOptions { clamp_mtime };
                    let stats = archive::pack(&mut builder, &rootfs, Path::new(""), &options)
                        .map_err(BuildError::Pack)?;
                    builder.finish().map_err(BuildError::io("write", &target))?;
                    Ok(stats.skipped)
                })?;
                for skipped in &pending.1 {
                    context.log.note(&format!(
                        "left out of the tarball (not a file, directory or link): /{}",
                        skipped.display()
                    ));
                }
                files.push(pending.0);
            }
            Output::Oci { path, archive } => {
                let target = plan.path(path);
                context
                    .log
                    .note(&format!("writing the OCI image {}", target.display()));
                let pending = PendingFile::new(&target)?;
                corral_image::oci::export(
                    &rootfs,
                    &metadata,
                    &pending.temporary,
                    *archive,
                    Some(&plan.name),
                )
                .map_err(BuildError::Oci)?;
                files.push(pending);
            }
            Output::Vm {
                size,
                kernel,
                initrd,
                cmdline,
                ..
            } => {
                let disk = VmDisk {
                    size: size.parse::<MemorySize>().map(|s| s.0).unwrap_or(0),
                    kernel: plan.path(kernel),
                    initrd: initrd.as_deref().map(|p| plan.path(p)),
                    cmdline: cmdline.clone().unwrap_or_else(|| DEFAULT_VM_CMDLINE.into()),
                };
                let vm_staging = make_vm_disk(context, &rootfs, &disk)?;
                let base = ImageMetadata {
                    image_type: ImageType::Vm,
                    container: ContainerDefaults::default(),
                    vm: VmDefaults::default(),
                    ..metadata.clone()
                };
                let vm_options = ImportOptions {
                    cmdline: Some(disk.cmdline.clone()),
                    ..ImportOptions::default()
                };
                // Also proves that corral finds the kernel inside the disk.
                let vm_metadata = import::vm_metadata(vm_staging.dir(), &vm_options, Some(base))
                    .map_err(BuildError::Import)?;
                vm = Some((vm_staging, vm_metadata, aliases_of(plan, output, aliases)));
            }
            Output::Container { .. } => container = Some(aliases_of(plan, output, aliases)),
        }
    }

    // Everything is made: publish.
    for file in files {
        file.publish()?;
    }
    let source = format!("build:{}", plan.name);
    let mut images = Vec::new();
    if let Some((vm_staging, vm_metadata, aliases)) = vm {
        context.log.note("storing the VM image");
        let (image, _) = import::commit_vm(context.store, vm_staging, vm_metadata, source.clone())
            .map_err(BuildError::Import)?;
        images.push(alias(context, image, &aliases)?);
    }
    if let Some(aliases) = container {
        context.log.note("storing the container image");
        let (image, _) = import::commit_container(context.store, staging, metadata, source)
            .map_err(BuildError::Import)?;
        images.push(alias(context, image, &aliases)?);
    }
    Ok(images)
}

/// A store output's aliases: `--alias`, else the spec's name and the output's `alias`es.
fn aliases_of(plan: &super::spec::Plan, output: &Output, given: Option<&[String]>) -> Vec<String> {
    match given {
        Some(given) => given.to_vec(),
        None => std::iter::once(plan.name.clone())
            .chain(output.extra_aliases().unwrap_or_default().iter().cloned())
            .collect(),
    }
}

/// Points each alias at `image` (a rebuild moves them to the new image), and reloads it.
fn alias(context: &mut Context, image: Image, aliases: &[String]) -> Result<Image, BuildError> {
    for alias in aliases {
        context
            .store
            .set_alias(alias, image.fingerprint(), true)
            .map_err(BuildError::Store)?;
    }
    context.log.note(&format!(
        "image {} ({})",
        image.fingerprint(),
        aliases.join(", ")
    ));
    context
        .store
        .resolve(image.fingerprint())
        .map_err(BuildError::Store)
}

struct VmDisk {
    size: u64,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    cmdline: String,
}

/// A staging directory holding `disk.qcow2`: an ext4 file system (no partition table) made
/// with `mkfs.ext4 -d` from a copy of `rootfs` plus the kernel, initrd and boot configuration
/// (`/boot/grub/grub.cfg` and `/etc/kernel/cmdline`) that corral finds inside the disk.
fn make_vm_disk(
    context: &mut Context,
    rootfs: &Path,
    disk: &VmDisk,
) -> Result<Staging, BuildError> {
    context.progress.begin("making the VM disk", None);
    context.log.note("making the VM disk");
    let staging = context.store.staging().map_err(BuildError::Store)?;
    let tree = staging.dir().join("tree");
    crate::copy::copy_tree(rootfs, &tree, &corral_image::progress::NoProgress)
        .map_err(|e| BuildError::Copy(Box::new(e)))?;
    let root = FsRoot::new(&tree);
    let kernel = std::fs::read(&disk.kernel).map_err(BuildError::io("read", &disk.kernel))?;
    write_inside(&root, DISK_KERNEL, &kernel, 0o644)?;
    let mut grub = format!(
        "# corral image build: the kernel corral boots from this disk\n\
         menuentry 'corral' {{\n\tlinux {DISK_KERNEL} {}\n",
        disk.cmdline
    );
    if let Some(initrd) = &disk.initrd {
        let content = std::fs::read(initrd).map_err(BuildError::io("read", initrd))?;
        write_inside(&root, DISK_INITRD, &content, 0o644)?;
        grub.push_str(&format!("\tinitrd {DISK_INITRD}\n"));
    }
    grub.push_str("}\n");
    write_inside(&root, "/boot/grub/grub.cfg", grub.as_bytes(), 0o644)?;
    write_inside(
        &root,
        "/etc/kernel/cmdline",
        format!("{}\n", disk.cmdline).as_bytes(),
        0o644,
    )?;
    if let Some(epoch) = context.source_date_epoch {
        super::clamp_mtimes(&tree, epoch)?;
    }

    let raw = staging.dir().join("disk.raw");
    std::fs::File::create(&raw)
        .and_then(|file| file.set_len(disk.size))
        .map_err(BuildError::io("create", &raw))?;
    let mut mkfs = std::process::Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "rootfs", "-E", "root_owner=0:0", "-d"])
        .arg(&tree)
        .arg(&raw);
    if let Some(epoch) = context.source_date_epoch {
        // e2fsprogs' own knob: file system timestamps at the epoch rather than now.
        mkfs.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    }
    context.log.run_checked("mkfs.ext4", mkfs)?;
    std::fs::remove_dir_all(&tree).map_err(BuildError::io("remove", &tree))?;
    let qcow2 = staging.dir().join(DISK);
    corral_disk::convert(
        &raw,
        &qcow2,
        ConvertOptions {
            source_format: Some(DiskFormat::Raw),
            source_backing: BackingPolicy::Within(Vec::new()),
            target_format: DiskFormat::Qcow2,
            cluster_size: None,
        },
        &mut |_| std::ops::ControlFlow::Continue(()),
    )
    .map_err(BuildError::Disk)?;
    std::fs::remove_file(&raw).map_err(BuildError::io("remove", &raw))?;
    Ok(staging)
}

/// A file output written beside its target under a temporary name, renamed into place only
/// when the whole build has succeeded (and removed otherwise).
struct PendingFile {
    temporary: PathBuf,
    target: PathBuf,
}

impl PendingFile {
    /// Reserves the temporary name of `target` (nothing is created there yet).
    fn new(target: &Path) -> Result<Self, BuildError> {
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(BuildError::io("create", parent))?;
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pending = PendingFile {
            temporary: target
                .with_file_name(format!(".{name}.corral-build-{}", std::process::id())),
            target: target.to_path_buf(),
        };
        pending.remove_temporary();
        Ok(pending)
    }

    /// A file at the temporary name, filled by `fill`, synced.
    fn write<T>(
        target: &Path,
        fill: impl FnOnce(&mut std::fs::File) -> Result<T, BuildError>,
    ) -> Result<(Self, T), BuildError> {
        let pending = Self::new(target)?;
        let mut file = std::fs::File::create(&pending.temporary)
            .map_err(BuildError::io("create", &pending.temporary))?;
        let result = fill(&mut file)?;
        file.flush()
            .and_then(|()| file.sync_all())
            .map_err(BuildError::io("write", &pending.temporary))?;
        Ok((pending, result))
    }

    /// Moves it to its target, replacing what an earlier build left there.
    fn publish(self) -> Result<(), BuildError> {
        if std::fs::symlink_metadata(&self.target).is_ok_and(|meta| meta.is_dir()) {
            std::fs::remove_dir_all(&self.target)
                .map_err(BuildError::io("replace", &self.target))?;
        }
        std::fs::rename(&self.temporary, &self.target)
            .map_err(BuildError::io("write", &self.target))
    }

    fn remove_temporary(&self) {
        // Best effort: a leftover only takes room beside the output.
        match std::fs::symlink_metadata(&self.temporary) {
            Ok(meta) if meta.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.temporary);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.temporary);
            }
            Err(_) => {}
        }
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Published: the temporary name is gone already.
        self.remove_temporary();
    }
}

/// RFC 3339 in UTC, as image metadata records `created`.
fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch))
        .to_string()
}
