//! Who holds the state store: sled admits one process, so the daemon and the one-shot
//! commands (`sync`, `status` with no daemon) take turns. The pid file (for service managers)
//! and the holder file (to name the holder in an error) live next to the store.

use super::control::{self, ControlError, Request, Response};
use crate::config::Config;
use crate::state::{SledStore, StateError};
use crate::util::write_private_file;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The pid file next to the store, written by the daemon (`run`) for service managers.
pub(crate) fn pid_file(config: &Config) -> PathBuf {
    config.state_dir.join("provisiond.pid")
}

/// Write the daemon's pid file, mode 0600 whatever the umask.
pub(crate) fn write_pid_file(config: &Config) -> std::io::Result<()> {
    write_private_file(&pid_file(config), std::process::id().to_string().as_bytes())
}

/// Who holds the state store: rewritten by every process (daemon or one-shot command) right
/// after it has opened the store, so that a process finding the store locked can name the
/// holder. It is never removed: a record whose pid is gone describes an earlier process (the
/// current holder has only just opened the store and not written its record yet).
pub(crate) fn holder_file(config: &Config) -> PathBuf {
    config.state_dir.join("holder")
}

/// How long a command waits for a store whose holder is about to let go of it or about to
/// answer on its control socket (a `status` reading offline, a daemon starting up).
const STORE_SETTLE: Duration = Duration::from_secs(5);

/// What a process holding the store is doing, as `open_store` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreUser {
    /// `provisiond run`.
    Daemon,
    /// `sync`, `status` or an admin command with no daemon answering on the control socket.
    Command(&'static str),
}

/// sled's page-cache cap for `run`, where one-shot commands keep the store's 16 MiB
/// (`state::sled_store::CACHE_BYTES`). A daemon's cycles read every link of every job
/// (30,000 for 3 jobs of 10,000 users, about 10 MB of records) again and again; at 16 MiB
/// their pages do not all stay (registry sled split the cap over 256 shards, some of which
/// overflowed; the vendored sled holds the cap itself), so every cycle evicts and re-reads
/// some. The re-read pages are allocated in the middle of the cycle's own
/// allocations, live on after the cycle and keep those allocator pages resident: the idle
/// daemon grew from about 77 to 95 MB within its first minute (soak, README "The daemon
/// between cycles, third step"). At 64 MiB, the cap before the `links` merge, it stays flat.
pub(crate) const DAEMON_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl StoreUser {
    fn name(self) -> &'static str {
        match self {
            StoreUser::Daemon => "run",
            StoreUser::Command(c) => c,
        }
    }

    /// The page-cache cap this user opens the store with: a larger one for the daemon (see
    /// [`DAEMON_CACHE_BYTES`]), the store's own for a one-shot command, whose single cycle
    /// reads each link once and whose peak the smaller cache keeps down.
    fn cache_bytes(self) -> u64 {
        match self {
            StoreUser::Daemon => DAEMON_CACHE_BYTES,
            StoreUser::Command(_) => crate::state::STORE_CACHE_BYTES,
        }
    }
}

/// Why the state could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The control socket failed (not: nobody answers, which sends the caller to the store).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The store could not be opened for another reason than a lock.
    #[error(transparent)]
    State(StateError),
    /// Another process holds the store and will not let go soon.
    #[error("state store {} is in use by {holder}{advice}", path.display())]
    InUse {
        /// The store's directory.
        path: PathBuf,
        /// The holder as its record names it, or "another process".
        holder: String,
        /// What to do about it, starting with "; " or ", ".
        advice: String,
    },
    /// A daemon answered where only the store was asked for.
    #[error("unexpected answer from the daemon")]
    UnexpectedAnswer,
}

/// A record of the holder file.
struct Holder {
    /// `provisiond sync (pid 123)`.
    text: String,
    /// `sync`.
    command: String,
    alive: bool,
}

fn read_holder(config: &Config) -> Option<Holder> {
    let text = std::fs::read_to_string(holder_file(config)).ok()?;
    let text = text.trim().to_string();
    let (head, tail) = text.split_once(" (pid ")?;
    let command = head.strip_prefix("provisiond ")?.to_string();
    let pid: u32 = tail.strip_suffix(')')?.parse().ok()?;
    Some(Holder {
        alive: pid_alive(pid),
        text,
        command,
    })
}

/// Whether the process `pid` is running. A zombie is not: a daemon killed with `kill -9`
/// whose parent has not reaped it yet still has its `/proc` entry, but it has closed its files
/// and let go of the store; taken for alive, it made a starting daemon fail at once ("in use
/// by provisiond run") instead of waiting for the real holder.
fn pid_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    // Without procfs we cannot tell: trust the record.
    if !proc.join("self").exists() {
        return true;
    }
    let entry = proc.join(pid.to_string());
    match std::fs::read_to_string(entry.join("stat")) {
        // `pid (comm) S ...`: the state follows the last `)` (comm may hold one too).
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X' | 'x')
        ),
        Err(_) => entry.exists(),
    }
}

