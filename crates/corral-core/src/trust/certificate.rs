//! A client certificate as the trust store keeps it: its DER bytes, checked to be an X.509
//! certificate, named by the SHA-256 of those bytes (what `openssl x509 -fingerprint -sha256`
//! prints, without the colons).

use sha2::{Digest, Sha256};

use super::TrustError;

/// The most PEM text a certificate file may hold: a certificate is a few KiB.
const MAX_PEM_BYTES: usize = 64 * 1024;

/// The SHA-256 of a certificate's DER bytes, in lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of the DER bytes `der`.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(hex::encode(Sha256::digest(der)))
    }

    /// A fingerprint as text: 64 hex digits (colons, as openssl prints them, and case aside).
    pub fn parse(text: &str) -> Option<Fingerprint> {
        let hex: String = text
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_lowercase();
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(Fingerprint(hex))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An X.509 certificate (DER), parsed once to be sure it is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
}

impl Certificate {
    /// The certificate `der`, refused when it does not parse as an X.509 certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Certificate, TrustError> {
        let parsed = rustls_pki_types::CertificateDer::from(der.as_slice());
        webpki::EndEntityCert::try_from(&parsed)
            .map_err(|err| TrustError::NotACertificate(format!("{err:?}")))?;
        Ok(Certificate { der })
    }

    /// The one certificate of the PEM text `pem` (a file holding several is refused: which
    /// one would be trusted would be a guess).
    pub fn from_pem(pem: &[u8]) -> Result<Certificate, TrustError> {
        if pem.len() > MAX_PEM_BYTES {
            return Err(TrustError::NotACertificate(format!(
                "the text is {} bytes; a certificate is a few KiB",
                pem.len()
            )));
        }
        let blocks =
            pem::parse_many(pem).map_err(|err| TrustError::NotACertificate(err.to_string()))?;
        let mut certificates = blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE");
        match (certificates.next(), certificates.next()) {
            (Some(only), None) => Certificate::from_der(only.into_contents()),
            (None, _) => Err(TrustError::NotACertificate(
                "it holds no PEM block `BEGIN CERTIFICATE`".into(),
            )),
            (Some(_), Some(_)) => Err(TrustError::NotACertificate(
                "it holds more than one certificate; give the client's own".into(),
            )),
        }
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.der)
    }

    /// The certificate as PEM text.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}
