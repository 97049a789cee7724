//! Errors as the API answers them: `{"error": "SENTENCE"}` with a status code that says whose
//! fault it is (400 a bad request, 404 nothing by that name, 409 the instance's state forbids
//! it, 500 the host failed). The sentence is the error's whole chain, as the CLI prints it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::snapshot::SnapshotError;
use corral_core::store::StoreError;
use corral_core::trust::TrustError;
use corral_core::volume::VolumeError;
use corral_core::CoreError;
use corral_disk::DiskError;
use corral_image::export::ExportError;
use corral_image::import::ImportError;
use corral_image::store::StoreError as ImageStoreError;
use corral_net::networks::NetworkError;

/// A failed request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// The status code of a core error.
pub fn status_of(err: &CoreError) -> StatusCode {
    match err {
        CoreError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
        CoreError::Store(StoreError::Exists(_))
        | CoreError::AlreadyRunning(_)
        | CoreError::NotRunning(_)
        | CoreError::Paused(_)
        | CoreError::NotPaused(_)
        | CoreError::AlreadyPaused(_)
        | CoreError::Running(_) => StatusCode::CONFLICT,
        CoreError::Store(StoreError::Definition(_)) | CoreError::Create(_) => {
            StatusCode::BAD_REQUEST
        }
        CoreError::Missing { .. }
        | CoreError::Unsupported(_)
        | CoreError::IdentityChanged { .. } => StatusCode::BAD_REQUEST,
        CoreError::Volume(err) => volume_status(err),
        CoreError::Snapshot(err) => snapshot_status(err),
        CoreError::Network(err) => network_status(err),
        CoreError::Image(err) => image_status(err),
        // What an upload holds is the caller's; the host's files are the server's.
        CoreError::ImageImport(err) => match &**err {
            ImportError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ImportError::Store(err) => image_status(err),
            _ => StatusCode::BAD_REQUEST,
        },
        CoreError::ImageExport(err) => match &**err {
            ExportError::WrongType { .. } => StatusCode::BAD_REQUEST,
            ExportError::Store(err) => image_status(err),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn image_status(err: &ImageStoreError) -> StatusCode {
    match err {
        ImageStoreError::NotFound(_) | ImageStoreError::NoAlias(_) => StatusCode::NOT_FOUND,
        ImageStoreError::Ambiguous { .. } | ImageStoreError::InvalidAlias(_) => {
            StatusCode::BAD_REQUEST
        }
        ImageStoreError::AliasTaken { .. } | ImageStoreError::InUse { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn volume_status(err: &VolumeError) -> StatusCode {
    match err {
        VolumeError::NotFound(_) => StatusCode::NOT_FOUND,
        VolumeError::Exists(_) | VolumeError::InUse { .. } | VolumeError::Open { .. } => {
            StatusCode::CONFLICT
        }
        VolumeError::BackingNotInPool(_)
        | VolumeError::NotQcow2(_)
        | VolumeError::DirectoryHasNoSize
        | VolumeError::SizeNeeded(_)
        | VolumeError::BackingNeedsQcow2
        | VolumeError::DirectoryResize(_)
        | VolumeError::Name(_) => StatusCode::BAD_REQUEST,
        VolumeError::Disk(err) => disk_status(err),
        VolumeError::BackingOutside { .. } | VolumeError::Io(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// A disk error the request caused (a size or option the image cannot take, a shrink not
/// forced, an image in use) is the caller's; the others are the host's.
fn disk_status(err: &DiskError) -> StatusCode {
    match err {
        DiskError::InvalidSize { .. }
        | DiskError::InvalidOption { .. }
        | DiskError::ShrinkRefused { .. }
        | DiskError::BackingNotAllowed { .. } => StatusCode::BAD_REQUEST,
        DiskError::AlreadyExists { .. } | DiskError::Locked { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn snapshot_status(err: &SnapshotError) -> StatusCode {
    match err {
        SnapshotError::Name(_) => StatusCode::BAD_REQUEST,
        SnapshotError::NotFound { .. } => StatusCode::NOT_FOUND,
        SnapshotError::Exists { .. }
        | SnapshotError::NotRunningNorStopped { .. }
        | SnapshotError::RestoreRunning(_) => StatusCode::CONFLICT,
        SnapshotError::SharedDisk { .. }
        | SnapshotError::NotAFile { .. }
        | SnapshotError::RootfsOutside { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn network_status(err: &NetworkError) -> StatusCode {
    match err {
        NetworkError::NotFound(_) => StatusCode::NOT_FOUND,
        NetworkError::Exists(_)
        | NetworkError::InUse { .. }
        | NetworkError::BridgeExists { .. } => StatusCode::CONFLICT,
        NetworkError::Definition(_) | NetworkError::NoFreeSubnet(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A trust store error as the API answers it.
pub fn trust_error(err: TrustError) -> ApiError {
    let status = match &err {
        TrustError::Name(_) | TrustError::NotACertificate(_) => StatusCode::BAD_REQUEST,
        TrustError::NameTaken(_) | TrustError::AlreadyTrusted(_) => StatusCode::CONFLICT,
        TrustError::NotFound(_) => StatusCode::NOT_FOUND,
        TrustError::UnknownToken | TrustError::ExpiredToken(_) => StatusCode::FORBIDDEN,
        TrustError::Random(_)
        | TrustError::Generate(_)
        | TrustError::Damaged { .. }
        | TrustError::DamagedIdentity { .. }
        | TrustError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, corral_host::error_chain(&err))
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> ApiError {
        ApiError::new(status_of(&err), corral_host::error_chain(&err))
    }
}

/// Every failure's body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong and its causes, as the CLI prints them.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_core_error_gets_the_status_of_whose_fault_it_is() {
        let cases = [
            (
                CoreError::Store(StoreError::NotFound("a".into())),
                StatusCode::NOT_FOUND,
            ),
            (CoreError::AlreadyRunning("a".into()), StatusCode::CONFLICT),
            (CoreError::Running("a".into()), StatusCode::CONFLICT),
            (
                CoreError::Create(corral_core::create::CreateError::NoName),
                StatusCode::BAD_REQUEST,
            ),
            (
                CoreError::StartFailed {
                    name: "a".into(),
                    detail: "no kvm".into(),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(ApiError::from(err).status, status);
        }
    }

    #[test]
    fn the_message_is_the_whole_chain() {
        let source = serde_json::from_str::<u8>("x").unwrap_err();
        let cause = source.to_string();
        let err = CoreError::Encode {
            what: "state file",
            source,
        };
        let message = ApiError::from(err).message;
        assert_eq!(message, format!("cannot write the state file: {cause}"));
    }
}
