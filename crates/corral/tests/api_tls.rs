//! `corral serve --listen`: the API over TLS on loopback, to clients whose certificate the root
//! trusts. curl and openssl are the clients: a client without a certificate or with an
//! untrusted one gets 403 with what to do, enrols with a one-time join token and then gets 200,
//! and is refused again once `corral trust remove` drops it. Then the CLI is the client
//! (`corral --remote`), its every remote verb compared with the same verb run locally.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    // The running instance's uptime may tick over between the two lists.
    let without_uptime = |(ok, out, err): (bool, String, String)| {
        let rows: Vec<Vec<String>> = (out.lines())
            .map(|line| {
                let mut columns: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
                columns.pop();
                columns
            })
            .collect();
        (ok, rows, err)
    };
    assert_eq!(
        without_uptime(remote(&["list"])),
        without_uptime(local(&["list"]))
    );
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
    for args in [&["info", "box"][..], &["info", "box", "-o", "json"]] {
        let (ok, out, err) = remote(args);
        assert!(ok && out.contains("stopped"), "{args:?}: {out}{err}");
        assert_eq!((ok, out, err), local(args), "{args:?}");
    }

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
    let (ok, _, err) = remote(&["config", "show", "box"]);
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

/// A server of `root` over TLS and a client config directory enrolled with it as remote `srv`.
fn enrolled(root: &common::CorralRoot) -> (TlsServer, tempfile::TempDir) {
    let server = TlsServer::start(root);
    let config = tempfile::tempdir().unwrap();
    let token = root.ok(&["trust", "add", "me"]).trim().to_owned();
    let address = format!("127.0.0.1:{}", server.port);
    let add = ["remote", "add", "srv", &address, &token];
    let (ok, _, err) = output_of(client_command(root, config.path(), &add));
    assert!(ok, "{err}");
    (server, config)
}

/// A command's exit code, stdout and stderr.
type Outcome = (Option<i32>, String, String);

