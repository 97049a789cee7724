//! `corral serve --listen`: the API over TLS on loopback, to clients whose certificate the root
//! trusts. curl and openssl are the clients: a client without a certificate or with an
//! untrusted one gets 403 with what to do, enrols with a one-time join token and then gets 200,
//! and is refused again once `corral trust remove` drops it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

mod common;

/// A `corral serve --listen 127.0.0.1:PORT` of a test root, ended with SIGTERM when dropped.
struct TlsServer {
    child: Child,
    socket: PathBuf,
    port: u16,
    server_certificate: PathBuf,
}

impl TlsServer {
    fn start(root: &common::CorralRoot) -> TlsServer {
        let socket = root.dir.path().join("api/corral.sock");
        // A port free a moment ago; the server says so plainly if another took it since.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = root
            .command(&[
                "serve",
                "--socket",
                socket.to_str().unwrap(),
                "--listen",
                &listen,
            ])
            .spawn()
            .unwrap();
        common::wait_for("the TLS listener", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&listen).is_ok()
        });
        TlsServer {
            child,
            socket,
            port,
            server_certificate: root.path().join("trust/server/server.crt"),
        }
    }

    /// `curl` over TLS, the server pinned by its own certificate, presenting `client` (a
    /// certificate and its key) when given: the status and the JSON answer.
    fn curl(
        &self,
        client: Option<&ClientKey>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut command = Command::new("curl");
        command
            .args([
                "-sS",
                "--max-time",
                "30",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
            ])
            .arg("--cacert")
            .arg(&self.server_certificate);
        if let Some(client) = client {
            command.arg("--cert").arg(&client.certificate);
            command.arg("--key").arg(&client.key);
        }
        if let Some(body) = body {
            command.args(["-H", "Content-Type: application/json", "--data", body]);
        }
        let out = command
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, status) = text.rsplit_once('\n').unwrap();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|err| panic!("not JSON ({err}): {body:?}"))
        };
        (status.parse().unwrap(), value)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A client's self-signed certificate and key, made by openssl.
struct ClientKey {
    certificate: PathBuf,
    key: PathBuf,
}

impl ClientKey {
    fn make(dir: &Path, name: &str) -> ClientKey {
        let (certificate, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ClientKey { certificate, key }
    }

    /// The SHA-256 fingerprint as openssl prints it, in the trust store's form.
    fn fingerprint(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&self.certificate)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (_, hex) = text.trim().split_once('=').unwrap();
        hex.replace(':', "").to_lowercase()
    }
}

fn error_of(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_default()
}

