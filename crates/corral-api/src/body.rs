//! Request bodies and query strings: JSON, whatever the Content-Type says, limited in size; a body that is not
//! JSON, or not the request's shape (a wrong type, an unknown field), is a 400 whose sentence
//! says where.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest request body taken (a definition file and settings, never data).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// `bytes` as a `T`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|err| {
        let what = match err.classify() {
            serde_json::error::Category::Data => "does not fit the request",
            _ => "is not valid JSON",
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body {what}: {err}"),
        )
    })
}

/// A query string that does not fit is a 400 with the reason, like a body.
pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(value)| value).map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the query string does not fit the request: {}",
                rejection.body_text()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        name: String,
    }

    #[test]
    fn malformed_json_wrong_types_and_unknown_fields_say_what_is_wrong() {
        let err = parse::<Shape>(b"{\"name\": ").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(
            err.message
                .starts_with("the request body is not valid JSON"),
            "{}",
            err.message
        );
        let err = parse::<Shape>(b"{\"name\": 3}").unwrap_err();
        assert!(
            err.message
                .contains("does not fit the request: invalid type"),
            "{}",
            err.message
        );
        let err = parse::<Shape>(b"{\"name\": \"a\", \"x\": 1}").unwrap_err();
        assert!(err.message.contains("unknown field `x`"), "{}", err.message);
        assert_eq!(parse::<Shape>(b"{\"name\": \"a\"}").unwrap().name, "a");
    }
}
