//! The LDAP source: OpenLDAP (inetOrgPerson / groupOfNames) and Active Directory.
//!
//! A read binds, then runs paged subtree searches for users and groups (plus, when configured,
//! one search per `disabled_filter` / `assigned_users_filter`), and converts entries into our
//! attribute names keyed by their immutable anchor (`entryUUID`, `objectGUID`). Manager and
//! member DNs become anchors, so a rename never looks like a delete.
//!
//! **Incremental reads.** The source keeps the last snapshot in memory (the daemon keeps a
//! job's source alive between cycles). A later read fetches only entries whose change
//! timestamp (`modifyTimestamp`, AD `whenChanged`) is at or after the newest one seen, minus
//! the duration of the read that saw it (an entry changed during a read, after the read
//! passed it, is older than the newest timestamp seen but newer than the read's start), and
//! merges them. Deletions and entries leaving the filters only show in a full read, which
//! happens on the first read, every `full_read_interval`, when the caller has no watermark
//! (a fresh state store), or on [`LdapSource::request_full_read`].
//!
//! **Delta reads.** [`Source::read_changes`] answers an incremental read with what it changed
//! (`delta.rs`): the snapshot's DN and uid index and the built groups are kept and brought up
//! to date entry by entry, and [`Source::view`] builds only the users a view holds.
//!
//! **Incomplete reads.** A failure after some entries were read (a dropped connection, a
//! failed page, a timeout) returns what was read with `complete = false`, so the planner
//! disables and deletes nothing; the snapshot is left as it was and the next read is full
//! again if this one was. A failure before anything was read is a [`SourceError::Ldap`] carrying the typed
//! [`LdapError`].

pub(crate) mod config;
pub(crate) mod conn;
mod delta;
pub(crate) mod dn;
mod error;
mod persist;
mod snapshot;
pub(crate) mod values;

use super::{OneQuery, OneRead, SnapshotError, Source, SourceError, SourceRead};
use crate::model::{Changes, Directory, ObjectType};
use async_trait::async_trait;
use chrono::Utc;
use conn::{Conn, RawEntry};
pub use error::LdapError;
pub(crate) use error::TlsConfigError;
use secrecy::SecretString;
use serde::Deserialize;
use snapshot::Snapshot;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
pub(crate) use values::AttributeMap;

/// Which directory's conventions the defaults follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Flavour {
    #[default]
    #[serde(rename = "openldap")]
    OpenLdap,
    #[serde(rename = "ad")]
    Ad,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::OpenLdap => "openldap",
            Flavour::Ad => "ad",
        }
    }
}

/// How group members are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nested {
    /// Direct members only (users and groups), as Entra provisions them.
    #[default]
    Direct,
    /// Users reached through nested groups become direct members (Entra cannot).
    Flatten,
}

/// Everything an LDAP source needs. `Debug` never shows the password.
#[derive(Clone)]
pub struct LdapSettings {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// Extra trusted CA certificates (DER), besides the system's.
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// None: anonymous bind.
    pub bind_dn: Option<String>,
    pub password: Option<SecretString>,
    pub flavour: Flavour,
    pub user_base: String,
    pub user_filter: String,
    pub group_base: String,
    pub group_filter: String,
    /// Our attribute name → LDAP attributes (first present wins).
    pub user_attributes: AttributeMap,
    pub group_attributes: AttributeMap,
    pub anchor_attribute: String,
    pub timestamp_attribute: String,
    /// Users matching this filter (within `user_filter`) are disabled.
    pub disabled_filter: Option<String>,
    /// Groups whose members are assigned to the application (and which are provisioned).
    pub assigned_groups: Vec<String>,
    /// Users matching this filter are assigned to the application.
    pub assigned_users_filter: Option<String>,
    pub nested: Nested,
    /// The attribute `memberUid` values refer to.
    pub member_uid_attribute: String,
    pub page_size: u32,
    /// Connect, bind, and each reply of a search.
    pub timeout: Duration,
    pub full_read_interval: Duration,
}

