//! `corral --remote NAME snapshot|volume|network|image VERB`: each verb the API has a route for,
//! its answer printed by the local command's printers; the verbs it has none for are refused
//! with what runs remotely.

use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context};
use corral_core::snapshot::{stateful_saves, SnapshotInfo};
use corral_core::volume::VolumeInfo;
use corral_core::volume_request::VolumeRequest;
use corral_image::export::{ExportError, ExportFormat};
use corral_image::store::Image;
use corral_net::definition::NetworkDefinition;
use corral_remote::Client;
use serde_json::json;

use super::{decode, definition, get};
use crate::image::{self, ImageCommand, ImportArgs};
use crate::network::{self, NetworkCommand};
use crate::snapshot::{self, SnapshotCommand};
use crate::volume::{self, VolumeCommand};

pub fn snapshot(client: &Client, command: SnapshotCommand) -> anyhow::Result<()> {
    let path = |name: &str| format!("/1.0/instances/{name}/snapshots");
    let list = |name: &str| -> anyhow::Result<Vec<SnapshotInfo>> {
        get(client, &path(name), "snapshot list")
    };
    match command {
        SnapshotCommand::Create { name, snapshot } => {
            let before = list(&name)?;
            let body = json!({ "name": snapshot });
            client.operate("POST", &path(&name), Some(&body))?;
            // The one named, else the one that was not there before.
            let created = (list(&name)?.into_iter())
                .find(|s| match &snapshot {
                    Some(wanted) => &s.name == wanted,
                    None => before.iter().all(|old| old.name != s.name),
                })
                .context("the remote's snapshot list does not show the snapshot it took")?;
            let saved = match created.stateful {
                true => stateful_saves(definition(client, &name)?.kind),
                false => "",
            };
            // How long the guest was paused is known only to the server.
            snapshot::print_created(&name, &created.name, saved, None);
        }
        SnapshotCommand::List { name, output } => snapshot::print_list(&list(&name)?, output)?,
        SnapshotCommand::Restore { name, snapshot } => {
            let restore = format!("{}/{snapshot}/restore", path(&name));
            client.operate("POST", &restore, None)?;
            // A stateful snapshot's instance runs again from it, as a local restore says.
            let running = (list(&name)?.iter()).any(|s| s.name == snapshot && s.stateful);
            snapshot::print_restored(&name, &snapshot, running);
        }
        SnapshotCommand::Delete { name, snapshot } => {
            client.operate("DELETE", &format!("{}/{snapshot}", path(&name)), None)?;
            snapshot::print_deleted(&name, &snapshot);
        }
    }
    Ok(())
}

pub fn volume(client: &Client, command: VolumeCommand) -> anyhow::Result<()> {
    match command {
        VolumeCommand::Create(args) => {
            let request = VolumeRequest::from(args);
            let body = serde_json::to_value(&request)?;
            let (_, answer) = client.call("POST", "/1.0/volumes", Some(&body))?;
            volume::print_created(&request.name, &decode::<VolumeInfo>(answer, "volume")?);
        }
        VolumeCommand::List { output } => volume::print_list(
            &get::<Vec<VolumeInfo>>(client, "/1.0/volumes", "volume list")?,
            output,
        )?,
        VolumeCommand::Info { name, output } => {
            let (_, answer) = client.call("GET", &format!("/1.0/volumes/{name}"), None)?;
            volume::print_info(&answer, output)?;
        }
        VolumeCommand::Resize { name, size, force } => {
            let body = json!({ "size": size, "force": force });
            let (_, answer) = client.call("PUT", &format!("/1.0/volumes/{name}"), Some(&body))?;
            volume::print_resized(&name, &decode::<VolumeInfo>(answer, "volume")?);
        }
        VolumeCommand::Delete { name } => {
            client.call("DELETE", &format!("/1.0/volumes/{name}"), None)?;
            volume::print_deleted(&name);
        }
        VolumeCommand::Import { .. } | VolumeCommand::Check { .. } => bail!(
            "corral --remote runs volume create, list, info, resize and delete; import and check \
             volumes on the server itself"
        ),
    }
    Ok(())
}

