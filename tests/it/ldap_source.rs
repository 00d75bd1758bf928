//! The LDAP source against a real OpenLDAP server (Debian `slapd`, see `support/slapd.rs`):
//! attribute maps, references, paging past the server's size limit, nested groups and cycles,
//! disabled users, assignments, incremental and full reads, incomplete reads, bind and
//! connection failures; then whole cycles into the SCIM sandbox, and delta cycles (issue 12).
//!
//! Each test starts its own slapd; without slapd installed they print why and pass.

use crate::support::certs;
use crate::support::common::*;
use crate::support::slapd::*;
use ldap3::Mod;
use provisiond::MemoryStore;
use provisiond::{evaluate_scope, OutOfScope, ScopeSettings};
use provisiond::{Directory, SourceObject};
use provisiond::{Flavour, LdapError, LdapSettings, LdapSource, Nested};
use provisiond::{Source, SourceError};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

/// The test directory: people with every default-mapped attribute, a manager, UTF-8 names, a
/// disabled user; groups of every kind, a nested group and a cycle.
fn directory_ldif() -> String {
    let mut s = String::new();
    s += &ldif_person(
        "alice",
        "Alice",
        "Liddell",
        &format!(
            "displayName: Alice Liddell\ntitle: Engineer\ndepartmentNumber: R&D\nemployeeNumber: 1001\nmanager: {}\ntelephoneNumber: +1 555 0100\n",
            // Written differently from bob's DN on purpose: DNs compare case-insensitively.
            "UID=Bob, ou=people,dc=EXAMPLE,dc=org"
        ),
    );
    s += &ldif_person("bob", "Bob", "Builder", "title: Director\n");
    s += &ldif_person(
        "zoe",
        "Zoë",
        "Ünal",
        &attr("displayName", "Zoë Ünal — Łódź"),
    );
    s += &ldif_person("carol", "Carol", "Off", "employeeType: disabled\n");
    s += &ldif_person("dave", "Dave", "Nested", "");
    s += &ldif_person("erin", "Erin", "Posix", "");
    s += &ldif_group(
        "Engineering",
        "groupOfNames",
        &[
            user_dn("alice"),
            user_dn("zoe"),
            group_dn("Platform"),
            format!("uid=svc,ou=Service,{SUFFIX}"),
        ],
    );
    s += &ldif_group("Platform", "groupOfNames", &[user_dn("dave")]);
    s += &ldif_group(
        "Ops",
        "groupOfUniqueNames",
        &[user_dn("bob"), user_dn("carol")],
    );
    s += &ldif_group("Posix", "posixGroup", &["erin".to_string()]);
    s += &ldif_group(
        "CycleA",
        "groupOfNames",
        &[group_dn("CycleB"), user_dn("alice")],
    );
    s += &ldif_group(
        "CycleB",
        "groupOfNames",
        &[group_dn("CycleA"), user_dn("bob")],
    );
    s
}

fn settings(server: &Slapd) -> LdapSettings {
    let mut s = LdapSettings::new(Flavour::OpenLdap, &server.url(), PEOPLE);
    s.group_base = GROUPS.into();
    s.bind_dn = Some(READER_DN.into());
    s.password = Some(SecretString::from(READER_PW));
    s.disabled_filter = Some("(employeeType=disabled)".into());
    s.timeout = Duration::from_secs(5);
    s
}

fn by_mail<'a>(d: &'a Directory, mail: &str) -> &'a SourceObject {
    d.users
        .values()
        .find(|u| u.attr("mail") == Some(Value::from(mail)))
        .unwrap_or_else(|| panic!("no user {mail}"))
}

fn by_name<'a>(d: &'a Directory, name: &str) -> &'a SourceObject {
    d.groups
        .values()
        .find(|g| g.attr("displayName") == Some(Value::from(name)))
        .unwrap_or_else(|| panic!("no group {name}"))
}

fn ids(d: &Directory, mails: &[&str]) -> BTreeSet<String> {
    mails.iter().map(|m| by_mail(d, m).id.clone()).collect()
}

fn members(d: &Directory, name: &str) -> BTreeSet<String> {
    by_name(d, name).members.iter().cloned().collect()
}

async fn read(source: &LdapSource, watermark: Option<&str>) -> (Directory, Option<String>) {
    let r = source.read(watermark).await.unwrap();
    (r.directory, r.watermark)
}

