//! The certificate arithmetic Entra applies to a client assertion: the thumbprints of an
//! uploaded certificate and its RSA public key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Base64url SHA-256 of a DER certificate: its `x5t#S256`.
pub(crate) fn x5t_s256(certificate_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, certificate_der))
}

/// Base64url SHA-1 of a DER certificate: its `x5t` (the earlier assertion format).
pub(crate) fn x5t_sha1(certificate_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        certificate_der,
    ))
}

/// The RSA public key of a DER certificate (PKCS#1 `RSAPublicKey` DER, as `ring` verifies
/// with), or `None` when it is not an X.509 certificate with an RSA key.
pub(crate) fn rsa_public_key(der: &[u8]) -> Option<Vec<u8>> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let spki = cert.public_key();
    (rest.is_empty()
        && spki.algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION)
        .then(|| spki.subject_public_key.data.to_vec())
}