pub fn network(client: &Client, command: NetworkCommand) -> anyhow::Result<()> {
    match command {
        NetworkCommand::Create(args) => {
            let body = serde_json::to_value(args.into_request()?)?;
            let (_, answer) = client.call("POST", "/1.0/networks", Some(&body))?;
            network::print_created(&decode::<NetworkDefinition>(answer, "network")?);
        }
        NetworkCommand::List { output } => {
            let networks: Vec<NetworkDefinition> = get(client, "/1.0/networks", "network list")?;
            network::print_list(&networks, output)?;
        }
        NetworkCommand::Delete { name } => {
            client.call("DELETE", &format!("/1.0/networks/{name}"), None)?;
            network::print_deleted(&name);
        }
        // The API shows neither a network's DHCP/DNS service nor changes its settings.
        NetworkCommand::Info { .. } | NetworkCommand::Set { .. } => bail!(
            "corral --remote runs network create, list and delete; show and change networks on \
             the server itself"
        ),
    }
    Ok(())
}

/// The image `reference` (an alias or a fingerprint or its start) names on the remote.
fn image_named(client: &Client, reference: &str) -> anyhow::Result<Image> {
    get(client, &format!("/1.0/images/{reference}"), "image")
}

pub fn image(client: &Client, command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::List { output } => image::print_list(
            &get::<Vec<Image>>(client, "/1.0/images", "image list")?,
            output,
        )?,
        ImageCommand::Info { image, output } => {
            image::print_info(&image_named(client, &image)?, output)?
        }
        ImageCommand::Delete { images } => {
            for reference in images {
                // Named by its fingerprint, so the image said deleted is the one deleted.
                let image = image_named(client, &reference)?;
                let path = format!("/1.0/images/{}", image.fingerprint());
                client.call("DELETE", &path, None)?;
                image::print_deleted(&image);
            }
        }
        ImageCommand::Import(args) => import(client, args)?,
        ImageCommand::Export {
            image,
            target,
            format,
        } => export(client, &image, &target, format)?,
        ImageCommand::Alias { .. } | ImageCommand::Build(_) => bail!(
            "corral --remote runs image list, info, delete, import and export; manage aliases and \
             build images on the server itself"
        ),
    }
    Ok(())
}

/// `image import` of one image file, uploaded to the remote.
fn import(client: &Client, args: ImportArgs) -> anyhow::Result<()> {
    let server_limit = corral_image::archive::Limits::default().max_bytes;
    if args.rootfs_file.is_some()
        || args.reference.is_some()
        || args.kernel.is_some()
        || args.cmdline.is_some()
        || args.alias.len() > 1
        || args.max_size.0 != server_limit
    {
        bail!(
            "corral --remote uploads one image file with --format, --os, --release, \
             --description and at most one --alias; import split Incus images, OCI layout \
             references, kernels and other size limits on the server itself"
        );
    }
    let source = &args.source;
    let file = std::fs::File::open(source)
        .with_context(|| format!("cannot open the image {}", source.display()))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        bail!(
            "{} is not a file: corral --remote uploads an image file (pack a directory into a \
             tarball first, or import it on the server itself)",
            source.display()
        );
    }
    let format = args.format.map(|format| format.to_string());
    let query: Vec<(&str, &str)> = [
        ("format", format.as_deref()),
        ("alias", args.alias.first().map(String::as_str)),
        ("os", args.os.as_deref()),
        ("release", args.release.as_deref()),
        ("description", args.description.as_deref()),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key, value?)))
    .collect();
    let (status, answer) = client.upload("/1.0/images", &query, BufReader::new(file))?;
    // 201 when it is new, 200 when the store held it already.
    image::print_imported(&decode(answer, "image")?, status == 201, args.output)
}

/// `image export` of a remote image into the file `target` here, which appears whole or not
/// at all.
fn export(
    client: &Client,
    reference: &str,
    target: &Path,
    format: Option<ExportFormat>,
) -> anyhow::Result<()> {
    let exists = || ExportError::Exists {
        target: target.to_owned(),
    };
    if target.symlink_metadata().is_ok() {
        return Err(exists().into());
    }
    let image = image_named(client, reference)?;
    let query = format.map_or_else(String::new, |format| format!("?format={format}"));
    let mut content = client.download(&format!(
        "/1.0/images/{}/export{query}",
        image.fingerprint()
    ))?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".corral-export-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot make a file in {}", dir.display()))?;
    std::io::copy(&mut content, &mut file).with_context(|| {
        format!(
            "cannot download image {} into {}",
            image.display_name(),
            target.display()
        )
    })?;
    file.persist_noclobber(target)
        .map_err(|err| match err.error.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::Error::from(exists()),
            _ => anyhow::Error::from(err.error)
                .context(format!("cannot write the image to {}", target.display())),
        })?;
    image::print_exported(&image, target);
    Ok(())
}