impl std::fmt::Debug for LdapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSettings")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("ca_certs", &self.ca_certs.len())
            .field("bind_dn", &self.bind_dn)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("flavour", &self.flavour)
            .field("user_base", &self.user_base)
            .field("user_filter", &self.user_filter)
            .field("group_base", &self.group_base)
            .field("group_filter", &self.group_filter)
            .field("user_attributes", &self.user_attributes)
            .field("group_attributes", &self.group_attributes)
            .field("anchor_attribute", &self.anchor_attribute)
            .field("timestamp_attribute", &self.timestamp_attribute)
            .field("disabled_filter", &self.disabled_filter)
            .field("assigned_groups", &self.assigned_groups)
            .field("assigned_users_filter", &self.assigned_users_filter)
            .field("nested", &self.nested)
            .field("page_size", &self.page_size)
            .field("timeout", &self.timeout)
            .field("full_read_interval", &self.full_read_interval)
            .finish()
    }
}

/// Settings compare without looking at the password's value (only whether there is one).
impl PartialEq for LdapSettings {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

impl Eq for LdapSettings {}

impl LdapSettings {
    /// The flavour's defaults: its filters, attribute maps, anchor and timestamp attributes;
    /// groups under the user base; pages of 500; a 60 s timeout; a daily full read.
    pub fn new(flavour: Flavour, url: &str, user_base: &str) -> LdapSettings {
        LdapSettings {
            url: url.to_string(),
            starttls: false,
            ca_certs: Vec::new(),
            bind_dn: None,
            password: None,
            flavour,
            user_base: user_base.to_string(),
            user_filter: values::default_user_filter(flavour).to_string(),
            group_base: user_base.to_string(),
            group_filter: values::default_group_filter(flavour).to_string(),
            user_attributes: values::default_user_map(flavour),
            group_attributes: values::default_group_map(flavour),
            anchor_attribute: values::default_anchor(flavour).to_string(),
            timestamp_attribute: values::timestamp_attribute(flavour).to_string(),
            disabled_filter: None,
            assigned_groups: Vec::new(),
            assigned_users_filter: None,
            nested: Nested::Direct,
            member_uid_attribute: "uid".into(),
            page_size: 500,
            timeout: Duration::from_secs(60),
            full_read_interval: Duration::from_secs(24 * 3600),
        }
    }

    pub fn uses_tls(&self) -> bool {
        self.starttls || self.url.to_ascii_lowercase().starts_with("ldaps://")
    }

    /// The URL as `scheme://host:port`, for messages (never any user info).
    pub fn display_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(u) => {
                let host = u.host_str().unwrap_or("");
                match u.port() {
                    Some(p) => format!("{}://{host}:{p}", u.scheme()),
                    None => format!("{}://{host}", u.scheme()),
                }
            }
            Err(_) => self
                .url
                .rsplit_once('@')
                .map(|(_, h)| h.to_string())
                .unwrap_or_else(|| self.url.clone()),
        }
    }

    fn is_loopback(&self) -> bool {
        // ldap:// is not a "special" scheme to the url crate: its host is opaque text, even
        // an IP address.
        let Some(host) = url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
        else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    fn user_attribute_list(&self) -> Vec<String> {
        let mut names: Vec<String> = self.user_attributes.values().flatten().cloned().collect();
        names.push(self.anchor_attribute.clone());
        names.push(self.timestamp_attribute.clone());
        names.push(self.member_uid_attribute.clone());
        dedupe(names)
    }

    fn group_attribute_list(&self) -> Vec<String> {
        let mut names: Vec<String> = self.group_attributes.values().flatten().cloned().collect();
        names.extend(
            [
                &self.anchor_attribute,
                &self.timestamp_attribute,
                "member",
                "uniqueMember",
                "memberUid",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        dedupe(names)
    }
}

fn dedupe(names: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    names
        .into_iter()
        .filter(|n| !n.is_empty() && seen.insert(n.to_ascii_lowercase()))
        .collect()
}

/// `(&A B C)` from filters that may or may not carry their own parentheses.
pub(crate) fn and_filters(parts: &[&str]) -> String {
    let wrapped: Vec<String> = parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.starts_with('(') {
                p.to_string()
            } else {
                format!("({p})")
            }
        })
        .collect();
    match wrapped.len() {
        0 => "(objectClass=*)".into(),
        1 => wrapped.concat(),
        _ => format!("(&{})", wrapped.concat()),
    }
}

