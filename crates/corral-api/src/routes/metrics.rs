//! `GET /1.0/metrics`: every instance's numbers in Prometheus's text format (`metrics_text.rs`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::{ApiError, ErrorBody};
use crate::metrics_text::{render, CONTENT_TYPE};
use crate::Api;

#[utoipa::path(get, path = "/1.0/metrics", tag = "server",
    responses((status = 200, description = "Prometheus's text format", body = String,
               content_type = "text/plain; version=0.0.4; charset=utf-8"),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn metrics(State(api): State<Arc<Api>>) -> Result<impl IntoResponse, ApiError> {
    let instances = crate::routes::blocking(move || Ok(api.manager.metrics()?)).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&instances)))
}
