//! The API of a remote over TLS: its server pinned by fingerprint ([`crate::pin`]), this user's
//! certificate presented (made in the config directory at first use), JSON in and out, an
//! operation followed to its end; and enrolment with a join token.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral_core::trust::{Fingerprint, Identity, TrustError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

use crate::remotes::Remote;

/// How long connecting to a remote may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one wait on an operation asks the server to hold the answer.
const WAIT_SECONDS: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("no remote {0}; `corral remote list` shows them, `corral remote add` adds one")]
    UnknownRemote(String),
    #[error("{0:?} is not a valid remote name (letters, digits, '.', '_' and '-', starting with a letter or digit)")]
    Name(String),
    #[error("a remote named {0} exists; remove it first (corral remote remove {0})")]
    NameTaken(String),
    #[error("the remotes file {} is damaged; fix or remove it", path.display())]
    Damaged {
        path: std::path::PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("cannot write the remotes file: {0}")]
    Encode(String),
    #[error(
        "there is no config directory for remotes: set HOME, XDG_CONFIG_HOME or CORRAL_CONFIG_DIR"
    )]
    NoConfigDir,
    #[error("this is not a join token: one is the server's fingerprint and a secret, FINGERPRINT:SECRET, as `corral trust add NAME` prints it on the server")]
    Token,
    #[error("cannot reach the remote at {address}")]
    Connect {
        address: String,
        #[source]
        source: Box<ureq::Transport>,
    },
    #[error("the remote's address {0:?} is not HOST:PORT; remove the remote and add it again with its address")]
    Address(String),
    #[error("cannot open the websocket {what} of the remote at {address}")]
    WebSocket {
        what: String,
        address: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the websocket {what} of the remote broke off")]
    Stream {
        what: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
    /// The server's own sentence (the CLI would have printed the same one locally).
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("the remote answered {what} with something corral serve does not send")]
    Answer {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS with this client's certificate")]
    Tls(#[source] rustls::Error),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Io(#[from] corral_error::PathIoError),
}

/// A connection to one remote's API.
pub struct Client {
    agent: ureq::Agent,
    /// What its websockets connect with.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// `HOST:PORT`.
    pub(crate) address: String,
}

impl Client {
    /// A client of `remote`, presenting this user's identity (`client.crt` in `config_dir`,
    /// made at first use).
    pub fn new(remote: &Remote, config_dir: &Path) -> Result<Client, RemoteError> {
        // Servers trust it by fingerprint: its name is only a label.
        let identity = Identity::load_or_make(config_dir, "client", &["corral-client".into()])?;
        let provider = corral_tls::provider();
        let verifier = Arc::new(corral_tls::PinnedServer {
            fingerprint: remote.fingerprint.clone(),
            signatures: corral_tls::Signatures(Arc::clone(&provider)),
        });
        let chain = vec![CertificateDer::from(identity.certificate.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key));
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(RemoteError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(RemoteError::Tls)?;
        let tls = Arc::new(config);
        let agent = ureq::builder()
            .tls_config(Arc::clone(&tls))
            .timeout_connect(CONNECT_TIMEOUT)
            .build();
        Ok(Client {
            agent,
            tls,
            address: remote.address.clone(),
        })
    }

    /// `METHOD PATH` with `body`: the status and the JSON answer (null when empty), or the
    /// server's refusal with its sentence.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), RemoteError> {
        let (status, text) = self.send(method, path, body)?;
        if text.is_empty() {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_str(&text).map_err(|err| RemoteError::Answer {
            what: format!("{method} {path}"),
            source: err.into(),
        })?;
        Ok((status, value))
    }

    /// `METHOD PATH` with `body`: the status and the answer's text, or the server's refusal
    /// with its sentence.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), RemoteError> {
        let request = self.request(method, path);
        let answered = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let response = self.response(method, path, answered)?;
        let status = response.status();
        let text = (response.into_string()).map_err(|source| RemoteError::Answer {
            what: format!("{method} {path}"),
            source,
        })?;
        Ok((status, text))
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        (self.agent).request(method, &format!("https://{}{path}", self.address))
    }

    /// The response `answered` to `METHOD PATH`, or the server's refusal with its sentence.
    fn response(
        &self,
        method: &str,
        path: &str,
        answered: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, RemoteError> {
        let what = || format!("{method} {path}");
        match answered {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => {
                let answer: Value = response.into_json().unwrap_or_default();
                let message = match answer["error"].as_str() {
                    Some(message) => message.to_owned(),
                    None => format!("the remote refused {} with status {status}", what()),
                };
                Err(RemoteError::Refused { status, message })
            }
            Err(ureq::Error::Transport(transport)) => Err(RemoteError::Connect {
                address: self.address.clone(),
                source: Box::new(transport),
            }),
        }
    }

    /// `GET PATH`'s text (an instance's logs).
    pub fn text(&self, path: &str) -> Result<String, RemoteError> {
        let (_, answer) = self.send("GET", path, None)?;
        Ok(answer)
    }

    /// `POST PATH?QUERY` with `content` streamed as the body (an image upload): the status and
    /// the JSON answer.
    pub fn upload(
        &self,
        path: &str,
        query: &[(&str, &str)],
        content: impl Read,
    ) -> Result<(u16, Value), RemoteError> {
        let request = (query.iter()).fold(self.request("POST", path), |request, (key, value)| {
            request.query(key, value)
        });
        let answered = (request.set("Content-Type", "application/octet-stream")).send(content);
        let response = self.response("POST", path, answered)?;
        let status = response.status();
        let value = response.into_json().map_err(|source| RemoteError::Answer {
            what: format!("POST {path}"),
            source,
        })?;
        Ok((status, value))
    }

    /// `GET PATH`'s content as it arrives (an image download).
    pub fn download(&self, path: &str) -> Result<impl Read + Send, RemoteError> {
        let answered = self.request("GET", path).call();
        Ok(self.response("GET", path, answered)?.into_reader())
    }

    /// A request answered with an operation (202), followed to its end: Ok when it succeeded,
    /// else its error's sentence.
    pub fn operate(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), RemoteError> {
        let (_, mut operation) = self.call(method, path, body)?;
        loop {
            match operation["status"].as_str() {
                Some("success") => return Ok(()),
                Some("running") => {}
                _ => {
                    let message = operation["error"]
                        .as_str()
                        .unwrap_or("the operation failed");
                    return Err(RemoteError::Refused {
                        status: 500,
                        message: message.to_owned(),
                    });
                }
            }
            let id = operation["id"].as_str().unwrap_or_default().to_owned();
            let wait = format!("/1.0/operations/{id}/wait?timeout={WAIT_SECONDS}");
            (_, operation) = self.call("GET", &wait, None)?;
        }
    }
}

/// Enrols this user's certificate with the server at `address` using the join token `token`
/// (`FINGERPRINT:SECRET`, from `corral trust add` on the server): the server is pinned by the
/// token's fingerprint before anything is sent. Returns the remote to record.
pub fn enrol(address: &str, token: &str, config_dir: &Path) -> Result<Remote, RemoteError> {
    let (fingerprint, _) = token.trim().split_once(':').ok_or(RemoteError::Token)?;
    let fingerprint = Fingerprint::parse(fingerprint).ok_or(RemoteError::Token)?;
    let remote = Remote {
        address: address.to_owned(),
        fingerprint,
    };
    let client = Client::new(&remote, config_dir)?;
    client.call(
        "POST",
        "/1.0/certificates/enrol",
        Some(&json!({ "token": token.trim() })),
    )?;
    Ok(remote)
}
