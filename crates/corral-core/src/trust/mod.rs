//! Who may use the API over the network (`corral serve --listen`): the client certificates the
//! root trusts, each under a name, and the one-time join tokens that let a client enrol its own
//! certificate. The unix socket needs none of this (its mode and SO_PEERCRED say who calls).
//!
//! Everything lives in `trust/trust.json` under the root, replaced atomically under a lock.
//! A token's secret is kept only as its SHA-256: the file does not give away a way in.

mod certificate;
mod identity;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub use certificate::{Certificate, Fingerprint};
pub use identity::Identity;

use crate::definition::{validate_name, NAME_PATTERN};

/// How long a join token is good for unless told otherwise (Incus's default is none; a
/// forgotten token should not stay a way in).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0:?} is not a valid name for a trusted client (it must match {NAME_PATTERN})")]
    Name(String),
    #[error("a client named {0} is already trusted or has a pending join token; pick another name or remove it with corral trust remove {0}")]
    NameTaken(String),
    #[error("this certificate is already trusted, as {0}")]
    AlreadyTrusted(String),
    #[error("no trusted client or pending join token is named {0}; corral trust list shows them")]
    NotFound(String),
    #[error("this is not a client certificate: {0}")]
    NotACertificate(String),
    #[error("this join token is not valid: it was used or removed, or never issued; ask for a new one (corral trust add NAME)")]
    UnknownToken,
    #[error("this join token for {0} has expired; ask for a new one (corral trust add {0})")]
    ExpiredToken(String),
    #[error("cannot make a join token")]
    Random(#[source] getrandom::Error),
    #[error("cannot make a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("{} is damaged ({reason}); remove it and its pair (.crt, .key) to make a new identity", path.display())]
    DamagedIdentity { path: PathBuf, reason: String },
    #[error("the trust store {} is damaged; fix or remove it", path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] corral_error::PathIoError),
}

/// A client certificate the root trusts.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TrustedClient {
    pub name: String,
    /// The SHA-256 of the certificate's DER bytes, lowercase hex.
    #[schema(value_type = String)]
    pub fingerprint: Fingerprint,
    /// When it was trusted, in seconds since the Unix epoch.
    pub added: u64,
    /// The certificate, PEM.
    pub certificate: String,
}

/// A join token not yet used.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PendingToken {
    /// The name the enrolled certificate will be trusted as.
    pub name: String,
    /// When the token stops being valid, in seconds since the Unix epoch.
    pub expires: u64,
}

/// What `trust.json` holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Trust {
    #[serde(default)]
    clients: Vec<TrustedClient>,
    #[serde(default)]
    tokens: Vec<StoredToken>,
}

/// A pending token as stored (the secret's hash included).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct StoredToken {
    name: String,
    expires: u64,
    secret_sha256: String,
}

impl From<&StoredToken> for PendingToken {
    fn from(token: &StoredToken) -> PendingToken {
        PendingToken {
            name: token.name.clone(),
            expires: token.expires,
        }
    }
}

/// A join token just issued: the secret to hand to the client, shown once.
#[derive(Clone, Debug)]
pub struct JoinToken {
    pub name: String,
    pub secret: String,
    pub expires: u64,
}

impl JoinToken {
    /// What the client is given: the fingerprint of `server`'s certificate, so that it pins
    /// the server it enrols with, and the secret: `FINGERPRINT:SECRET`.
    pub fn text(&self, server: &Fingerprint) -> String {
        format!("{server}:{}", self.secret)
    }
}

/// The secret of a join token's text (`FINGERPRINT:SECRET`, or the bare secret).
fn token_secret(text: &str) -> &str {
    let text = text.trim();
    text.rsplit_once(':').map_or(text, |(_, secret)| secret)
}

/// The identity `corral serve --listen` presents for the root `root` (`trust/server/`). Made
/// when it does not exist yet, naming this host, its loopback addresses and `address` when it
/// is a particular one (clients pin its fingerprint, so the names only help others' tools).
pub fn server_identity(root: &Path, address: Option<IpAddr>) -> Result<Identity, TrustError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = nix::unistd::gethostname() {
        names.extend(host.into_string().ok());
    }
    names.extend(
        address
            .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
            .map(|ip| ip.to_string()),
    );
    Identity::load_or_make(&root.join("trust").join("server"), "server", &names)
}

/// The trust store of a corral root.
#[derive(Clone, Debug)]
pub struct TrustStore {
    dir: PathBuf,
}

