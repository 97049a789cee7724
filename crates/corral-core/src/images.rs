//! Instances and images: creating an instance from an image (its defaults filling the
//! definition, its content cloned or linked), refusing to delete an image an instance still
//! reads from, and publishing a stopped instance as a new image.

use std::path::{Path, PathBuf};

use corral_disk::{BackingPolicy, ConvertOptions, DiskFormat as ImageFormat, Qcow2CreateOptions};
use corral_image::export::ExportFormat;
use corral_image::import::ImportOptions;
use corral_image::metadata::ImageType;
use corral_image::progress::{DiskCopy, Progress};
use corral_image::store::{Image, ImageStore, StoreError};

use crate::definition::{BootFrom, Definition, Disk, DiskFormat, ImageSource, ImageStorage, Kind};
use crate::error::CoreError;
use crate::lifecycle::Manager;

/// The file name of a VM's root disk made from an image, in the instance directory.
pub const ROOT_DISK: &str = "root.qcow2";

/// How `corral create --image` holds the image's content, and how `corral clone` copies a VM's
/// disks (`crate::clone`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CloneMode {
    /// Share what can be shared: a VM gets a linked clone (a qcow2 overlay on a read-only
    /// base); a container reflinks where the filesystem can.
    #[default]
    Linked,
    /// An independent copy (`--full`): from an image, a VM's disk flattened; from an instance,
    /// each disk file copied.
    Full,
}

impl From<StoreError> for CoreError {
    fn from(err: StoreError) -> Self {
        CoreError::Image(Box::new(err))
    }
}

/// The instance kind an image makes.
pub fn kind_of(image: &Image) -> Kind {
    match image.metadata().image_type {
        ImageType::Container => Kind::Container,
        ImageType::Vm => Kind::Vm,
    }
}

impl Manager {
    /// The image store of this corral root.
    pub fn images(&self) -> Result<ImageStore, CoreError> {
        Ok(ImageStore::open(self.store().root())?)
    }

    /// Imports the image at `source` (`corral image import`, an upload to the API) and names it
    /// `aliases`, which are checked first so that a bad one is refused before the work; returns
    /// the image and whether it is new (the store already holding it is no error).
    pub fn import_image(
        &self,
        source: &Path,
        options: &ImportOptions,
        aliases: &[String],
        progress: &dyn Progress,
    ) -> Result<(Image, bool), CoreError> {
        for alias in aliases {
            corral_image::store::validate_alias(alias)?;
        }
        let images = self.images()?;
        let (mut image, new) = corral_image::import::import(&images, source, options, progress)
            .map_err(|err| CoreError::ImageImport(Box::new(err)))?;
        for alias in aliases {
            image = images.set_alias(alias, image.fingerprint(), false)?;
        }
        Ok((image, new))
    }

    /// Writes image `reference` to `target` (which must not exist) in `format`, by default the
    /// one that keeps its fingerprint for a container and qcow2 for a VM (`corral image
    /// export`); returns the image and the format used.
    pub fn export_image(
        &self,
        reference: &str,
        target: &Path,
        format: Option<ExportFormat>,
        progress: &dyn Progress,
    ) -> Result<(Image, ExportFormat), CoreError> {
        let image = self.images()?.resolve(reference)?;
        let format =
            format.unwrap_or_else(|| ExportFormat::default_for(image.metadata().image_type));
        corral_image::export::export(&image, target, format, progress)
            .map_err(|err| CoreError::ImageExport(Box::new(err)))?;
        Ok((image, format))
    }

