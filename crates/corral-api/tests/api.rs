//! The API's routes driven in-process (tower's `oneshot`) over a corral root in a temporary
//! directory: resources, operations, and the 4xx answers of bad requests. Starting instances
//! needs the corral binary as their supervisor; `crates/corral/tests/api.rs` does that through
//! `corral serve`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use corral_api::Api;
use corral_core::Manager;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

struct TestApi {
    root: tempfile::TempDir,
    api: Arc<Api>,
}

impl TestApi {
    fn new() -> TestApi {
        let root = tempfile::tempdir().unwrap();
        // No instance is started here, so no supervisor binary is needed; a create that names
        // no network joins none (the server's `--default-network none`).
        let manager =
            Manager::open(root.path(), std::path::Path::new("/nonexistent/corral")).unwrap();
        TestApi {
            api: Api::new(manager, Some("none".into())),
            root,
        }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let request = Request::builder().method(method).uri(uri);
        self.send(request, body).await
    }

    async fn send(
        &self,
        request: axum::http::request::Builder,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let uri = request.uri().clone();
        let response = corral_api::router(Arc::clone(&self.api))
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|err| panic!("{uri}: not JSON ({err}): {bytes:?}"));
        (status, value)
    }

    /// Waits for the operation a 202 answered with; returns it ended.
    async fn wait(&self, accepted: (StatusCode, Value)) -> Value {
        assert_eq!(accepted.0, StatusCode::ACCEPTED, "{}", accepted.1);
        assert_eq!(accepted.1["status"], "running");
        let id = accepted.1["id"].as_str().unwrap();
        let (status, operation) = self
            .call(
                Method::GET,
                &format!("/1.0/operations/{id}/wait?timeout=60"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(operation["status"], "running", "{operation}");
        operation
    }

    fn rootfs(&self) -> String {
        let rootfs = self.root.path().join("source-rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/hostname"), "box\n").unwrap();
        rootfs.display().to_string()
    }
}

