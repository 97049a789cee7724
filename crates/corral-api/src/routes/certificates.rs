//! The trust store over the API (`corral trust`): the client certificates trusted for TLS,
//! join tokens, and enrolment of a client's own certificate with a token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use corral_core::trust::{Certificate, PendingToken, TrustedClient, DEFAULT_TOKEN_LIFETIME};

use crate::body::JsonBody;
use crate::error::{trust_error, ApiError, ErrorBody};
use crate::peer::PresentedCertificate;
use crate::routes::blocking;
use crate::Api;

/// `GET /1.0/certificates`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TrustList {
    pub clients: Vec<TrustedClient>,
    pub pending_tokens: Vec<PendingToken>,
}

/// `POST /1.0/certificates`: trust a certificate under a name.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustRequest {
    pub name: String,
    /// The client's certificate, PEM.
    pub certificate: String,
}

/// `POST /1.0/certificates/tokens`: a join token for a client to come.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The name the enrolled certificate will be trusted as.
    pub name: String,
    /// How long the token is good for, in seconds (default a day).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub lifetime_seconds: Option<u64>,
}

/// A join token just issued; its secret is shown this once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub name: String,
    /// `FINGERPRINT:SECRET`: the server's certificate fingerprint, for the client to pin, and
    /// the one-time secret.
    pub token: String,
    /// When it stops being valid, in seconds since the Unix epoch.
    pub expires: u64,
}

/// `POST /1.0/certificates/enrol`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The join token (`FINGERPRINT:SECRET`, or the secret alone).
    pub token: String,
}

#[utoipa::path(get, path = "/1.0/certificates", tag = "trust",
    responses((status = 200, description = "The trusted clients and pending join tokens (`corral trust list`)", body = TrustList),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn list(State(api): State<Arc<Api>>) -> Result<Json<TrustList>, ApiError> {
    blocking(move || {
        Ok(Json(TrustList {
            clients: api.trust.clients().map_err(trust_error)?,
            pending_tokens: api.trust.pending_tokens().map_err(trust_error)?,
        }))
    })
    .await
}

#[utoipa::path(post, path = "/1.0/certificates", tag = "trust", request_body = TrustRequest,
    responses((status = 201, description = "Trusted (`corral trust add NAME --certificate FILE`)", body = TrustedClient),
              (status = 400, description = "A bad name or not a certificate", body = ErrorBody),
              (status = 409, description = "The name or the certificate is already trusted", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn add(
    State(api): State<Arc<Api>>,
    JsonBody(request): JsonBody<TrustRequest>,
) -> Result<(StatusCode, Json<TrustedClient>), ApiError> {
    blocking(move || {
        let certificate =
            Certificate::from_pem(request.certificate.as_bytes()).map_err(trust_error)?;
        let client = (api.trust.add(&request.name, &certificate)).map_err(trust_error)?;
        Ok((StatusCode::CREATED, Json(client)))
    })
    .await
}

#[utoipa::path(post, path = "/1.0/certificates/tokens", tag = "trust", request_body = TokenRequest,
    responses((status = 201, description = "A join token (`corral trust add NAME`)", body = IssuedToken),
              (status = 400, description = "A bad name", body = ErrorBody),
              (status = 409, description = "The name is taken", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn issue_token(
    State(api): State<Arc<Api>>,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let lifetime = request
        .lifetime_seconds
        .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
    blocking(move || {
        let root = api.manager.store().root();
        let server = corral_core::trust::server_identity(root, None).map_err(trust_error)?;
        let token = (api.trust.issue_token(&request.name, lifetime)).map_err(trust_error)?;
        Ok((
            StatusCode::CREATED,
            Json(IssuedToken {
                token: token.text(&server.fingerprint()),
                name: token.name,
                expires: token.expires,
            }),
        ))
    })
    .await
}

#[utoipa::path(post, path = "/1.0/certificates/enrol", tag = "trust", request_body = EnrolRequest,
    responses((status = 201, description = "The client's own certificate is trusted under the token's name", body = TrustedClient),
              (status = 400, description = "Not a TLS client presenting a certificate", body = ErrorBody),
              (status = 403, description = "The token is unknown, used or expired", body = ErrorBody),
              (status = 409, description = "The certificate is already trusted", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn enrol(
    State(api): State<Arc<Api>>,
    PresentedCertificate(certificate): PresentedCertificate,
    JsonBody(enrol): JsonBody<EnrolRequest>,
) -> Result<(StatusCode, Json<TrustedClient>), ApiError> {
    let Some(certificate) = certificate else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "enrolment trusts the certificate the client connects with: connect over TLS \
             (corral serve --listen) presenting the certificate to trust",
        ));
    };
    blocking(move || {
        let client = (api.trust.redeem(&enrol.token, &certificate)).map_err(trust_error)?;
        Ok((StatusCode::CREATED, Json(client)))
    })
    .await
}

#[utoipa::path(delete, path = "/1.0/certificates/{name}", tag = "trust",
    params(("name" = String, Path, description = "The trusted client's or pending token's name")),
    responses((status = 204, description = "No longer trusted (`corral trust remove NAME`)"),
              (status = 404, description = "No such client or token", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn remove(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        api.trust.remove(&name).map_err(trust_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
