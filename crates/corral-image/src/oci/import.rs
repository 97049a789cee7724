//! Importing an OCI image: the manifest chosen (by reference, or the only one, through image
//! indexes to the host's platform), the config read, the layers applied in order.

use std::io::{BufReader, Read};
use std::path::Path;

use corral_error::PathIoError;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::layout::{parse, read_small, Checked, Layout};
use super::{OciError, OciImage};
use crate::archive::{self, Limits, UnpackOptions};
use crate::metadata::{
    host_architecture, normalize_architecture, ContainerDefaults, ImageMetadata, ImageType,
};
use crate::progress::{Progress, ProgressReader};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Indexes pointing to indexes: more than this is a loop or an attack.
const MAX_INDEX_DEPTH: usize = 4;

/// Imports the OCI image at `source` (a layout directory or an `oci-archive` tar) into the
/// existing, empty directory `rootfs`. `reference` picks an image by its
/// `org.opencontainers.image.ref.name` annotation; without it the layout must hold one image.
/// An archive is unpacked into a temporary directory beside `rootfs`, removed afterwards. On
/// error `rootfs` holds part of the image: the caller removes it.
pub fn import(
    source: &Path,
    reference: Option<&str>,
    rootfs: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<OciImage, OciError> {
    let read_error = |e| OciError::Io(PathIoError::new("read", source.to_path_buf(), e));
    let meta = std::fs::metadata(source).map_err(read_error)?;
    if meta.is_dir() {
        return import_layout(source, reference, rootfs, limits, progress);
    }
    if !meta.is_file() {
        return Err(OciError::NotAnImage {
            path: source.to_path_buf(),
        });
    }
    let beside = rootfs.parent().unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".oci-archive-")
        .tempdir_in(beside)
        .map_err(|e| OciError::Io(PathIoError::new("write", beside.to_path_buf(), e)))?;
    progress.begin("reading the oci-archive", Some(meta.len()));
    let file = std::fs::File::open(source).map_err(read_error)?;
    let archive_error = |e| OciError::Archive {
        path: source.to_path_buf(),
        source: e,
    };
    let options = UnpackOptions {
        limits: *limits,
        layer: false,
    };
    archive::unpack(
        ProgressReader::new(BufReader::new(file), progress),
        staging.path(),
        &options,
    )
    .map_err(archive_error)?;
    import_layout(staging.path(), reference, rootfs, limits, progress)
}

fn import_layout(
    root: &Path,
    reference: Option<&str>,
    rootfs: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<OciImage, OciError> {
    let not_an_image = || OciError::NotAnImage {
        path: root.to_path_buf(),
    };
    let marker: serde_json::Value = parse(
        &read_small(&root.join("oci-layout")).map_err(|_| not_an_image())?,
        "oci-layout",
    )?;
    let version = marker
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if version != "1.0.0" {
        return Err(OciError::LayoutVersion {
            version: version.to_string(),
        });
    }
    let index: ImageIndex = parse(&read_small(&root.join("index.json"))?, "index.json")?;
    let layout = Layout {
        root: root.to_path_buf(),
    };
    let chosen = choose(index.manifests(), reference)?;
    let manifest_descriptor = resolve(&layout, chosen, 0)?;
    let manifest: ImageManifest = layout.json(&manifest_descriptor, "manifest")?;
    let config_type = manifest.config().media_type();
    if *config_type != MediaType::ImageConfig {
        return Err(unsupported("image config", config_type));
    }
    let config: ImageConfiguration = layout.json(manifest.config(), "image config")?;
    let count = manifest.layers().len();
    for (i, layer) in manifest.layers().iter().enumerate() {
        apply_layer(&layout, layer, i + 1, count, rootfs, limits, progress)?;
    }
    Ok(OciImage {
        metadata: metadata(&config),
        manifest_digest: manifest_descriptor.digest().to_string(),
    })
}

/// The descriptor named `reference`, or the only one.
fn choose<'a>(
    manifests: &'a [Descriptor],
    reference: Option<&str>,
) -> Result<&'a Descriptor, OciError> {
    let name = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME).cloned())
    };
    let available = || {
        let names: Vec<String> = manifests
            .iter()
            .map(|d| name(d).unwrap_or_else(|| d.digest().to_string()))
            .collect();
        names.join(", ")
    };
    match reference {
        Some(reference) => manifests
            .iter()
            .find(|d| name(d).as_deref() == Some(reference))
            .ok_or_else(|| OciError::NoSuchReference {
                reference: reference.to_string(),
                available: available(),
            }),
        None => match manifests {
            [] => Err(OciError::NoImage),
            [only] => Ok(only),
            _ => Err(OciError::Ambiguous {
                count: manifests.len(),
                available: available(),
            }),
        },
    }
}

