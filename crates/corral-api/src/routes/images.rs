//! `/1.0/images`: the image store (`corral image`), images uploaded and downloaded as a stream.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::CoreError;
use corral_image::archive::Limits;
use corral_image::export::ExportFormat;
use corral_image::import::{Format as ImportFormat, ImportOptions};
use corral_image::progress::NoProgress;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::body::query;
use crate::error::{ApiError, ErrorBody};
use crate::routes::{blocking, json};
use crate::Api;

#[utoipa::path(get, path = "/1.0/images", tag = "images",
    responses((status = 200, description = "The image store (`corral image list -o json`)", body = Vec<Object>),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn list(State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    json(blocking(move || Ok(api.manager.images()?.list().map_err(CoreError::from)?)).await?)
}

#[utoipa::path(get, path = "/1.0/images/{image}", tag = "images",
    params(("image" = String, Path, description = "An alias, or a fingerprint or its unique start")),
    responses((status = 200, description = "The image (`corral image info -o json`)", body = Object),
              (status = 400, description = "The fingerprint's start matches several images", body = ErrorBody),
              (status = 404, description = "No such image", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn get(
    State(api): State<Arc<Api>>,
    Path(image): Path<String>,
) -> Result<Json<Value>, ApiError> {
    json(
        blocking(move || {
            Ok(api
                .manager
                .images()?
                .resolve(&image)
                .map_err(CoreError::from)?)
        })
        .await?,
    )
}

#[utoipa::path(delete, path = "/1.0/images/{image}", tag = "images",
    params(("image" = String, Path, description = "An alias, or a fingerprint or its unique start")),
    responses((status = 204, description = "Deleted (`corral image delete`)"),
              (status = 400, description = "The fingerprint's start matches several images", body = ErrorBody),
              (status = 404, description = "No such image", body = ErrorBody),
              (status = 409, description = "An instance reads from it", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn delete(
    State(api): State<Arc<Api>>,
    Path(image): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        api.manager.delete_image(&image)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `POST /1.0/images`: what the upload is and what to call it.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// rootfs, oci, incus, disk or vagrant (default: told by the content).
    #[serde(default)]
    format: Option<String>,
    /// A name for the image.
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

fn bad_request(sentence: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, sentence)
}

#[utoipa::path(post, path = "/1.0/images", tag = "images", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
                 description = "The image file: a root filesystem tarball, an oci-archive, an Incus unified tarball, a disk image or a Vagrant box"),
    responses((status = 201, description = "Imported (`corral image import`): the image", body = Object),
              (status = 200, description = "The store already held it: the image", body = Object),
              (status = 400, description = "Not an image corral reads, or a bad query", body = ErrorBody),
              (status = 409, description = "The alias names another image", body = ErrorBody),
              (status = 413, description = "Larger than an image may be", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn upload(
    State(api): State<Arc<Api>>,
    upload: Result<Query<UploadQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let upload = query(upload)?;
    let format = (upload.format.as_deref())
        .map(str::parse::<ImportFormat>)
        .transpose()
        .map_err(bad_request)?;
    let limits = Limits::default();
    // Beside the store, so the import's own copy stays on one filesystem; removed when dropped.
    let root = api.manager.store().root().to_owned();
    let file = tempfile::Builder::new()
        .prefix(".upload-")
        .tempfile_in(&root)
        .map_err(|err| {
            host_failed(
                &format!("cannot make an upload file in {}", root.display()),
                err,
            )
        })?;
    let mut writer = tokio::fs::File::from_std(
        file.reopen()
            .map_err(|err| host_failed("cannot open the upload file", err))?,
    );
    let mut received = 0u64;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| bad_request(format!("the upload broke off: {err}")))?;
        received += chunk.len() as u64;
        if received > limits.max_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the upload is larger than an image may be ({} bytes)",
                    limits.max_bytes
                ),
            ));
        }
        writer
            .write_all(&chunk)
            .await
            .map_err(|err| host_failed("cannot write the upload file", err))?;
    }
    writer
        .flush()
        .await
        .map_err(|err| host_failed("cannot write the upload file", err))?;
    drop(writer);
    let options = ImportOptions {
        format,
        os: upload.os,
        release: upload.release,
        description: upload.description,
        limits,
        ..ImportOptions::default()
    };
    let aliases: Vec<String> = upload.alias.into_iter().collect();
    let (image, new) = blocking(move || {
        let imported = api
            .manager
            .import_image(file.path(), &options, &aliases, &NoProgress)?;
        drop(file);
        Ok(imported)
    })
    .await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, json(image)?).into_response())
}

fn host_failed(what: &str, err: std::io::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {err}"))
}

/// `GET /1.0/images/IMAGE/export`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// rootfs, incus (a container's), oci-archive, qcow2 or raw (default: incus for a
    /// container, qcow2 for a VM).
    #[serde(default)]
    format: Option<String>,
}

#[utoipa::path(get, path = "/1.0/images/{image}/export", tag = "images",
    params(("image" = String, Path, description = "An alias, or a fingerprint or its unique start"), ExportQuery),
    responses((status = 200, description = "The image as one file (`corral image export`)", body = Vec<u8>,
               content_type = "application/octet-stream"),
              (status = 400, description = "A format this image has no one-file export in", body = ErrorBody),
              (status = 404, description = "No such image", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn export(
    State(api): State<Arc<Api>>,
    Path(image): Path<String>,
    export: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let format = (query(export)?.format.as_deref())
        .map(str::parse::<ExportFormat>)
        .transpose()
        .map_err(bad_request)?;
    let (file, name, length) = blocking(move || {
        let resolved = (api.manager.images()?.resolve(&image)).map_err(CoreError::from)?;
        let image_type = resolved.metadata().image_type;
        let format = format.unwrap_or_else(|| ExportFormat::default_for(image_type));
        if !format.is_one_file(image_type) {
            return Err(bad_request(format!(
                "a {image_type} image exported as {format:?} is a directory; over the API choose \
                 a one-file format (rootfs, incus for a container, oci-archive, qcow2, raw)"
            )));
        }
        let root = api.manager.store().root().to_owned();
        let dir = tempfile::Builder::new()
            .prefix(".export-")
            .tempdir_in(&root)
            .map_err(|err| {
                host_failed(
                    &format!("cannot make an export directory in {}", root.display()),
                    err,
                )
            })?;
        let target = dir.path().join("image");
        let (exported, _) = api
            .manager
            .export_image(&image, &target, Some(format), &NoProgress)?;
        // Open, then let the directory go: the open file is read to its end after its name
        // is gone, and nothing is left behind if the client leaves halfway.
        let file = std::fs::File::open(&target)
            .map_err(|err| host_failed("cannot open the exported image", err))?;
        let length = file
            .metadata()
            .map_err(|err| host_failed("cannot read the exported image", err))?
            .len();
        drop(dir);
        let name = format!("{}.{}", exported.short_fingerprint(), extension(format));
        Ok((file, name, length))
    })
    .await?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The file name extension of an export in `format`.
fn extension(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Qcow2 => "qcow2",
        ExportFormat::Raw => "raw",
        _ => "tar",
    }
}