/// Whether the holder will let go of the store, or answer on its control socket, within
/// moments: then it is worth waiting (bounded by [`STORE_SETTLE`]) instead of failing.
fn holder_settling(holder: Option<&Holder>, user: StoreUser) -> bool {
    match holder {
        // No live record: the holder has only just opened the store.
        None => true,
        Some(h) if !h.alive => true,
        // A `status` reading the store offline, or an admin command, lets go at once.
        Some(h)
            if matches!(
                h.command.as_str(),
                "status" | "restart" | "allow-deletes" | "pause" | "resume"
            ) =>
        {
            true
        }
        // A daemon that is starting: its control socket is coming (`status`/`sync`); a
        // second daemon must not wait for it.
        Some(h) if h.command == "run" => user != StoreUser::Daemon,
        // A one-shot `sync` may hold the store for a whole cycle.
        Some(_) => false,
    }
}

/// The store, or (for `status` and `sync`, with `probe`) the running daemon's answer.
pub(crate) enum Reached {
    /// No daemon answered: this process holds the store now.
    Store(SledStore),
    /// The running daemon's answer.
    Daemon(Response),
}

/// Reach the state: through a running daemon's control socket when `probe` is given and a
/// daemon answers, else by opening the store. A store held by a process that lets go (or
/// starts answering) within moments is waited for, at most [`STORE_SETTLE`]; otherwise this
/// fails at once, naming the holder.
///
/// Before, the daemon's pid file was the only source for the name: a one-shot `sync` holding
/// the store showed up as "another process", a stale pid file (left by a `kill -9`) named a
/// dead daemon, and a `status` run while the daemon was starting (store open, socket not yet
/// bound) failed, as did a daemon starting while a `status` read the store.
pub(crate) async fn reach(
    config: &Config,
    user: StoreUser,
    probe: Option<(&Request, Option<Duration>)>,
) -> Result<Reached, LockError> {
    let deadline = tokio::time::Instant::now() + STORE_SETTLE;
    loop {
        if let Some((req, timeout)) = probe {
            if let Some(answer) = control::request(&config.control_socket, req, timeout).await? {
                return Ok(Reached::Daemon(answer));
            }
        }
        let state = config.state_dir.join("state");
        let path = match SledStore::open_with_cache(&state, user.cache_bytes()) {
            Ok(store) => {
                tracing::debug!(
                    path = %state.display(),
                    user = user.name(),
                    cache_bytes = store.cache_bytes(),
                    "state store opened"
                );
                let line = format!("provisiond {} (pid {})\n", user.name(), std::process::id());
                if let Err(e) = write_private_file(&holder_file(config), line.as_bytes()) {
                    tracing::debug!(error = %e, "cannot record the state store's holder");
                }
                return Ok(Reached::Store(store));
            }
            Err(StateError::Locked { path, .. }) => path,
            Err(other) => return Err(LockError::State(other)),
        };
        let holder = read_holder(config);
        if holder_settling(holder.as_ref(), user) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let name = holder
            .filter(|h| h.alive)
            .map(|h| h.text)
            .unwrap_or_else(|| "another process".into());
        let advice = match user {
            // `run` has not tried the control socket: do not claim it is silent.
            StoreUser::Daemon => {
                "; only one daemon may run per state directory (`provisiond status` and \
                 `provisiond sync` reach a running daemon through its control socket)"
                    .to_string()
            }
            StoreUser::Command(_) => format!(
                ", and no daemon answers on the control socket {}: try again when it is done",
                config.control_socket.display()
            ),
        };
        return Err(LockError::InUse {
            path,
            holder: name,
            advice,
        });
    }
}

/// Open the store, or explain who holds it (see [`reach`]).
pub(crate) async fn open_store(config: &Config, user: StoreUser) -> Result<SledStore, LockError> {
    match reach(config, user, None).await? {
        Reached::Store(s) => Ok(s),
        Reached::Daemon(_) => Err(LockError::UnexpectedAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// `run` opens the store with the daemon's larger page cache, a one-shot command with the
    /// store's own: the daemon's idle memory depends on the first (its cycles re-read every
    /// link), the one-shot benchmarks' peaks on the second.
    #[tokio::test]
    async fn the_daemon_opens_the_store_with_its_own_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("provisiond.toml");
        std::fs::write(
            dir.path().join("directory.json"),
            r#"{"users": [], "groups": [], "assignments": []}"#,
        )
        .unwrap();
        std::fs::write(
            &config_path,
            "state_dir = \"state\"\n[[jobs]]\nname = \"j\"\ninterval = \"5s\"\n\
             [jobs.source]\nkind = \"file\"\npath = \"directory.json\"\n\
             [jobs.target]\nurl = \"http://127.0.0.1:9/scim\"\ntoken_file = \"token\"\n",
        )
        .unwrap();
        let config = Config::load_without_secrets(&config_path).unwrap();
        let store = open_store(&config, StoreUser::Daemon).await.unwrap();
        assert_eq!(store.cache_bytes(), DAEMON_CACHE_BYTES);
        drop(store);
        let store = open_store(&config, StoreUser::Command("sync"))
            .await
            .unwrap();
        assert_eq!(store.cache_bytes(), crate::state::STORE_CACHE_BYTES);
    }

    #[test]
    fn a_running_process_is_alive_and_a_zombie_or_a_reaped_one_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: once it has exited, it is a zombie.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "the child never became a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!pid_alive(pid), "a zombie holds no store");
        child.wait().unwrap();
        assert!(!pid_alive(pid), "a reaped process is gone");
    }
}