/// Follows image indexes down to the manifest for linux on the host's architecture.
fn resolve(layout: &Layout, descriptor: &Descriptor, depth: usize) -> Result<Descriptor, OciError> {
    match descriptor.media_type() {
        MediaType::ImageManifest => Ok(descriptor.clone()),
        MediaType::ImageIndex => {
            if depth >= MAX_INDEX_DEPTH {
                return Err(OciError::TooDeep {
                    max: MAX_INDEX_DEPTH,
                });
            }
            let index: ImageIndex = layout.json(descriptor, "image index")?;
            let host = host_architecture();
            let entry = index
                .manifests()
                .iter()
                .find(|d| {
                    d.platform().as_ref().is_some_and(|p| {
                        p.os().to_string() == "linux"
                            && normalize_architecture(&p.architecture().to_string()) == host
                    })
                })
                .ok_or_else(|| OciError::NoPlatform {
                    architecture: host.to_string(),
                })?;
            resolve(layout, entry, depth + 1)
        }
        other => Err(unsupported("manifest", other)),
    }
}

fn apply_layer(
    layout: &Layout,
    layer: &Descriptor,
    index: usize,
    count: usize,
    rootfs: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<(), OciError> {
    let (file, digest) = layout.open(layer)?;
    progress.begin(&format!("layer {index} of {count}"), Some(layer.size()));
    let mut checked = Checked::new(ProgressReader::new(BufReader::new(file), progress));
    let layer_error = |source| OciError::Layer {
        index,
        count,
        digest: digest.clone(),
        source,
    };
    {
        let reader: Box<dyn Read + '_> = match layer.media_type() {
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Box::new(&mut checked),
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
                Box::new(flate2::read::MultiGzDecoder::new(&mut checked))
            }
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Box::new(
                zstd::stream::read::Decoder::new(&mut checked)
                    .map_err(|e| layer_error(crate::archive::ArchiveError::Read(e)))?,
            ),
            other => return Err(unsupported(&format!("layer {index} of {count}"), other)),
        };
        let options = UnpackOptions {
            limits: *limits,
            layer: true,
        };
        archive::unpack(reader, rootfs, &options).map_err(layer_error)?;
    }
    checked.verify(&digest, layer.size())
}

fn unsupported(what: &str, media_type: &MediaType) -> OciError {
    OciError::UnsupportedMediaType {
        what: what.to_string(),
        media_type: media_type.to_string(),
    }
}

fn metadata(config: &ImageConfiguration) -> ImageMetadata {
    let defaults = config.config().as_ref();
    let list = |field: Option<&Vec<String>>| field.cloned().unwrap_or_default();
    ImageMetadata {
        image_type: ImageType::Container,
        architecture: normalize_architecture(&config.architecture().to_string()),
        os: Some(config.os().to_string()),
        release: None,
        description: None,
        created: config.created().clone(),
        container: ContainerDefaults {
            entrypoint: list(defaults.and_then(|c| c.entrypoint().as_ref())),
            cmd: list(defaults.and_then(|c| c.cmd().as_ref())),
            env: list(defaults.and_then(|c| c.env().as_ref())),
            working_dir: defaults
                .and_then(|c| c.working_dir().clone())
                .filter(|d| !d.is_empty()),
            user: defaults
                .and_then(|c| c.user().clone())
                .filter(|u| !u.is_empty()),
            init: false,
        },
        vm: Default::default(),
    }
}
