//! How a Graph source proves who it is to the token endpoint: a client secret, or a
//! certificate whose private key signs a client assertion.
//!
//! The assertion follows entra-docs `docs/identity-platform/certificate-credentials.md`
//! ("Assertion format", version of 2025-01-04): a JWT with the header `alg` = `PS256`, `typ` =
//! `JWT`, `x5t#S256` = the base64url SHA-256 thumbprint of the certificate's DER encoding; the
//! claims `aud` = the token endpoint URL, `iss` = `sub` = the client id, `jti` = a GUID, `nbf`
//! and `iat` = now, `exp` = "5-10 minutes after `nbf` at most" (10 here); signed "with PSS
//! padding" (RSASSA-PSS, SHA-256). The token request then carries `client_assertion_type =
//! urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and `client_assertion` in place of
//! `client_secret` ("Using a client assertion"). The earlier version of that page (2024-04-10)
//! described `RS256` with an SHA-1 `x5t`; the emulator accepts both, the client sends the
//! current one.
//!
//! Signing uses `ring`, the crypto of the project's one TLS stack (rustls with ring); PEM is
//! read with `rustls-pki-types` and the certificate with `x509-parser`, both already in the
//! build. The private key is kept as a [`SecretSlice`] (zeroed when dropped) and parsed when
//! an assertion is signed; neither it nor an assertion ever reaches `Debug`, logs or errors.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{RsaKeyPair, RSA_PSS_SHA256};
use rustls_pki_types::pem::{PemObject, SectionKind};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `client_assertion_type` of a token request with a certificate credential.
pub(crate) const CLIENT_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `exp` − `nbf` of an assertion: "5-10 minutes after `nbf` at most".
pub(crate) const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// The credential a Graph source signs in with. `Debug` shows no secret and no key.
#[derive(Clone, Debug)]
pub enum GraphCredential {
    /// A client secret's value.
    Secret(SecretString),
    /// A certificate uploaded to the app registration, with its private key.
    Certificate(ClientCertificate),
}

impl From<SecretString> for GraphCredential {
    fn from(secret: SecretString) -> Self {
        GraphCredential::Secret(secret)
    }
}

impl From<ClientCertificate> for GraphCredential {
    fn from(certificate: ClientCertificate) -> Self {
        GraphCredential::Certificate(certificate)
    }
}

impl PartialEq for GraphCredential {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (GraphCredential::Secret(a), GraphCredential::Secret(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            (GraphCredential::Certificate(a), GraphCredential::Certificate(b)) => {
                a.certificate_der == b.certificate_der
                    && a.key.der.expose_secret() == b.key.der.expose_secret()
            }
            _ => false,
        }
    }
}

impl Eq for GraphCredential {}

impl GraphCredential {
    /// For messages: "a client secret", or the certificate's thumbprint and expiry.
    pub fn describe(&self) -> String {
        match self {
            GraphCredential::Secret(_) => "a client secret".into(),
            GraphCredential::Certificate(c) => format!(
                "certificate {} (SHA-1 thumbprint {}, valid until {})",
                c.subject,
                c.sha1_thumbprint,
                date(c.not_after)
            ),
        }
    }
}

/// What is wrong with a certificate credential. Never contains key material.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertificateError {
    /// The certificate PEM: not found, unreadable, not RSA.
    #[error("{0}")]
    Certificate(String),
    /// The private key PEM: not found, encrypted, not RSA, several.
    #[error("{0}")]
    Key(String),
    /// The private key is not the certificate's.
    #[error(
        "the private key does not belong to the certificate {subject} (SHA-1 thumbprint \
         {thumbprint}): give the key the certificate was made from"
    )]
    Mismatch { subject: String, thumbprint: String },
    /// Signing failed (should not happen with a key that was accepted).
    #[error("signing the client assertion failed: {0}")]
    Sign(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyFormat {
    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8).
    Pkcs8,
    /// `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1).
    Pkcs1,
}

#[derive(Clone)]
struct PrivateKey {
    der: SecretSlice<u8>,
    format: KeyFormat,
}

impl PrivateKey {
    fn key_pair(&self) -> Result<RsaKeyPair, ring::error::KeyRejected> {
        match self.format {
            KeyFormat::Pkcs8 => RsaKeyPair::from_pkcs8(self.der.expose_secret()),
            KeyFormat::Pkcs1 => RsaKeyPair::from_der(self.der.expose_secret()),
        }
    }
}

