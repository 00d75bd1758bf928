//! The sled-backed [`StateStore`].
//!
//! Layout: tree `meta` holds `schema_version`; tree `jobs` holds one [`JobMeta`] per job name,
//! as a JSON envelope `{"v": <schema>, "d": <record>}`; tree `links/<job>` holds one [`Link`]
//! per object, keyed `u:<source id>` / `g:<source id>`, and the tree's name dictionary,
//! keyed `n:<number>`.
//!
//! Link records (schema 2) are binary: a format byte, then the fields as length-prefixed
//! strings, and the last exported values with their names (SCIM paths, up to 70 bytes each)
//! replaced by numbers from the dictionary. A user's record shrank from about 850 bytes of
//! JSON to about 330, and sled keeps every record a cycle reads in memory, so this is most of
//! the store's share of a cycle's memory. Schema 1 records (JSON envelopes, starting with
//! `{`) are still read; they are rewritten in the new form as their objects change.
//!
//! The dictionary only grows, and a name's entry is written in the same atomic batch as the
//! first record that uses it, so a record never names a number the store doesn't have.

use super::{
    EscrowEntry, Exported, JobMeta, Link, LinkIndexBuilder, LinksWriter, OutboxMessage,
    ReportedFailures, StagedDelete, StateError, StateStore, SCHEMA_VERSION,
};
use crate::attrs::codec::{put_bytes, put_varint, Reader};
use crate::attrs::compact::{local_name, LocalName};
use crate::attrs::map::{intern, Key};
use crate::model::ObjectType;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The first byte of a schema 2 link record (schema 1 records are JSON and start with `{`).
const LINK_FORMAT: u8 = 2;
/// Names per job dictionary; further names are written out in full.
const MAX_DICT: usize = 1 << 20;
const DICT_PREFIX: &[u8] = b"n:";

/// Source snapshot trees (`snapshot/<job>`): the pointer record's key and format, and the
/// prefix of the chunks, `c` + generation (u64 BE) + chunk number (u32 BE).
const SNAPSHOT_POINTER: &[u8] = b"p";
const SNAPSHOT_FORMAT: u8 = 1;
const SNAPSHOT_CHUNK_PREFIX: u8 = b'c';
/// Chunk size: sled keeps whole values in its cache, so a snapshot of a large tenant is
/// written as many moderate values rather than one huge one.
const SNAPSHOT_CHUNK: usize = 4 * 1024 * 1024;

/// Cap sled's page cache: its default is 1 GiB, far more than links need. 16 MiB, not 64:
/// at 100,000 links the no-change cycle's peak RSS was 6 MB lower (244 against 250 MB) and
/// the initial cycle's (which writes every link) 49 MB lower (237 against 286 MB), neither
/// slower; 8 MiB saved nothing more (README, "Links held compactly, and sled's share").
/// Registry sled did not hold this cap (256 LRU shards whose access queues kept up to 16,384
/// pages uncounted); the vendored sled gives 16 MiB 16 shards (vendor/sled/PATCHES.md).
pub(crate) const CACHE_BYTES: u64 = 16 * 1024 * 1024;

pub struct SledStore {
    db: sled::Db,
    jobs: sled::Tree,
    path: PathBuf,
    /// Each job's name dictionary, loaded on first use; writers of a job take turns here so
    /// two never give a name two numbers.
    dicts: Dicts,
    /// Serialises the outbox's writers, so that a push's capacity check and the sender's
    /// update of an attempt see each other whole (a dropped message is not written back).
    outbox_lock: Mutex<()>,
    /// The page-cache cap sled was opened with ([`SledStore::open_with_cache`]).
    cache_bytes: u64,
}

/// A links tree's name dictionary.
#[derive(Default)]
struct Dict {
    names: Vec<Key>,
    ids: HashMap<Key, u32>,
}

impl Dict {
    /// The number of `name`, given one if it has none (`None` once the dictionary is full:
    /// the record then spells the name out).
    fn number(&mut self, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        if self.names.len() >= MAX_DICT {
            return None;
        }
        let id = self.names.len() as u32;
        let k = intern(name);
        self.names.push(k.clone());
        self.ids.insert(k, id);
        Some(id)
    }

    fn load(tree: &sled::Tree, path: &Path) -> Result<Dict, StateError> {
        let mut entries: Vec<(u32, Key)> = Vec::new();
        for item in tree.scan_prefix(DICT_PREFIX) {
            let (k, v) = item.map_err(|e| storage(path, e))?;
            let corrupt = |message: &str| StateError::Corrupt {
                path: path.to_path_buf(),
                key: String::from_utf8_lossy(&k).into_owned(),
                message: message.into(),
            };
            let id = k
                .get(DICT_PREFIX.len()..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| corrupt("not a dictionary number"))?;
            let name = std::str::from_utf8(&v).map_err(|_| corrupt("name is not UTF-8"))?;
            entries.push((id, intern(name)));
        }
        // Keys are big-endian numbers, so the scan is in order and dense.
        let mut d = Dict::default();
        for (id, name) in entries {
            if id as usize != d.names.len() {
                return Err(StateError::Corrupt {
                    path: path.to_path_buf(),
                    key: format!("n:{id}"),
                    message: format!("dictionary has a gap before number {id}"),
                });
            }
            d.ids.insert(name.clone(), id);
            d.names.push(name);
        }
        Ok(d)
    }
}

