//! A cheaply cloneable, hot-reloadable handle on the current [`FlagStore`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

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

/// What a [`SharedFlags::check_file`] call found: the file behind the handle is fine.
/// (A file that would be refused is the method's error.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileCheck {
    /// The handle has no file behind it: nothing is reloaded, nothing to check.
    NoSource,
    /// The file is gone. The flags in force stay ([`SharedFlags::reload_if_changed`]
    /// reports the missing file as an error at every call, and keeps them).
    Missing,
    /// The file holds the definitions in force, and they take the environment
    /// overrides in force.
    Unchanged,
    /// The file changed since it was applied, and [`SharedFlags::reload_if_changed`]
    /// will accept it: it reads, parses, validates and takes the overrides in force.
    Changed,
}

/// A file whose modification time is less than this before the moment it was read (or
/// after it: a clock stepped back) is not known to be unchanged by its modification
/// time and size alone. File systems keep modification times at a granularity (from a
/// few milliseconds to 2 s), so a second write of the same length within it can leave
/// both as they were: such a file is read and hashed again until it has settled.
const SETTLE: Duration = Duration::from_secs(2);

/// Whether a file modified at `modified` and looked at `now` has settled (see
/// [`SETTLE`]). Unknown modification times never settle.
fn settled(modified: Option<SystemTime>, now: SystemTime) -> bool {
    modified
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age >= SETTLE)
}

/// What we remember about the file to decide whether it changed.
#[derive(Debug)]
struct FileState {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
    sha256: [u8; 32],
    /// Whether `modified` had [`settled`] when the file was read: only then does the
    /// same modification time and size prove the same content.
    settled: bool,
    /// The environment overrides in force when the content was applied (it takes them).
    overrides: Vec<FlagOverride>,
    /// Whether the flags in force came from the file; false while the handle runs on
    /// defaults waiting for the file to appear ([`SharedFlags::load_or`]).
    present: bool,
}

impl FileState {
    /// Whether `meta` is this file as it was read, by modification time and size, and
    /// that alone proves it (it had settled when it was read).
    fn unchanged(&self, meta: &std::fs::Metadata) -> bool {
        self.present
            && self.settled
            && meta.modified().ok() == self.modified
            && meta.len() == self.len
    }
}

/// What identifies one version of the file for [`LastCheck`]: its modification time
/// and length (taken before it was read), and the environment overrides it was
/// checked with.
#[derive(Debug, Clone, PartialEq)]
struct FileKey {
    modified: SystemTime,
    len: u64,
    overrides: Vec<FlagOverride>,
}

/// The outcome of checking one version of the file; a refusal is shared, not re-made.
type Checked = Result<FileCheck, Arc<FlagError>>;

/// The last version of the file [`SharedFlags::check_file`] read and judged, so that a
/// changed file (a bad one especially, which the reloader never takes in) is not read
/// and parsed again at every check.
#[derive(Debug, Default)]
struct LastCheck(Option<(FileKey, Checked)>);

