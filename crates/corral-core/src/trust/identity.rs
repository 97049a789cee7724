//! A TLS identity of corral's own: a self-signed certificate and its key, made at first use and
//! kept as `STEM.crt` and `STEM.key` (the key the owner's alone). `corral serve --listen` has
//! one (its clients pin its fingerprint), and so has a CLI that talks to remotes (the servers
//! trust its fingerprint).

use std::path::Path;

use super::{Certificate, Fingerprint, TrustError};

/// A certificate and its private key (PKCS#8 DER).
pub struct Identity {
    pub certificate: Certificate,
    pub key: Vec<u8>,
}

impl Identity {
    /// The identity `STEM.{crt,key}` in `dir`, made there when absent: a self-signed
    /// certificate naming `names` (host names and addresses).
    pub fn load_or_make(dir: &Path, stem: &str, names: &[String]) -> Result<Identity, TrustError> {
        let (crt, key) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        if !crt.exists() {
            let made =
                rcgen::generate_simple_self_signed(names.to_vec()).map_err(TrustError::Generate)?;
            // The key first: a certificate on disk always has its key beside it.
            corral_host::atomic::write_file(
                &key,
                made.signing_key.serialize_pem().as_bytes(),
                corral_host::atomic::PRIVATE_FILE_MODE,
            )?;
            corral_host::atomic::write_file(&crt, made.cert.pem().as_bytes(), 0o644)?;
        }
        let read =
            |path: &Path| std::fs::read(path).map_err(corral_error::PathIoError::at("read", path));
        let damaged = |path: &Path, reason: String| TrustError::DamagedIdentity {
            path: path.to_owned(),
            reason,
        };
        let certificate =
            Certificate::from_pem(&read(&crt)?).map_err(|err| damaged(&crt, err.to_string()))?;
        let key_pem = read(&key)?;
        let key_der = pem::parse(&key_pem)
            .ok()
            .filter(|block| block.tag() == "PRIVATE KEY")
            .ok_or_else(|| damaged(&key, "it holds no PEM block `BEGIN PRIVATE KEY`".into()))?
            .into_contents();
        Ok(Identity {
            certificate,
            key: key_der,
        })
    }

    /// What a peer pins or trusts.
    pub fn fingerprint(&self) -> Fingerprint {
        self.certificate.fingerprint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_made_once_and_its_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let made = Identity::load_or_make(dir.path(), "server", &["localhost".into()]).unwrap();
        let again = Identity::load_or_make(dir.path(), "server", &[]).unwrap();
        assert_eq!(made.fingerprint(), again.fingerprint());
        assert_eq!(made.key, again.key);
        let mode = std::fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("server.key"), "garbage").unwrap();
        let err = Identity::load_or_make(dir.path(), "server", &[])
            .err()
            .unwrap();
        assert!(err.to_string().contains("server.key is damaged"), "{err}");
    }
}