fn dict_key(id: u32) -> Vec<u8> {
    let mut k = DICT_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn storage(path: &Path, e: sled::Error) -> StateError {
    StateError::Storage {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    d: T,
}

/// The store's own directory 0700 (also when an earlier version created it 0755), and
/// everything in it restricted (see [`restrict_tree`]).
fn restrict_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    restrict_tree(dir)
}

/// Files under `dir` 0600, directories 0700 (sled's own tree: `conf`, `db`, `blobs/`,
/// snapshots).
fn restrict_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let mode = if kind.is_dir() {
            restrict_tree(&entry.path())?;
            0o700
        } else if kind.is_file() {
            0o600
        } else {
            continue;
        };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

impl SledStore {
    /// Open (or create) the store in `dir`. Fails at once, never waits, when another process
    /// holds it.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        Self::open_with_cache(dir, CACHE_BYTES)
    }

    /// [`SledStore::open`] with sled's page cache capped at `cache_bytes` instead of
    /// [`CACHE_BYTES`]: the daemon reads every link of every job each cycle and needs them
    /// all to stay cached (`daemon::lock`, `DAEMON_CACHE_BYTES`).
    pub(crate) fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StateError> {
        let path = dir.to_path_buf();
        crate::util::create_private_dir_all(dir).map_err(|e| StateError::Storage {
            path: path.clone(),
            message: format!("cannot create directory: {e}"),
        })?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    StateError::Locked {
                        path: path.clone(),
                        holder: None,
                    }
                }
                other => StateError::Storage {
                    path: path.clone(),
                    message: other.to_string(),
                },
            })?;
        // sled creates its files with the umask's mode (0644 under 022); they hold names
        // and emails. The 0700 directory is what guards them, files sled adds later included.
        if let Err(e) = restrict_dir(dir) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot restrict the state store's file modes");
        }
        let store_err = |e: sled::Error| StateError::Storage {
            path: path.clone(),
            message: e.to_string(),
        };
        let meta = db.open_tree("meta").map_err(store_err)?;
        match meta.get("schema_version").map_err(store_err)? {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(store_err)?;
            }
            Some(v) => {
                let found: u32 = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| StateError::Corrupt {
                        path: path.clone(),
                        key: "schema_version".into(),
                        message: "not a number".into(),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StateError::TooNew { path, found });
                }
                if found < SCHEMA_VERSION {
                    // Older records stay readable; the version moves now so that an older
                    // provisiond refuses the store once newer records may be in it.
                    meta.insert("schema_version", SCHEMA_VERSION.to_string().as_bytes())
                        .map_err(store_err)?;
                }
            }
        }
        let jobs = db.open_tree("jobs").map_err(store_err)?;
        Ok(SledStore {
            db,
            jobs,
            path,
            dicts: Dicts::default(),
            outbox_lock: Mutex::default(),
            cache_bytes,
        })
    }

    /// The cap on sled's page cache this store was opened with.
    pub(crate) fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    fn err(&self, e: sled::Error) -> StateError {
        StateError::Storage {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn links_tree(&self, job: &str) -> Result<sled::Tree, StateError> {
        self.db
            .open_tree(format!("links/{job}"))
            .map_err(|e| self.err(e))
    }

    fn escrow_tree(&self, job: &str) -> Result<sled::Tree, StateError> {
        self.db
            .open_tree(format!("escrow/{job}"))
            .map_err(|e| self.err(e))
    }

    fn outbox_tree(&self) -> Result<sled::Tree, StateError> {
        self.db.open_tree("outbox").map_err(|e| self.err(e))
    }

    fn notified_tree(&self) -> Result<sled::Tree, StateError> {
        self.db.open_tree("notified").map_err(|e| self.err(e))
    }

    fn staged_tree(&self, job: &str) -> Result<sled::Tree, StateError> {
        self.db
            .open_tree(format!("staged/{job}"))
            .map_err(|e| self.err(e))
    }

    fn snapshot_tree(&self, job: &str) -> Result<sled::Tree, StateError> {
        self.db
            .open_tree(format!("snapshot/{job}"))
            .map_err(|e| self.err(e))
    }

    /// Every record of a tree of JSON envelopes.
    fn records<T: DeserializeOwned>(&self, tree: &sled::Tree) -> Result<Vec<T>, StateError> {
        tree.iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| self.err(e))?;
                self.decode(&k, &v)
            })
            .collect()
    }

    fn encode<T: Serialize>(&self, key: &str, d: &T) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec(&Envelope {
            v: SCHEMA_VERSION,
            d,
        })
        .map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    fn decode<T: DeserializeOwned>(&self, key: &[u8], bytes: &[u8]) -> Result<T, StateError> {
        decode(&self.path, key, bytes)
    }
}

fn decode<T: DeserializeOwned>(path: &Path, key: &[u8], bytes: &[u8]) -> Result<T, StateError> {
    let corrupt = |message: String| StateError::Corrupt {
        path: path.to_path_buf(),
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    };
    let env: Envelope<T> = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if env.v > SCHEMA_VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: env.v,
        });
    }
    Ok(env.d)
}

/// Every link of a links tree, handed to `out` in key order.
fn load_links(
    tree: &sled::Tree,
    path: &Path,
    names: &[Key],
    out: &mut dyn FnMut(Link),
) -> Result<(), StateError> {
    // What each dictionary number is in this process, worked out once.
    let local: Vec<LocalName> = names.iter().map(|n| local_name(n)).collect();
    let mut name = |id: u32| local.get(id as usize).cloned();
    for item in tree.iter() {
        let (k, v) = item.map_err(|e| storage(path, e))?;
        if k.starts_with(DICT_PREFIX) {
            continue;
        }
        out(decode_link(path, &k, &v, &mut name)?);
    }
    Ok(())
}

/// A link record of either schema.
fn decode_link(
    path: &Path,
    key: &[u8],
    bytes: &[u8],
    name: &mut dyn FnMut(u32) -> Option<LocalName>,
) -> Result<Link, StateError> {
    match bytes.first() {
        Some(b'{') => decode(path, key, bytes),
        Some(&LINK_FORMAT) => {
            read_link(&mut Reader::new(&bytes[1..]), name).ok_or_else(|| StateError::Corrupt {
                path: path.to_path_buf(),
                key: String::from_utf8_lossy(key).into_owned(),
                message: "damaged link record".into(),
            })
        }
        _ => Err(StateError::Corrupt {
            path: path.to_path_buf(),
            key: String::from_utf8_lossy(key).into_owned(),
            message: "unknown link record format".into(),
        }),
    }
}

// Matching value tags.
const NO_MATCHING: u8 = 0;
const MATCHING_STRING: u8 = 1;
const MATCHING_JSON: u8 = 2;

