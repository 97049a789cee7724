//! Errors as the API answers them: `{"error": "SENTENCE"}` with a status code that says whose
//! fault it is (400 a bad request, 404 nothing by that name, 409 the instance's state forbids
//! it, 500 the host failed). The sentence is the error's whole chain, as the CLI prints it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::store::StoreError;
use corral_core::CoreError;

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
        CoreError::Missing { .. } | CoreError::Unsupported(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
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