/// What the last read did, for logs, tests and the benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStats {
    pub full: bool,
    /// Entries fetched from the server by this read (all searches).
    pub entries_read: u64,
    pub complete: bool,
    pub duration: Duration,
}

struct State {
    snapshot: Option<Snapshot>,
    /// When the snapshot's full read finished.
    full_at: Option<Instant>,
    /// How long the read that produced the newest timestamp took (see the module docs).
    last_duration: Duration,
    /// The snapshot changed since it was last handed to the state store.
    dirty: bool,
    /// When [`Source::snapshot`] last handed it over.
    taken_at: Option<Instant>,
    /// The directory built from `snapshot`, less its users, kept up to date by delta reads
    /// ([`Source::read_changes`]); none after a restore until a read builds it.
    built: Option<delta::Built>,
}

/// An LDAP or Active Directory source.
pub struct LdapSource {
    settings: LdapSettings,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, TlsConfigError>>,
    state: tokio::sync::Mutex<State>,
    force_full: AtomicBool,
    last: std::sync::Mutex<Option<ReadStats>>,
    warned_cleartext: AtomicBool,
}

impl std::fmt::Debug for LdapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSource")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LdapSource {
    pub fn new(settings: LdapSettings) -> LdapSource {
        LdapSource {
            settings,
            tls: OnceLock::new(),
            state: tokio::sync::Mutex::new(State {
                snapshot: None,
                full_at: None,
                last_duration: Duration::ZERO,
                dirty: false,
                taken_at: None,
                built: None,
            }),
            force_full: AtomicBool::new(false),
            last: std::sync::Mutex::new(None),
            warned_cleartext: AtomicBool::new(false),
        }
    }

    pub fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    /// What a persisted snapshot must have been read with to be continued from: the
    /// directory and every setting that shapes an entry (filters, attributes, anchor).
    fn snapshot_context(&self) -> String {
        format!("{:?}", self.settings)
    }

    /// Make the next read a full one (which notices deletions).
    pub fn request_full_read(&self) {
        self.force_full.store(true, Ordering::SeqCst);
    }

    /// What the last read did.
    pub fn last_read(&self) -> Option<ReadStats> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, SourceError> {
        if !self.settings.uses_tls() {
            return Ok(None);
        }
        match self
            .tls
            .get_or_init(|| conn::tls_config(&self.settings.ca_certs))
        {
            Ok(c) => Ok(Some(c.clone())),
            Err(e) => Err(SourceError::from(LdapError::from(e.clone()))),
        }
    }

    async fn connect(&self) -> Result<Conn, SourceError> {
        let s = &self.settings;
        if !s.uses_tls()
            && s.password.is_some()
            && !s.is_loopback()
            && !self.warned_cleartext.swap(true, Ordering::SeqCst)
        {
            tracing::warn!(url = %s.display_url(), "the bind password crosses the network unencrypted: use ldaps:// or starttls = true");
        }
        let tls = self.tls()?;
        Ok(Conn::open(&self.settings, tls).await?)
    }

    /// Run the searches of one read into `into`; `since` limits them to changed entries.
    async fn read_entries(
        &self,
        conn: &mut Conn,
        into: &mut Snapshot,
        since: Option<chrono::DateTime<chrono::Utc>>,
        count: &mut u64,
    ) -> Result<(), LdapError> {
        let s = &self.settings;
        let changed = since.map(|t| {
            format!(
                "({}>={})",
                s.timestamp_attribute,
                values::format_generalized_time(t, s.flavour)
            )
        });
        let changed = changed.as_deref().unwrap_or("");

        let filter = and_filters(&[&s.user_filter, changed]);
        let attrs = s.user_attribute_list();
        *count += conn
            .search_paged(&s.user_base, &filter, &attrs, |e| {
                into.add(ObjectType::User, &e, s)
            })
            .await?;

        // Filters the server evaluates for us: the DNs that match mark the users read above.
        for (extra, disabled) in [
            (s.disabled_filter.as_deref(), true),
            (s.assigned_users_filter.as_deref(), false),
        ] {
            let Some(extra) = extra else { continue };
            let mut dns = HashSet::new();
            let filter = and_filters(&[&s.user_filter, extra, changed]);
            *count += conn
                .search_paged(&s.user_base, &filter, &["1.1".to_string()], |e| {
                    dns.insert(dn::normalize(&e.dn));
                })
                .await?;
            into.mark(&dns, disabled);
        }

        let filter = and_filters(&[&s.group_filter, changed]);
        self.search_groups(conn, into, &filter, count).await?;
        Ok(())
    }

    /// The groups matching `filter` (under `group_base`) into `into`, with every `member`
    /// value: AD sends large ones in ranges, fetched here. Returns the normalised DNs of the
    /// groups this search found.
    async fn search_groups(
        &self,
        conn: &mut Conn,
        into: &mut Snapshot,
        filter: &str,
        count: &mut u64,
    ) -> Result<HashSet<String>, LdapError> {
        let s = &self.settings;
        let attrs = s.group_attribute_list();
        let mut more: Vec<(RawEntry, u64)> = Vec::new();
        let mut found = HashSet::new();
        *count += conn
            .search_paged(&s.group_base, filter, &attrs, |mut e| {
                found.insert(dn::normalize(&e.dn));
                let mut next = None;
                for (name, _) in e.attrs.iter_mut() {
                    if let Some((_, end)) = conn::range_of(name, "member") {
                        *name = "member".into();
                        next = end.map(|end| end + 1);
                    }
                }
                match next {
                    Some(start) => more.push((e, start)),
                    None => into.add(ObjectType::Group, &e, s),
                }
            })
            .await?;
        for (mut entry, start) in more {
            let rest = conn.fetch_ranges(&entry.dn, "member", start).await?;
            tracing::debug!(group = %entry.dn, values = rest.len(), "read member values by range");
            if let Some((_, vals)) = entry.attrs.iter_mut().find(|(n, _)| n == "member") {
                vals.extend(rest);
            }
            into.add(ObjectType::Group, &entry, s);
        }
        Ok(found)
    }

    /// A read; with `want_changes`, an incremental one continuing from the directory the last
    /// read built, in step with the caller's watermark, answers with what changed and no
    /// objects ([`Source::read_changes`]).
    async fn read_as(
        &self,
        watermark: Option<&str>,
        want_changes: bool,
    ) -> Result<SourceRead, SourceError> {
        let s = &self.settings;
        let mut state = self.state.lock().await;
        let forced = self.force_full.swap(false, Ordering::SeqCst);
        let full_reason = match (&state.snapshot, state.full_at) {
            (None, _) | (_, None) => Some("first read"),
            (Some(_), _) if watermark.is_none() => Some("no stored watermark"),
            (Some(_), _) if forced => Some("requested"),
            (Some(_), Some(at)) if at.elapsed() >= s.full_read_interval => {
                Some("full_read_interval")
            }
            (Some(snap), _) if snap.newest.is_none() => Some("no change timestamps"),
            _ => None,
        };
        let since = match (&full_reason, &state.snapshot) {
            (None, Some(snap)) => snap.newest.map(|t| {
                // Whole seconds: timestamps are truncated to the second.
                t - chrono::Duration::from_std(state.last_duration).unwrap_or_default()
                    - chrono::Duration::seconds(1)
            }),
            _ => None,
        };
        let full = since.is_none();
        let started = Instant::now();
        tracing::info!(
            source = %self.describe(),
            full,
            reason = full_reason.unwrap_or("incremental"),
            since = ?since.map(|t| values::format_generalized_time(t, s.flavour)),
            "LDAP read started"
        );
        let mut conn = match self.connect().await {
            Ok(c) => c,
            Err(e) => {
                if forced {
                    self.force_full.store(true, Ordering::SeqCst);
                }
                return Err(e);
            }
        };
        let mut fresh = Snapshot::default();
        let mut entries_read = 0u64;
        let outcome = self
            .read_entries(&mut conn, &mut fresh, since, &mut entries_read)
            .await;
        conn.close().await;
        let elapsed = started.elapsed();

        let newest_of = |snap: &Snapshot| {
            snap.newest
                .map(|t| values::format_generalized_time(t, s.flavour))
                .or_else(|| watermark.map(str::to_string))
        };
        let mut changes: Option<Changes> = None;
        let (directory, complete) = match outcome {
            Ok(()) => {
                // A delta answer continues from the directory the last read built, when the
                // caller's watermark is the one that read answered with (a failed cycle's
                // read was never planned to the end) and the cycle that used it committed.
                let in_step = want_changes
                    && !full
                    && state.built.as_ref().is_some_and(|b| b.in_step(watermark));
                let (snap, before) = match (full, state.snapshot.take()) {
                    (false, Some(mut snap)) => {
                        let before =
                            in_step.then(|| delta::presences(&snap, &delta::touched(&fresh)));
                        snap.merge(fresh);
                        (snap, before)
                    }
                    _ => {
                        state.full_at = Some(Instant::now());
                        (fresh, None)
                    }
                };
                state.last_duration = elapsed;
                if full || entries_read > 0 {
                    state.dirty = true;
                }
                let now = newest_of(&snap);
                if let (Some(before), Some(built)) = (before, state.built.as_mut()) {
                    changes = built.advance(&snap, &before, s, now.clone());
                }
                let dir = match (&changes, state.built.as_ref()) {
                    (Some(_), Some(built)) => Directory {
                        assignments: built.assignments.clone(),
                        rejected: built.rejected(&snap),
                        complete: true,
                        ..Directory::default()
                    },
                    _ => {
                        changes = None;
                        let (dir, index, group_rejects) = snapshot::build(&snap, s, true);
                        if index.ambiguous {
                            tracing::info!("two LDAP entries share a DN or a uid: cycles plan the whole directory until they no longer do");
                        }
                        state.built =
                            Some(delta::Built::new(&dir, index, group_rejects, &snap, now));
                        dir
                    }
                };
                if snap.newest.is_none() && !snap.is_empty() {
                    tracing::info!(attribute = %s.timestamp_attribute, "no change timestamps could be read: every read is a full read");
                }
                state.snapshot = Some(snap);
                (dir, true)
            }
            Err(f) if fresh.is_empty() => {
                if forced {
                    self.force_full.store(true, Ordering::SeqCst);
                }
                tracing::warn!(error = %f, "LDAP read failed before any entry was read");
                return Err(f.into());
            }
            Err(f) => {
                // Keep what was read, on top of the previous snapshot when there is one; the
                // snapshot itself stays as it was, so nothing unread is taken as read.
                let partial = match &state.snapshot {
                    Some(old) => {
                        let mut m = old.clone();
                        m.merge(fresh);
                        m
                    }
                    None => fresh,
                };
                if forced {
                    self.force_full.store(true, Ordering::SeqCst);
                }
                tracing::warn!(
                    error = %f,
                    entries_read,
                    "LDAP read incomplete: what was read is used, nothing will be disabled or deleted"
                );
                if let Some(built) = state.built.as_mut() {
                    built.answered_whole();
                }
                (snapshot::build_directory(&partial, s, false), false)
            }
        };
        let stats = ReadStats {
            full,
            entries_read,
            complete,
            duration: elapsed,
        };
        tracing::info!(
            full,
            complete,
            entries_read,
            users = directory.users.len(),
            groups = directory.groups.len(),
            changed_users = changes.as_ref().map(|c| c.users.len()),
            changed_groups = changes.as_ref().map(|c| c.groups.len()),
            duration_ms = elapsed.as_millis() as u64,
            "LDAP read finished"
        );
        if let Ok(mut last) = self.last.lock() {
            *last = Some(stats);
        }
        Ok(SourceRead {
            directory,
            watermark: state
                .snapshot
                .as_ref()
                .and_then(newest_of)
                .or_else(|| watermark.map(str::to_string)),
            changes,
        })
    }

    /// A filter matching the objects of `ty` that answer to `key` as [`one::answers_to`]
    /// has it: the anchor, or the LDAP attributes our `userPrincipalName` and `mail` (users)
    /// or `displayName` (groups) are read from.
    fn key_filter(&self, ty: ObjectType, key: &str) -> String {
        let s = &self.settings;
        let mut parts: Vec<String> = Vec::new();
        if let Some(anchor) = anchor_filter_value(&s.anchor_attribute, key) {
            parts.push(format!("({}={anchor})", s.anchor_attribute));
        }
        let (map, names): (&AttributeMap, &[&str]) = match ty {
            ObjectType::User => (&s.user_attributes, &["userPrincipalName", "mail"]),
            ObjectType::Group => (&s.group_attributes, &["displayName"]),
        };
        let mut seen = HashSet::new();
        for attr in names.iter().filter_map(|n| map.get(*n)).flatten() {
            if seen.insert(attr.to_ascii_lowercase()) {
                parts.push(format!("({attr}={})", filter_escape(key.as_bytes())));
            }
        }
        format!("(|{})", parts.concat())
    }

    /// The searches of one on-demand read: the object by its key, the users' disabled and
    /// assigned marks, and the groups the users are direct members of (a user) or the asked
    /// members (a group).
    async fn read_one_entries(
        &self,
        conn: &mut Conn,
        into: &mut Snapshot,
        query: &OneQuery,
        count: &mut u64,
    ) -> Result<(), LdapError> {
        let s = &self.settings;
        let user_keys: Vec<String> = match query.object_type {
            ObjectType::User => vec![query.key.clone()],
            ObjectType::Group => query.members.clone(),
        };
        let attrs = s.user_attribute_list();
        let mut any_user = Vec::new();
        for key in &user_keys {
            let filter = and_filters(&[&s.user_filter, &self.key_filter(ObjectType::User, key)]);
            *count += conn
                .search_paged(&s.user_base, &filter, &attrs, |e| {
                    into.add(ObjectType::User, &e, s)
                })
                .await?;
            any_user.push(self.key_filter(ObjectType::User, key));
        }
        if !any_user.is_empty() {
            let any_user = format!("(|{})", any_user.concat());
            for (extra, disabled) in [
                (s.disabled_filter.as_deref(), true),
                (s.assigned_users_filter.as_deref(), false),
            ] {
                let Some(extra) = extra else { continue };
                let mut dns = HashSet::new();
                let filter = and_filters(&[&s.user_filter, extra, &any_user]);
                *count += conn
                    .search_paged(&s.user_base, &filter, &["1.1".to_string()], |e| {
                        dns.insert(dn::normalize(&e.dn));
                    })
                    .await?;
                into.mark(&dns, disabled);
            }
        }
        match query.object_type {
            ObjectType::User => {
                let users: Vec<(String, Option<String>)> = into
                    .users
                    .values()
                    .map(|e| (e.dn.clone(), e.uid.clone()))
                    .collect();
                for (user_dn, uid) in users {
                    let mut member = format!(
                        "(member={dn})(uniqueMember={dn})",
                        dn = filter_escape(user_dn.as_bytes())
                    );
                    if let Some(uid) = uid {
                        member.push_str(&format!("(memberUid={})", filter_escape(uid.as_bytes())));
                    }
                    let filter = and_filters(&[&s.group_filter, &format!("(|{member})")]);
                    let found = self.search_groups(conn, into, &filter, count).await?;
                    // The search proved the membership of the groups it found (not of those
                    // another matching user's search found), whatever form they list it in.
                    let normalized = dn::normalize(&user_dn);
                    for g in into
                        .groups
                        .values_mut()
                        .filter(|g| found.contains(&dn::normalize(&g.dn)))
                    {
                        if !g.member_dns.contains(&normalized) {
                            g.member_dns.push(normalized.clone());
                        }
                    }
                }
            }
            ObjectType::Group => {
                let filter = and_filters(&[
                    &s.group_filter,
                    &self.key_filter(ObjectType::Group, &query.key),
                ]);
                self.search_groups(conn, into, &filter, count).await?;
            }
        }
        Ok(())
    }
}

