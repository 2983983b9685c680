//! Durable Raft state on disk: one file under `state-dir`, replaced atomically.
//!
//! Each save writes the whole state to a temporary file, fsyncs it, renames it over the state
//! file and fsyncs the directory, so that after a crash the file holds either the old state or
//! the new one, never a mix. The daemon saves before it sends any message that depends on the
//! state (see `ha_agent_core::Output`). A lock file keeps two agents off the same directory.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ha_agent_core::{DecodeError, DurableState};

const STATE_FILE: &str = "raft-state";
const TEMP_FILE: &str = "raft-state.tmp";
const LOCK_FILE: &str = "lock";

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create or open the state directory {path} (node.state-dir): {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another ha-agent already uses the state directory {path} (it holds {path}/lock); stop it first or give this one its own node.state-dir")]
    Locked { path: PathBuf },
    #[error("cannot read the state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the state file {path} is unusable: {source}. The node cannot know which votes it cast, so \
         it will not start. Restore the file from a backup; or, if the rest of the group has a \
         majority and a leader, move the file away and restart: the node rejoins as a follower \
         with an empty log"
    )]
    Corrupt { path: PathBuf, source: DecodeError },
    #[error("cannot write the state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The state directory of a running agent.
pub struct StateStore {
    dir: PathBuf,
    /// Held open for its lock for as long as the store lives.
    _lock: File,
}

impl StateStore {
    /// Opens (creating it with mode 0700 if missing) and locks the state directory.
    pub fn open(dir: &Path) -> Result<StateStore, StoreError> {
        let dir_error = |source| StoreError::Directory {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(dir_error)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(dir_error)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(dir_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(dir_error(e)),
        }
        Ok(StateStore {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the saved state; `None` when the node has never saved any (first start).
    pub fn load(&self) -> Result<Option<DurableState>, StoreError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        DurableState::decode(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Makes `state` durable: it is on disk when this returns.
    pub fn save(&self, state: &DurableState) -> Result<(), StoreError> {
        let temp = self.dir.join(TEMP_FILE);
        let write_error = |source| StoreError::Write {
            path: self.path(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temp)
            .map_err(write_error)?;
        file.write_all(&state.encode()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        fs::rename(&temp, self.path()).map_err(write_error)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::{ConfState, HardState};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ha-agent-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn state(term: u64) -> DurableState {
        let mut hard_state = HardState::default();
        hard_state.set_term(term);
        hard_state.set_vote(2);
        DurableState {
            hard_state,
            conf_state: ConfState::from((vec![1, 2, 3], vec![])),
            ..Default::default()
        }
    }

    /// Opens `dir` again once the lock dropped with the first store is released. The lock is
    /// an flock on an open file description, released when its last descriptor closes; a test
    /// in another thread that spawns a process (hooks, exec checks) holds a copy of every
    /// descriptor between its fork and its exec, so the release can lag the drop by that long.
    /// CI saw exactly that once (`Locked` right after the drop). Bounded: 2 s.
    fn reopen_after_release(dir: &Path) -> StateStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match StateStore::open(dir) {
                Ok(store) => return store,
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e @ StoreError::Locked { .. }) => {
                    panic!("the lock was not released within 2 s of the drop: {e}")
                }
                Err(e) => panic!("reopening {} after the drop failed: {e}", dir.display()),
            }
        }
    }

    #[test]
    fn saves_and_loads_and_a_second_agent_is_locked_out() {
        let dir = temp_dir("roundtrip");
        let store = StateStore::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), None);
        store.save(&state(3)).unwrap();
        store.save(&state(4)).unwrap();
        assert_eq!(store.load().unwrap(), Some(state(4)));
        assert!(matches!(
            StateStore::open(&dir),
            Err(StoreError::Locked { .. })
        ));
        drop(store);
        let again = reopen_after_release(&dir);
        assert_eq!(again.load().unwrap(), Some(state(4)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_file_is_an_error_that_names_the_file() {
        let dir = temp_dir("torn");
        let store = StateStore::open(&dir).unwrap();
        store.save(&state(3)).unwrap();
        let bytes = fs::read(store.path()).unwrap();
        fs::write(store.path(), &bytes[..bytes.len() / 2]).unwrap();
        let err = store.load().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{text}");
        assert!(
            text.contains("raft-state") && text.contains("will not start"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