impl LastCheck {
    /// The outcome for `key`, if it was the last one checked.
    fn get(&self, key: &FileKey) -> Option<Checked> {
        self.0
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, c)| c.clone())
    }

    /// Remembers `checked` for `key`, unless the file had not [`settled`] at `now`.
    fn put(&mut self, key: FileKey, checked: Checked, now: SystemTime) {
        self.0 = settled(Some(key.modified), now).then_some((key, checked));
    }
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
    /// For [`SharedFlags::check_file`].
    last_check: LastCheck,
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
            settled: settled(modified, SystemTime::now()),
            modified,
            path,
            overrides: Vec::new(),
            present: true,
        });
        Ok(shared)
    }

    /// Loads `path` like [`SharedFlags::load`] when it exists; otherwise starts on
    /// `defaults` and still remembers `path`, so [`SharedFlags::reload_if_changed`] loads
    /// the file once it appears (e.g. put in place by an operator or a configuration
    /// tool after a server started without one). Until then reloads report
    /// [`ReloadOutcome::Unchanged`].
    ///
    /// # Errors
    /// As [`FlagStore::load`], for a file that exists.
    pub fn load_or(path: impl Into<PathBuf>, defaults: FlagStore) -> Result<Self, FlagError> {
        let path = path.into();
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let shared = SharedFlags::new(defaults);
                shared.lock_source().file = Some(FileState {
                    path,
                    modified: None,
                    len: 0,
                    sha256: [0; 32],
                    settled: false,
                    overrides: Vec::new(),
                    present: false,
                });
                Ok(shared)
            }
            _ => SharedFlags::load(path),
        }
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

    /// Re-reads the file if its modification time or size changed (or had not settled
    /// when it was last read: a write within the file system's timestamp granularity
    /// can leave both as they were) and its SHA-256 differs from the last load;
    /// validates, re-applies overrides and swaps the new store in.
    ///
    /// # Errors
    /// [`FlagError::Read`], [`FlagError::Parse`], any validation error, or
    /// [`FlagError::OverriddenFlagMissing`]. The previous flags stay in force, and the
    /// next call tries the file again.
    pub fn reload_if_changed(&self) -> Result<ReloadOutcome, FlagError> {
        let mut source = self.lock_source();
        let Source {
            file, overrides, ..
        } = &mut *source;
        let Some(state) = file.as_mut() else {
            return Ok(ReloadOutcome::NoSource);
        };
        let meta = match std::fs::metadata(&state.path) {
            Ok(meta) => meta,
            // Still running on defaults: no file yet is no news.
            Err(e) if !state.present && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ReloadOutcome::Unchanged);
            }
            Err(e) => {
                return Err(FlagError::Read {
                    path: state.path.clone(),
                    source: e,
                });
            }
        };
        if state.unchanged(&meta) {
            return Ok(ReloadOutcome::Unchanged);
        }
        let (modified, bytes) = read_file(&state.path)?;
        let now = SystemTime::now();
        let hash = sha256(&bytes);
        if state.present && hash == state.sha256 {
            state.modified = modified;
            state.len = bytes.len() as u64;
            state.settled = settled(modified, now);
            return Ok(ReloadOutcome::Unchanged);
        }
        let mut store = parse(&state.path, &bytes)?;
        store.apply_overrides(overrides)?;
        let flags = store.len();
        state.modified = modified;
        state.len = bytes.len() as u64;
        state.settled = settled(modified, now);
        state.sha256 = hash;
        state.overrides.clone_from(overrides);
        state.present = true;
        self.swap(store);
        tracing::info!(path = %state.path.display(), flags, "feature flags reloaded");
        Ok(ReloadOutcome::Reloaded { flags })
    }

    /// Whether the file behind the handle is the one in force, or one
    /// [`SharedFlags::reload_if_changed`] will accept, without applying anything: for
    /// a readiness probe that must say when an operator's edit (a kill switch, a
    /// rollout step) is refused and the old flags stay in force.
    ///
    /// Cheap when nothing changed: a file with the modification time and size it had
    /// when it was applied, with the same environment overrides in force, costs one
    /// `stat` and is answered from the reloader's own state. A changed file is read,
    /// parsed and validated with the overrides in force, and the outcome is remembered
    /// for that version (modification time, size, overrides), so a bad file is not
    /// parsed again at every call either. Neither shortcut is taken for a file modified
    /// less than 2 s before it was read: file systems keep modification times at a
    /// granularity (up to 2 s), so a second write of the same length within it can
    /// leave both unchanged; such a file is read (and its SHA-256 compared with the
    /// applied one) until it has settled.
    ///
    /// # Errors
    /// [`FlagError::Read`] when the file cannot be looked at or read (other than not
    /// existing: [`FileCheck::Missing`]); [`FlagError::FileRejected`] naming the file
    /// when its content would be refused, with the reason (the JSON error, the rule
    /// broken, the override whose flag it lacks) as its source.
    pub fn check_file(&self) -> Result<FileCheck, FlagError> {
        self.check_file_at(SystemTime::now())
    }

    /// [`SharedFlags::check_file`] with the wall clock at `now`.
    fn check_file_at(&self, now: SystemTime) -> Result<FileCheck, FlagError> {
        let mut source = self.lock_source();
        let Source {
            file,
            overrides,
            last_check,
        } = &mut *source;
        let Some(state) = file.as_ref() else {
            return Ok(FileCheck::NoSource);
        };
        let read_error = |source: std::io::Error| FlagError::Read {
            path: state.path.clone(),
            source,
        };
        let meta = match std::fs::metadata(&state.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileCheck::Missing),
            Err(e) => return Err(read_error(e)),
        };
        let rejected = |source: Arc<FlagError>| FlagError::FileRejected {
            path: state.path.clone(),
            source,
        };
        if state.unchanged(&meta) && state.overrides == *overrides {
            return Ok(FileCheck::Unchanged);
        }
        // Taken before the read: an edit in between shows as a change at the next call.
        let key = meta.modified().ok().map(|modified| FileKey {
            modified,
            len: meta.len(),
            overrides: overrides.clone(),
        });
        if let Some(checked) = key.as_ref().and_then(|k| last_check.get(k)) {
            return checked.map_err(rejected);
        }
        let bytes = match std::fs::read(&state.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileCheck::Missing),
            Err(e) => return Err(read_error(e)),
        };
        let in_force = state.present && sha256(&bytes) == state.sha256;
        let checked = if in_force && state.overrides == *overrides {
            Ok(FileCheck::Unchanged)
        } else {
            parse(&state.path, &bytes)
                .and_then(|mut store| store.apply_overrides(overrides))
                .map(|()| {
                    if in_force {
                        FileCheck::Unchanged
                    } else {
                        FileCheck::Changed
                    }
                })
                .map_err(Arc::new)
        };
        if let Some(key) = key {
            last_check.put(key, checked.clone(), now);
        }
        checked.map_err(rejected)
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::flag::Flag;

    fn key(modified: SystemTime) -> FileKey {
        FileKey {
            modified,
            len: 10,
            overrides: Vec::new(),
        }
    }

    #[test]
    fn a_file_check_is_kept_once_the_file_has_settled() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut check = LastCheck::default();
        // Written just now: a same-length write in the same timestamp tick would look
        // unchanged, so the outcome is not kept.
        let fresh = key(now - Duration::from_millis(500));
        check.put(fresh.clone(), Ok(FileCheck::Changed), now);
        assert!(check.get(&fresh).is_none());
        let settled = key(now - SETTLE);
        let refused = Arc::new(FlagError::InvalidFlagName {
            name: "Bad Name!".to_owned(),
        });
        check.put(settled.clone(), Err(Arc::clone(&refused)), now);
        assert!(matches!(check.get(&settled), Some(Err(e)) if Arc::ptr_eq(&e, &refused)));
        // Any other time, length or overrides is another file.
        assert!(check.get(&key(now - Duration::from_secs(3))).is_none());
        let longer = FileKey {
            len: 11,
            ..settled.clone()
        };
        assert!(check.get(&longer).is_none());
        let overridden = FileKey {
            overrides: vec![FlagOverride {
                var: "KILL".to_owned(),
                flag: "kill".to_owned(),
                value: crate::OverrideValue::Enabled(true),
            }],
            ..settled.clone()
        };
        assert!(check.get(&overridden).is_none());
        // A file from the future (clock stepped back) is not kept either.
        check.put(
            key(now + Duration::from_secs(60)),
            Ok(FileCheck::Changed),
            now,
        );
        assert!(check.get(&settled).is_none());
    }

    /// A temporary flags file path, unique to this process and call, not there yet;
    /// the file is removed when dropped (the test passed or failed).
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(tag: &str) -> Self {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "genesis-flags-shared-{}-{tag}-{}.json",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            // Left by a crashed run of a process that had this id: not this test's file.
            let _ = std::fs::remove_file(&path);
            TempFile(path)
        }

        /// Writes `text` and sets the file's modification time to `modified`.
        fn write_at(&self, text: &str, modified: SystemTime) {
            std::fs::write(&self.0, text).unwrap();
            let f = std::fs::File::options().write(true).open(&self.0).unwrap();
            f.set_modified(modified).unwrap();
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The whole error chain, as an operator reads it in a log.
    fn chain(e: &FlagError) -> String {
        genesis_core::error_chain(e)
    }

    /// Started on defaults because the file was missing, the handle picks the file up
    /// once it appears (a server started without one, then the file put in place), and
    /// says nothing while it is absent.
    #[test]
    fn a_file_that_appears_after_start_is_loaded() {
        let file = TempFile::new("appears");
        let defaults =
            FlagStore::from_json(r#"{"flags":[{"name":"builtin","enabled":true}]}"#).unwrap();
        let shared = SharedFlags::load_or(&file.0, defaults).unwrap();
        assert!(shared.snapshot().get("builtin").is_some());
        assert_eq!(
            shared.reload_if_changed().unwrap(),
            ReloadOutcome::Unchanged
        );
        assert_eq!(shared.check_file().unwrap(), FileCheck::Missing);
        let old = SystemTime::now() - Duration::from_secs(60);
        file.write_at(r#"{"flags":[{"name":"deployed","enabled":true}]}"#, old);
        assert_eq!(shared.check_file().unwrap(), FileCheck::Changed);
        assert_eq!(
            shared.reload_if_changed().unwrap(),
            ReloadOutcome::Reloaded { flags: 1 }
        );
        assert!(shared.snapshot().get("deployed").is_some());
        assert!(shared.snapshot().get("builtin").is_none());
        assert_eq!(
            shared.reload_if_changed().unwrap(),
            ReloadOutcome::Unchanged
        );
        assert_eq!(shared.check_file().unwrap(), FileCheck::Unchanged);
        // Once loaded, a file that goes away is an error again (the flags stay).
        std::fs::remove_file(&file.0).unwrap();
        assert!(shared.reload_if_changed().is_err());
        assert!(shared.snapshot().get("deployed").is_some());
        // An invalid first file is refused like any other; the defaults stay.
        let other = TempFile::new("appears-bad");
        let shared =
            SharedFlags::load_or(&other.0, FlagStore::builtin_defaults().unwrap()).unwrap();
        other.write_at("{not json", old);
        assert!(shared.check_file().is_err());
        assert!(shared.reload_if_changed().is_err());
        assert!(!shared.snapshot().is_empty());
    }

    #[test]
    fn check_file_answers_an_unchanged_file_from_its_stat_and_judges_changed_ones() {
        const GOOD: &str =
            r#"{"flags":[{"name":"a","enabled":true},{"name":"kill","enabled":false}]}"#;
        // The same length as GOOD, but invalid JSON.
        const GARBLED: &str =
            r#"{"flags":[{"name":"a","enabled":true},{"name":"kill","enabled":fals"}]}"#;
        const BAD_NAME: &str = r#"{"flags":[{"name":"Bad Name!","enabled":true}]}"#;
        // The same length as BAD_NAME, but valid.
        const GOOD_SAME_LEN: &str = r#"{"flags":[{"name":"good_name","enabled":true}]}"#;
        assert_eq!(GOOD.len(), GARBLED.len());
        assert_eq!(BAD_NAME.len(), GOOD_SAME_LEN.len());
        let file = TempFile::new("check");
        let now = SystemTime::now();
        let old = now - Duration::from_secs(60);
        file.write_at(GOOD, old);
        let shared = SharedFlags::load(&file.0).unwrap();
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Unchanged);

        // Unchanged by its stat: not read again. (Proof: same-length garbage written
        // under the same modification time still answers from the applied state.)
        file.write_at(GARBLED, old);
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Unchanged);
        file.write_at(GOOD, old);

        // Changed and valid: accepted, and still so until the reloader takes it.
        let extra = r#"{"flags":[{"name":"a","enabled":true},{"name":"kill","enabled":false},{"name":"b","enabled":true}]}"#;
        file.write_at(extra, old + Duration::from_secs(1));
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Changed);
        assert!(!shared.is_enabled("b", "u", now), "a check applies nothing");
        assert_eq!(
            shared.reload_if_changed().unwrap(),
            ReloadOutcome::Reloaded { flags: 3 }
        );
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Unchanged);

        // Changed and invalid: refused, naming the file and the rule.
        let t_bad = old + Duration::from_secs(2);
        file.write_at(BAD_NAME, t_bad);
        let err = shared.check_file_at(now).unwrap_err();
        assert!(matches!(
            &err,
            FlagError::FileRejected { source, .. } if matches!(**source, FlagError::InvalidFlagName { .. })
        ));
        let text = chain(&err);
        assert!(text.contains(&file.0.display().to_string()), "{text}");
        assert!(text.contains("must match [a-z][a-z0-9_]*"), "{text}");
        // The refused version is remembered, not parsed again: the same stat key still
        // answers with the refusal although the content is now valid.
        file.write_at(GOOD_SAME_LEN, t_bad);
        assert!(matches!(
            shared.check_file_at(now),
            Err(FlagError::FileRejected { .. })
        ));
        // The reloader refuses what the check refused.
        file.write_at(BAD_NAME, t_bad + Duration::from_secs(1));
        assert!(shared.reload_if_changed().is_err());
        assert!(shared.check_file_at(now).is_err());

        // Fixed again: back to the content in force, or on to another valid one.
        file.write_at(extra, t_bad + Duration::from_secs(2));
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Unchanged);
        file.write_at(GOOD, t_bad + Duration::from_secs(3));
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Changed);

        // The overrides in force count: the file in force takes them, a file without
        // the overridden flag is refused.
        assert_eq!(
            shared.reload_if_changed().unwrap(),
            ReloadOutcome::Reloaded { flags: 2 }
        );
        shared
            .apply_env_overrides([("KILL".to_owned(), "true".to_owned())])
            .unwrap();
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Unchanged);
        file.write_at(GOOD_SAME_LEN, t_bad + Duration::from_secs(5));
        let err = shared.check_file_at(now).unwrap_err();
        assert!(chain(&err).contains("KILL"), "{}", chain(&err));

        // Gone: the flags in force stay, nothing to refuse.
        std::fs::remove_file(&file.0).unwrap();
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Missing);
        let fixed = SharedFlags::new(FlagStore::from_flags([Flag::new("a", true)]).unwrap());
        assert_eq!(fixed.check_file().unwrap(), FileCheck::NoSource);
    }

    /// Within the settle time neither the applied state's stat nor a remembered check is
    /// trusted: a same-length rewrite in the same timestamp tick is still seen.
    #[test]
    fn check_file_reads_a_file_that_has_not_settled() {
        const GOOD: &str = r#"{"flags":[{"name":"a","enabled":true}]}"#;
        const BAD: &str = r#"{"flags":[{"name":"A","enabled":true}]}"#;
        assert_eq!(GOOD.len(), BAD.len());
        let file = TempFile::new("settle");
        let now = SystemTime::now();
        let just_now = now - Duration::from_millis(500);
        file.write_at(GOOD, just_now);
        let shared = SharedFlags::load(&file.0).unwrap();
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Unchanged);
        file.write_at(BAD, just_now);
        assert!(matches!(
            shared.check_file_at(now),
            Err(FlagError::FileRejected { .. })
        ));
        file.write_at(GOOD, just_now);
        assert_eq!(shared.check_file_at(now).unwrap(), FileCheck::Unchanged);
    }

    /// The reloader, too, reads again a file that had not settled when it was read: a
    /// same-length rewrite in the same timestamp tick is picked up, not missed for good
    /// (before, equal modification time and size were always taken as unchanged).
    #[test]
    fn the_reloader_reads_again_a_file_that_had_not_settled() {
        let file = TempFile::new("reload-settle");
        let just_now = SystemTime::now() - Duration::from_millis(500);
        file.write_at(r#"{"flags":[{"name":"a","enabled":true}]}"#, just_now);
        let shared = SharedFlags::load(&file.0).unwrap();
        file.write_at(r#"{"flags":[{"name":"b","enabled":true}]}"#, just_now);
        assert_eq!(
            shared.reload_if_changed().unwrap(),
            ReloadOutcome::Reloaded { flags: 1 }
        );
        assert!(shared.is_enabled("b", "u", UNIX_EPOCH));
    }

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