/// RFC 4515 escaping of an assertion value: `*`, `(`, `)`, `\`, NUL and every byte outside
/// printable ASCII as `\XX`.
fn filter_escape(raw: &[u8]) -> String {
    raw.iter()
        .map(|b| match b {
            b'*' | b'(' | b')' | b'\\' | 0 => format!("\\{b:02x}"),
            0x20..=0x7e => (*b as char).to_string(),
            _ => format!("\\{b:02x}"),
        })
        .collect()
}

/// The anchor as a filter value: AD's binary `objectGUID` from its text form (the GUID's
/// mixed-endian bytes, escaped); any other anchor as text. `None` when the key cannot be one.
fn anchor_filter_value(attribute: &str, key: &str) -> Option<String> {
    if attribute.eq_ignore_ascii_case("objectGUID") {
        let guid = uuid::Uuid::parse_str(key).ok()?;
        // Every byte escaped: a GUID's bytes are binary, whatever they look like.
        return Some(
            guid.to_bytes_le()
                .iter()
                .map(|b| format!("\\{b:02x}"))
                .collect(),
        );
    }
    Some(filter_escape(key.as_bytes()))
}

#[async_trait]
impl Source for LdapSource {
    fn system_name(&self) -> &'static str {
        "LDAP"
    }

    fn describe(&self) -> String {
        format!(
            "ldap {} ({}; users under {})",
            self.settings.display_url(),
            self.settings.flavour.as_str(),
            self.settings.user_base
        )
    }

    /// The server (without credentials) and the user base.
    fn identity(&self) -> Option<String> {
        Some(format!(
            "ldap {} users under {}",
            self.settings.display_url(),
            self.settings.user_base
        ))
    }

    async fn wants_snapshot(&self) -> bool {
        self.state.lock().await.snapshot.is_none()
    }

    async fn restore(&self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let p = persist::decode(bytes, &self.snapshot_context())?;
        let mut state = self.state.lock().await;
        if state.snapshot.is_some() {
            return Ok(());
        }
        // The full read's time is kept on the wall clock; in memory it is an `Instant`. A
        // time in the future or too far back to express means: read everything next.
        let full_at = p.full_at.and_then(|t| {
            let age = (Utc::now() - t).to_std().ok()?;
            Instant::now().checked_sub(age)
        });
        tracing::info!(
            users = p.snapshot.users.len(),
            groups = p.snapshot.groups.len(),
            full_read_at = ?p.full_at,
            "LDAP snapshot restored from the state store: reading only changes"
        );
        state.snapshot = Some(p.snapshot);
        // The first read after a restore answers with the whole directory (as Graph's).
        state.built = None;
        state.full_at = full_at;
        state.last_duration = p.last_duration;
        state.dirty = false;
        Ok(())
    }

    /// Called after every committed cycle: what the last read answered was planned.
    async fn snapshot(&self) -> Option<Vec<u8>> {
        let mut state = self.state.lock().await;
        if let Some(built) = state.built.as_mut() {
            built.confirm();
        }
        let recent = state
            .taken_at
            .is_some_and(|t| t.elapsed() < super::SNAPSHOT_EVERY);
        if !state.dirty || recent {
            return None;
        }
        let snapshot = state.snapshot.take()?;
        let full_at = state
            .full_at
            .and_then(|at| chrono::Duration::from_std(at.elapsed()).ok())
            .map(|age| Utc::now() - age);
        let p = persist::Persisted {
            snapshot,
            full_at,
            last_duration: state.last_duration,
        };
        let bytes = persist::encode(&p, &self.snapshot_context());
        state.snapshot = Some(p.snapshot);
        state.dirty = false;
        state.taken_at = Some(Instant::now());
        Some(bytes)
    }

    async fn read(&self, watermark: Option<&str>) -> Result<SourceRead, SourceError> {
        self.read_as(watermark, false).await
    }

    async fn read_changes(&self, watermark: Option<&str>) -> Result<SourceRead, SourceError> {
        self.read_as(watermark, true).await
    }

    fn reads_changes(&self) -> bool {
        true
    }

    async fn view(&self, focus: Option<(&Changes, &[String])>) -> Option<Directory> {
        let state = self.state.lock().await;
        let snap = state.snapshot.as_ref()?;
        Some(match focus {
            Some((changes, references)) => state.built.as_ref()?.view(snap, changes, references),
            None => snapshot::build_directory(snap, &self.settings, true),
        })
    }

    /// A handful of searches (the object by its key, its marks, its groups), never the
    /// directory; the snapshot of the incremental reads is left as it is.
    async fn read_one(&self, query: &OneQuery) -> Result<Option<OneRead>, SourceError> {
        let mut conn = self.connect().await?;
        let mut snap = Snapshot::default();
        let mut count = 0u64;
        let outcome = self
            .read_one_entries(&mut conn, &mut snap, query, &mut count)
            .await;
        conn.close().await;
        outcome?;
        tracing::info!(key = %query.key, object_type = %query.object_type, entries_read = count, "LDAP on-demand read");
        let dir = snapshot::build_directory(&snap, &self.settings, true);
        Ok(super::one::pick_one(dir, query))
    }

    async fn test_connection(&self) -> Result<String, SourceError> {
        let s = &self.settings;
        let mut conn = self.connect().await?;
        let mut report = vec![format!(
            "connected to {}{}, {}",
            s.display_url(),
            if s.starttls {
                " (StartTLS)"
            } else if s.uses_tls() {
                " (TLS)"
            } else {
                ""
            },
            match &s.bind_dn {
                Some(dn) => format!("bound as {dn}"),
                None => "bound anonymously".into(),
            }
        )];
        let mut probes = vec![("user", &s.user_base, &s.user_filter)];
        probes.push(("group", &s.group_base, &s.group_filter));
        for (what, base, filter) in probes {
            match conn.probe(what, base, filter).await {
                Ok(n) => report.push(format!(
                    "{what} base {base} found ({})",
                    if n == 0 {
                        format!("no entry matches {filter}")
                    } else {
                        format!("entries match {filter}")
                    }
                )),
                Err(f) => {
                    conn.close().await;
                    return Err(f.into());
                }
            }
        }
        conn.close().await;
        Ok(report.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_demand_filter_values_are_escaped_and_guids_are_binary() {
        assert_eq!(filter_escape(b"a*b(c)\\d\0"), "a\\2ab\\28c\\29\\5cd\\00");
        assert_eq!(filter_escape("é".as_bytes()), "\\c3\\a9");
        // objectGUID: the mixed-endian bytes of the text form, every one escaped.
        let guid = "01020304-0506-0708-090a-0b0c0d0e0f10";
        assert_eq!(
            anchor_filter_value("objectGUID", guid).unwrap(),
            "\\04\\03\\02\\01\\06\\05\\08\\07\\09\\0a\\0b\\0c\\0d\\0e\\0f\\10"
        );
        assert_eq!(
            values::guid_string(&uuid::Uuid::parse_str(guid).unwrap().to_bytes_le()).as_deref(),
            Some(guid)
        );
        assert_eq!(anchor_filter_value("objectGUID", "ann@x"), None);
        let s = LdapSettings::new(Flavour::OpenLdap, "ldap://127.0.0.1", "dc=x");
        let f = LdapSource::new(s).key_filter(ObjectType::User, "ann@x");
        assert_eq!(f, "(|(entryUUID=ann@x)(mail=ann@x))");
    }

    #[test]
    fn filters_combine() {
        assert_eq!(and_filters(&["(a=1)", ""]), "(a=1)");
        assert_eq!(and_filters(&["a=1", "(b=2)"]), "(&(a=1)(b=2))");
        assert_eq!(and_filters(&[]), "(objectClass=*)");
    }

    #[test]
    fn debug_and_messages_never_show_the_password() {
        let mut s = LdapSettings::new(Flavour::Ad, "ldaps://dc.example.com", "dc=example,dc=com");
        s.bind_dn = Some("cn=svc,dc=example,dc=com".into());
        s.password = Some(SecretString::from("hunter2-very-secret"));
        let src = LdapSource::new(s.clone());
        for text in [format!("{s:?}"), format!("{src:?}"), src.describe()] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert!(format!("{s:?}").contains("[REDACTED]"));
    }

    #[test]
    fn display_url_drops_user_info() {
        let s = LdapSettings::new(Flavour::OpenLdap, "ldap://u:p@h:389/", "dc=x");
        assert_eq!(s.display_url(), "ldap://h:389");
        assert!(!s.is_loopback());
        let local = LdapSettings::new(Flavour::OpenLdap, "ldap://127.0.0.1:3890", "dc=x");
        assert!(local.is_loopback() && !local.uses_tls());
        let tls = LdapSettings::new(Flavour::Ad, "LDAPS://dc1", "dc=x");
        assert!(tls.uses_tls());
    }
}