#[test]
fn tls_clients_are_refused_until_trusted_and_enrol_with_a_one_time_token() {
    if !["curl", "openssl"]
        .into_iter()
        .all(corral_testkit::has_program)
    {
        corral_testkit::skip("needs curl and openssl (scripts/deps.sh installs them)");
        return;
    }
    let root = common::CorralRoot::new();
    let server = TlsServer::start(&root);
    let keys = tempfile::tempdir().unwrap();
    let (laptop, other, ci) = (
        ClientKey::make(keys.path(), "laptop"),
        ClientKey::make(keys.path(), "other"),
        ClientKey::make(keys.path(), "ci"),
    );

    // Anyone may ask what the server is; nothing more without a trusted certificate.
    let (status, info) = server.curl(None, "GET", "/1.0", None);
    assert_eq!(
        (status, info["server"].as_str()),
        (200, Some("corral")),
        "{info}"
    );
    let (status, refused) = server.curl(None, "GET", "/1.0/instances", None);
    assert_eq!(status, 403, "{refused}");
    assert!(
        error_of(&refused).contains("presented no certificate"),
        "{refused}"
    );
    let (status, refused) = server.curl(Some(&laptop), "GET", "/1.0/instances", None);
    assert_eq!(status, 403, "{refused}");
    assert!(
        error_of(&refused).contains(&format!(
            "certificate ({}) is not trusted",
            laptop.fingerprint()
        )),
        "the refusal names the certificate as openssl fingerprints it: {refused}"
    );
    let (status, refused) = server.curl(
        Some(&laptop),
        "POST",
        "/1.0/certificates/tokens",
        Some(r#"{"name":"me"}"#),
    );
    assert_eq!(
        status, 403,
        "an untrusted client cannot issue itself a token: {refused}"
    );

    // A join token, issued on the server, enrols the certificate the client connects with.
    let token = root.ok(&["trust", "add", "laptop"]).trim().to_owned();
    let (server_fingerprint, secret) = token.split_once(':').unwrap();
    assert_eq!(secret.len(), 64, "{token}");
    let pinned = ClientKey {
        certificate: server.server_certificate.clone(),
        key: PathBuf::new(),
    };
    assert_eq!(
        server_fingerprint,
        pinned.fingerprint(),
        "the token names the server"
    );
    let listed: Value = serde_json::from_str(&root.ok(&["trust", "list", "-o", "json"])).unwrap();
    assert_eq!(listed["pending_tokens"][0]["name"], "laptop", "{listed}");
    let wrong = format!(r#"{{"token":"{}"}}"#, "0".repeat(64));
    let (status, refused) = server.curl(
        Some(&laptop),
        "POST",
        "/1.0/certificates/enrol",
        Some(&wrong),
    );
    assert_eq!(status, 403, "{refused}");
    assert!(
        error_of(&refused).contains("join token is not valid"),
        "{refused}"
    );
    let (status, refused) = server.curl(
        None,
        "POST",
        "/1.0/certificates/enrol",
        Some(&format!(r#"{{"token":"{token}"}}"#)),
    );
    assert_eq!(status, 400, "enrolment needs a certificate: {refused}");
    let body = format!(r#"{{"token":"{token}"}}"#);
    let (status, enrolled) = server.curl(
        Some(&laptop),
        "POST",
        "/1.0/certificates/enrol",
        Some(&body),
    );
    assert_eq!(status, 201, "{enrolled}");
    assert_eq!(enrolled["name"], "laptop");
    assert_eq!(
        enrolled["fingerprint"].as_str(),
        Some(laptop.fingerprint().as_str())
    );
    let (status, instances) = server.curl(Some(&laptop), "GET", "/1.0/instances", None);
    assert_eq!(status, 200, "{instances}");
    assert!(instances.is_array(), "{instances}");

    // The token was good once: another certificate cannot use it.
    let (status, refused) =
        server.curl(Some(&other), "POST", "/1.0/certificates/enrol", Some(&body));
    assert_eq!(status, 403, "{refused}");
    let (status, _) = server.curl(Some(&other), "GET", "/1.0/instances", None);
    assert_eq!(status, 403);

    // Trusted directly from its file; listed; a removal takes effect at the next request.
    root.ok(&[
        "trust",
        "add",
        "ci",
        "--certificate",
        ci.certificate.to_str().unwrap(),
    ]);
    let (status, _) = server.curl(Some(&ci), "GET", "/1.0/instances", None);
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&root.ok(&["trust", "list", "-o", "json"])).unwrap();
    let names: Vec<(&str, &str)> = (listed["clients"].as_array().unwrap().iter())
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["fingerprint"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ci", ci.fingerprint().as_str()),
            ("laptop", laptop.fingerprint().as_str())
        ]
    );
    let err = root.fails(&[
        "trust",
        "add",
        "again",
        "--certificate",
        ci.certificate.to_str().unwrap(),
    ]);
    assert!(err.contains("already trusted, as ci"), "{err}");
    root.ok(&["trust", "remove", "laptop"]);
    let (status, refused) = server.curl(Some(&laptop), "GET", "/1.0/instances", None);
    assert_eq!(status, 403, "{refused}");
    let err = root.fails(&["trust", "remove", "laptop"]);
    assert!(err.contains("corral trust list"), "{err}");

    // Enrolment is for TLS clients: over the unix socket it is refused with the reason.
    let (status, text) = corral_testkit::http::request(
        &server.socket,
        "POST",
        "/1.0/certificates/enrol",
        Some(&body),
    );
    assert_eq!(status, 400, "{text}");
}

/// The CLI of a user with a config directory of its own, on `root`'s host.
fn client_command(root: &common::CorralRoot, config: &Path, args: &[&str]) -> Command {
    let mut command = root.command(args);
    command.env("CORRAL_CONFIG_DIR", config);
    command
}

/// What `command` printed and whether it succeeded.
fn output_of(mut command: Command) -> (bool, String, String) {
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_runs_its_verbs_on_a_remote_as_it_does_locally() {
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    let rootfs = rootfs.to_str().unwrap();
    root.ok(&["create", "box", "--rootfs", rootfs, "--", "sleep", "1000"]);
    let server = TlsServer::start(&root);
    let address = format!("127.0.0.1:{}", server.port);
    let config = tempfile::tempdir().unwrap();
    let client = |args: &[&str]| output_of(client_command(&root, config.path(), args));
    let remote = |args: &[&str]| client(&[&["--remote", "srv"], args].concat());

    // A token whose fingerprint is not the server's is refused before anything is sent.
    let token = root.ok(&["trust", "add", "me"]).trim().to_owned();
    let (_, secret) = token.split_once(':').unwrap();
    let forged = format!("{}:{secret}", "ab".repeat(32));
    let (ok, _, err) = client(&["remote", "add", "srv", &address, &forged]);
    assert!(!ok && err.contains("not the abab"), "{err}");
    let (ok, listed, _) = client(&["remote", "list", "-o", "json"]);
    assert!(ok && listed.trim() == "{}", "{listed}");
    let (ok, out, err) = client(&["remote", "add", "srv", &address, &token]);
    assert!(ok, "{err}");
    assert!(out.starts_with("added remote srv"), "{out}");
    assert!(config.path().join("client.crt").exists());

    // The same answers as on the server itself.
    let local = |args: &[&str]| output_of(root.command(args));
    assert_eq!(
        remote(&["list", "--all", "-o", "json"]),
        local(&["list", "--all", "-o", "json"])
    );
    assert_eq!(
        remote(&["pause", "box"]),
        local(&["pause", "box"]),
        "a refusal reads the same"
    );
    let (ok, out, err) = remote(&["start", "box"]);
    assert!(ok && out == "started box\n", "{out}{err}");
    assert_eq!(remote(&["list"]), local(&["list"]));
    for (verb, said) in [("pause", "paused box\n"), ("resume", "resumed box\n")] {
        let (ok, out, err) = remote(&[verb, "box"]);
        assert!(ok && out == said, "{verb}: {out}{err}");
    }
    let (ok, out, err) = remote(&["kill", "box"]);
    assert!(
        ok && out == "killed box (stopped, code 137)\n",
        "{out}{err}"
    );
    let (_, state, _) = local(&["info", "box", "-o", "json"]);
    assert!(state.contains("\"status\": \"stopped\""), "{state}");

    // Creating names the server's paths; the same words as a local create.
    let (ok, out, err) = remote(&["create", "web", "--rootfs", rootfs, "--", "sleep", "1000"]);
    assert!(ok && out == "created container web\n", "{out}{err}");
    assert!(local(&["info", "web"]).0);
    assert_eq!(
        remote(&["create", "web", "--rootfs", rootfs]),
        local(&["create", "web", "--rootfs", rootfs])
    );
    assert_eq!(remote(&["logs", "box"]), local(&["logs", "box"]));
    let (ok, _, err) = remote(&["logs", "box", "--follow"]);
    assert!(!ok && err.contains("--follow is local"), "{err}");

    // What the remote does not run is said, not tried; an unknown remote is named.
    let (ok, _, err) = remote(&["exec", "box", "--", "true"]);
    assert!(
        !ok && err.contains("run other commands on the server"),
        "{err}"
    );
    let (ok, _, err) = client(&["--remote", "nope", "list"]);
    assert!(!ok && err.contains("no remote nope"), "{err}");

    // Once the server stops trusting this client, it says so.
    root.ok(&["trust", "remove", "me"]);
    let (ok, _, err) = remote(&["list"]);
    assert!(!ok && err.contains("is not trusted"), "{err}");
    root.ok(&[
        "trust",
        "add",
        "me-again",
        "--certificate",
        config.path().join("client.crt").to_str().unwrap(),
    ]);
    let (ok, out, err) = remote(&["delete", "box"]);
    assert!(ok && out == "deleted box\n", "{out}{err}");
    let (ok, out, err) = remote(&["delete", "web"]);
    assert!(ok && out == "deleted web\n", "{out}{err}");
    assert_eq!(local(&["list", "--all", "-o", "json"]).1.trim(), "[]");
    let (ok, out, _) = client(&["remote", "remove", "srv"]);
    assert!(ok && out == "removed remote srv\n");
}
