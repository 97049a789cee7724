//! Who may do what. A local caller has passed the unix socket's mode (root, or the `corral`
//! group) and may do everything. A TLS client may do everything once its certificate is in the
//! root's trust store, looked up at each request so a removal takes effect at once; until then
//! it may only ask what the server is and enrol with a join token.
//!
//! Whoever the caller, a request a browser makes for a page of another origin is refused: the
//! browser would lend that page its credentials (a trusted client certificate, a loopback
//! bridge to the socket), and the API reads JSON whatever the Content-Type says.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::peer::Peer;
use crate::routes::blocking;
use crate::Api;

/// The path a client enrols at with a join token.
pub const ENROL_PATH: &str = "/1.0/certificates/enrol";

/// What an untrusted client may ask: what the server is, the web UI's static files (whose
/// calls to the API are then refused with the reason), and enrolment.
fn open_to_anyone(method: &Method, path: &str) -> bool {
    let static_ui = path == "/ui" || path.starts_with("/ui/");
    (method == Method::GET && (path == "/1.0" || static_ui))
        || (method == Method::POST && path == ENROL_PATH)
}

/// The `Origin` a browser sent when it is not this server's (the scheme and `Host` it was asked
/// under): a page of another site, or an opaque `null` one.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    let origin_host = (origin.to_str().ok())
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, host)| host);
    match (origin_host, host) {
        (Some(origin_host), Some(host)) if origin_host.eq_ignore_ascii_case(host) => None,
        _ => Some(String::from_utf8_lossy(origin.as_bytes()).into_owned()),
    }
}

/// Lets the request through when its caller may make it, else answers 403 with what to do.
pub async fn authorize(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    if let Some(origin) = foreign_origin(request.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "requests from pages of another origin ({origin}) are refused; open the web UI \
                 from this server (/ui/) or call the API from a program, not a web page"
            ),
        )
        .into_response();
    }
    let certificate = match Peer::of(request.extensions()) {
        Some(Peer::Remote { certificate, .. }) => certificate.clone(),
        Some(Peer::Local { .. }) | None => return next.run(request).await,
    };
    if open_to_anyone(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let Some(certificate) = certificate else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this client presented no certificate; connect with one the server trusts \
                 (corral trust add NAME --certificate FILE on the server), or enrol one with a \
                 join token (POST {ENROL_PATH})"
            ),
        )
        .into_response();
    };
    let fingerprint = certificate.fingerprint();
    let trust = api.trust.clone();
    let lookup = blocking(move || {
        trust
            .client_with(&fingerprint)
            .map_err(crate::error::trust_error)
    });
    match lookup.await {
        Ok(Some(_)) => next.run(request).await,
        Ok(None) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this client's certificate ({}) is not trusted; enrol it with a join token \
                 (corral trust add NAME on the server, then POST {ENROL_PATH}), or have it \
                 trusted (corral trust add NAME --certificate FILE)",
                certificate.fingerprint()
            ),
        )
        .into_response(),
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, origin.parse().unwrap());
        headers.insert(header::HOST, host.parse().unwrap());
        headers
    }

    #[test]
    fn only_pages_of_this_server_may_call_it() {
        assert_eq!(foreign_origin(&HeaderMap::new()), None, "not a browser");
        assert_eq!(
            foreign_origin(&headers("https://host:8443", "host:8443")),
            None
        );
        assert_eq!(
            foreign_origin(&headers("http://127.0.0.1:8080", "127.0.0.1:8080")),
            None
        );
        for (origin, host) in [
            ("https://evil.example", "host:8443"),
            ("https://host:8444", "host:8443"),
            ("null", "host:8443"),
            ("http://127.0.0.1:8080.evil.example", "127.0.0.1:8080"),
        ] {
            assert_eq!(
                foreign_origin(&headers(origin, host)).as_deref(),
                Some(origin),
                "{origin} for {host}"
            );
        }
    }
}
