//! A cheaply cloneable, hot-reloadable handle on the current [`FlagStore`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use ring::digest;

use crate::error::FlagError;
use crate::flag::Evaluation;
use crate::store::{FlagOverride, FlagStore};

/// What a [`SharedFlags::reload_if_changed`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The handle has no file behind it.
    NoSource,
    /// Modification time, size and content hash are as before: nothing to do.
    Unchanged,
    /// New definitions were parsed, validated and swapped in.
    Reloaded {
        /// Number of flags now defined.
        flags: usize,
    },
}

/// What we remember about the file to decide whether it changed.
#[derive(Debug)]
struct FileState {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
    sha256: [u8; 32],
}

#[derive(Debug)]
struct Inner {
    current: RwLock<Arc<FlagStore>>,
    /// The file and the env overrides; the mutex also serialises reloads.
    source: Mutex<Source>,
}

#[derive(Debug, Default)]
struct Source {
    file: Option<FileState>,
    overrides: Vec<FlagOverride>,
}

/// A shared, hot-reloadable flag store.
///
/// Readers take a read lock only long enough to clone an `Arc` ([`SharedFlags::snapshot`])
/// and evaluate on the snapshot; a reload parses outside any lock and swaps the `Arc` in
/// under a short write lock. A file that fails to read or parse leaves the old flags in
/// place and returns the error. Environment overrides applied through the handle are
/// remembered and re-applied after every reload, so a hot reload never silently undoes
/// `EMERGENCY_SHUTDOWN=true`.
#[derive(Debug, Clone)]
pub struct SharedFlags {
    inner: Arc<Inner>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

fn read_file(path: &Path) -> Result<(Option<SystemTime>, Vec<u8>), FlagError> {
    let err = |source| FlagError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    let bytes = std::fs::read(path).map_err(err)?;
    Ok((meta.modified().ok(), bytes))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<FlagStore, FlagError> {
    let text = std::str::from_utf8(bytes).map_err(|e| FlagError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    FlagStore::from_json_with_origin(text, &path.display().to_string())
}

impl SharedFlags {
    /// A handle on a fixed store (no file; reloads are no-ops).
    pub fn new(store: FlagStore) -> Self {
        SharedFlags {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(store)),
                source: Mutex::new(Source::default()),
            }),
        }
    }

    /// Loads `path` and remembers it for [`SharedFlags::reload_if_changed`].
    ///
    /// # Errors
    /// As [`FlagStore::load`].
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, FlagError> {
        let path = path.into();
        let (modified, bytes) = read_file(&path)?;
        let store = parse(&path, &bytes)?;
        let shared = SharedFlags::new(store);
        shared.lock_source().file = Some(FileState {
            len: bytes.len() as u64,
            sha256: sha256(&bytes),
            modified,
            path,
        });
        Ok(shared)
    }