#[tokio::test]
async fn a_full_read_maps_attributes_and_resolves_references() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let source = LdapSource::new(settings(&server));
    let (d, watermark) = read(&source, None).await;
    assert!(d.complete);
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    assert_eq!(d.users.len(), 6);
    assert_eq!(d.groups.len(), 6);
    let w = watermark.unwrap();
    assert!(
        w.starts_with("2020") && w.ends_with('Z'),
        "the newest change time: {w}"
    );

    let alice = by_mail(&d, "alice@example.org");
    let bob = by_mail(&d, "bob@example.org");
    // entryUUID is the anchor.
    assert_eq!(alice.id.len(), 36, "{}", alice.id);
    let a = alice.attributes.to_map();
    assert_eq!(a["userPrincipalName"], json!("alice@example.org"));
    assert_eq!(a["mailNickname"], json!("alice"));
    assert_eq!(a["givenName"], json!("Alice"));
    assert_eq!(a["surname"], json!("Liddell"));
    assert_eq!(a["displayName"], json!("Alice Liddell"));
    assert_eq!(a["jobTitle"], json!("Engineer"));
    assert_eq!(a["department"], json!("R&D"));
    assert_eq!(a["employeeId"], json!("1001"));
    assert_eq!(a["telephoneNumber"], json!("+1 555 0100"));
    assert_eq!(
        a["manager"],
        json!(bob.id),
        "the manager DN becomes bob's anchor"
    );
    assert_eq!(a["distinguishedName"], json!(user_dn("alice")));
    assert!(alice.enabled());
    // displayName falls back to cn.
    assert_eq!(
        bob.attributes.get("displayName").unwrap_or_default(),
        json!("Bob Builder")
    );
    assert!(!bob.attributes.contains_key("manager"));

    let zoe = by_mail(&d, "zoe@example.org");
    assert_eq!(
        zoe.attributes.get("givenName").unwrap_or_default(),
        json!("Zoë")
    );
    assert_eq!(
        zoe.attributes.get("surname").unwrap_or_default(),
        json!("Ünal")
    );
    assert_eq!(
        zoe.attributes.get("displayName").unwrap_or_default(),
        json!("Zoë Ünal — Łódź")
    );

    assert!(
        !by_mail(&d, "carol@example.org").enabled(),
        "disabled_filter"
    );

    // Direct members: users and groups; the service account outside the bases is left out.
    let platform = by_name(&d, "Platform").id.clone();
    let mut want = ids(&d, &["alice@example.org", "zoe@example.org"]);
    want.insert(platform);
    assert_eq!(members(&d, "Engineering"), want);
    assert_eq!(
        members(&d, "Ops"),
        ids(&d, &["bob@example.org", "carol@example.org"]),
        "uniqueMember"
    );
    assert_eq!(
        members(&d, "Posix"),
        ids(&d, &["erin@example.org"]),
        "memberUid"
    );
    assert!(d.assignments.is_empty());

    let stats = source.last_read().unwrap();
    assert!(stats.full && stats.complete);
    // 6 users, 1 disabled, 6 groups.
    assert_eq!(stats.entries_read, 13);
}

#[tokio::test]
async fn nested_groups_flatten_on_request_and_cycles_end() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let (direct, _) = read(&LdapSource::new(settings(&server)), None).await;
    let cycle_b = by_name(&direct, "CycleB").id.clone();
    let mut want = ids(&direct, &["alice@example.org"]);
    want.insert(cycle_b);
    assert_eq!(
        members(&direct, "CycleA"),
        want,
        "direct: the nested group itself"
    );

    let mut s = settings(&server);
    s.nested = Nested::Flatten;
    let (flat, _) = read(&LdapSource::new(s), None).await;
    assert_eq!(
        members(&flat, "Engineering"),
        ids(
            &flat,
            &["alice@example.org", "zoe@example.org", "dave@example.org"]
        )
    );
    let both = ids(&flat, &["alice@example.org", "bob@example.org"]);
    assert_eq!(members(&flat, "CycleA"), both);
    assert_eq!(members(&flat, "CycleB"), both);
}

#[tokio::test]
async fn paging_reads_past_the_server_size_limit() {
    if !available() {
        return;
    }
    let mut ldif = String::new();
    for i in 0..300 {
        ldif += &ldif_person(&format!("user{i:03}"), "User", &format!("Number {i}"), "");
    }
    let server = Slapd::start(
        &ldif,
        &Options {
            size_limit: 100,
            ..Options::default()
        },
    );

    // The limit is real: one unpaged search stops at 100 entries.
    let mut ldap = server.reader().await;
    let res = ldap
        .search(
            PEOPLE,
            ldap3::Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            vec!["1.1"],
        )
        .await
        .unwrap();
    assert_eq!(res.1.rc, 4, "sizeLimitExceeded");
    assert_eq!(
        res.0.len(),
        100,
        "the server's size limit applies to the reader"
    );

    let mut s = settings(&server);
    s.page_size = 50;
    let source = LdapSource::new(s);
    let (d, _) = read(&source, None).await;
    assert!(d.complete);
    assert_eq!(d.users.len(), 300);
    assert_eq!(source.last_read().unwrap().entries_read, 300);
}