    /// Creates instance `definition.name` from image `reference`: the image's defaults fill
    /// what the definition leaves empty (a container's command, environment, working directory,
    /// user, init; a VM's kernel or boot-from-disk and command line), and the instance gets its
    /// own root filesystem (reflinked or copied) or root disk (a qcow2 overlay on the image's, or
    /// with [`CloneMode::Full`] a flattened copy) as its first disk. Returns the saved definition.
    pub fn create_from_image(
        &self,
        mut definition: Definition,
        reference: &str,
        clone: CloneMode,
        progress: &dyn Progress,
    ) -> Result<Definition, CoreError> {
        let images = self.images()?;
        // Held until the instance exists: the image cannot be deleted under the copy.
        let _shared = images.lock(false)?;
        let image = images.resolve(reference)?;
        if kind_of(&image) != definition.kind {
            return Err(CoreError::Unsupported(format!(
                "image {} is a {} image; it cannot make a {}",
                image.display_name(),
                image.metadata().image_type,
                definition.kind
            )));
        }
        apply_defaults(&mut definition, &image);
        let alias = (!reference.eq_ignore_ascii_case(image.fingerprint()))
            .then(|| reference.to_string())
            .filter(|r| image.aliases.contains(r));
        // Decided before the instance exists, so its definition is written once and true.
        let storage = match (definition.kind, clone) {
            (Kind::Vm, CloneMode::Linked) => ImageStorage::Linked,
            (Kind::Vm, CloneMode::Full) => ImageStorage::Full,
            (Kind::Container, _) => {
                let instances = self.store().root().join("instances");
                if crate::copy::reflink_works(&image.rootfs()?, &instances) {
                    ImageStorage::Reflink
                } else {
                    ImageStorage::Copy
                }
            }
        };
        let populate = |dir: &Path| -> Result<(), CoreError> {
            match storage {
                ImageStorage::Reflink | ImageStorage::Copy => {
                    progress.begin("copying the root filesystem", Some(image.record.size));
                    crate::copy::copy_tree_as(
                        &image.rootfs()?,
                        &dir.join("rootfs"),
                        storage,
                        progress,
                    )
                }
                ImageStorage::Linked | ImageStorage::Full => {
                    copy_boot_files(&image, dir)?;
                    make_root_disk(&image, &dir.join(ROOT_DISK), clone, progress)
                }
            }
        };
        // The definition must name what populate makes before the store checks it.
        match definition.kind {
            Kind::Container => {
                if let Some(spec) = definition.container.as_mut() {
                    spec.rootfs = PathBuf::from("rootfs");
                }
            }
            Kind::Vm => {
                let linked = clone == CloneMode::Linked;
                definition.disks.insert(
                    0,
                    Disk {
                        path: Some(PathBuf::from(ROOT_DISK)),
                        volume: None,
                        format: Some(DiskFormat::Qcow2),
                        allow_backing: if linked {
                            vec![image.dir().to_path_buf()]
                        } else {
                            Vec::new()
                        },
                        readonly: false,
                        serial: None,
                        target: None,
                    },
                );
                if let Some(boot) = definition.boot.as_mut() {
                    // The image's kernel, copied into the instance; else the disk's own.
                    if image.kernel().is_some() {
                        boot.kernel = PathBuf::from(corral_image::store::KERNEL);
                    } else if boot.kernel.as_os_str().is_empty() {
                        boot.from = BootFrom::Disk;
                    }
                    if image.initrd().is_some() {
                        boot.initrd = Some(PathBuf::from(corral_image::store::INITRD));
                    }
                }
            }
        }
        definition.image = Some(ImageSource {
            fingerprint: image.fingerprint().to_string(),
            alias,
            storage,
        });
        self.create(&definition, populate)?;
        Ok(self.store().definition(&definition.name)?)
    }

    /// The instances that read from image `fingerprint` while they exist (linked clones).
    pub fn image_users(&self, fingerprint: &str) -> Result<Vec<String>, CoreError> {
        let mut users = Vec::new();
        for name in self.store().names()? {
            match self.store().definition(&name) {
                Ok(definition) => {
                    if definition
                        .image
                        .is_some_and(|i| i.fingerprint == fingerprint && i.storage.uses_image())
                    {
                        users.push(name);
                    }
                }
                // An instance deleted meanwhile uses nothing.
                Err(crate::store::StoreError::NotFound(_)) => {}
                // One whose definition cannot be read might: the image is kept for it.
                Err(_) => users.push(format!("{name} (its definition is unreadable)")),
            }
        }
        Ok(users)
    }

    /// Deletes image `reference`, refused while an instance reads from it.
    pub fn delete_image(&self, reference: &str) -> Result<Image, CoreError> {
        let images = self.images()?;
        let _exclusive = images.lock(true)?;
        let image = images.resolve(reference)?;
        let users = self.image_users(image.fingerprint())?;
        images.delete(&image, &users)?;
        Ok(image)
    }
}