/// A certificate credential: the certificate (public) and its RSA private key (secret).
#[derive(Clone)]
pub struct ClientCertificate {
    certificate_der: Vec<u8>,
    key: PrivateKey,
    /// Base64url SHA-256 thumbprint: the `x5t#S256` header.
    x5t_s256: String,
    /// Upper-case hex SHA-1 thumbprint, as the Entra admin center shows it.
    sha1_thumbprint: String,
    subject: String,
    not_before: i64,
    not_after: i64,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("subject", &self.subject)
            .field("sha1_thumbprint", &self.sha1_thumbprint)
            .field("not_after", &date(self.not_after))
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// Base64url SHA-256 of a DER certificate: its `x5t#S256`.
pub(crate) fn x5t_s256(certificate_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, certificate_der))
}

/// Upper-case hex SHA-1 of a DER certificate: the thumbprint the Entra admin center shows.
pub(crate) fn sha1_thumbprint(certificate_der: &[u8]) -> String {
    hex(&sha1(certificate_der))
}

/// Upper-case hex SHA-256 of a DER certificate: how Entra quotes the `x5t#S256` it was sent.
pub(crate) fn sha256_thumbprint(certificate_der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, certificate_der).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn sha1(der: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .to_vec()
}

/// The RSA public key (PKCS#1 `RSAPublicKey` DER, as `ring` verifies with) of a DER
/// certificate, with the certificate's subject and validity (Unix seconds).
pub(crate) fn certificate_rsa_key(der: &[u8]) -> Result<CertificateInfo, CertificateError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertificateError::Certificate(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(CertificateError::Certificate(
            "not an X.509 certificate: data after its end".into(),
        ));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err(CertificateError::Certificate(format!(
            "the certificate's key is not an RSA key (algorithm {}); Entra certificate \
             credentials are signed with PS256, which needs RSA",
            spki.algorithm.algorithm
        )));
    }
    Ok(CertificateInfo {
        rsa_public_key: spki.subject_public_key.data.to_vec(),
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// What [`certificate_rsa_key`] reads from a certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertificateInfo {
    pub rsa_public_key: Vec<u8>,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a PEM text cannot be split into sections. Our own messages: the parser's can quote a
/// line of the file, which may be key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum PemError {
    #[error("a PEM section has no END line")]
    MissingEnd,
    #[error("a PEM BEGIN line is malformed")]
    BadBegin,
    #[error("a PEM section is not valid base64")]
    Base64,
    #[error("not valid PEM")]
    Other,
}

/// Every PEM section of `pem`, with its kind.
fn sections(pem: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, PemError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            rustls_pki_types::pem::Error::MissingSectionEnd { .. } => PemError::MissingEnd,
            rustls_pki_types::pem::Error::IllegalSectionStart { .. } => PemError::BadBegin,
            rustls_pki_types::pem::Error::Base64Decode(_) => PemError::Base64,
            _ => PemError::Other,
        })
}