#[tokio::test]
async fn an_instance_is_created_read_listed_and_deleted_through_operations() {
    let t = TestApi::new();
    let body = json!({"name": "web", "rootfs": t.rootfs(), "memory": "128M", "command": ["sh"]});
    let created = t
        .wait(
            t.call(Method::POST, "/1.0/instances", Some(&body.to_string()))
                .await,
        )
        .await;
    assert_eq!(created["status"], "success", "{created}");
    assert_eq!(created["resources"], json!(["/1.0/instances/web"]));

    let (status, instance) = t.call(Method::GET, "/1.0/instances/web", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(instance["definition"]["name"], "web");
    assert_eq!(instance["definition"]["type"], "container");
    assert_eq!(instance["definition"]["memory"], "128M");
    assert_eq!(instance["state"]["status"], "stopped");
    // The root filesystem was copied into the instance.
    let copied = t.root.path().join("instances/web/rootfs/etc/hostname");
    assert_eq!(std::fs::read_to_string(copied).unwrap(), "box\n");

    let (status, list) = t.call(Method::GET, "/1.0/instances", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|summary| summary["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"]);

    // Its state forbids stopping it: the operation fails with the sentence and a 409.
    let stop = t
        .call(
            Method::PUT,
            "/1.0/instances/web/state",
            Some(r#"{"action": "stop"}"#),
        )
        .await;
    let stopped = t.wait(stop).await;
    assert_eq!(stopped["status"], "failure");
    assert_eq!(stopped["error_code"], 409);
    assert!(
        stopped["error"]
            .as_str()
            .unwrap()
            .contains("instance web is not running"),
        "{stopped}"
    );

    // The same name again is refused by the operation, and nothing is lost.
    let again = t
        .wait(
            t.call(Method::POST, "/1.0/instances", Some(&body.to_string()))
                .await,
        )
        .await;
    assert_eq!(again["status"], "failure");
    assert_eq!(again["error_code"], 409, "{again}");

    let deleted = t
        .wait(t.call(Method::DELETE, "/1.0/instances/web", None).await)
        .await;
    assert_eq!(deleted["status"], "success", "{deleted}");
    let (status, gone) = t.call(Method::GET, "/1.0/instances/web", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(gone["error"]
        .as_str()
        .unwrap()
        .contains("instance web does not exist"));

    let (_, operations) = t.call(Method::GET, "/1.0/operations", None).await;
    assert_eq!(operations.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn bad_requests_are_4xx_with_a_sentence_and_change_nothing() {
    let t = TestApi::new();
    let cases: [(Method, &str, Option<&str>, StatusCode, &str); 9] = [
        (
            Method::POST,
            "/1.0/instances",
            Some("{\"name\": "),
            StatusCode::BAD_REQUEST,
            "is not valid JSON",
        ),
        (
            Method::POST,
            "/1.0/instances",
            Some(r#"{"name": 3}"#),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            Method::POST,
            "/1.0/instances",
            Some(r#"{"name": "a", "cpu": 2}"#),
            StatusCode::BAD_REQUEST,
            "unknown field `cpu`",
        ),
        (
            Method::POST,
            "/1.0/instances",
            Some(r#"{"memory": "1G"}"#),
            StatusCode::BAD_REQUEST,
            "give the instance a name",
        ),
        (
            Method::POST,
            "/1.0/instances?start=maybe",
            Some(r#"{"name": "a"}"#),
            StatusCode::BAD_REQUEST,
            "query string",
        ),
        (
            Method::PUT,
            "/1.0/instances/none/state",
            Some(r#"{"action": "stop"}"#),
            StatusCode::NOT_FOUND,
            "instance none does not exist",
        ),
        (
            Method::PUT,
            "/1.0/instances/none/state",
            Some(r#"{"action": "explode"}"#),
            StatusCode::BAD_REQUEST,
            "unknown variant `explode`",
        ),
        (
            Method::DELETE,
            "/1.0/instances/none",
            None,
            StatusCode::NOT_FOUND,
            "instance none does not exist",
        ),
        (
            Method::GET,
            "/1.0/nothing",
            None,
            StatusCode::NOT_FOUND,
            "no such resource",
        ),
    ];
    for (method, uri, body, wanted, sentence) in cases {
        let (status, answer) = t.call(method.clone(), uri, body).await;
        assert_eq!(status, wanted, "{method} {uri}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(sentence),
            "{method} {uri}: {error:?} lacks {sentence:?}"
        );
    }
    // A create whose settings do not fit is refused by its operation, with the reason.
    let failed = t
        .wait(
            t.call(
                Method::POST,
                "/1.0/instances",
                Some(r#"{"name": "c", "type": "container", "kernel": "/boot/vmlinux"}"#),
            )
            .await,
        )
        .await;
    assert_eq!(failed["error_code"], 400, "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("are for VMs"));
    let (_, list) = t.call(Method::GET, "/1.0/instances", None).await;
    assert_eq!(list, json!([]), "nothing was made");
    let (status, info) = t.call(Method::GET, "/1.0", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["api_version"], "1.0");
}

#[tokio::test]
async fn a_web_page_of_another_origin_cannot_drive_the_api() {
    let api = TestApi::new();
    let body = json!({"name": "box", "rootfs": api.rootfs(), "command": ["/bin/true"]}).to_string();
    // What a form on another site can post without asking the browser's leave: text/plain.
    let foreign = Request::builder()
        .method(Method::POST)
        .uri("/1.0/instances")
        .header("host", "127.0.0.1:8080")
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain");
    let (status, refused) = api.send(foreign, Some(&body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("(https://evil.example) are refused"),
        "{refused}"
    );
    let (_, list) = api.call(Method::GET, "/1.0/instances", None).await;
    assert_eq!(list, json!([]), "nothing was created");
    // The UI's own pages are of the server's origin.
    let own = Request::builder()
        .method(Method::GET)
        .uri("/1.0/instances")
        .header("host", "127.0.0.1:8080")
        .header("origin", "http://127.0.0.1:8080");
    assert_eq!(api.send(own, None).await.0, StatusCode::OK);
}
