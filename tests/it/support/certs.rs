//! Self-signed RSA certificates for the Graph certificate-credential tests, made with the
//! `openssl` command as docs/graph.md tells admins to, and the openssl check every TLS test
//! shares. CI installs openssl (.ci/run) and must not skip.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its key, PEM files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).unwrap()
    }
    pub fn key_pem(&self) -> Vec<u8> {
        std::fs::read(&self.key).unwrap()
    }
    /// Lines of the key's base64 body: none may show up in an error or `Debug` output.
    pub fn key_lines(&self) -> Vec<String> {
        String::from_utf8(self.key_pem())
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
            .map(str::to_string)
            .collect()
    }
}

/// Whether `openssl` runs; outside CI a test without it is skipped with a message.
pub fn openssl_available() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have openssl: see .ci/run"
        );
        eprintln!("skipped: this test needs the openssl command");
    }
    ok
}

/// `openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj /CN={name}` into
/// `{dir}/{name}.crt` and `{dir}/{name}.key` (PKCS#8, unencrypted).
pub fn self_signed(dir: &Path, name: &str) -> Pair {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256"])
        .args(["-days", "2", "-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Pair { cert, key }
}
