//! The web UI (`/ui/`, served by `corral serve`) in headless Chromium, driven over WebDriver
//! (chromedriver, fantoccini): a person's path through it. An instance is created from an image
//! with the form (and a second create of the same name shows the API's sentence), started with
//! its button (the list, refreshed by the event feed, says `running`), its console opened in the
//! page's xterm answers a command typed into it, the usage graphs and the event feed show it, a
//! screenshot is kept, and the Stop and Delete buttons stop and delete it.
//!
//! The browser cannot use a unix socket, so a loopback TCP bridge (127.0.0.1 only) forwards to
//! the server's; Chromium is kept off every other address.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

mod common;

use common::serve::{loopback_bridge, Server};

/// A process this test started as the leader of its own process group (chromedriver, and the
/// Chromium it starts, which stays in that group): the group is killed and the leader reaped
/// when dropped, so no browser outlives a failed assertion.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listened on a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Where the screenshots go: `$CORRAL_TEST_ARTIFACTS`, else `target/test-artifacts` of the
/// workspace.
fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("CORRAL_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::linux::repo_root().join("target/test-artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::canonicalize(dir).unwrap()
}

/// Chromium's flags: headless as root (no sandbox), its profile in `profile`, and no traffic
/// but to loopback: background services off, and every other host through a proxy on a port
/// nothing listens on, with names never resolved.
fn chromium_args(profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--window-size=1280,1400",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-sync",
        "--disable-extensions",
        "--disable-client-side-phishing-detection",
        "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
        "--no-pings",
        "--proxy-server=http://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}

/// chromedriver on a loopback port, and a WebDriver session with headless Chromium.
struct Browser {
    client: Option<Client>,
    _driver: Spawned,
    /// Chromium's profile and chromedriver's log; removed after the processes are gone
    /// (fields drop in order).
    _scratch: tempfile::TempDir,
}

impl Browser {
    async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let scratch = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = scratch.path().join("chromedriver.log");
        // What Chromium leaves behind (temporary directories, its crash handler's database under
        // the home directory) goes with the scratch.
        let tmp = scratch.path().join("tmp");
        let home = scratch.path().join("home");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::create_dir(&home).unwrap();
        let driver = Spawned(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .env("TMPDIR", &tmp)
                .env("HOME", &home)
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("XDG_CACHE_HOME")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap(),
        );
        let address = format!("127.0.0.1:{port}");
        common::wait_for("chromedriver's port", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&address).is_ok()
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": chromium_args(&scratch.path().join("profile"))}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://{address}"))
            .await
            .unwrap_or_else(|err| {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                panic!("no WebDriver session: {err}; chromedriver's log ends:\n{tail}")
            });
        Browser {
            client: Some(client),
            _driver: driver,
            _scratch: scratch,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Ends the session (Chromium quits); the processes are killed in any case when dropped.
    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }

    /// Runs `script` (a function body) in the page; its result.
    async fn js(&self, script: &str) -> Value {
        self.client()
            .execute(script, vec![])
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// Polls `script` until it returns something other than null; fails the test (with a
    /// screenshot and the page's message line) after `timeout`.
    async fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.js(script).await;
            if !value.is_null() {
                return value;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("ui-failure.png").await;
                let message = self
                    .js("return document.querySelector('#message').textContent")
                    .await;
                let feed = self
                    .js("return document.querySelector('#feed-state').textContent")
                    .await;
                panic!(
                    "timed out waiting for {what}; the page says {message}, its feed {feed} \
                     (screenshot {})",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the page's message line to say `text` as a message of `kind` (ok, error).
    async fn expect_message(&self, kind: &str, text: &str) {
        let script = format!(
            "const m = document.querySelector('#message'); \
             return !m.hidden && m.className === {kind:?} && m.textContent === {text:?} ? true : null;"
        );
        self.wait_for(
            &format!("the {kind} message {text:?}"),
            Duration::from_secs(60),
            &script,
        )
        .await;
    }

    /// Waits for instance `name`'s row to show `status`.
    async fn row_status(&self, name: &str, status: &str) {
        let script = format!(
            "const s = document.querySelector('tr[data-instance=\"{name}\"] td.status'); \
             return s && s.textContent === '{status}' ? true : null;"
        );
        self.wait_for(
            &format!("{name} listed as {status}"),
            Duration::from_secs(60),
            &script,
        )
        .await;
    }

    /// Clicks the element `selector` finds. The list is redrawn whenever an event arrives, so an
    /// element found a moment before may be gone: it is found again.
    async fn click(&self, selector: &str) {
        let mut tries = 0;
        loop {
            let clicked = match self.client().find(Locator::Css(selector)).await {
                Ok(element) => element.click().await,
                Err(err) => Err(err),
            };
            match clicked {
                Ok(()) => return,
                Err(_) if tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("cannot click {selector}: {err}"),
            }
        }
    }

    /// Saves a screenshot of the page as `file` among the artifacts; its path.
    async fn screenshot(&self, file: &str) -> PathBuf {
        let png = self.client().screenshot().await.unwrap();
        let path = artifacts_dir().join(file);
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// The rows the console's xterm shows, as text (a JS expression).
const XTERM_ROWS: &str = "Array.from(document.querySelectorAll('#console .xterm-rows > div'), \
     (row) => row.textContent.replace(/\\u00a0/g, ' ').trimEnd())";

#[test]
fn a_person_creates_starts_uses_the_console_of_and_stops_an_instance_in_the_browser() {
    if !corral_testkit::is_root() {
        return corral_testkit::skip("needs root for containers (and Chromium runs as root)");
    }
    let (Some(chromium), Some(chromedriver)) = (
        corral_testkit::find_program("chromium"),
        corral_testkit::find_program("chromedriver"),
    ) else {
        return corral_testkit::skip(
            "needs `chromium` and `chromedriver` on PATH (Debian's chromium and chromium-driver; \
             scripts/deps.sh installs them)",
        );
    };
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    // The image the form creates from: the busybox tree, whose container runs /bin/sh.
    root.ok(&[
        "image",
        "import",
        rootfs.to_str().unwrap(),
        "--alias",
        "busybox",
        "--description",
        "busybox shell",
    ]);
    let server = Server::start(&root);
    let port = loopback_bridge(&server.socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = Browser::start(&chromium, &chromedriver).await;
        scenario(&browser, &root, port).await;
        browser.close().await;
    });
}

async fn scenario(browser: &Browser, root: &common::CorralRoot, port: u16) {
    let client = browser.client();
    // Without its slash the UI redirects to it.
    client
        .goto(&format!("http://127.0.0.1:{port}/ui"))
        .await
        .unwrap();
    assert_eq!(
        client.current_url().await.unwrap().as_str(),
        format!("http://127.0.0.1:{port}/ui/")
    );
    browser
        .wait_for(
            "the event feed",
            Duration::from_secs(30),
            "const s = document.querySelector('#feed-state'); \
             return s.textContent === 'live' ? true : null;",
        )
        .await;
    browser
        .wait_for(
            "the image in the form",
            Duration::from_secs(30),
            "const o = document.querySelector('#create-image option[value=\"busybox\"]'); \
             return o ? o.textContent : null;",
        )
        .await;

    // Created from the image without starting it.
    let name_field = client.find(Locator::Css("#create-name")).await.unwrap();
    name_field.send_keys("shell").await.unwrap();
    browser.click("#create-start").await;
    browser.click("#create-submit").await;
    browser.expect_message("ok", "created instance shell").await;
    browser.row_status("shell", "stopped").await;
    let kind = browser
        .js("return document.querySelector('tr[data-instance=\"shell\"] td.type').textContent")
        .await;
    assert_eq!(kind, "container");

    // The same name again: the operation's sentence, as the API gives it.
    name_field.send_keys("shell").await.unwrap();
    browser.click("#create-submit").await;
    browser
        .expect_message(
            "error",
            "instance shell already exists; choose another name or delete it first",
        )
        .await;

    // A shell as PID 1 ignores SIGTERM, so a graceful stop would wait out its 30 s timeout.
    root.ok(&["config", "set", "shell", "container.stop_signal=SIGKILL"]);

    browser
        .click("tr[data-instance=\"shell\"] button[data-action=\"start\"]")
        .await;
    browser.row_status("shell", "running").await;
    browser
        .expect_message("ok", "starting instance shell: done")
        .await;

    // The console: keystrokes typed into the xterm reach the shell, its answer the page.
    browser
        .click("tr[data-instance=\"shell\"] button[data-action=\"console\"]")
        .await;
    browser
        .wait_for(
            "the console to attach",
            Duration::from_secs(30),
            "const s = document.querySelector('#console-state'); \
             return s.textContent.startsWith('attached to shell') ? true : null;",
        )
        .await;
    let input = client
        .find(Locator::Css("#console .xterm-helper-textarea"))
        .await
        .unwrap();
    // WebDriver's Enter key; xterm sends it as a carriage return.
    input.send_keys("echo $((6*7))\u{E007}").await.unwrap();
    let answered = format!(
        "const rows = {XTERM_ROWS}; return rows.some((row) => row.trim() === '42') ? rows : null;"
    );
    let rows = browser
        .wait_for("42 in the xterm", Duration::from_secs(30), &answered)
        .await;
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|row| row.as_str().unwrap().contains("echo $((6*7))")),
        "the command typed is echoed: {rows:#}"
    );

    // The usage graphs show it (CPU once two samples make a rate), and the event feed its start.
    for (series, unit) in [("memory", "iB"), ("cpu", " %"), ("network", "no nic")] {
        let script = format!(
            "const v = document.querySelector('[data-metrics=\"shell\"] [data-series=\"{series}\"] .value'); \
             return v && v.textContent.endsWith('{unit}') ? true : null;"
        );
        browser
            .wait_for(
                &format!("its {series} graph"),
                Duration::from_secs(30),
                &script,
            )
            .await;
    }
    let drawn = browser
        .js("return document.querySelector('[data-metrics=\"shell\"] [data-series=\"memory\"] polyline') !== null")
        .await;
    assert_eq!(drawn, true, "two memory samples draw a line");
    browser
        .wait_for(
            "its start in the event feed",
            Duration::from_secs(10),
            "return Array.from(document.querySelectorAll('#events li'), (li) => li.textContent) \
             .some((text) => text.includes('shell started')) ? true : null;",
        )
        .await;
    let shot = browser.screenshot("ui-console.png").await;
    println!("screenshot: {}", shot.display());

    browser
        .click("tr[data-instance=\"shell\"] button[data-action=\"stop\"]")
        .await;
    browser.row_status("shell", "stopped").await;
    browser
        .expect_message("ok", "stopping instance shell: done")
        .await;
    assert_eq!(root.status("shell"), "stopped");

    // Delete asks first.
    browser
        .click("tr[data-instance=\"shell\"] button[data-action=\"delete\"]")
        .await;
    client.accept_alert().await.unwrap();
    browser
        .expect_message("ok", "deleting instance shell: done")
        .await;
    browser
        .wait_for(
            "the row to go",
            Duration::from_secs(30),
            "return document.querySelector('tr[data-instance=\"shell\"]') ? null : true;",
        )
        .await;
}
