//! `corral serve` of a test root, and its clients: JSON calls and operation waits, the event
//! feed's websocket, and a loopback TCP bridge for clients that cannot use a unix socket.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use corral_testkit::http;
use serde_json::Value;

/// A `corral serve` of a test root, ended with SIGTERM when dropped.
pub struct Server {
    child: Child,
    pub socket: PathBuf,
}

impl Server {
    pub fn start(root: &super::CorralRoot) -> Server {
        Server::start_with(root, &[])
    }

    /// A server with `env` added to its environment (failpoints).
    pub fn start_with(root: &super::CorralRoot, env: &[(&str, &str)]) -> Server {
        let socket = root.dir.path().join("api/corral.sock");
        // Explicit, though the root's commands say so too: the server makes no network.
        let child = root
            .command(&["serve", "--socket", socket.to_str().unwrap()])
            .args(["--default-network", "none"])
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        super::wait_for("the API socket", Duration::from_secs(30), || {
            socket.exists()
        });
        Server { child, socket }
    }

    /// `GET /1.0/metrics`'s text.
    pub fn metrics(&self) -> String {
        let (status, text) = http::request(&self.socket, "GET", "/1.0/metrics", None);
        assert_eq!(status, 200, "{text}");
        text
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, text) = http::request(&self.socket, method, path, body.as_deref());
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{method} {path}: not JSON ({err}): {text:?}"));
        (status, value)
    }

    /// The operation `operation` once it has ended.
    pub fn ended(&self, operation: &Value) -> Value {
        let path = format!(
            "/1.0/operations/{}/wait?timeout=60",
            operation["id"].as_str().unwrap()
        );
        let (status, ended) = self.call("GET", &path, None);
        assert_eq!(status, 200, "{ended}");
        ended
    }

    /// Waits for the operation a 202 answered with; fails unless it succeeded.
    pub fn succeeds(&self, (status, operation): (u16, Value)) {
        assert_eq!(status, 202, "{operation}");
        let ended = self.ended(&operation);
        assert_eq!(ended["status"], "success", "{ended}");
    }

    /// Ok once the operation a 202 answered with succeeded, else the error's sentence (or the
    /// refusal's, when there was no operation).
    pub fn outcome(&self, (status, answer): (u16, Value)) -> Result<(), String> {
        if status != 202 {
            return Err(answer["error"].as_str().unwrap().to_owned());
        }
        let ended = self.ended(&answer);
        match ended["status"].as_str() {
            Some("success") => Ok(()),
            _ => Err(ended["error"].as_str().unwrap().to_owned()),
        }
    }

    /// A websocket client of `/1.0/events`.
    pub fn events(&self) -> EventStream {
        self.events_with("")
    }

    /// A websocket client of `/1.0/events` with `query` (`?type=...`).
    pub fn events_with(&self, query: &str) -> EventStream {
        let stream = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (socket, _) = tungstenite::client(format!("ws://corral/1.0/events{query}"), stream)
            .unwrap_or_else(|err| panic!("cannot open /1.0/events{query}: {err}"));
        EventStream(socket)
    }

    pub fn status(&self, name: &str) -> String {
        let (code, instance) = self.call("GET", &format!("/1.0/instances/{name}"), None);
        assert_eq!(code, 200, "{instance}");
        instance["state"]["status"].as_str().unwrap().to_owned()
    }

    /// Sends SIGTERM; returns how the server ended.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The client end of `/1.0/events`.
pub struct EventStream(tungstenite::WebSocket<std::os::unix::net::UnixStream>);

impl EventStream {
    /// The next message, or the close frame's code and reason.
    pub fn next(&mut self) -> Result<Value, (u16, String)> {
        loop {
            match self.0.read().expect("a message within 30 s") {
                tungstenite::Message::Text(text) => return Ok(serde_json::from_str(&text).unwrap()),
                tungstenite::Message::Close(frame) => {
                    let frame = frame.expect("a close frame with a code");
                    return Err((frame.code.into(), frame.reason.to_string()));
                }
                _ => {}
            }
        }
    }

    /// The next `count` lifecycle events as `instance action`, operation updates skipped.
    pub fn lifecycle(&mut self, count: usize) -> Vec<String> {
        let mut seen = Vec::new();
        while seen.len() < count {
            let message = self
                .next()
                .unwrap_or_else(|closed| panic!("closed: {closed:?}"));
            if message["type"] == "lifecycle" {
                let event = &message["event"];
                seen.push(format!(
                    "{} {}",
                    event["instance"].as_str().unwrap(),
                    event["action"].as_str().unwrap()
                ));
            }
        }
        seen
    }
}

/// Forwards loopback TCP connections to the API's unix socket, for HTTP clients that cannot
/// use one (schemathesis, a browser), on 127.0.0.1 only. Returns the port.
pub fn loopback_bridge(socket: &Path) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = std::os::unix::net::UnixStream::connect(&socket) else {
                continue;
            };
            let (mut client_in, mut server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_in, &mut server_out);
                let _ = server_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut server_in, mut client_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_in, &mut client_out);
                let _ = client_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}