/// What `command` printed and its exit code, `input` fed to its stdin.
fn fed(mut command: Command, input: &[u8]) -> Outcome {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Its own thread: the command's output is read meanwhile, so neither side waits forever.
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exec_console_and_the_resource_verbs_run_on_a_remote_as_they_do_locally() {
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    let rootfs = rootfs.to_str().unwrap();
    root.ok(&["create", "box", "--rootfs", rootfs, "--", "sleep", "1000"]);
    root.ok(&["create", "term", "--rootfs", rootfs, "--", "/bin/sh"]);
    root.ok(&["start", "box"]);
    root.ok(&["start", "term"]);
    let (_server, config) = enrolled(&root);
    let remote_command = |args: &[&str]| {
        client_command(&root, config.path(), &[&["--remote", "srv"], args].concat())
    };
    let remote = |args: &[&str]| output_of(remote_command(args));
    let local = |args: &[&str]| output_of(root.command(args));
    let same = |args: &[&str]| {
        let remotely = remote(args);
        assert_eq!(remotely, local(args), "{args:?}");
        remotely
    };

    // exec: the command's stdout, stderr and exit code, stdin passed through, as locally.
    // The exit code, stdout and stderr it must give.
    type Expected = (Option<i32>, &'static str, &'static str);
    let cases: [(&[&str], &[u8], Expected); 4] = [
        (
            &[
                "exec",
                "box",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            b"",
            (Some(3), "out\n", "err\n"),
        ),
        (
            &["exec", "box", "--", "sh", "-c", "tr a-z A-Z; echo done"],
            b"piped through\n",
            (Some(0), "PIPED THROUGH\ndone\n", ""),
        ),
        (
            &[
                "exec",
                "box",
                "-e",
                "GREETING=hi",
                "-w",
                "/tmp",
                "--",
                "sh",
                "-c",
                "echo $GREETING $(pwd)",
            ],
            b"",
            (Some(0), "hi /tmp\n", ""),
        ),
        (
            &[
                "exec",
                "box",
                "-t",
                "--",
                "sh",
                "-c",
                "tty >/dev/null && echo on a terminal; exit 4",
            ],
            b"",
            (Some(4), "on a terminal\r\n", ""),
        ),
    ];
    for (args, input, expected) in cases {
        let remotely = fed(remote_command(args), input);
        let (code, out, err) = &remotely;
        assert_eq!((*code, out.as_str(), err.as_str()), expected, "{args:?}");
        assert_eq!(remotely, fed(root.command(args), input), "{args:?}");
    }
    // More input than any buffer on the way holds arrives whole.
    let many = vec![b'x'; 4 << 20];
    let (code, out, err) = fed(remote_command(&["exec", "box", "--", "wc", "-c"]), &many);
    assert_eq!((code, out.trim(), err.as_str()), (Some(0), "4194304", ""));
    let missing = ["exec", "box", "--", "/no/such/program"];
    let remotely = fed(remote_command(&missing), b"");
    assert_ne!(remotely.0, Some(0), "{remotely:?}");
    assert_eq!(remotely, fed(root.command(&missing), b""));

    // console: attached to the running shell, what it prints shown, Ctrl-] detaches.
    let mut console = remote_command(&["console", "term"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = console.stdout.take().unwrap();
    let (chunks, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1024];
        while let Ok(n @ 1..) = stdout.read(&mut buffer) {
            let _ = chunks.send(buffer[..n].to_vec());
        }
    });
    let mut stdin = console.stdin.take().unwrap();
    stdin.write_all(b"echo marker-$((6*7))\r").unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains("marker-42") {
        assert!(
            Instant::now() < deadline,
            "no answer on the remote console: {:?}",
            String::from_utf8_lossy(&seen)
        );
        if let Ok(chunk) = received.recv_timeout(Duration::from_millis(100)) {
            seen.extend(chunk);
        }
    }
    stdin.write_all(&[0x1d]).unwrap();
    let mut said = String::new();
    console
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    let status = console.wait().unwrap();
    assert!(status.success(), "{said}");
    assert_eq!(said, "Connected to term; escape character is ^]\r\n\n");
    assert!(root.ok(&["logs", "term"]).contains("marker-42"));
    let (_, listed, _) = local(&["list", "-o", "json"]);
    assert!(
        listed.contains("\"term\""),
        "detaching leaves it running: {listed}"
    );

    // A stopped instance's exec and console are refused as locally.
    root.ok(&["kill", "box"]);
    let (ok, _, _) = same(&["exec", "box", "--", "true"]);
    assert!(!ok);
    let (ok, _, _) = same(&["console", "box"]);
    assert!(!ok);

    // Snapshots.
    let (ok, out, err) = remote(&["snapshot", "create", "box"]);
    assert!(ok && out == "created snapshot snap0 of box\n", "{out}{err}");
    let (ok, out, err) = remote(&["snapshot", "create", "box", "second"]);
    assert!(
        ok && out == "created snapshot second of box\n",
        "{out}{err}"
    );
    let (ok, _, _) = same(&["snapshot", "create", "box", "second"]);
    assert!(!ok, "a taken name is refused");
    same(&["snapshot", "list", "box"]);
    let (_, listed, _) = same(&["snapshot", "list", "box", "-o", "json"]);
    assert!(
        listed.contains("snap0") && listed.contains("second"),
        "{listed}"
    );
    let (ok, out, err) = remote(&["snapshot", "restore", "box", "snap0"]);
    assert!(
        ok && out == "restored box to snapshot snap0\n",
        "{out}{err}"
    );
    let (ok, out, err) = remote(&["snapshot", "delete", "box", "snap0"]);
    assert!(ok && out == "deleted snapshot snap0 of box\n", "{out}{err}");
    let (ok, _, _) = same(&["snapshot", "delete", "box", "snap0"]);
    assert!(!ok);
    let (_, listed, _) = same(&["snapshot", "list", "box", "-o", "json"]);
    assert!(
        !listed.contains("snap0") && listed.contains("second"),
        "{listed}"
    );

    // Volumes.
    let (ok, out, err) = remote(&["volume", "create", "data", "--size", "16M"]);
    assert!(
        ok && out == "created volume data (raw, 16.0 MiB)\n",
        "{out}{err}"
    );
    let (ok, out, err) = remote(&["volume", "create", "shared", "--format", "dir"]);
    assert!(ok && out == "created volume shared (dir)\n", "{out}{err}");
    let (ok, _, _) = same(&["volume", "create", "data", "--size", "16M"]);
    assert!(!ok, "a taken name is refused");
    for args in [
        &["volume", "list"][..],
        &["volume", "list", "-o", "json"],
        &["volume", "info", "data"],
        &["volume", "info", "data", "-o", "json"],
    ] {
        let (ok, out, _) = same(args);
        assert!(ok && out.contains("data"), "{args:?}: {out}");
    }
    let (ok, out, err) = remote(&["volume", "resize", "data", "32M"]);
    assert!(
        ok && out == "resized volume data (raw, 32.0 MiB)\n",
        "{out}{err}"
    );
    for name in ["data", "shared"] {
        let (ok, out, err) = remote(&["volume", "delete", name]);
        assert!(
            ok && out == format!("deleted volume {name}\n"),
            "{out}{err}"
        );
    }
    let (ok, _, _) = same(&["volume", "delete", "data"]);
    assert!(!ok);
    let (_, listed, _) = same(&["volume", "list", "-o", "json"]);
    assert_eq!(listed.trim(), "[]");
    let (ok, _, err) = remote(&["volume", "check", "data"]);
    assert!(
        !ok && err.contains("import and check volumes on the server"),
        "{err}"
    );

    // Networks, only where nothing is made on this host: lists and refusals.
    same(&["network", "list"]);
    same(&["network", "list", "-o", "json"]);
    for args in [
        &["network", "delete", "nope"][..],
        &["network", "create", "not a name"],
        &[
            "network",
            "create",
            "lan",
            "--unmanaged",
            "--bridge",
            "corral-nobr0",
        ],
    ] {
        let (ok, _, err) = same(args);
        assert!(!ok && !err.is_empty(), "{args:?}");
    }
    let (ok, _, err) = remote(&["network", "info", "lan"]);
    assert!(
        !ok && err.contains("runs network create, list and delete"),
        "{err}"
    );

    // Images: uploaded, listed, shown, downloaded and deleted.
    let tarball = root.dir.path().join("busybox.tar");
    let packed = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success());
    let tarball = tarball.to_str().unwrap();
    let import = [
        "image",
        "import",
        tarball,
        "--format",
        "rootfs",
        "--description",
        "busybox",
    ];
    let named = [&import[..], &["--alias", "bb"]].concat();
    let (ok, out, err) = remote(&named);
    assert!(ok && out.starts_with("imported image bb ("), "{out}{err}");
    let (ok, out, err) = same(&import);
    assert!(ok && out.ends_with(") was already stored\n"), "{out}{err}");
    for args in [
        &["image", "list"][..],
        &["image", "list", "-o", "json"],
        &["image", "info", "bb"],
        &["image", "info", "bb", "-o", "json"],
    ] {
        let (ok, out, _) = same(args);
        assert!(ok && out.contains("busybox"), "{args:?}: {out}");
    }
    let exports = tempfile::tempdir().unwrap();
    let (here, there) = (
        exports.path().join("here.tar"),
        exports.path().join("there.tar"),
    );
    fn export(target: &Path) -> [&str; 6] {
        let target = target.to_str().unwrap();
        ["image", "export", "bb", target, "--format", "rootfs"]
    }
    let (ok, out, err) = remote(&export(&here));
    assert!(ok, "{err}");
    assert!(
        out.starts_with("exported image bb (")
            && out.ends_with(&format!(" to {}\n", here.display())),
        "{out}"
    );
    let (ok, _, err) = local(&export(&there));
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(&here).unwrap(),
        std::fs::read(&there).unwrap(),
        "the download is the export"
    );
    let (ok, _, _) = same(&export(&here));
    assert!(!ok, "an existing file is not replaced");
    let (ok, _, err) = remote(&["image", "alias", "list"]);
    assert!(
        !ok && err.contains("manage aliases and build images on the server"),
        "{err}"
    );
    let (ok, out, err) = remote(&["image", "delete", "bb"]);
    assert!(ok && out.starts_with("deleted image bb ("), "{out}{err}");
    let (ok, _, _) = same(&["image", "delete", "bb"]);
    assert!(!ok);
    let (_, listed, _) = same(&["image", "list", "-o", "json"]);
    assert_eq!(listed.trim(), "[]");

    root.ok(&["kill", "term"]);
}