impl TrustStore {
    /// The trust store of the corral root `root` (nothing is created until it is changed).
    pub fn of_root(root: &Path) -> TrustStore {
        TrustStore {
            dir: root.join("trust"),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("trust.json")
    }

    /// The trusted clients, by name.
    pub fn clients(&self) -> Result<Vec<TrustedClient>, TrustError> {
        let mut clients = self.read()?.clients;
        clients.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(clients)
    }

    /// The join tokens not used yet and not expired, by name.
    pub fn pending_tokens(&self) -> Result<Vec<PendingToken>, TrustError> {
        let now = now();
        let mut tokens: Vec<PendingToken> = (self.read()?.tokens.iter())
            .filter(|token| token.expires > now)
            .map(PendingToken::from)
            .collect();
        tokens.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tokens)
    }

    /// The trusted client whose certificate has `fingerprint`, if any.
    pub fn client_with(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Option<TrustedClient>, TrustError> {
        Ok((self.read()?.clients.into_iter()).find(|client| &client.fingerprint == fingerprint))
    }

    /// Trusts `certificate` as `name`.
    pub fn add(&self, name: &str, certificate: &Certificate) -> Result<TrustedClient, TrustError> {
        self.change(|trust| {
            trust.check_free(name)?;
            trust.trust(name, certificate)
        })
    }

    /// A one-time token, good for `lifetime`, with which a client enrols its certificate as
    /// `name` ([`TrustStore::redeem`]).
    pub fn issue_token(&self, name: &str, lifetime: Duration) -> Result<JoinToken, TrustError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(TrustError::Random)?;
        let secret = hex::encode(bytes);
        let expires = now().saturating_add(lifetime.as_secs());
        self.change(|trust| {
            trust.check_free(name)?;
            trust.tokens.push(StoredToken {
                name: name.to_owned(),
                expires,
                secret_sha256: secret_hash(&secret),
            });
            Ok(())
        })?;
        Ok(JoinToken {
            name: name.to_owned(),
            secret,
            expires,
        })
    }

    /// Uses up the join token `token` (its text, or the bare secret): `certificate` is
    /// trusted under the token's name.
    pub fn redeem(
        &self,
        token: &str,
        certificate: &Certificate,
    ) -> Result<TrustedClient, TrustError> {
        let hash = secret_hash(token_secret(token));
        self.change(|trust| {
            let index = (trust.tokens.iter())
                .position(|token| token.secret_sha256 == hash)
                .ok_or(TrustError::UnknownToken)?;
            let token = trust.tokens.remove(index);
            if token.expires <= now() {
                return Err(TrustError::ExpiredToken(token.name));
            }
            trust.trust(&token.name, certificate)
        })
    }

    /// Stops trusting the client `name`, or revokes its pending join token.
    pub fn remove(&self, name: &str) -> Result<(), TrustError> {
        self.change(|trust| {
            let before = trust.clients.len() + trust.tokens.len();
            trust.clients.retain(|client| client.name != name);
            trust.tokens.retain(|token| token.name != name);
            if trust.clients.len() + trust.tokens.len() == before {
                return Err(TrustError::NotFound(name.to_owned()));
            }
            Ok(())
        })
    }

    fn read(&self) -> Result<Trust, TrustError> {
        let path = self.file();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Trust::default()),
            Err(err) => return Err(corral_error::PathIoError::new("read", &path, err).into()),
        };
        serde_json::from_slice(&text).map_err(|source| TrustError::Damaged { path, source })
    }

    /// Reads, changes with `change` and writes back the store, under its lock; nothing is
    /// written when `change` fails. Expired tokens are dropped on the way.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut Trust) -> Result<T, TrustError>,
    ) -> Result<T, TrustError> {
        corral_host::atomic::create_private_dir_all(&self.dir)
            .map_err(corral_error::PathIoError::at("create", &self.dir))?;
        let lock_path = self.dir.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(corral_error::PathIoError::at("open", &lock_path))?;
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(
            |(_, errno)| corral_error::PathIoError::new("lock", &lock_path, errno.into()),
        )?;
        let mut trust = self.read()?;
        let now = now();
        trust.tokens.retain(|token| token.expires > now);
        let outcome = change(&mut trust)?;
        let text = serde_json::to_vec_pretty(&trust).map_err(|source| TrustError::Damaged {
            path: self.file(),
            source,
        })?;
        corral_host::atomic::write_file(
            &self.file(),
            &text,
            corral_host::atomic::PRIVATE_FILE_MODE,
        )?;
        Ok(outcome)
    }
}

