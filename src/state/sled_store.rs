//! The sled-backed [`StateStore`].
//!
//! Layout: tree `meta` holds `schema_version`; tree `jobs` holds one [`JobMeta`] per job name;
//! tree `links/<job>` holds one [`Link`] per object, keyed `u:<source id>` / `g:<source id>`.
//! Values are JSON envelopes `{"v": <schema>, "d": <record>}` so a newer provisiond can migrate
//! them and an older one refuses them instead of misreading.

use super::{JobMeta, Link, StateError, StateStore, SCHEMA_VERSION};
use crate::model::ObjectType;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Cap sled's page cache: its default is 1 GiB, far more than links need.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

pub struct SledStore {
    db: sled::Db,
    jobs: sled::Tree,
    path: PathBuf,
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

impl SledStore {
    /// Open (or create) the store in `dir`. Fails at once, never waits, when another process
    /// holds it.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let path = dir.to_path_buf();
        std::fs::create_dir_all(dir).map_err(|e| StateError::Storage {
            path: path.clone(),
            message: format!("cannot create directory: {e}"),
        })?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
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
            }
        }
        let jobs = db.open_tree("jobs").map_err(store_err)?;
        Ok(SledStore { db, jobs, path })
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

/// Every link of a links tree.
fn load_links(tree: &sled::Tree, path: &Path) -> Result<Vec<Link>, StateError> {
    // No `Vec::with_capacity(tree.len())`: sled's `len` walks the whole tree, which
    // doubled the cost of loading 100k links.
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item.map_err(|e| StateError::Storage {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        out.push(decode(path, &k, &v)?);
    }
    Ok(out)
}

fn link_key(ty: ObjectType, source_id: &str) -> String {
    match ty {
        ObjectType::User => format!("u:{source_id}"),
        ObjectType::Group => format!("g:{source_id}"),
    }
}

impl StateStore for SledStore {
    fn links(&self, job: &str) -> Result<Vec<Link>, StateError> {
        load_links(&self.links_tree(job)?, &self.path)
    }

    fn links_loader(&self, job: &str) -> super::LinksLoader {
        // A tree handle is a cheap reference into the open database.
        match self.links_tree(job) {
            Ok(tree) => {
                let path = self.path.clone();
                Box::new(move || load_links(&tree, &path))
            }
            Err(e) => Box::new(move || Err(e)),
        }
    }

    fn put_link(&self, job: &str, link: &Link) -> Result<(), StateError> {
        let key = link_key(link.object_type, &link.source_id);
        let bytes = self.encode(&key, link)?;
        self.links_tree(job)?
            .insert(key.as_bytes(), bytes)
            .map_err(|e| self.err(e))?;
        Ok(())
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

    fn link_counts(&self, job: &str) -> Result<(usize, usize), StateError> {
        let tree = self.links_tree(job)?;
        let users = tree.scan_prefix("u:").count();
        Ok((users, tree.len().saturating_sub(users)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn link(id: &str) -> Link {
        Link {
            object_type: ObjectType::User,
            source_id: id.into(),
            target_id: format!("t-{id}"),
            display_name: id.into(),
            matching: Some(("userName".into(), json!("a@x"))),
            exported: [("active".to_string(), json!(false))].into_iter().collect(),
            members: Default::default(),
            created: true,
        }
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

    #[test]
    fn a_second_opener_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let started = std::time::Instant::now();
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
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
}