    fn lock_source(&self) -> std::sync::MutexGuard<'_, Source> {
        self.inner
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current store. Cheap: one read lock and an `Arc` clone.
    pub fn snapshot(&self) -> Arc<FlagStore> {
        let guard = self
            .inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&guard)
    }

    fn swap(&self, store: FlagStore) {
        let mut guard = self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *guard = Arc::new(store);
    }

    /// [`FlagStore::evaluate`] on the current snapshot.
    pub fn evaluate(&self, name: &str, subject: &str, now: SystemTime) -> Evaluation {
        self.snapshot().evaluate(name, subject, now)
    }

    /// [`FlagStore::is_enabled`] on the current snapshot (unknown flags are off).
    pub fn is_enabled(&self, name: &str, subject: &str, now: SystemTime) -> bool {
        self.snapshot().is_enabled(name, subject, now)
    }

    /// Applies environment overrides to the current store and remembers them for later
    /// reloads and replacements. Returns what was applied.
    ///
    /// # Errors
    /// [`FlagError::InvalidOverride`]; nothing is applied then.
    pub fn apply_env_overrides(
        &self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<FlagOverride>, FlagError> {
        let mut source = self.lock_source();
        let mut store = (*self.snapshot()).clone();
        let parsed = store.parse_env_overrides(vars)?;
        store.apply_overrides(&parsed)?;
        source
            .overrides
            .retain(|o| !parsed.iter().any(|p| p.flag == o.flag));
        source.overrides.extend(parsed.iter().cloned());
        self.swap(store);
        Ok(parsed)
    }

    /// The environment overrides in force.
    pub fn overrides(&self) -> Vec<FlagOverride> {
        self.lock_source().overrides.clone()
    }

    /// Replaces the store (e.g. after a rollout step), re-applying remembered overrides.
    ///
    /// # Errors
    /// [`FlagError::OverriddenFlagMissing`]; the old store stays.
    pub fn replace(&self, mut store: FlagStore) -> Result<(), FlagError> {
        let source = self.lock_source();
        store.apply_overrides(&source.overrides)?;
        self.swap(store);
        Ok(())
    }

    /// Re-reads the file if its modification time or size changed and its SHA-256 differs
    /// from the last load; validates, re-applies overrides and swaps the new store in.
    ///
    /// # Errors
    /// [`FlagError::Read`], [`FlagError::Parse`], any validation error, or
    /// [`FlagError::OverriddenFlagMissing`]. The previous flags stay in force, and the
    /// next call tries the file again.
    pub fn reload_if_changed(&self) -> Result<ReloadOutcome, FlagError> {
        let mut source = self.lock_source();
        let Source { file, overrides } = &mut *source;
        let Some(state) = file.as_mut() else {
            return Ok(ReloadOutcome::NoSource);
        };
        let meta = std::fs::metadata(&state.path).map_err(|e| FlagError::Read {
            path: state.path.clone(),
            source: e,
        })?;
        if meta.modified().ok() == state.modified && meta.len() == state.len {
            return Ok(ReloadOutcome::Unchanged);
        }
        let (modified, bytes) = read_file(&state.path)?;
        let hash = sha256(&bytes);
        if hash == state.sha256 {
            state.modified = modified;
            state.len = bytes.len() as u64;
            return Ok(ReloadOutcome::Unchanged);
        }
        let mut store = parse(&state.path, &bytes)?;
        store.apply_overrides(overrides)?;
        let flags = store.len();
        state.modified = modified;
        state.len = bytes.len() as u64;
        state.sha256 = hash;
        self.swap(store);
        tracing::info!(path = %state.path.display(), flags, "feature flags reloaded");
        Ok(ReloadOutcome::Reloaded { flags })
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::flag::Flag;

    #[test]
    fn snapshot_survives_replacement() {
        let shared = SharedFlags::new(FlagStore::from_flags([Flag::new("a", true)]).unwrap());
        let old = shared.snapshot();
        shared
            .replace(FlagStore::from_flags([Flag::new("a", false)]).unwrap())
            .unwrap();
        assert!(old.is_enabled("a", "u", UNIX_EPOCH));
        assert!(!shared.is_enabled("a", "u", UNIX_EPOCH));
        assert_eq!(shared.reload_if_changed().unwrap(), ReloadOutcome::NoSource);
    }

    #[test]
    fn overrides_survive_replace_and_block_removal() {
        let shared = SharedFlags::new(
            FlagStore::from_flags([Flag::new("a", true), Flag::new("kill", false)]).unwrap(),
        );
        shared
            .apply_env_overrides([("KILL".to_owned(), "true".to_owned())])
            .unwrap();
        shared
            .replace(
                FlagStore::from_flags([Flag::new("a", true), Flag::new("kill", false)]).unwrap(),
            )
            .unwrap();
        assert!(shared.is_enabled("kill", "u", UNIX_EPOCH));
        let err = shared
            .replace(FlagStore::from_flags([Flag::new("a", true)]).unwrap())
            .unwrap_err();
        assert!(matches!(err, FlagError::OverriddenFlagMissing { .. }));
        assert!(shared.is_enabled("kill", "u", UNIX_EPOCH));
    }
}
