//! The web UI at `/ui/` (`docs/api.md`): static pages that call this API from the browser. The
//! files of `crates/corral-api/ui/` are built into the binary, so a served UI always matches the
//! API it calls and nothing is read from disk at run time. They are not JSON resources, so they
//! have no `#[utoipa::path]` and stay out of the OpenAPI document.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;

/// One file of the UI.
struct Asset {
    /// Its path under `/ui/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// An [`Asset`] of the file `ui/$path`, built in.
macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file the UI has: what is not here is a 404.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("console.js", JS),
    asset!("metrics.js", JS),
    asset!("vendor/xterm/xterm.mjs", JS),
    asset!("vendor/xterm/xterm.css", CSS),
    asset!("vendor/xterm/LICENSE", TEXT),
];

/// Only this server's own files run and are fetched; xterm.js adds `<style>` elements, hence
/// inline styles. `connect-src 'self'` covers the websockets of the same host. No other site may
/// frame the page (clickjacking of its buttons).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// The UI's routes, to be merged into the API's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(asset))
}

/// `GET /ui`: relative URLs in the page resolve under `/ui/` only with the slash.
async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

async fn index() -> Response {
    serve("index.html").unwrap_or_else(IntoResponse::into_response)
}

async fn asset(Path(path): Path<String>) -> Response {
    serve(&path).unwrap_or_else(IntoResponse::into_response)
}

fn serve(path: &str) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|asset| asset.path == path)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("the web UI has no file {path}; it starts at /ui/"),
            )
        })?;
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Built into the binary without a version in the name: revalidate rather than keep an old
    // UI after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str) -> Response {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        routes::<()>().oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn every_file_is_served_with_its_content_type() {
        for asset in ASSETS {
            let response = get(&format!("/ui/{}", asset.path)).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                asset.content_type,
                "{}",
                asset.path
            );
            assert_eq!(
                response.headers()[header::X_CONTENT_TYPE_OPTIONS],
                "nosniff"
            );
        }
        let index = get("/ui/").await;
        assert_eq!(index.headers()[header::CONTENT_TYPE], HTML);
        assert!(index
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[tokio::test]
    async fn the_ui_without_its_slash_redirects_and_an_unknown_file_is_a_404() {
        let redirect = get("/ui").await;
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[header::LOCATION], "/ui/");
        for missing in ["/ui/nothing.js", "/ui/../Cargo.toml", "/ui/vendor/xterm/"] {
            assert_eq!(
                get(missing).await.status(),
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
    }

    #[test]
    fn the_ui_is_not_in_the_openapi_document() {
        let document = crate::openapi::document();
        let paths = document["paths"].as_object().unwrap();
        assert!(
            paths.contains_key("/1.0/instances"),
            "the document has paths"
        );
        assert!(!paths.keys().any(|path| path.starts_with("/ui")));
    }

    /// The relative references in `text` to files of the UI: `src=`/`href=` attributes and
    /// module imports.
    fn references(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for opener in ["src=\"", "href=\"", "from \"./"] {
            for (at, _) in text.match_indices(opener) {
                let rest = &text[at + opener.len()..];
                let Some(end) = rest.find('"') else { continue };
                let reference = rest[..end].trim_start_matches("./");
                if !reference.contains(':') && !reference.starts_with('#') {
                    found.push(reference.to_owned());
                }
            }
        }
        found
    }

    #[test]
    fn every_file_the_pages_reference_is_built_in() {
        let mut checked = 0;
        for asset in ASSETS
            .iter()
            .filter(|asset| asset.content_type == HTML || asset.content_type == JS)
            .filter(|asset| !asset.path.starts_with("vendor/"))
        {
            let text = std::str::from_utf8(asset.body).unwrap();
            for reference in references(text) {
                assert!(
                    ASSETS.iter().any(|known| known.path == reference),
                    "{} references {reference}, which is not in ASSETS",
                    asset.path
                );
                checked += 1;
            }
        }
        assert!(checked >= 4, "only {checked} references found");
    }
}