fn write_link(link: &Link, number: &mut dyn FnMut(&str) -> Option<u32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(LINK_FORMAT);
    out.push(match link.object_type {
        ObjectType::User => 0,
        ObjectType::Group => 1,
    });
    out.push(u8::from(link.created));
    put_bytes(&mut out, link.source_id.as_bytes());
    put_bytes(&mut out, link.target_id.as_bytes());
    put_bytes(&mut out, link.display_name.as_bytes());
    match &link.matching.get() {
        None => out.push(NO_MATCHING),
        Some((p, Value::String(v))) => {
            out.push(MATCHING_STRING);
            put_bytes(&mut out, p.as_bytes());
            put_bytes(&mut out, v.as_bytes());
        }
        Some((p, v)) => {
            out.push(MATCHING_JSON);
            put_bytes(&mut out, p.as_bytes());
            put_bytes(&mut out, v.to_string().as_bytes());
        }
    }
    put_varint(&mut out, link.members.len() as u64);
    for m in &link.members {
        put_bytes(&mut out, m.as_bytes());
    }
    link.exported.write_portable(&mut out, number);
    out
}

fn read_link(r: &mut Reader<'_>, name: &mut dyn FnMut(u32) -> Option<LocalName>) -> Option<Link> {
    let object_type = match r.byte()? {
        0 => ObjectType::User,
        1 => ObjectType::Group,
        _ => return None,
    };
    let created = match r.byte()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let source_id = r.str()?.to_string();
    let target_id = r.str()?.to_string();
    let display_name = r.str()?.to_string();
    let matching = match r.byte()? {
        NO_MATCHING => None,
        MATCHING_STRING => Some((r.str()?.to_string(), Value::String(r.str()?.to_string()))),
        MATCHING_JSON => Some((r.str()?.to_string(), serde_json::from_str(r.str()?).ok()?)),
        _ => return None,
    }
    .into();
    let count = r.varint()?;
    let mut members = BTreeSet::new();
    for _ in 0..count {
        members.insert(r.str()?.to_string());
    }
    let exported = Exported::read_portable(r, name)?;
    if !r.is_empty() {
        return None;
    }
    Some(Link {
        object_type,
        source_id,
        target_id,
        display_name,
        matching,
        exported,
        members,
        created,
    })
}

/// Which generation of a source snapshot is current, and how to check it whole.
struct SnapshotPointer {
    generation: u64,
    chunks: u32,
    len: u64,
    digest: [u8; 32],
}

impl SnapshotPointer {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(53);
        out.push(SNAPSHOT_FORMAT);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.chunks.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.digest);
        out
    }

    fn decode(b: &[u8]) -> Result<SnapshotPointer, String> {
        match b.first() {
            Some(&SNAPSHOT_FORMAT) => {}
            Some(f) => {
                return Err(format!(
                    "snapshot pointer format {f} is not {SNAPSHOT_FORMAT}"
                ))
            }
            None => return Err("empty snapshot pointer".into()),
        }
        let field =
            |range: std::ops::Range<usize>| b.get(range).ok_or("truncated snapshot pointer");
        let u64_at = |at: usize| -> Result<u64, String> {
            let f = field(at..at + 8)?;
            Ok(u64::from_be_bytes(f.try_into().map_err(|_| "truncated")?))
        };
        let chunks = field(9..13)?;
        let digest = field(21..53)?;
        if b.len() != 53 {
            return Err("snapshot pointer of the wrong length".into());
        }
        Ok(SnapshotPointer {
            generation: u64_at(1)?,
            chunks: u32::from_be_bytes(chunks.try_into().map_err(|_| "truncated")?),
            len: u64_at(13)?,
            digest: digest.try_into().map_err(|_| "truncated")?,
        })
    }
}