impl ClientCertificate {
    /// The certificate from `certificate_pem` (the first `CERTIFICATE` section) and its
    /// private key from `key_pem`, or from `certificate_pem` itself when `key_pem` is `None`
    /// (a single PEM file holding both). The key must be an unencrypted RSA key, PKCS#8
    /// (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), and must be the certificate's.
    pub fn from_pem(
        certificate_pem: &[u8],
        key_pem: Option<&[u8]>,
    ) -> Result<ClientCertificate, CertificateError> {
        let cert_error = |m: String| CertificateError::Certificate(m);
        let key_error = |m: &str| CertificateError::Key(m.to_string());
        let cert_sections = sections(certificate_pem).map_err(|e| cert_error(e.to_string()))?;
        let certificate_der = cert_sections
            .iter()
            .find(|(kind, _)| *kind == SectionKind::Certificate)
            .map(|(_, der)| der.clone())
            .ok_or_else(|| {
                cert_error("no certificate in it (a -----BEGIN CERTIFICATE----- section)".into())
            })?;
        let info = certificate_rsa_key(&certificate_der)?;

        let (key_text, key_sections) = match key_pem {
            Some(pem) => {
                // A key the certificate file may hold too is not used: wiped.
                wipe(cert_sections);
                (pem, sections(pem).map_err(|e| key_error(&e.to_string()))?)
            }
            None => (certificate_pem, cert_sections),
        };
        // PKCS#8 `ENCRYPTED PRIVATE KEY`, or a PKCS#1 key with `Proc-Type: 4,ENCRYPTED`.
        if contains(key_text, b"-----BEGIN ENCRYPTED") || contains(key_text, b"4,ENCRYPTED") {
            return Err(key_error(
                "the private key is encrypted; provisiond needs it unencrypted, readable by \
                 its user only (decrypt it with: openssl pkcs8 -in KEY -out KEY.pem)",
            ));
        }
        let mut keys: Vec<PrivateKey> = Vec::new();
        let mut other_keys = 0usize;
        for (kind, mut der) in key_sections {
            let format = match kind {
                SectionKind::PrivateKey => KeyFormat::Pkcs8,
                SectionKind::RsaPrivateKey => KeyFormat::Pkcs1,
                SectionKind::EcPrivateKey => {
                    other_keys += 1;
                    der.zeroize();
                    continue;
                }
                _ => continue,
            };
            keys.push(PrivateKey {
                der: SecretSlice::from(der),
                format,
            });
        }
        let key = match keys.len() {
            1 => keys.remove(0),
            0 if other_keys > 0 => {
                return Err(key_error(
                    "the private key is an EC key; Entra certificate credentials are signed \
                     with PS256, which needs an RSA key",
                ))
            }
            0 if key_pem.is_none() => {
                return Err(key_error(
                    "no private key in the certificate file: set client_key_file (or \
                     client_key_env or client_key_credential), or append the key to the \
                     certificate file",
                ))
            }
            0 => {
                return Err(key_error(
                    "no private key in it (a -----BEGIN PRIVATE KEY----- or -----BEGIN RSA \
                     PRIVATE KEY----- section)",
                ))
            }
            n => {
                return Err(CertificateError::Key(format!(
                    "{n} private keys in it; give exactly one"
                )))
            }
        };
        let pair = key.key_pair().map_err(|e| {
            // KeyRejected says only what kind of problem it is ("InvalidEncoding",
            // "WrongAlgorithm", "TooSmall", …), never the key.
            CertificateError::Key(match e.to_string().as_str() {
                "WrongAlgorithm" => {
                    "the private key is not an RSA key; Entra certificate credentials are \
                     signed with PS256, which needs RSA"
                        .to_string()
                }
                "TooSmall" | "TooLarge" => format!(
                    "the RSA private key's size is not supported ({e}): use 2048 to 4096 bits"
                ),
                other => format!("the private key cannot be used: {other}"),
            })
        })?;
        let sha1_thumbprint = sha1_thumbprint(&certificate_der);
        if ring::signature::KeyPair::public_key(&pair).as_ref() != info.rsa_public_key.as_slice() {
            return Err(CertificateError::Mismatch {
                subject: info.subject,
                thumbprint: sha1_thumbprint,
            });
        }
        Ok(ClientCertificate {
            x5t_s256: x5t_s256(&certificate_der),
            sha1_thumbprint,
            certificate_der,
            key,
            subject: info.subject,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// The certificate, DER: what is uploaded to the app registration.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// Upper-case hex SHA-1 thumbprint, as the Entra admin center lists it.
    pub fn sha1_thumbprint(&self) -> &str {
        &self.sha1_thumbprint
    }

    /// Base64url SHA-256 thumbprint (`x5t#S256`).
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// Upper-case hex SHA-256 thumbprint.
    pub fn sha256_thumbprint(&self) -> String {
        sha256_thumbprint(&self.certificate_der)
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The certificate's validity, Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// A signed client assertion for `client_id` at the token endpoint `audience`, valid from
    /// `now` for [`ASSERTION_LIFETIME`]. It is a credential (for those minutes): secret.
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<SecretString, CertificateError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| CertificateError::Sign("the clock is before 1970".into()))?
            .as_secs();
        let header = serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.x5t_s256});
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let pair = self
            .key
            .key_pair()
            .map_err(|e| CertificateError::Sign(e.to_string()))?;
        let mut signature = vec![0u8; pair.public().modulus_len()];
        pair.sign(
            &RSA_PSS_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| CertificateError::Sign("RSA-PSS signature refused by ring".into()))?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// Zero every section that may be key material.
fn wipe(sections: Vec<(SectionKind, Vec<u8>)>) {
    for (kind, mut der) in sections {
        if kind != SectionKind::Certificate {
            der.zeroize();
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A Unix time as an RFC 3339 date and time, for messages.
fn date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}