#[tokio::test]
async fn assigned_groups_bring_their_members_and_a_user_moved_out_leaves_scope() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let mut s = settings(&server);
    s.assigned_groups = vec![group_dn("engineering")];
    s.assigned_users_filter = Some("(uid=erin)".into());
    let source = LdapSource::new(s);
    let (d, watermark) = read(&source, None).await;
    let eng = by_name(&d, "Engineering").id.clone();
    let erin = by_mail(&d, "erin@example.org").id.clone();
    let got: BTreeSet<String> = d
        .assignments
        .iter()
        .map(|a| a.principal_id.clone())
        .collect();
    assert_eq!(got, [eng.clone(), erin.clone()].into());
    let scoped = evaluate_scope(&d, &ScopeSettings::default());
    let alice = by_mail(&d, "alice@example.org").id.clone();
    assert_eq!(*scoped.users.get(&alice).unwrap(), Ok(()));
    assert_eq!(*scoped.users.get(&erin).unwrap(), Ok(()));
    assert_eq!(*scoped.groups.get(&eng).unwrap(), Ok(()));
    let dave = by_mail(&d, "dave@example.org").id.clone();
    assert_eq!(
        *scoped.users.get(&dave).unwrap(),
        Err(OutOfScope::NotAssigned),
        "nested: not in scope by default"
    );

    // Alice leaves the group: the group entry changes, an incremental read sees it.
    let mut admin = server.admin().await;
    admin
        .modify(
            &group_dn("Engineering"),
            vec![Mod::Delete(
                "member",
                HashSet::from([user_dn("alice").as_str()]),
            )],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let (d, _) = read(&source, watermark.as_deref()).await;
    let stats = source.last_read().unwrap();
    assert!(!stats.full, "an incremental read");
    // The changed group, and at most the entry with the newest old change time, which the
    // read window (newest change − previous read's duration − 1 s) always includes.
    assert!(stats.entries_read <= 2, "{stats:?}");
    let scoped = evaluate_scope(&d, &ScopeSettings::default());
    assert_eq!(
        *scoped.users.get(&alice).unwrap(),
        Err(OutOfScope::NotAssigned)
    );
    assert!(
        d.users.contains_key(&alice),
        "still in the directory, just out of scope"
    );
}

#[tokio::test]
async fn an_incremental_read_fetches_only_changed_entries() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let source = LdapSource::new(settings(&server));
    let (before, w1) = read(&source, None).await;
    let mut admin = server.admin().await;
    admin
        .modify(
            &user_dn("alice"),
            vec![Mod::Replace("title", HashSet::from(["Principal Engineer"]))],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    admin
        .modify(
            &user_dn("bob"),
            vec![Mod::Replace("employeeType", HashSet::from(["disabled"]))],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let (after, w2) = read(&source, w1.as_deref()).await;
    let stats = source.last_read().unwrap();
    assert!(!stats.full && stats.complete);
    // 2 changed users, 1 of them also matched by the disabled filter; and at most the entry
    // with the newest old change time (see above).
    assert!((3..=4).contains(&stats.entries_read), "{stats:?}");
    assert!(after.complete);
    assert_eq!(after.users.len(), before.users.len(), "the whole directory");
    let alice = by_mail(&after, "alice@example.org");
    assert_eq!(
        alice.attributes.get("jobTitle").unwrap_or_default(),
        json!("Principal Engineer")
    );
    assert!(!by_mail(&after, "bob@example.org").enabled());
    assert!(w2 > w1, "{w2:?} > {w1:?}");

    // Nothing changed: an incremental read that fetches (almost) nothing.
    let (again, _) = read(&source, w2.as_deref()).await;
    // Only the window's entries again: the three changed ones, changed within the second.
    assert!(source.last_read().unwrap().entries_read <= 3);
    assert_eq!(again.users.len(), after.users.len());
}

#[tokio::test]
async fn a_deleted_user_is_gone_after_a_full_read() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let source = LdapSource::new(settings(&server));
    let (d, w) = read(&source, None).await;
    let erin = by_mail(&d, "erin@example.org").id.clone();
    let mut admin = server.admin().await;
    admin
        .delete(&user_dn("erin"))
        .await
        .unwrap()
        .success()
        .unwrap();

    // Deletions leave no trace an incremental read could find.
    let (d, w) = read(&source, w.as_deref()).await;
    assert!(d.users.contains_key(&erin));
    source.request_full_read();
    let (d, _) = read(&source, w.as_deref()).await;
    assert!(source.last_read().unwrap().full);
    assert!(d.complete);
    assert!(!d.users.contains_key(&erin), "gone after the full read");
    assert!(by_name(&d, "Posix").members.is_empty());

    // A caller without a watermark (a fresh state store) also gets a full read; so does
    // every read once full_read_interval has passed.
    let mut s = settings(&server);
    s.full_read_interval = Duration::from_millis(1);
    let source = LdapSource::new(s);
    let (_, w) = read(&source, None).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    read(&source, w.as_deref()).await;
    assert!(source.last_read().unwrap().full);
}

