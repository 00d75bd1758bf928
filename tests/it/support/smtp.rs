//! A real SMTP server for the email tests: PyPI `aiosmtpd` running `smtp_sink.py` on a free
//! 127.0.0.1 port, STARTTLS required with a certificate made here by `openssl` (a CA and a
//! server certificate for 127.0.0.1 and localhost: the CA is the `ca_file`), AUTH required,
//! each message written as a `.eml` file. Started and stopped by PID.
//!
//! Needs `PROVISIOND_SMTP_PYTHON=/path/to/python` with aiosmtpd installed (.ci/run sets it);
//! without it, outside CI, the tests say so and pass.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ENV: &str = "PROVISIOND_SMTP_PYTHON";

/// The SMTP user the sink accepts.
pub const SMTP_USER: &str = "provisiond";
/// Its password: distinctive, so a test can look for it in every message and output.
pub const SMTP_PASSWORD: &str = "smtp-pw-93e1-SECRET-never-in-mail";

/// The python to run the sink with, or `None` (after saying why) when unset outside CI.
pub fn python(test: &str) -> Option<PathBuf> {
    match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set {ENV}: see .ci/run"
            );
            eprintln!("{test}: skipped: set {ENV}=/path/to/python with aiosmtpd (see README)");
            None
        }
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca.crt` (the trust anchor for `ca_file`) and `server.crt`/`server.key` for 127.0.0.1 and
/// localhost, signed by it, in `dir`.
pub fn make_certs(dir: &Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "2",
            "-subj",
            "/CN=provisiond test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        dir,
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
        dir,
    );
}

/// A running sink, killed (by its PID) when dropped or stopped.
pub struct SmtpSink {
    child: Option<Child>,
    python: PathBuf,
    pub port: u16,
    /// Where the certificates are (`ca.crt` is the `ca_file`).
    pub certs: PathBuf,
    /// Where the messages are written.
    pub mail_dir: PathBuf,
}

impl SmtpSink {
    /// Certificates in `dir`, messages in `dir/mail`, on a free port; `None` when skipped.
    pub fn start(test: &str, dir: &Path) -> Option<SmtpSink> {
        let python = python(test)?;
        if !super::certs::openssl_available() {
            return None;
        }
        make_certs(dir);
        let mail_dir = dir.join("mail");
        std::fs::create_dir_all(&mail_dir).unwrap();
        let mut sink = SmtpSink {
            child: None,
            python,
            port: super::free_port(),
            certs: dir.to_path_buf(),
            mail_dir,
        };
        sink.restart();
        Some(sink)
    }

    /// A sink that is not running yet (an outage from the start): [`SmtpSink::restart`]
    /// starts it on its port.
    pub fn stopped(test: &str, dir: &Path) -> Option<SmtpSink> {
        let mut s = SmtpSink::start(test, dir)?;
        s.stop();
        Some(s)
    }

    /// The CA file to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.certs.join("ca.crt")
    }

    /// Start (again) on the same port and wait until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/smtp_sink.py");
        let mut child = Command::new(&self.python)
            .arg(script)
            .args(["--port", &self.port.to_string()])
            .arg("--cert")
            .arg(self.certs.join("server.crt"))
            .arg("--key")
            .arg(self.certs.join("server.key"))
            .arg("--dir")
            .arg(&self.mail_dir)
            .args(["--user", SMTP_USER])
            .env("SMTP_SINK_PASSWORD", SMTP_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.python));
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the SMTP sink did not start within 20 s"));
        assert!(line.starts_with("ready"), "the SMTP sink said {line:?}");
    }

    /// Stop it (by PID): an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The messages received so far, in order, as text.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.mail_dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
            .collect()
    }

    /// Wait (bounded) until at least `n` messages arrived; all of them.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages after {limit:?}",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `[smtp]` table for this sink, the password from `password_file`.
    pub fn smtp_table(&self, password_file: &Path) -> String {
        format!(
            "[smtp]\nurl = \"smtp://127.0.0.1:{port}\"\nfrom = \"provisiond <provisiond@example.com>\"\n\
             username = \"{SMTP_USER}\"\npassword_file = \"{pw}\"\nca_file = \"{ca}\"\ntimeout = \"5s\"\n",
            port = self.port,
            pw = password_file.display(),
            ca = self.ca_file().display(),
        )
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A message's subject line.
pub fn subject(message: &str) -> String {
    // Unfolded (RFC 5322: a long header goes on in lines that start with white space).
    let mut lines = message.lines().skip_while(|l| !l.starts_with("Subject: "));
    let mut out = lines
        .next()
        .and_then(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_string();
    for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        out.push(' ');
        out.push_str(l.trim_start());
    }
    out
}

/// A message's text/plain part, decoded (quoted-printable, base64 or 7bit, as lettre chose).
pub fn text_part(message: &str) -> String {
    part(message, "text/plain")
}

/// A message's text/html part, decoded.
pub fn html_part(message: &str) -> String {
    part(message, "text/html")
}

fn part(message: &str, content_type: &str) -> String {
    use base64::Engine;
    let body = message.replace("\r\n", "\n");
    let start = body
        .find(&format!("Content-Type: {content_type}"))
        .unwrap_or_else(|| panic!("no {content_type} part in\n{message}"));
    let rest = &body[start..];
    let split = rest.find("\n\n").unwrap();
    let headers = &rest[..split];
    let rest = &rest[split + 2..];
    // The part ends at its boundary line (a body line may start with "--" too).
    let boundary = body
        .split("boundary=\"")
        .nth(1)
        .and_then(|b| b.split('"').next())
        .expect("a multipart boundary");
    let end = rest.find(&format!("\n--{boundary}")).unwrap_or(rest.len());
    let content = &rest[..end];
    if headers.contains("Content-Transfer-Encoding: base64") {
        let joined: String = content.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(joined)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    } else if headers.contains("Content-Transfer-Encoding: quoted-printable") {
        decode_qp(content)
    } else {
        content.to_string()
    }
}

/// Quoted-printable to text: soft line breaks joined, `=XX` bytes decoded.
pub fn decode_qp(s: &str) -> String {
    let joined = s.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