impl Trust {
    /// Refuses `name` when it is malformed or taken by a client or a pending token.
    fn check_free(&self, name: &str) -> Result<(), TrustError> {
        validate_name(name).map_err(|_| TrustError::Name(name.to_owned()))?;
        let taken = self.clients.iter().any(|client| client.name == name)
            || self.tokens.iter().any(|token| token.name == name);
        if taken {
            return Err(TrustError::NameTaken(name.to_owned()));
        }
        Ok(())
    }

    fn trust(
        &mut self,
        name: &str,
        certificate: &Certificate,
    ) -> Result<TrustedClient, TrustError> {
        let fingerprint = certificate.fingerprint();
        if let Some(known) = self.clients.iter().find(|c| c.fingerprint == fingerprint) {
            return Err(TrustError::AlreadyTrusted(known.name.clone()));
        }
        let client = TrustedClient {
            name: name.to_owned(),
            fingerprint,
            added: now(),
            certificate: certificate.to_pem(),
        };
        self.clients.push(client.clone());
        Ok(client)
    }
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate() -> Certificate {
        let key = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
        Certificate::from_pem(key.cert.pem().as_bytes()).unwrap()
    }

    #[test]
    fn a_token_enrols_one_certificate_once_under_its_name() {
        let root = tempfile::tempdir().unwrap();
        let store = TrustStore::of_root(root.path());
        let token = store.issue_token("laptop", DEFAULT_TOKEN_LIFETIME).unwrap();
        assert_eq!(store.pending_tokens().unwrap()[0].name, "laptop");
        let (first, second) = (certificate(), certificate());
        assert!(store.client_with(&first.fingerprint()).unwrap().is_none());

        let server = Fingerprint::of(b"server");
        assert!(token.text(&server).starts_with(&format!("{server}:")));
        let client = store.redeem(&token.text(&server), &first).unwrap();
        assert_eq!(client.name, "laptop");
        assert_eq!(client.fingerprint, first.fingerprint());
        let found = store.client_with(&first.fingerprint()).unwrap().unwrap();
        assert_eq!(found.name, "laptop");
        assert!(store.pending_tokens().unwrap().is_empty());
        assert!(matches!(
            store.redeem(&token.secret, &second),
            Err(TrustError::UnknownToken)
        ));
        assert!(store.client_with(&second.fingerprint()).unwrap().is_none());
        // The secret is not on disk, only its hash.
        let text = std::fs::read_to_string(root.path().join("trust/trust.json")).unwrap();
        assert!(!text.contains(&token.secret));
    }

    #[test]
    fn an_expired_token_is_refused_and_names_are_unique() {
        let root = tempfile::tempdir().unwrap();
        let store = TrustStore::of_root(root.path());
        let token = store.issue_token("old", Duration::ZERO).unwrap();
        // Expired tokens are dropped as the store changes, so redeeming finds none.
        assert!(matches!(
            store.redeem(&token.secret, &certificate()),
            Err(TrustError::UnknownToken)
        ));
        let cert = certificate();
        store.add("ci", &cert).unwrap();
        assert!(matches!(
            store.add("ci", &certificate()),
            Err(TrustError::NameTaken(_))
        ));
        assert!(matches!(
            store.add("other", &cert),
            Err(TrustError::AlreadyTrusted(name)) if name == "ci"
        ));
        assert!(matches!(
            store.issue_token("ci", DEFAULT_TOKEN_LIFETIME),
            Err(TrustError::NameTaken(_))
        ));
        assert!(matches!(
            store.add("../x", &certificate()),
            Err(TrustError::Name(_))
        ));
        store.remove("ci").unwrap();
        assert!(store.client_with(&cert.fingerprint()).unwrap().is_none());
        assert!(matches!(store.remove("ci"), Err(TrustError::NotFound(_))));
    }

    #[test]
    fn text_that_is_not_one_certificate_is_refused() {
        assert!(Certificate::from_pem(b"hello").is_err());
        let key = rcgen::KeyPair::generate().unwrap();
        assert!(Certificate::from_pem(key.serialize_pem().as_bytes()).is_err());
        let garbage = pem::encode(&pem::Pem::new("CERTIFICATE", vec![0x30, 0x03, 1, 2, 3]));
        assert!(Certificate::from_pem(garbage.as_bytes()).is_err());
        let one = certificate().to_pem();
        let two = format!("{one}{}", certificate().to_pem());
        assert!(Certificate::from_pem(two.as_bytes()).is_err());
        assert!(Certificate::from_pem(one.as_bytes()).is_ok());
    }
}