/// Fills what `definition` leaves empty from the image's defaults.
fn apply_defaults(definition: &mut Definition, image: &Image) {
    let metadata = image.metadata();
    if let Some(spec) = definition.container.as_mut() {
        let defaults = &metadata.container;
        if spec.command.is_empty() && !spec.init {
            spec.command = defaults.command();
            spec.init = defaults.init;
        }
        // The image's environment first: the definition's own entries win (later ones do).
        let mut env = defaults.env.clone();
        env.append(&mut spec.env);
        spec.env = env;
        if spec.cwd.is_none() {
            spec.cwd.clone_from(&defaults.working_dir);
        }
        if spec.user.is_none() {
            spec.user.clone_from(&defaults.user);
        }
    }
    // Left open by the caller: decided now, with the image's defaults in.
    let userns = crate::userns::default_for(definition);
    if let Some(spec) = definition.container.as_mut().filter(|s| s.userns.is_none()) {
        spec.userns = Some(userns);
    }
    if let Some(boot) = definition.boot.as_mut() {
        if boot.cmdline.is_none() {
            boot.cmdline.clone_from(&metadata.vm.cmdline);
        }
    }
}

/// Copies the kernel and initrd a VM image carries into the instance, which then boots them
/// whatever happens to the image.
fn copy_boot_files(image: &Image, dir: &Path) -> Result<(), CoreError> {
    for (file, name) in [
        (image.kernel(), corral_image::store::KERNEL),
        (image.initrd(), corral_image::store::INITRD),
    ] {
        if let Some(file) = file {
            let target = dir.join(name);
            std::fs::copy(&file, &target).map_err(CoreError::io("copy", &file))?;
        }
    }
    Ok(())
}

/// Makes a VM's root disk from the image's: a qcow2 overlay on it, or a flattened copy.
fn make_root_disk(
    image: &Image,
    target: &Path,
    clone: CloneMode,
    progress: &dyn Progress,
) -> Result<(), CoreError> {
    let disk = image.disk()?;
    let within_image = BackingPolicy::Within(vec![image.dir().to_path_buf()]);
    match clone {
        CloneMode::Linked => {
            corral_disk::create_qcow2(
                target,
                &Qcow2CreateOptions {
                    size: None,
                    cluster_size: None,
                    backing_file: Some(disk),
                    backing_format: Some(ImageFormat::Qcow2),
                    backing_policy: within_image,
                },
            )?;
            Ok(())
        }
        CloneMode::Full => {
            let mut copy = DiskCopy::new(progress, "copying the disk");
            corral_disk::convert(
                &disk,
                target,
                ConvertOptions {
                    source_format: Some(ImageFormat::Qcow2),
                    source_backing: within_image,
                    target_format: ImageFormat::Qcow2,
                    cluster_size: None,
                },
                &mut |step| copy.step(step),
            )?;
            Ok(())
        }
    }
}

fn sealing_failed(name: &str, source: corral_sysprep::SysprepError) -> CoreError {
    CoreError::Sysprep {
        what: format!("the image of instance {name}"),
        source: Box::new(source),
    }
}

