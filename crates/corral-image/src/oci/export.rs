//! Exporting a root filesystem as an OCI image: one gzip layer (the canonical tar of
//! [`crate::archive::pack`], gzip with a zero mtime and no name, so the bytes are the same every
//! time), a config carrying the container defaults, a manifest and `index.json`; as a layout
//! directory or an `oci-archive` tar of one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use corral_error::PathIoError;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

use super::OciError;
use crate::archive::{self, PackOptions};
use crate::metadata::ImageMetadata;

const LAYOUT_MARKER: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes the image of `rootfs` described by `metadata` to `target`, which must not exist: a
/// layout directory, or with `archive` an `oci-archive` tar of one. `reference` becomes the
/// manifest's `org.opencontainers.image.ref.name`. The same input gives the same bytes. On error
/// `target` may exist in part: the caller removes it.
pub fn export(
    rootfs: &Path,
    metadata: &ImageMetadata,
    target: &Path,
    archive: bool,
    reference: Option<&str>,
) -> Result<(), OciError> {
    if target.symlink_metadata().is_ok() {
        return Err(OciError::Exists {
            path: target.to_path_buf(),
        });
    }
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OciError::Io(PathIoError::new("write", path, source))
    };
    // The layout is made in a directory: beside the archive (removed after), or the target.
    let staging_holder;
    let layout = if archive {
        let beside = target.parent().unwrap_or(Path::new("."));
        staging_holder = tempfile::Builder::new()
            .prefix(".oci-export-")
            .tempdir_in(beside)
            .map_err(write_error(beside))?;
        staging_holder.path().to_path_buf()
    } else {
        std::fs::create_dir(target).map_err(write_error(target))?;
        target.to_path_buf()
    };
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(write_error(&blobs))?;

    let (layer, diff_id) = write_layer(rootfs, &blobs)?;
    let config = config_json(metadata, &diff_id)?;
    let config_descriptor = write_blob(&blobs, MediaType::ImageConfig, &config)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(vec![layer])
        .build()
        .map_err(OciError::Describe)?;
    let manifest = serde_json::to_vec(&manifest).map_err(|source| OciError::Json {
        what: "the manifest".into(),
        source,
    })?;
    let mut manifest_descriptor = write_blob(&blobs, MediaType::ImageManifest, &manifest)?;
    if let Some(reference) = reference {
        manifest_descriptor.set_annotations(Some(HashMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            reference.to_string(),
        )])));
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()
        .map_err(OciError::Describe)?;
    let index = serde_json::to_vec(&index).map_err(|source| OciError::Json {
        what: "index.json".into(),
        source,
    })?;
    std::fs::write(layout.join("index.json"), &index).map_err(write_error(&layout))?;
    std::fs::write(layout.join("oci-layout"), LAYOUT_MARKER).map_err(write_error(&layout))?;
    if archive {
        write_archive(&layout, target)?;
    }
    Ok(())
}

/// Packs `rootfs` into a gzip layer blob; returns its descriptor and the uncompressed digest
/// (the config's diff_id).
fn write_layer(rootfs: &Path, blobs: &Path) -> Result<(Descriptor, String), OciError> {
    let partial = blobs.join(".layer.partial");
    let write_error = |source| OciError::Io(PathIoError::new("write", partial.clone(), source));
    let file = File::create(&partial).map_err(write_error)?;
    let compressed = Hashing::new(BufWriter::new(file));
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(compressed, flate2::Compression::default());
    let mut builder = tar::Builder::new(Hashing::new(gzip));
    archive::pack(&mut builder, rootfs, Path::new(""), &PackOptions::default())
        .map_err(OciError::Pack)?;
    builder.finish().map_err(write_error)?;
    let uncompressed = builder.into_inner().map_err(write_error)?;
    let (diff_id, _) = uncompressed.digest();
    let compressed = uncompressed.inner.finish().map_err(write_error)?;
    let (digest, size) = compressed.digest();
    compressed
        .inner
        .into_inner()
        .map_err(|e| write_error(e.into_error()))?
        .sync_all()
        .map_err(write_error)?;
    let final_path = blobs.join(&digest);
    std::fs::rename(&partial, &final_path).map_err(write_error)?;
    let descriptor = descriptor(MediaType::ImageLayerGzip, size, &digest)?;
    Ok((descriptor, format!("sha256:{diff_id}")))
}

fn config_json(metadata: &ImageMetadata, diff_id: &str) -> Result<Vec<u8>, OciError> {
    let defaults = &metadata.container;
    let some = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
    let mut config = ConfigBuilder::default()
        .build()
        .map_err(OciError::Describe)?;
    config.set_entrypoint(some(&defaults.entrypoint));
    config.set_cmd(some(&defaults.cmd));
    config.set_env(some(&defaults.env));
    config.set_working_dir(defaults.working_dir.clone());
    config.set_user(defaults.user.clone());
    let mut image = ImageConfigurationBuilder::default()
        .architecture(Arch::from(oci_architecture(&metadata.architecture)))
        .os(Os::from(metadata.os.as_deref().unwrap_or("linux")))
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .map_err(OciError::Describe)?,
        )
        .build()
        .map_err(OciError::Describe)?;
    image.set_created(metadata.created.clone());
    serde_json::to_vec(&image).map_err(|source| OciError::Json {
        what: "the image config".into(),
        source,
    })
}

/// OCI's (Go's) name for an architecture Debian names.
fn oci_architecture(debian: &str) -> &str {
    match debian {
        "ppc64el" => "ppc64le",
        "i386" => "386",
        other => other,
    }
}

fn write_blob(blobs: &Path, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor, OciError> {
    let digest = hex::encode(Sha256::digest(bytes));
    let path = blobs.join(&digest);
    std::fs::write(&path, bytes)
        .map_err(|source| OciError::Io(PathIoError::new("write", path, source)))?;
    descriptor(media_type, bytes.len() as u64, &digest)
}

fn descriptor(media_type: MediaType, size: u64, hex: &str) -> Result<Descriptor, OciError> {
    let digest =
        oci_spec::image::Digest::try_from(format!("sha256:{hex}")).map_err(OciError::Describe)?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .size(size)
        .digest(digest)
        .build()
        .map_err(OciError::Describe)
}

/// The layout as an `oci-archive`: its files in a fixed order with fixed headers.
fn write_archive(layout: &Path, target: &Path) -> Result<(), OciError> {
    let write_error =
        |source| OciError::Io(PathIoError::new("write", target.to_path_buf(), source));
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(write_error)?;
    let mut builder = tar::Builder::new(BufWriter::new(file));
    let mut blobs: Vec<PathBuf> = std::fs::read_dir(layout.join("blobs/sha256"))
        .and_then(|listing| listing.map(|e| e.map(|e| e.path())).collect())
        .map_err(write_error)?;
    blobs.sort();
    let mut files = vec![layout.join("oci-layout"), layout.join("index.json")];
    files.extend(blobs);
    for path in files {
        let name = path.strip_prefix(layout).unwrap_or(&path).to_path_buf();
        let file = File::open(&path).map_err(write_error)?;
        let size = file.metadata().map_err(write_error)?.len();
        archive::append_reader(&mut builder, &name, file, size, 0o644, 0)
            .map_err(OciError::Pack)?;
    }
    builder.finish().map_err(write_error)?;
    let mut out = builder.into_inner().map_err(write_error)?;
    out.flush().map_err(write_error)?;
    let file = out.into_inner().map_err(|e| write_error(e.into_error()))?;
    file.sync_all().map_err(write_error)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn digest(&self) -> (String, u64) {
        (hex::encode(self.hasher.clone().finalize()), self.count)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
