//! A throwaway OpenLDAP server for the LDAP tests and the benchmark: Debian's `slapd`, started
//! from a temporary directory with a generated `slapd.conf` (mdb backend, the `memberof`
//! overlay, a size limit that forces paging), loaded offline with `slapadd`, listening on a
//! free loopback port, and killed by PID when dropped.
//!
//! Used by the `ldap_source` tests and, with `#[path]`, by `examples/ldap_bench.rs`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SUFFIX: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PW: &str = "admin-secret";
/// The account the source binds as: not the rootdn, so the server's limits apply to it.
pub const READER_DN: &str = "cn=reader,dc=example,dc=org";
pub const READER_PW: &str = "reader-pa55word-do-not-log";
pub const PEOPLE: &str = "ou=People,dc=example,dc=org";
pub const GROUPS: &str = "ou=Groups,dc=example,dc=org";
/// Loaded entries carry change times from this day on (a minute apart, in the order they
/// are generated), so an incremental read sees only later changes.
pub const OLD_DAY: &str = "20200101";

static STAMPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The next old change time: 2020-01-01 00:00, then a minute later each call.
pub fn old_stamp() -> String {
    let n = STAMPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let t = chrono::NaiveDate::from_ymd_opt(2020, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::minutes(i64::from(n));
    t.format("%Y%m%d%H%M%SZ").to_string()
}

/// Whether slapd is installed; prints why a test is skipped when it is not.
pub fn available() -> bool {
    if Path::new(SLAPD).exists() {
        true
    } else {
        // CI installs slapd (.ci/run): a skip there would hide a broken install step.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have slapd: see .ci/run"
        );
        eprintln!("skipped: install slapd and ldap-utils (see README)");
        false
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The server's size limit for a plain search (`sizelimit`); paged searches are not
    /// capped in total.
    pub size_limit: u32,
    /// Also listen for LDAPS (and offer StartTLS) with a certificate for 127.0.0.1 and
    /// localhost, issued by a CA generated with `openssl` (see [`Slapd::ca_pem`]).
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            size_limit: 100,
            tls: false,
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 / localhost signed by it.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=provisiond test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

pub struct Slapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The LDAPS port, when started with `tls`.
    pub tls_port: Option<u16>,
}

impl Slapd {
    /// Start a server holding the base entries (suffix, reader, People, Groups) and `ldif`.
    pub fn start(ldif: &str, opts: &Options) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        let memberof = Path::new("/usr/lib/ldap/memberof.la").exists()
            || Path::new("/usr/lib/ldap/memberof.so").exists();
        let mut conf = String::new();
        for schema in ["core", "cosine", "inetorgperson", "nis"] {
            writeln!(conf, "include /etc/ldap/schema/{schema}.schema").unwrap();
        }
        writeln!(conf, "modulepath /usr/lib/ldap\nmoduleload back_mdb").unwrap();
        if memberof {
            writeln!(conf, "moduleload memberof").unwrap();
        }
        // TLS settings are global: before the database section.
        if opts.tls {
            make_certificates(d);
            writeln!(
                conf,
                "TLSCACertificateFile {0}/ca.pem\nTLSCertificateFile {0}/server.pem\nTLSCertificateKeyFile {0}/server.key",
                d.display()
            )
            .unwrap();
        }
        writeln!(
            conf,
            "pidfile {0}/slapd.pid\nargsfile {0}/slapd.args\n\
             sizelimit size.soft={1} size.hard={1} size.prtotal=unlimited\n\
             database mdb\nmaxsize 4294967296\nsuffix \"{SUFFIX}\"\n\
             rootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PW}\ndirectory {0}/db\n\
             index objectClass eq\nindex uid eq\nindex member eq\nindex entryUUID eq\n\
             index modifyTimestamp eq",
            d.display(),
            opts.size_limit
        )
        .unwrap();
        if memberof {
            writeln!(conf, "overlay memberof").unwrap();
        }
        writeln!(
            conf,
            "access to attrs=userPassword by anonymous auth by * none\naccess to * by * read"
        )
        .unwrap();
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let all = format!("{}\n{ldif}", base_ldif());
        std::fs::write(d.join("data.ldif"), all).unwrap();
        let out = Command::new("/usr/sbin/slapadd")
            .args(["-q", "-f"])
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("data.ldif"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Slapd {
            child: None,
            dir,
            port: 0,
            tls_port: if opts.tls { Some(0) } else { None },
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        // Port 0 can't be handed to slapd: take a free port, release it, and retry on a clash.
        for _ in 0..20 {
            let free = || {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            };
            let port = if self.port == 0 { free() } else { self.port };
            let tls_port = match self.tls_port {
                Some(0) => Some(free()),
                other => other,
            };
            let mut urls = format!("ldap://127.0.0.1:{port}/");
            if let Some(p) = tls_port {
                urls += &format!(" ldaps://127.0.0.1:{p}/");
            }
            let d = self.dir.path();
            let log = std::fs::File::create(d.join("slapd.log")).unwrap();
            // `-d 0`: stay in the foreground, so the child's PID is slapd's.
            let mut child = Command::new(SLAPD)
                .arg("-f")
                .arg(d.join("slapd.conf"))
                .arg("-h")
                .arg(&urls)
                .args(["-d", "0"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let tls_up = tls_port.is_none_or(|p| TcpStream::connect(("127.0.0.1", p)).is_ok());
                if TcpStream::connect(("127.0.0.1", port)).is_ok() && tls_up {
                    self.port = port;
                    self.tls_port = tls_port;
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "slapd did not start: {}",
            std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) of a server started with `tls`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kill slapd (SIGKILL, by PID) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start slapd again on the same port with the same database.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A connection bound as the rootdn, for changing the directory.
    pub async fn admin(&self) -> ldap3::Ldap {
        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&self.url()).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(ADMIN_DN, ADMIN_PW)
            .await
            .unwrap()
            .success()
            .unwrap();
        ldap
    }

    /// A connection bound as the reader (limits apply), for checking the server.
    pub async fn reader(&self) -> ldap3::Ldap {
        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&self.url()).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(READER_DN, READER_PW)
            .await
            .unwrap()
            .success()
            .unwrap();
        ldap
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("db")
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\nuserPassword: {READER_PW}\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: People\n\n\
         dn: {GROUPS}\nobjectClass: organizationalUnit\nou: Groups\n\n\
         dn: ou=Service,{SUFFIX}\nobjectClass: organizationalUnit\nou: Service\n\n\
         dn: uid=svc,ou=Service,{SUFFIX}\nobjectClass: account\nuid: svc\n"
    )
}

/// An LDIF value: base64 (`attr:: …`) when it is not plain ASCII.
pub fn attr(name: &str, value: &str) -> String {
    use base64::Engine;
    let safe = value.is_ascii()
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ')
        && !value.contains(['\n', '\r']);
    if safe {
        format!("{name}: {value}\n")
    } else {
        format!(
            "{name}:: {}\n",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

/// An inetOrgPerson under People, with `extra` LDIF lines, changed long ago.
pub fn ldif_person(uid: &str, given: &str, sn: &str, extra: &str) -> String {
    let mut s = format!("dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\n");
    s += &attr("uid", uid);
    s += &attr("givenName", given);
    s += &attr("sn", sn);
    s += &attr("cn", &format!("{given} {sn}"));
    s += &attr("mail", &format!("{uid}@example.org"));
    s += extra;
    s += &format!("modifyTimestamp: {}\n\n", old_stamp());
    s
}

/// A group under Groups: `class` is groupOfNames (member DNs), groupOfUniqueNames
/// (uniqueMember DNs) or posixGroup (memberUid).
pub fn ldif_group(cn: &str, class: &str, members: &[String]) -> String {
    let mut s = format!("dn: cn={cn},{GROUPS}\nobjectClass: {class}\n");
    s += &attr("cn", cn);
    let attr_name = match class {
        "groupOfNames" => "member",
        "groupOfUniqueNames" => "uniqueMember",
        _ => {
            s += "gidNumber: 1000\n";
            "memberUid"
        }
    };
    for m in members {
        s += &attr(attr_name, m);
    }
    s += &format!("modifyTimestamp: {}\n\n", old_stamp());
    s
}

pub fn user_dn(uid: &str) -> String {
    format!("uid={uid},{PEOPLE}")
}

pub fn group_dn(cn: &str) -> String {
    format!("cn={cn},{GROUPS}")
}