fn snapshot_chunk_key(generation: u64, chunk: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(SNAPSHOT_CHUNK_PREFIX);
    k.extend_from_slice(&generation.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// `u:o:<id>` for a user's object escrow, `g:r:<id>` for a group's reference escrow.
fn escrow_key(ty: ObjectType, source_id: &str, reference: bool) -> String {
    let kind = if reference { "r" } else { "o" };
    match ty {
        ObjectType::User => format!("u:{kind}:{source_id}"),
        ObjectType::Group => format!("g:{kind}:{source_id}"),
    }
}

fn link_key(ty: ObjectType, source_id: &str) -> String {
    match ty {
        ObjectType::User => format!("u:{source_id}"),
        ObjectType::Group => format!("g:{source_id}"),
    }
}

impl SledStore {
    /// The job's links tree and a copy of its dictionary. The dictionary is copied: a loader
    /// runs on another thread while writes may extend it.
    fn links_source(&self, job: &str) -> Result<(sled::Tree, Vec<Key>), StateError> {
        let tree = self.links_tree(job)?;
        let names = self.with_dict(job, &tree, |d| Ok(d.names.clone()))?;
        Ok((tree, names))
    }

    /// Run `f` with the job's dictionary, loading it first if needed.
    /// Applies `batch` with the names numbered since `before` (they land together with the
    /// records that use them, or not at all); on failure the dictionary forgets them again.
    fn apply_with_names(
        &self,
        tree: &sled::Tree,
        dict: &mut Dict,
        before: usize,
        batch: sled::Batch,
    ) -> Result<(), StateError> {
        apply_with_names(&self.path, tree, dict, before, batch)
    }

    fn with_dict<T>(
        &self,
        job: &str,
        tree: &sled::Tree,
        f: impl FnOnce(&mut Dict) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        with_dict(&self.dicts, &self.path, job, tree, f)
    }
}

/// Each job's name dictionary (see [`SledStore`]'s `dicts`), shared with the job's
/// [`LinksWriter`]s.
type Dicts = Arc<Mutex<HashMap<String, Dict>>>;

/// Applies `batch` with the names `dict` gained since `before` (its length before the batch's
/// records were encoded): new names and the records that first use them land together or not
/// at all, and names of a batch that failed are forgotten.
fn apply_with_names(
    path: &Path,
    tree: &sled::Tree,
    dict: &mut Dict,
    before: usize,
    mut batch: sled::Batch,
) -> Result<(), StateError> {
    for (i, name) in dict.names.iter().enumerate().skip(before) {
        batch.insert(dict_key(i as u32), name.as_bytes());
    }
    if let Err(e) = tree.apply_batch(batch) {
        for name in dict.names.drain(before..) {
            dict.ids.remove(&name);
        }
        return Err(storage_err(path, e));
    }
    Ok(())
}

/// `f` with the job's name dictionary, loaded on first use.
fn with_dict<T>(
    dicts: &Dicts,
    path: &Path,
    job: &str,
    tree: &sled::Tree,
    f: impl FnOnce(&mut Dict) -> Result<T, StateError>,
) -> Result<T, StateError> {
    let mut dicts = lock(dicts);
    if !dicts.contains_key(job) {
        dicts.insert(job.to_string(), Dict::load(tree, path)?);
    }
    match dicts.get_mut(job) {
        Some(d) => f(d),
        None => Err(StateError::Storage {
            path: path.to_path_buf(),
            message: "dictionary vanished".into(),
        }),
    }
}

fn storage_err(path: &Path, e: sled::Error) -> StateError {
    StateError::Storage {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `links` of `job` to its tree as one batch (a later link of the same key replaces an
/// earlier one, as a second insert would): one lock, one pin and one log reservation for them
/// all, names first used by the batch included.
fn put_links_in(
    dicts: &Dicts,
    path: &Path,
    job: &str,
    tree: &sled::Tree,
    links: &[Link],
) -> Result<(), StateError> {
    if links.is_empty() {
        return Ok(());
    }
    with_dict(dicts, path, job, tree, |dict| {
        let before = dict.names.len();
        let mut batch = sled::Batch::default();
        for link in links {
            let bytes = write_link(link, &mut |name| dict.number(name));
            batch.insert(
                link_key(link.object_type, &link.source_id).as_bytes(),
                bytes,
            );
        }
        apply_with_names(path, tree, dict, before, batch)
    })
}

impl StateStore for SledStore {
    fn links(&self, job: &str) -> Result<Vec<Link>, StateError> {
        let (tree, names) = self.links_source(job)?;
        let mut out = Vec::new();
        load_links(&tree, &self.path, &names, &mut |l| out.push(l))?;
        Ok(out)
    }

    #[allow(private_interfaces)]
    fn links_loader(&self, job: &str, mut index: LinkIndexBuilder) -> super::LinksLoader {
        // A tree handle is a cheap reference into the open database.
        match self.links_source(job) {
            Ok((tree, names)) => {
                let path = self.path.clone();
                Box::new(move || {
                    // Each record goes straight into the index, encoded: no vector of every
                    // link decoded on the way.
                    load_links(&tree, &path, &names, &mut |l| index.push(&l))?;
                    Ok(index.build())
                })
            }
            Err(e) => Box::new(move || Err(e)),
        }
    }

    fn links_for(&self, job: &str, ty: ObjectType, ids: &[&str]) -> Result<Vec<Link>, StateError> {
        let tree = self.links_tree(job)?;
        let names = self.with_dict(job, &tree, |d| Ok(d.names.clone()))?;
        let local: Vec<LocalName> = names.iter().map(|n| local_name(n)).collect();
        let mut name = |id: u32| local.get(id as usize).cloned();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let key = link_key(ty, id);
            if let Some(v) = tree.get(key.as_bytes()).map_err(|e| self.err(e))? {
                out.push(decode_link(&self.path, key.as_bytes(), &v, &mut name)?);
            }
        }
        Ok(out)
    }

    fn put_link(&self, job: &str, link: &Link) -> Result<(), StateError> {
        let key = link_key(link.object_type, &link.source_id);
        let tree = self.links_tree(job)?;
        self.with_dict(job, &tree, |dict| {
            let before = dict.names.len();
            let bytes = write_link(link, &mut |name| dict.number(name));
            if dict.names.len() == before {
                // The common case; a sled batch costs several times a plain insert.
                tree.insert(key.as_bytes(), bytes)
                    .map_err(|e| self.err(e))?;
                return Ok(());
            }
            // New names and the record that first uses them land together or not at all.
            let mut batch = sled::Batch::default();
            batch.insert(key.as_bytes(), bytes);
            self.apply_with_names(&tree, dict, before, batch)
        })
    }

    fn put_links(&self, job: &str, links: &[Link]) -> Result<(), StateError> {
        match links {
            [] => return Ok(()),
            [link] => return self.put_link(job, link),
            _ => {}
        }
        let tree = self.links_tree(job)?;
        put_links_in(&self.dicts, &self.path, job, &tree, links)
    }

    fn links_writer(&self, job: &str) -> Option<LinksWriter> {
        // A tree handle and the shared dictionaries: the writer needs nothing else of the
        // store, so another thread can own it.
        let tree = self.links_tree(job).ok()?;
        let dicts = Arc::clone(&self.dicts);
        let path = self.path.clone();
        let job = job.to_string();
        Some(Box::new(move |links: &[Link]| {
            put_links_in(&dicts, &path, &job, &tree, links)
        }))
    }

    fn remove_link(&self, job: &str, ty: ObjectType, source_id: &str) -> Result<(), StateError> {
        self.links_tree(job)?
            .remove(link_key(ty, source_id).as_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn meta(&self, job: &str) -> Result<JobMeta, StateError> {
        match self.jobs.get(job.as_bytes()).map_err(|e| self.err(e))? {
            None => Ok(JobMeta::default()),
            Some(v) => self.decode(job.as_bytes(), &v),
        }
    }

    fn put_meta(&self, job: &str, meta: &JobMeta) -> Result<(), StateError> {
        let bytes = self.encode(job, meta)?;
        self.jobs
            .insert(job.as_bytes(), bytes)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StateError> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn source_snapshot(&self, job: &str) -> Result<Option<Vec<u8>>, StateError> {
        let tree = self.snapshot_tree(job)?;
        let Some(p) = tree.get(SNAPSHOT_POINTER).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let corrupt = |message: String| StateError::Corrupt {
            path: self.path.clone(),
            key: format!("snapshot/{job}/p"),
            message,
        };
        let pointer = SnapshotPointer::decode(&p).map_err(corrupt)?;
        let mut bytes = Vec::with_capacity(usize::try_from(pointer.len).unwrap_or(0));
        for i in 0..pointer.chunks {
            let chunk = tree
                .get(snapshot_chunk_key(pointer.generation, i))
                .map_err(|e| self.err(e))?
                .ok_or_else(|| {
                    corrupt(format!(
                        "chunk {i} of generation {} is missing",
                        pointer.generation
                    ))
                })?;
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() as u64 != pointer.len || sha256(&bytes) != pointer.digest {
            return Err(corrupt(format!(
                "generation {} does not match its digest",
                pointer.generation
            )));
        }
        Ok(Some(bytes))
    }

    /// The new generation's chunks first, made durable, then the pointer (one key, so sled
    /// switches it atomically), durable too, and only then the old generation goes: a crash
    /// anywhere leaves a pointer to a complete generation.
    fn put_source_snapshot(&self, job: &str, bytes: &[u8]) -> Result<(), StateError> {
        let tree = self.snapshot_tree(job)?;
        let old = tree
            .get(SNAPSHOT_POINTER)
            .map_err(|e| self.err(e))?
            .and_then(|p| SnapshotPointer::decode(&p).ok())
            .map_or(0, |p| p.generation);
        // Past every generation any chunk was written under, even one a crash left behind.
        let highest = tree
            .scan_prefix([SNAPSHOT_CHUNK_PREFIX])
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| {
                k.get(1..9)
                    .and_then(|g| g.try_into().ok())
                    .map(u64::from_be_bytes)
            })
            .max()
            .unwrap_or(0);
        let generation = old.max(highest) + 1;
        let mut chunks = 0u32;
        for chunk in bytes.chunks(SNAPSHOT_CHUNK) {
            tree.insert(snapshot_chunk_key(generation, chunks), chunk)
                .map_err(|e| self.err(e))?;
            chunks += 1;
        }
        tree.flush().map_err(|e| self.err(e))?;
        let pointer = SnapshotPointer {
            generation,
            chunks,
            len: bytes.len() as u64,
            digest: sha256(bytes),
        };
        tree.insert(SNAPSHOT_POINTER, pointer.encode())
            .map_err(|e| self.err(e))?;
        tree.flush().map_err(|e| self.err(e))?;
        for key in tree.scan_prefix([SNAPSHOT_CHUNK_PREFIX]).keys() {
            let key = key.map_err(|e| self.err(e))?;
            if key.get(1..9) != Some(&generation.to_be_bytes()[..]) {
                tree.remove(key).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    fn clear_links(&self, job: &str) -> Result<(), StateError> {
        self.links_tree(job)?.clear().map_err(|e| self.err(e))?;
        // The dictionary went with the tree: drop the cached copy so numbers start afresh.
        lock(&self.dicts).remove(job);
        Ok(())
    }

    fn escrows(&self, job: &str) -> Result<Vec<EscrowEntry>, StateError> {
        self.records(&self.escrow_tree(job)?)
    }

    fn put_escrow(&self, job: &str, entry: &EscrowEntry) -> Result<(), StateError> {
        let key = escrow_key(entry.object_type, &entry.source_id, entry.is_reference());
        let bytes = self.encode(&key, entry)?;
        self.escrow_tree(job)?
            .insert(key.as_bytes(), bytes)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn remove_escrow(
        &self,
        job: &str,
        ty: ObjectType,
        source_id: &str,
        reference: bool,
    ) -> Result<(), StateError> {
        self.escrow_tree(job)?
            .remove(escrow_key(ty, source_id, reference).as_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn clear_escrows(&self, job: &str) -> Result<(), StateError> {
        self.escrow_tree(job)?.clear().map_err(|e| self.err(e))
    }

    fn staged_deletes(&self, job: &str) -> Result<Vec<StagedDelete>, StateError> {
        self.records(&self.staged_tree(job)?)
    }

    fn set_staged_deletes(&self, job: &str, staged: &[StagedDelete]) -> Result<(), StateError> {
        let tree = self.staged_tree(job)?;
        // One atomic batch: a crash leaves either the old set or the new one, never a mix.
        let mut batch = sled::Batch::default();
        for item in tree.iter().keys() {
            batch.remove(item.map_err(|e| self.err(e))?);
        }
        for d in staged {
            let key = link_key(d.object_type, &d.source_id);
            batch.insert(key.as_bytes(), self.encode(&key, d)?);
        }
        tree.apply_batch(batch).map_err(|e| self.err(e))
    }

    fn outbox(&self) -> Result<Vec<OutboxMessage>, StateError> {
        // Keys are big-endian ids: the tree's order is the queue's.
        self.records(&self.outbox_tree()?)
    }

    fn push_outbox(
        &self,
        mut msg: OutboxMessage,
        capacity: usize,
    ) -> Result<(u64, usize), StateError> {
        let _guard = lock(&self.outbox_lock);
        let tree = self.outbox_tree()?;
        // sled's ids only grow, across restarts too, so the queue stays in order.
        let id = self.db.generate_id().map_err(|e| self.err(e))?;
        msg.id = id;
        let key = id.to_be_bytes();
        let bytes = self.encode(&format!("outbox/{id}"), &msg)?;
        tree.insert(key, bytes).map_err(|e| self.err(e))?;
        let excess = tree.len().saturating_sub(capacity);
        let mut dropped = 0;
        for k in tree.iter().keys().take(excess) {
            tree.remove(k.map_err(|e| self.err(e))?)
                .map_err(|e| self.err(e))?;
            dropped += 1;
        }
        Ok((id, dropped))
    }

    fn update_outbox(&self, msg: &OutboxMessage) -> Result<(), StateError> {
        let _guard = lock(&self.outbox_lock);
        let tree = self.outbox_tree()?;
        let key = msg.id.to_be_bytes();
        if tree.contains_key(key).map_err(|e| self.err(e))? {
            let bytes = self.encode(&format!("outbox/{}", msg.id), msg)?;
            tree.insert(key, bytes).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn remove_outbox(&self, id: u64) -> Result<(), StateError> {
        let _guard = lock(&self.outbox_lock);
        self.outbox_tree()?
            .remove(id.to_be_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn reported_failures(&self, job: &str) -> Result<ReportedFailures, StateError> {
        match self
            .notified_tree()?
            .get(job.as_bytes())
            .map_err(|e| self.err(e))?
        {
            None => Ok(ReportedFailures::default()),
            Some(v) => self.decode(job.as_bytes(), &v),
        }
    }

    fn put_reported_failures(&self, job: &str, rec: &ReportedFailures) -> Result<(), StateError> {
        let bytes = self.encode(job, rec)?;
        self.notified_tree()?
            .insert(job.as_bytes(), bytes)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn link_counts(&self, job: &str) -> Result<(usize, usize), StateError> {
        let tree = self.links_tree(job)?;
        Ok((
            tree.scan_prefix("u:").count(),
            tree.scan_prefix("g:").count(),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A user link with a matching value and one exported value (also the link writer's
    /// tests' link).
    pub(crate) fn link(id: &str) -> Link {
        Link {
            object_type: ObjectType::User,
            source_id: id.into(),
            target_id: format!("t-{id}"),
            display_name: id.into(),
            matching: Some(("userName".into(), json!("a@x"))).into(),
            exported: [("active".to_string(), json!(false))].into_iter().collect(),
            members: Default::default(),
            created: true,
        }
    }

    fn escrow(id: &str, action: crate::state::EscrowAction) -> EscrowEntry {
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        EscrowEntry {
            object_type: ObjectType::User,
            source_id: id.into(),
            display_name: format!("{id}@x"),
            action,
            attempts: 1,
            first_failure: t,
            last_attempt: t,
            next_attempt: t,
            code: "Timeout".into(),
            reason: "timed out".into(),
            fingerprint: String::new(),
            expired: false,
        }
    }

    #[test]
    fn escrows_staged_deletes_and_safety_meta_survive_reopen() {
        use crate::state::{
            EscrowAction, Quarantine, QuarantineError, QuarantineReason, StagedAction,
        };
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let staged = vec![StagedDelete {
            object_type: ObjectType::Group,
            source_id: "g1".into(),
            target_id: "t-g1".into(),
            display_name: "Group 1".into(),
            action: StagedAction::Delete,
            staged_at: t,
        }];
        let meta = JobMeta {
            quarantine: Some(Quarantine {
                reason: QuarantineReason::TooManyDeletes,
                series_began: t,
                current_began: t,
                next_attempt: t,
                series_count: 1,
                error: QuarantineError {
                    code: "TooManyDeletes".into(),
                    message: "3 deletions reached the threshold of 2".into(),
                },
            }),
            paused: true,
            allow_deletes: true,
            ..JobMeta::default()
        };
        {
            let s = SledStore::open(dir.path()).unwrap();
            // An object escrow and a reference escrow of one user are two entries.
            s.put_escrow("j", &escrow("u1", EscrowAction::Create))
                .unwrap();
            s.put_escrow("j", &escrow("u1", EscrowAction::Manager))
                .unwrap();
            s.put_escrow("j", &escrow("u2", EscrowAction::Update))
                .unwrap();
            s.put_escrow("other", &escrow("u9", EscrowAction::Delete))
                .unwrap();
            s.remove_escrow("j", ObjectType::User, "u2", false).unwrap();
            s.set_staged_deletes("j", &staged).unwrap();
            s.put_meta("j", &meta).unwrap();
            s.put_link("j", &link("u1")).unwrap();
            s.flush().unwrap();
        }
        let s = reopen(dir.path()).unwrap();
        let mut actions: Vec<_> = s.escrows("j").unwrap().iter().map(|e| e.action).collect();
        actions.sort();
        assert_eq!(actions, [EscrowAction::Create, EscrowAction::Manager]);
        assert_eq!(s.staged_deletes("j").unwrap(), staged);
        assert_eq!(s.meta("j").unwrap(), meta);
        // Replacing the staged set drops what is not in the new one.
        s.set_staged_deletes("j", &[]).unwrap();
        assert!(s.staged_deletes("j").unwrap().is_empty());
        s.clear_escrows("j").unwrap();
        assert!(s.escrows("j").unwrap().is_empty());
        assert_eq!(
            s.escrows("other").unwrap().len(),
            1,
            "other jobs keep theirs"
        );
        s.clear_links("j").unwrap();
        assert!(s.links("j").unwrap().is_empty());
        // A link written after the reset gets a fresh dictionary and reads back whole.
        s.put_link("j", &full_user("u3")).unwrap();
        assert_eq!(s.links("j").unwrap(), vec![full_user("u3")]);
    }

    /// A batch of links lands whole, with the names it first uses, and a later link of
    /// the same key replaces an earlier one, as a second `put_link` would.
    #[test]
    fn a_batch_of_links_reads_back_as_links_written_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut renamed = full_user("u1");
        renamed.display_name = "renamed".into();
        let batch = vec![
            full_user("u1"),
            link("u2"),
            full_user("u3"),
            renamed.clone(),
        ];
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.put_links("j", &batch).unwrap();
            s.put_links("j", &[]).unwrap();
            s.flush().unwrap();
        }
        let s = reopen(dir.path()).unwrap();
        let mut got = s.links("j").unwrap();
        got.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        assert_eq!(got, vec![renamed, link("u2"), full_user("u3")]);
    }

    /// The writer another thread owns writes what `put_links` writes, into the same name
    /// dictionary as the store's own writes (a name one of them added is not added twice).
    #[test]
    fn links_from_the_writer_thread_read_back_like_links_put_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.put_link("j", &full_user("u0")).unwrap();
            let mut write = s.links_writer("j").unwrap();
            std::thread::spawn(move || write(&[full_user("u1"), link("u2")]).unwrap())
                .join()
                .unwrap();
            s.put_link("j", &full_user("u3")).unwrap();
            s.flush().unwrap();
        }
        let s = reopen(dir.path()).unwrap();
        let mut got = s.links("j").unwrap();
        got.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        assert_eq!(
            got,
            vec![
                full_user("u0"),
                full_user("u1"),
                link("u2"),
                full_user("u3")
            ]
        );
    }

    #[test]
    fn links_and_meta_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.put_link("j", &link("a")).unwrap();
            s.put_link("j", &link("b")).unwrap();
            s.put_link("other", &link("c")).unwrap();
            s.remove_link("j", ObjectType::User, "b").unwrap();
            s.put_meta(
                "j",
                &JobMeta {
                    watermark: Some("w".into()),
                    ..JobMeta::default()
                },
            )
            .unwrap();
            s.flush().unwrap();
        }
        let s = reopen(dir.path()).unwrap();
        let links = s.links("j").unwrap();
        assert_eq!(links, vec![link("a")]);
        assert!(links[0].disabled());
        assert_eq!(s.meta("j").unwrap().watermark.as_deref(), Some("w"));
        assert_eq!(s.link_counts("j").unwrap(), (1, 0));
        assert_eq!(s.meta("nobody").unwrap(), JobMeta::default());
    }

    /// A user as the generic SCIM preset exports it.
    fn full_user(id: &str) -> Link {
        let exported: crate::model::AttrMap = serde_json::from_value(json!({
            "active": true,
            "addresses[type eq \"work\"].locality": "Berlin",
            "displayName": "Heidi Liddell 967",
            "emails[type eq \"work\"].value": "user000967@contoso.com",
            "externalId": "user000967",
            "name.familyName": "Liddell",
            "name.givenName": "Heidi",
            "title": "Account Executive",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "100967",
            "userName": "user000967@contoso.com",
            "phoneNumbers": [{"type": "work", "value": "+1 555"}],
            "x-number": 12,
            "x-null": null,
        }))
        .unwrap();
        Link {
            object_type: ObjectType::User,
            source_id: id.into(),
            target_id: "d1ae5e04-5a64-464f-87a0-362ce3d305a7".into(),
            display_name: "Heidi Liddell 967".into(),
            matching: Some(("userName".into(), json!("user000967@contoso.com"))).into(),
            exported: exported.into(),
            members: Default::default(),
            created: true,
        }
    }

    #[test]
    fn binary_records_round_trip_and_are_compact() {
        let dir = tempfile::tempdir().unwrap();
        let group = Link {
            object_type: ObjectType::Group,
            source_id: "g1".into(),
            target_id: "tg".into(),
            display_name: "Ops ✓".into(),
            matching: Some(("displayName".into(), json!(["odd", 1]))).into(),
            exported: [("displayName", json!("Ops ✓"))].into_iter().collect(),
            members: ["t1".to_string(), "t2".to_string()].into_iter().collect(),
            created: false,
        };
        let unmatched = Link {
            matching: Default::default(),
            exported: Default::default(),
            ..link("bare")
        };
        {
            let s = SledStore::open(dir.path()).unwrap();
            for l in [
                &full_user("6f1c03c7-5c0a-4bd8-9b59-0000000003c7"),
                &group,
                &unmatched,
            ] {
                s.put_link("j", l).unwrap();
            }
            let raw = s
                .links_tree("j")
                .unwrap()
                .get(b"u:6f1c03c7-5c0a-4bd8-9b59-0000000003c7")
                .unwrap()
                .unwrap();
            assert_eq!(raw[0], LINK_FORMAT);
            let json_len = serde_json::to_vec(&full_user("6f1c03c7-5c0a-4bd8-9b59-0000000003c7"))
                .unwrap()
                .len();
            assert!(
                raw.len() * 2 < json_len,
                "{} bytes vs {json_len} as JSON",
                raw.len()
            );
            s.flush().unwrap();
        }
        // A second process numbers names from the stored dictionary, not from its own.
        let s = reopen(dir.path()).unwrap();
        s.put_link("j", &link("after")).unwrap();
        let mut got = s.links("j").unwrap();
        got.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        let mut want = vec![
            full_user("6f1c03c7-5c0a-4bd8-9b59-0000000003c7"),
            group,
            unmatched,
            link("after"),
        ];
        want.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        assert_eq!(got, want);
        assert_eq!(s.link_counts("j").unwrap(), (3, 1));
    }

    #[test]
    fn schema_1_records_are_read_and_the_version_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let old = full_user("u1");
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.db.open_tree("meta")
                .unwrap()
                .insert("schema_version", "1")
                .unwrap();
            let v1 = serde_json::to_vec(&json!({"v": 1, "d": old})).unwrap();
            s.links_tree("j").unwrap().insert("u:u1", v1).unwrap();
            s.flush().unwrap();
        }
        let s = reopen(dir.path()).unwrap();
        assert_eq!(s.links("j").unwrap(), vec![old]);
        let version =
            s.db.open_tree("meta")
                .unwrap()
                .get("schema_version")
                .unwrap();
        assert_eq!(
            version.as_deref(),
            Some(SCHEMA_VERSION.to_string().as_bytes())
        );
    }

    #[test]
    fn a_source_snapshot_survives_reopen_and_replaces_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than a chunk, so that it spans several.
        let big: Vec<u8> = (0..SNAPSHOT_CHUNK * 2 + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        {
            let s = SledStore::open(dir.path()).unwrap();
            assert_eq!(s.source_snapshot("j").unwrap(), None);
            s.put_source_snapshot("j", b"first").unwrap();
            s.put_source_snapshot("j", &big).unwrap();
            s.put_source_snapshot("other", b"o").unwrap();
            s.flush().unwrap();
        }
        let s = reopen(dir.path()).unwrap();
        assert_eq!(s.source_snapshot("j").unwrap().as_deref(), Some(&big[..]));
        assert_eq!(
            s.source_snapshot("other").unwrap().as_deref(),
            Some(&b"o"[..])
        );
        // Only the current generation's chunks are left.
        let tree = s.snapshot_tree("j").unwrap();
        assert_eq!(tree.scan_prefix([SNAPSHOT_CHUNK_PREFIX]).count(), 3);
        s.put_source_snapshot("j", b"").unwrap();
        assert_eq!(s.source_snapshot("j").unwrap().as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_snapshot_write_cut_short_leaves_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.put_source_snapshot("j", b"old pair").unwrap();
        // What a kill -9 after some chunks of the next generation but before the pointer
        // switch leaves behind.
        let tree = s.snapshot_tree("j").unwrap();
        tree.insert(snapshot_chunk_key(2, 0), &b"new pa"[..])
            .unwrap();
        assert_eq!(
            s.source_snapshot("j").unwrap().as_deref(),
            Some(&b"old pair"[..])
        );
        // The next write goes past the orphan's generation and clears it.
        s.put_source_snapshot("j", b"newer").unwrap();
        assert_eq!(
            s.source_snapshot("j").unwrap().as_deref(),
            Some(&b"newer"[..])
        );
        assert_eq!(tree.scan_prefix([SNAPSHOT_CHUNK_PREFIX]).count(), 1);
    }

    #[test]
    fn a_damaged_snapshot_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.put_source_snapshot("j", b"some snapshot").unwrap();
        let tree = s.snapshot_tree("j").unwrap();
        let pointer = tree.get(SNAPSHOT_POINTER).unwrap().unwrap();
        let generation = u64::from_be_bytes(pointer[1..9].try_into().unwrap());
        tree.insert(snapshot_chunk_key(generation, 0), &b"some snapsh0t"[..])
            .unwrap();
        let err = s.source_snapshot("j").unwrap_err();
        assert!(
            matches!(&err, StateError::Corrupt { key, .. } if key == "snapshot/j/p"),
            "{err}"
        );
        for bad in [&pointer[..20], &[9u8][..], &[][..]] {
            tree.insert(SNAPSHOT_POINTER, bad).unwrap();
            assert!(matches!(
                s.source_snapshot("j"),
                Err(StateError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn damaged_records_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.put_link("j", &full_user("u1")).unwrap();
        let tree = s.links_tree("j").unwrap();
        let good = tree.get("u:u1").unwrap().unwrap();
        for bad in [&good[..good.len() - 1], &[9u8, 1, 2][..], &[][..]] {
            tree.insert("u:u1", bad).unwrap();
            let err = s.links("j").unwrap_err();
            assert!(
                matches!(&err, StateError::Corrupt { key, .. } if key == "u:u1"),
                "{err}"
            );
        }
        // A record naming a number the dictionary lacks.
        tree.insert("u:u1", good).unwrap();
        tree.remove(dict_key(0)).unwrap();
        let fresh = SledStore {
            db: s.db.clone(),
            jobs: s.jobs.clone(),
            path: s.path.clone(),
            dicts: Dicts::default(),
            outbox_lock: Mutex::default(),
            cache_bytes: s.cache_bytes,
        };
        assert!(fresh.links("j").is_err());
    }

    #[test]
    fn a_second_opener_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let started = std::time::Instant::now();
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn the_store_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let store_dir = state_dir.join("state");
        // An earlier version's store: created with the umask's 0755 and 0644.
        std::fs::create_dir_all(&store_dir).unwrap();
        std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(store_dir.join("stray"), "x").unwrap();
        std::fs::set_permissions(
            store_dir.join("stray"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        {
            let s = SledStore::open(&store_dir).unwrap();
            s.flush().unwrap();
        }
        assert_eq!(mode(&store_dir), 0o700);
        for entry in std::fs::read_dir(&store_dir).unwrap() {
            let p = entry.unwrap().path();
            let m = mode(&p);
            assert_eq!(m & 0o077, 0, "{} is {m:o}", p.display());
        }
        // A fresh state directory is created 0700 all the way down.
        let fresh = dir.path().join("fresh").join("state");
        drop(SledStore::open(&fresh).unwrap());
        assert_eq!(mode(&dir.path().join("fresh")), 0o700);
        assert_eq!(mode(&fresh), 0o700);
        // Private files are 0600, also when they existed with looser permissions.
        let f = dir.path().join("pid");
        std::fs::write(&f, "1").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        crate::util::write_private_file(&f, b"42").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "42");
    }

    /// Open again after a drop: sled's background flusher may hold the lock a moment longer.
    fn reopen(path: &Path) -> Result<SledStore, StateError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match SledStore::open(path) {
                Err(StateError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.db.open_tree("meta")
                .unwrap()
                .insert("schema_version", "99")
                .unwrap();
            s.flush().unwrap();
        }
        assert!(matches!(
            reopen(dir.path()),
            Err(StateError::TooNew { found: 99, .. })
        ));
    }

    fn outbox_message(subject: &str) -> OutboxMessage {
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        OutboxMessage {
            version: 1,
            id: 0,
            job: "j".into(),
            to: vec!["a@example.com".into()],
            subject: subject.into(),
            text: "t".into(),
            html: "h".into(),
            created: t,
            message_id: "<m@h>".into(),
            attempts: 0,
            next_attempt: t,
            last_error: None,
        }
    }

    #[test]
    fn the_outbox_is_ordered_bounded_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            for i in 0..5 {
                let (_, dropped) = s.push_outbox(outbox_message(&format!("m{i}")), 3).unwrap();
                assert_eq!(dropped, usize::from(i >= 3));
            }
            let q = s.outbox().unwrap();
            let subjects: Vec<&str> = q.iter().map(|m| m.subject.as_str()).collect();
            assert_eq!(subjects, ["m2", "m3", "m4"], "the oldest dropped");
            let mut first = q[0].clone();
            first.attempts = 2;
            s.update_outbox(&first).unwrap();
            s.remove_outbox(q[1].id).unwrap();
            // A message removed meanwhile is not brought back by an update.
            s.update_outbox(&q[1]).unwrap();
            let rec = ReportedFailures {
                version: 1,
                keys: ["user|u1|X".to_string()].into(),
                last_digest: None,
            };
            s.put_reported_failures("j", &rec).unwrap();
            s.flush().unwrap();
        }
        let s = reopen(dir.path()).unwrap();
        let q = s.outbox().unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].subject.as_str(), q[0].attempts), ("m2", 2));
        assert_eq!(q[1].subject, "m4");
        let (id, _) = s.push_outbox(outbox_message("m5"), 3).unwrap();
        assert!(id > q[1].id, "ids keep growing after a reopen");
        assert_eq!(s.reported_failures("j").unwrap().keys.len(), 1);
        assert_eq!(
            s.reported_failures("other").unwrap(),
            ReportedFailures::default()
        );
    }
}