impl Manager {
    /// Makes an image of stopped instance `name`: a container's root filesystem (with its
    /// owners shifted back when a user namespace had shifted them) or a VM's first disk,
    /// flattened, with the kernel it boots when that is not found inside the disk. With `seal`
    /// the copy's identity is removed ([`crate::sysprep::seal_options`]: a template) and what
    /// that changed is returned; without it the identity is left as it is. The instance itself
    /// is never changed. Aliases are set by the caller.
    pub fn publish(
        &self,
        name: &str,
        seal: bool,
        progress: &dyn Progress,
    ) -> Result<(Image, bool, Option<corral_sysprep::Report>), CoreError> {
        let _lock = self.lock(name)?;
        if self.reconciled(name)?.status.is_active() {
            return Err(CoreError::Unsupported(format!(
                "instance {name} is running; stop it first (`corral stop {name}`), so its \
                 files are not changing while they are copied"
            )));
        }
        let definition = self.store().definition(name)?;
        let paths = self.paths(name)?;
        let images = self.images()?;
        let mut metadata = self.published_metadata(&images, &definition);
        let staging = images.staging()?;
        let source = format!("instance:{name}");
        let mut identity = None;
        let imported = match definition.kind {
            Kind::Container => {
                let spec = definition.container.as_ref().ok_or_else(|| {
                    CoreError::Unsupported(format!("instance {name} has no [container]"))
                })?;
                let rootfs = staging.dir().join(corral_image::store::ROOTFS);
                progress.begin("copying the root filesystem", None);
                crate::copy::copy_tree(&paths.resolve(&spec.rootfs), &rootfs, progress)?;
                if let Some(range) = crate::userns::recorded_range(&paths.dir) {
                    crate::userns::shift_back(&rootfs, range)?;
                }
                if seal {
                    progress.begin("removing the identity", None);
                    let options = crate::sysprep::seal_options();
                    identity = Some(
                        corral_sysprep::sysprep_rootfs(&rootfs, &options)
                            .map_err(|source| sealing_failed(name, source))?,
                    );
                }
                metadata.container.entrypoint.clear();
                metadata.container.cmd = spec.command.clone();
                metadata.container.init = spec.init;
                metadata.container.env.clone_from(&spec.env);
                metadata.container.working_dir.clone_from(&spec.cwd);
                metadata.container.user.clone_from(&spec.user);
                corral_image::import::commit_container(&images, staging, metadata, source)
            }
            Kind::Vm => {
                if definition.disks.is_empty() {
                    return Err(CoreError::Unsupported(format!(
                        "instance {name} has no disk to make an image of"
                    )));
                }
                let pool = crate::volume::Pool::default_in(self.store().root());
                let (disk, format) = crate::disks::disk_source(&pool, &paths, &definition, 0)?;
                let places = crate::disks::backing_places(&pool, &paths, &definition, 0);
                let mut copy = DiskCopy::new(progress, "copying the disk");
                corral_disk::convert(
                    &disk,
                    &staging.dir().join(corral_image::store::DISK),
                    ConvertOptions {
                        source_format: format.and_then(DiskFormat::image_format),
                        source_backing: BackingPolicy::Within(places),
                        target_format: ImageFormat::Qcow2,
                        cluster_size: None,
                    },
                    &mut |step| copy.step(step),
                )?;
                if seal {
                    progress.begin("removing the identity", None);
                    let options = crate::sysprep::seal_options();
                    let staged = staging.dir().join(corral_image::store::DISK);
                    identity = Some(
                        crate::sysprep::reset_disk(
                            &staged,
                            Some(DiskFormat::Qcow2),
                            BackingPolicy::Within(Vec::new()),
                            &options,
                        )
                        .map_err(|source| sealing_failed(name, source))?,
                    );
                }
                // The kernel it boots comes along, as an import's `--kernel` would.
                let boot = definition.boot.as_ref();
                let kernel_file =
                    boot.filter(|b| b.from == BootFrom::Kernel && !b.kernel.as_os_str().is_empty());
                let options = ImportOptions {
                    kernel: kernel_file.map(|b| paths.resolve(&b.kernel)),
                    initrd: kernel_file.and_then(|b| b.initrd.as_ref().map(|i| paths.resolve(i))),
                    cmdline: boot.and_then(|b| b.cmdline.clone()),
                    ..ImportOptions::default()
                };
                corral_image::import::vm_metadata(staging.dir(), &options, Some(metadata)).and_then(
                    |metadata| corral_image::import::commit_vm(&images, staging, metadata, source),
                )
            }
        };
        let (image, new) = imported.map_err(|source| CoreError::Publish {
            name: name.to_string(),
            source: Box::new(source),
        })?;
        Ok((image, new, identity))
    }

    /// The metadata of an image published from `definition`: its own image's, when that is
    /// still stored, with a new description and creation time.
    fn published_metadata(
        &self,
        images: &ImageStore,
        definition: &Definition,
    ) -> corral_image::metadata::ImageMetadata {
        let from = definition
            .image
            .as_ref()
            .and_then(|source| images.resolve(&source.fingerprint).ok());
        let mut metadata = match from {
            Some(image) => image.record.metadata,
            None => corral_image::metadata::ImageMetadata::new(match definition.kind {
                Kind::Container => ImageType::Container,
                Kind::Vm => ImageType::Vm,
            }),
        };
        metadata.description = Some(format!("published from instance {}", definition.name));
        metadata.created =
            Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
        metadata.vm = Default::default();
        metadata
    }
}