/// A TCP proxy to `upstream` that forwards `budget` bytes of the server's replies, then cuts
/// the connection: a connection lost in the middle of a search.
async fn cutting_proxy(upstream: u16, budget: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                .await
                .unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            tokio::spawn(async move {
                let mut left = budget;
                let mut buf = vec![0u8; 4096];
                while left > 0 {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(left),
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    left -= n;
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_connection_lost_mid_read_returns_an_incomplete_directory() {
    if !available() {
        return;
    }
    let mut ldif = String::new();
    for i in 0..300 {
        ldif += &ldif_person(&format!("user{i:03}"), "User", &format!("Number {i}"), "");
    }
    let server = Slapd::start(&ldif, &Options::default());
    let port = cutting_proxy(server.port, 30_000).await;
    let mut s = settings(&server);
    s.url = format!("ldap://127.0.0.1:{port}");
    s.page_size = 50;
    let source = LdapSource::new(s);
    let r = source
        .read(None)
        .await
        .expect("a partial read, not an error");
    assert!(!r.directory.complete);
    let n = r.directory.users.len();
    assert!(n > 0 && n < 300, "{n} users");
    assert!(!source.last_read().unwrap().complete);

    // The planner's side: with complete == false nothing is disabled or deleted (tested in
    // cycle tests); here, the next read is full again and complete.
    let mut s = settings(&server);
    s.page_size = 50;
    let direct = LdapSource::new(s);
    assert!(direct.read(None).await.unwrap().directory.complete);
}

#[tokio::test]
async fn a_server_killed_between_reads_keeps_the_snapshot_out_of_harm() {
    if !available() {
        return;
    }
    let mut server = Slapd::start(&directory_ldif(), &Options::default());
    let source = LdapSource::new(settings(&server));
    let (d, w) = read(&source, None).await;
    server.kill();
    let e = source.read(w.as_deref()).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    server.restart();
    let (again, _) = read(&source, w.as_deref()).await;
    assert_eq!(again.users.len(), d.users.len());
    assert!(again.complete);
}

#[tokio::test]
async fn bind_and_connection_failures_are_precise_and_keep_the_password_secret() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());

    let ok = LdapSource::new(settings(&server))
        .test_connection()
        .await
        .unwrap();
    assert!(ok.contains("bound as cn=reader"), "{ok}");
    assert!(ok.contains("user base ou=People"), "{ok}");

    let mut s = settings(&server);
    s.password = Some(SecretString::from("wrong-pa55word-also-secret"));
    let source = LdapSource::new(s);
    for e in [
        source.read(None).await.unwrap_err(),
        source.test_connection().await.unwrap_err(),
    ] {
        let msg = e.to_string();
        assert!(
            msg.contains("invalid credentials (LDAP result 49)"),
            "{msg}"
        );
        assert!(!e.is_retryable());
        assert!(matches!(
            e,
            SourceError::Ldap {
                source: LdapError::InvalidCredentials { .. }
            }
        ));
        for shown in [msg, format!("{e:?}"), format!("{source:?}")] {
            assert!(!shown.contains("wrong-pa55word"), "{shown}");
            assert!(!shown.contains(READER_PW), "{shown}");
        }
    }

    let mut s = settings(&server);
    s.user_base = "ou=Nobody,dc=example,dc=org".into();
    let e = LdapSource::new(s).test_connection().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("user base ou=Nobody,dc=example,dc=org not found (LDAP result 32)"),
        "{e}"
    );

    let mut s = settings(&server);
    let free = crate::support::free_port();
    s.url = format!("ldap://127.0.0.1:{free}");
    let e = LdapSource::new(s).test_connection().await.unwrap_err();
    assert!(
        e.to_string().contains("cannot connect to ldap://127.0.0.1"),
        "{e}"
    );
    assert!(e.is_retryable());

    // LDAPS to a server that speaks plain LDAP: a TLS failure, said so.
    let mut s = settings(&server);
    s.url = format!("ldaps://127.0.0.1:{}", server.port);
    let e = LdapSource::new(s).test_connection().await.unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
    // StartTLS on a server without TLS configured: refused, said so.
    let mut s = settings(&server);
    s.starttls = true;
    let e = LdapSource::new(s).test_connection().await.unwrap_err();
    assert!(e.to_string().contains("StartTLS"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// End to end: an LDAP job through run_cycle into the SCIM sandbox.

#[tokio::test]
async fn ldap_users_and_groups_land_in_the_scim_sandbox() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let mut s = settings(&server);
    s.assigned_groups = vec![group_dn("Engineering"), group_dn("Ops")];
    s.nested = Nested::Flatten;
    let h = sandbox(vec![]).await;
    let target = client(&h.base_url());
    let store = MemoryStore::new();
    let job = job_with_source(Box::new(LdapSource::new(s)));

    let first = run_ok(&job, &store, &target).await;
    assert!(first.source_complete);
    assert_eq!(first.users.created, 4, "{first:#?}");
    // alice, zoe, dave (flattened from Platform), bob; carol is disabled.
    let names: BTreeSet<String> = h
        .users()
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["alice", "bob", "dave", "zoe"]
            .iter()
            .map(|n| format!("{n}@example.org"))
            .collect()
    );
    let alice = user(&h, "alice@example.org");
    assert_eq!(alice["name"]["givenName"], json!("Alice"));
    assert_eq!(alice["name"]["familyName"], json!("Liddell"));
    assert_eq!(alice["displayName"], json!("Alice Liddell"));
    assert_eq!(alice["title"], json!("Engineer"));
    assert_eq!(alice[ENTERPRISE]["department"], json!("R&D"));
    assert_eq!(alice[ENTERPRISE]["employeeNumber"], json!("1001"));
    assert_eq!(
        alice[ENTERPRISE]["manager"]["value"],
        json!(id(&user(&h, "bob@example.org")))
    );
    let zoe = user(&h, "zoe@example.org");
    assert_eq!(zoe["name"]["givenName"], json!("Zoë"));
    assert_eq!(zoe["displayName"], json!("Zoë Ünal — Łódź"));
    assert_eq!(
        member_ids(&group(&h, "Engineering")),
        ids_of(
            &h,
            &["alice@example.org", "zoe@example.org", "dave@example.org"]
        )
    );
    assert_eq!(
        member_ids(&group(&h, "Ops")),
        ids_of(&h, &["bob@example.org"])
    );
    assert!(try_group(&h, "Platform").is_none(), "not assigned");
    assert_converged(&job, &store, &target).await;

    // Changes in the directory: a promotion, zoe leaves Engineering (out of scope →
    // disabled), carol is enabled again (→ created).
    let mut admin = server.admin().await;
    admin
        .modify(
            &user_dn("alice"),
            vec![Mod::Replace("title", HashSet::from(["Principal Engineer"]))],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    admin
        .modify(
            &group_dn("Engineering"),
            vec![Mod::Delete(
                "member",
                HashSet::from([user_dn("zoe").as_str()]),
            )],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    admin
        .modify(
            &user_dn("carol"),
            vec![Mod::Delete("employeeType", HashSet::<&str>::new())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let second = run_ok(&job, &store, &target).await;
    assert_eq!(second.kind, provisiond::CycleKind::Incremental);
    assert_eq!(second.users.updated, 1, "{second:#?}");
    assert_eq!(second.users.disabled, 1, "{second:#?}");
    assert_eq!(second.users.created, 1, "{second:#?}");
    assert_eq!(
        user(&h, "alice@example.org")["title"],
        json!("Principal Engineer")
    );
    assert_eq!(user(&h, "zoe@example.org")["active"], json!(false));
    assert_eq!(user(&h, "carol@example.org")["active"], json!(true));
    assert_eq!(
        member_ids(&group(&h, "Engineering")),
        ids_of(&h, &["alice@example.org", "dave@example.org"])
    );
    assert_eq!(
        member_ids(&group(&h, "Ops")),
        ids_of(&h, &["bob@example.org", "carol@example.org"])
    );
    assert_converged(&job, &store, &target).await;
}

#[tokio::test]
async fn an_ldap_job_from_the_config_file_with_scope_all() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let h = sandbox(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ldap-password"), format!("{READER_PW}\n")).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let text = format!(
        r#"
state_dir = "state"
[[jobs]]
name = "ldap"
scope = "all"
[jobs.source]
kind = "ldap"
url = "{url}"
bind_dn = "{READER_DN}"
password_file = "ldap-password"
user_base = "{PEOPLE}"
group_base = "{GROUPS}"
group_filter = "(objectClass=groupOfNames)"
disabled_filter = "(employeeType=disabled)"
page_size = 2
[jobs.source.attributes]
jobTitle = "employeeType"
[jobs.target]
url = "{target}"
token_file = "token"
"#,
        url = server.url(),
        target = h.base_url()
    );
    let path = dir.path().join("provisiond.toml");
    std::fs::write(&path, &text).unwrap();
    let config = provisiond::Config::load(&path).unwrap();
    assert!(!format!("{config:?}").contains(READER_PW));
    let job = config.jobs[0].spec();
    assert!(job.source.test_connection().await.is_ok());
    let store = MemoryStore::new();
    let target = client(&h.base_url());
    let summary = run_ok(&job, &store, &target).await;
    // Everyone but carol (disabled); the four groupOfNames groups.
    assert_eq!(summary.users.created, 5, "{summary:#?}");
    assert_eq!(summary.groups.created, 4, "{summary:#?}");
    assert!(
        user(&h, "alice@example.org").get("title").is_none(),
        "jobTitle remapped"
    );
}

#[tokio::test]
async fn ldaps_and_starttls_check_the_server_certificate() {
    if !available() || !certs::openssl_available() {
        return;
    }
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let server = Slapd::start(
        &directory_ldif(),
        &Options {
            tls: true,
            ..Options::default()
        },
    );
    let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(server.ca_pem())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let tls_port = server.tls_port.unwrap();

    let mut ldaps = settings(&server);
    ldaps.url = format!("ldaps://127.0.0.1:{tls_port}");
    ldaps.ca_certs = ca.clone();
    let source = LdapSource::new(ldaps.clone());
    let ok = source.test_connection().await.unwrap();
    assert!(ok.contains("(TLS)"), "{ok}");
    assert_eq!(source.read(None).await.unwrap().directory.users.len(), 6);

    let mut starttls = settings(&server);
    starttls.starttls = true;
    starttls.ca_certs = ca;
    let ok = LdapSource::new(starttls).test_connection().await.unwrap();
    assert!(ok.contains("(StartTLS)"), "{ok}");

    // The same server without its CA: the certificate is not trusted, and the message says
    // it is a TLS matter.
    ldaps.ca_certs.clear();
    let e = LdapSource::new(ldaps.clone())
        .test_connection()
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("TLS with ldaps://127.0.0.1"), "{msg}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn an_incomplete_read_disables_and_deletes_nothing() {
    if !available() {
        return;
    }
    let mut ldif = String::new();
    for i in 0..300 {
        ldif += &ldif_person(&format!("user{i:03}"), "User", &format!("Number {i}"), "");
    }
    let server = Slapd::start(&ldif, &Options::default());
    let h = sandbox(vec![]).await;
    let target = client(&h.base_url());
    let store = MemoryStore::new();
    let all = |s: LdapSettings| {
        let mut job = job_with_source(Box::new(LdapSource::new(s)));
        job.scope.mode = provisiond::ScopeMode::All;
        job
    };
    let mut s = settings(&server);
    s.page_size = 50;
    let first = run_ok(&all(s.clone()), &store, &target).await;
    assert_eq!(first.users.created, 300);

    // The same job, but the connection drops part-way through the read.
    let port = cutting_proxy(server.port, 30_000).await;
    s.url = format!("ldap://127.0.0.1:{port}");
    let cut = run(&all(s), &store, &target).await.summary;
    assert!(!cut.source_complete, "{cut:#?}");
    assert_eq!(cut.users.disabled, 0, "{cut:#?}");
    assert_eq!(cut.users.deleted, 0, "{cut:#?}");
    assert_eq!(h.users().len(), 300);
    assert!(h.users().iter().all(|u| u["active"] == json!(true)));
}

/// An enabled attribute with a value that is neither true nor false: the entry is skipped with
/// a reason naming its anchor and the attribute, its account and memberships are kept (never
/// taken as enabled, never disabled or removed from its groups).
#[tokio::test]
async fn an_unrecognised_enabled_value_skips_the_user_and_keeps_her_account_and_groups() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let mut s = settings(&server);
    s.disabled_filter = None;
    s.user_attributes
        .insert("accountEnabled".into(), vec!["employeeType".into()]);
    s.assigned_groups = vec![group_dn("Ops")];
    let h = sandbox(vec![]).await;
    let target = client(&h.base_url());
    let store = MemoryStore::new();
    let job = job_with_source(Box::new(LdapSource::new(s.clone())));
    run_ok(&job, &store, &target).await;
    // carol's `employeeType: disabled` is a recognised "false": not created.
    assert!(try_user(&h, "carol@example.org").is_none());
    assert_eq!(user(&h, "bob@example.org")["active"], json!(true));
    let ops = ids_of(&h, &["bob@example.org"]);
    assert_eq!(member_ids(&group(&h, "Ops")), ops);

    // A fresh source (a full read) and the same source (an incremental one) both reject bob.
    let mut admin = server.admin().await;
    admin
        .modify(
            &user_dn("bob"),
            vec![Mod::Replace("employeeType", HashSet::from(["maybe"]))],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let (d, _) = read(&LdapSource::new(s), None).await;
    let bob_dn = user_dn("bob");
    let rejected = d
        .rejected
        .iter()
        .find(|r| r.position.eq_ignore_ascii_case(&bob_dn))
        .unwrap_or_else(|| panic!("bob not rejected: {:?}", d.rejected));
    assert!(rejected.id.is_some(), "rejected with its anchor");
    assert!(rejected.reason.contains("employeeType") && rejected.reason.contains("maybe"));
    assert!(!d
        .users
        .values()
        .any(|u| u.attr("mail") == Some(json!("bob@example.org"))));

    let report = run(&job, &store, &target).await;
    let summary = report.summary;
    assert_eq!(
        summary.status,
        provisiond::CycleStatus::EntryLevelErrors,
        "{summary:#?}"
    );
    assert!(
        summary
            .problems
            .iter()
            .any(|p| p.code == "InvalidSourceObject" && p.id == rejected.id),
        "{summary:#?}"
    );
    assert_eq!(summary.users.disabled, 0, "{summary:#?}");
    assert_eq!(summary.users.deleted, 0, "{summary:#?}");
    assert_eq!(user(&h, "bob@example.org")["active"], json!(true));
    assert_eq!(member_ids(&group(&h, "Ops")), ops, "memberships kept");
}

/// Provision on demand reads the user, its marks and its groups with a few searches, not the
/// directory; and a group with its asked members.
#[tokio::test]
async fn on_demand_reads_one_user_or_group() {
    use provisiond::{ObjectType, OneQuery};
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let mut s = settings(&server);
    s.assigned_groups = vec![group_dn("Ops")];
    let source = LdapSource::new(s);
    let user = |key: &str| OneQuery {
        object_type: ObjectType::User,
        key: key.into(),
        members: vec![],
    };

    // Bob by mail: in Ops (groupOfUniqueNames, assigned) and CycleB.
    let one = source
        .read_one(&user("BOB@example.org"))
        .await
        .unwrap()
        .unwrap();
    let d = &one.directory;
    assert_eq!(d.users.len(), 1);
    assert_eq!(by_mail(d, "bob@example.org").id, one.id);
    let names: BTreeSet<&str> = d.groups.values().map(|g| g.display_name()).collect();
    assert_eq!(names, BTreeSet::from(["CycleB", "Ops"]));
    assert!(d.groups.values().all(|g| g.members == [one.id.clone()]));
    let scoped = evaluate_scope(d, &ScopeSettings::default());
    assert_eq!(
        *scoped.users.get(&one.id).unwrap(),
        Ok(()),
        "assigned through Ops"
    );

    // By the anchor too; carol is disabled by the disabled_filter; erin through memberUid.
    let again = source.read_one(&user(&one.id)).await.unwrap().unwrap();
    assert_eq!(again.id, one.id);
    let carol = source
        .read_one(&user("carol@example.org"))
        .await
        .unwrap()
        .unwrap();
    let scoped = evaluate_scope(&carol.directory, &ScopeSettings::default());
    assert_eq!(
        *scoped.users.get(&carol.id).unwrap(),
        Err(OutOfScope::Disabled)
    );
    let erin = source
        .read_one(&user("erin@example.org"))
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = erin
        .directory
        .groups
        .values()
        .map(|g| g.display_name())
        .collect();
    assert_eq!(names, ["Posix"]);
    assert!(source
        .read_one(&user("nobody@example.org"))
        .await
        .unwrap()
        .is_none());
    // The incremental reads' snapshot was not touched: no read has happened.
    assert!(source.last_read().is_none());

    // A group by name with two asked members, one of them not in it.
    let q = OneQuery {
        object_type: ObjectType::Group,
        key: "engineering".into(),
        members: vec!["alice@example.org".into(), "bob@example.org".into()],
    };
    let g = source.read_one(&q).await.unwrap().unwrap();
    assert_eq!(g.member_ids.len(), 2);
    assert_eq!(g.directory.users.len(), 2);
    let alice = by_mail(&g.directory, "alice@example.org").id.clone();
    assert_eq!(g.directory.groups.get(&g.id).unwrap().members, [alice]);
}

/// A restarted process continues from the snapshot and watermark the state store kept
/// (`Source::snapshot` / `Source::restore`, which the cycle calls): it reads only entries
/// changed since, and has the whole directory. A record from other settings is refused.
#[tokio::test]
async fn a_restored_snapshot_reads_only_changes_after_a_restart() {
    if !available() {
        return;
    }
    let server = Slapd::start(&directory_ldif(), &Options::default());
    let first = LdapSource::new(settings(&server));
    let (before, w1) = read(&first, None).await;
    let bytes = first
        .snapshot()
        .await
        .expect("a full read leaves a snapshot to keep");
    assert!(
        first.snapshot().await.is_none(),
        "unchanged since it was taken"
    );
    drop(first);

    let mut admin = server.admin().await;
    admin
        .modify(
            &user_dn("alice"),
            vec![Mod::Replace("title", HashSet::from(["Principal Engineer"]))],
        )
        .await
        .unwrap()
        .success()
        .unwrap();

    // Another process: a new source, given what the store kept.
    let restarted = LdapSource::new(settings(&server));
    assert!(restarted.wants_snapshot().await);
    restarted.restore(&bytes).await.unwrap();
    assert!(!restarted.wants_snapshot().await);
    let (after, _) = read(&restarted, w1.as_deref()).await;
    let stats = restarted.last_read().unwrap();
    assert!(!stats.full && stats.complete, "{stats:?}");
    assert!(stats.entries_read <= 3, "{stats:?}");
    assert_eq!(ids_of_users(&after), ids_of_users(&before));
    assert_eq!(
        by_mail(&after, "alice@example.org")
            .attributes
            .get("jobTitle")
            .unwrap_or_default(),
        json!("Principal Engineer")
    );

    // Other settings (another filter): the record is of no use; the read is full.
    let mut other = settings(&server);
    other.user_filter = "(&(objectClass=inetOrgPerson)(mail=*))".into();
    let changed = LdapSource::new(other);
    assert!(changed.restore(&bytes).await.is_err());
    let damaged = LdapSource::new(settings(&server));
    assert!(damaged.restore(&bytes[..bytes.len() / 2]).await.is_err());
    read(&damaged, w1.as_deref()).await;
    assert!(damaged.last_read().unwrap().full);
}

fn ids_of_users(d: &Directory) -> BTreeSet<String> {
    d.users.keys().cloned().collect()
}

/// Users the delta tests' directory holds besides `directory_ldif`'s.
const FILLERS: usize = 30;

/// `directory_ldif` with [`FILLERS`] more people titled `Filler`, in a group `Fillers` or not.
fn delta_ldif(in_a_group: bool) -> String {
    let mut s = directory_ldif();
    let mut fillers = Vec::new();
    for i in 0..FILLERS {
        let uid = format!("fill{i:02}");
        s += &ldif_person(&uid, "Fill", &format!("Er{i:02}"), "title: Filler\n");
        fillers.push(user_dn(&uid));
    }
    if in_a_group {
        s += &ldif_group("Fillers", "groupOfNames", &fillers);
    }
    s
}

/// Objects a cycle looked at: a delta cycle counts only those of its view.
fn looked_at(s: &provisiond::CycleSummary) -> u64 {
    s.users.created + s.users.updated + s.users.unchanged + s.users.disabled + s.users.deleted
}

async fn modify(server: &Slapd, dn: &str, mods: Vec<Mod<&str>>) {
    let mut admin = server.admin().await;
    admin.modify(dn, mods).await.unwrap().success().unwrap();
}

/// A delta cycle (issue 12) after a few changes plans and sends only them: a promotion, a
/// user newly matching `disabled_filter` (disabled), a user taken out of a nested group (her
/// flattened membership of the parent goes, and with it her scope: disabled) and one put into
/// it (the parent gains her), a user no longer matching `assigned_users_filter` (disabled).
/// The others are neither planned nor read at the target.
#[tokio::test]
async fn an_ldap_delta_cycle_sends_only_the_changes() {
    if !available() {
        return;
    }
    // The fillers are assigned by a filter: in a group, they would all be in the view of a
    // change to one of them (a changed user's groups are planned with all their members).
    let server = Slapd::start(&delta_ldif(false), &Options::default());
    let mut s = settings(&server);
    s.assigned_groups = vec![group_dn("Engineering"), group_dn("Ops")];
    s.assigned_users_filter = Some("(title=Filler)".into());
    s.nested = Nested::Flatten;
    let h = sandbox(vec![]).await;
    let target = client(&h.base_url());
    let store = MemoryStore::new();
    let job = job_with_source(Box::new(LdapSource::new(s)));
    let first = run_ok(&job, &store, &target).await;
    assert!(first.users.created > FILLERS as u64, "{first:#?}");
    // A change moves the newest change time from the LDIF's old ones to now, so that the
    // next reads' window (the newest time less the read's duration) holds only new changes.
    modify(
        &server,
        &user_dn("fill29"),
        vec![Mod::Replace(
            "telephoneNumber",
            HashSet::from(["+1 555 0199"]),
        )],
    )
    .await;
    let second = run_ok(&job, &store, &target).await;
    assert_eq!(second.users.updated, 1, "{second:#?}");
    assert_converged(&job, &store, &target).await;

    modify(
        &server,
        &user_dn("alice"),
        vec![Mod::Replace("title", HashSet::from(["Principal Engineer"]))],
    )
    .await;
    modify(
        &server,
        &user_dn("bob"),
        vec![Mod::Replace("employeeType", HashSet::from(["disabled"]))],
    )
    .await;
    modify(
        &server,
        &group_dn("Platform"),
        vec![Mod::Replace(
            "member",
            HashSet::from([user_dn("fill05").as_str()]),
        )],
    )
    .await;
    modify(
        &server,
        &user_dn("fill07"),
        vec![Mod::Replace("title", HashSet::from(["Former"]))],
    )
    .await;
    let s = run_ok(&job, &store, &target).await;
    assert_eq!(s.kind, provisiond::CycleKind::Incremental);
    assert_eq!(s.users.updated, 1, "alice: {s:#?}");
    assert_eq!(
        s.users.disabled, 3,
        "bob (disabled_filter), dave (left Platform), fill07 (no longer assigned): {s:#?}"
    );
    assert_eq!(s.users.created, 0, "{s:#?}");
    assert!(
        looked_at(&s) < 10,
        "only the view is planned, not {FILLERS}+ users: {s:#?}"
    );
    assert_eq!(
        s.requests.get, 0,
        "no search, no read of anyone else: {s:#?}"
    );
    assert_eq!(
        user(&h, "alice@example.org")["title"],
        json!("Principal Engineer")
    );
    assert_eq!(user(&h, "bob@example.org")["active"], json!(false));
    assert_eq!(user(&h, "dave@example.org")["active"], json!(false));
    assert_eq!(user(&h, "fill07@example.org")["active"], json!(false));
    assert_eq!(
        member_ids(&group(&h, "Engineering")),
        ids_of(
            &h,
            &["alice@example.org", "zoe@example.org", "fill05@example.org"]
        ),
        "dave out of Engineering through Platform, fill05 in"
    );
    assert!(!member_ids(&group(&h, "Ops")).contains(&id(&user(&h, "bob@example.org"))));
    // PATCHes: alice's update, 3 disables, Engineering's added and removed member, Ops'
    // removed member; nothing for the 30 others.
    assert_eq!(
        (s.requests.post, s.requests.patch, s.requests.delete),
        (0, 7, 0),
        "{s:#?}"
    );
    assert_eq!(
        (s.memberships.added, s.memberships.removed),
        (1, 2),
        "{s:#?}"
    );
    assert_converged(&job, &store, &target).await;
}

/// Incremental reads never see a deletion: the full read every `full_read_interval` does,
/// and the cycle after it deletes the user.
#[tokio::test]
async fn a_full_read_every_full_read_interval_deletes_what_is_gone() {
    if !available() {
        return;
    }
    let server = Slapd::start(&delta_ldif(true), &Options::default());
    let mut s = settings(&server);
    s.assigned_groups = vec![group_dn("Fillers")];
    s.full_read_interval = Duration::from_secs(6);
    let h = sandbox(vec![]).await;
    let target = client(&h.base_url());
    let store = MemoryStore::new();
    let job = job_with_source(Box::new(LdapSource::new(s)));
    let started = std::time::Instant::now();
    run_ok(&job, &store, &target).await;
    let mut admin = server.admin().await;
    admin
        .delete(&user_dn("fill03"))
        .await
        .unwrap()
        .success()
        .unwrap();
    modify(
        &server,
        &user_dn("fill04"),
        vec![Mod::Replace("title", HashSet::from(["Changed"]))],
    )
    .await;
    let delta = run_ok(&job, &store, &target).await;
    assert_eq!(delta.users.updated, 1, "{delta:#?}");
    assert_eq!(
        delta.users.deleted, 0,
        "an incremental read cannot see it: {delta:#?}"
    );
    assert!(try_user(&h, "fill03@example.org").is_some());
    if let Some(left) = Duration::from_secs(7).checked_sub(started.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let full = run_ok(&job, &store, &target).await;
    assert_eq!(full.users.deleted, 1, "{full:#?}");
    assert!(try_user(&h, "fill03@example.org").is_none());
}
