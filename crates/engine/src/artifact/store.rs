//! One pipeline's output directory.
//!
//! ```text
//! outputs/<pipeline>/
//!   <run-id>/results.parquet      one row per instance of that run
//!   <run-id>/run.json             what ran, how it ended
//!   <run-id>/<stage>              -> .cbound/trees/<digest>  (symlink)
//!   <run-id>/<stage>/<instance>/  so this reaches .cbound/objects/<key>
//!   latest                        -> <run-id>
//!   .cbound/objects/<key>/        finished instances, content addressed by cache key
//!   .cbound/trees/<digest>/<instance> -> ../../objects/<key>  one stage's results (symlinks)
//!   .cbound/staging/<key>/        instances being computed (kept on failure: resumable)
//!   .cbound/state.jsonl           the key each instance had last time (for --why), a journal
//!   .cbound/lock                  held by the cbound process writing here
//! ```
//!
//! An instance becomes visible under `objects/` only by renaming its complete staging
//! directory, after its `meta.json` is written: whatever is there is finished.
//!
//! What a run does per instance is what its cost at ten thousand instances is made of, so
//! nothing here creates a file per cached instance. A stage's links live in a tree named by
//! the digest of its (instance, key) pairs, and a run links the tree: a rerun whose results
//! did not change links the existing tree (one symlink per stage, where it used to be one per
//! instance), and a tree, like an object, never changes once made, so every run directory
//! keeps showing that run's results. The last key of every instance is one line of a journal
//! appended to when it changes, read once per process, instead of a file per instance.

use std::collections::HashMap;
use std::fs::{self, File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{io_err, read_json, write_atomic, write_json, ArtifactError, InstanceMeta};
use crate::exec::outcome::{InstanceStatus, RunStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use output directory {path}: {source}")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("output directory {path} is in use by another cbound run ({holder}); wait for it to finish or use --out to write elsewhere")]
    Locked { path: PathBuf, holder: String },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

pub struct Store {
    root: PathBuf,
    /// The state journal, read on first use.
    state: Mutex<Option<StateIndex>>,
}

/// Held while a run writes into a store; released when dropped (or when the process dies:
/// it is an OS file lock, so a killed run never leaves a stale lock behind).
pub struct StoreLock {
    _file: File,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct LastKey {
    /// Key of the instance's most recent successful result; empty if it never succeeded.
    #[serde(default)]
    cache_key: String,
    /// The most recent attempt that failed or was cancelled, if it came after that result.
    #[serde(default)]
    failed: Option<FailedAttempt>,
}

/// An attempt that ended without a result, remembered so `plan --why` can say so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub cache_key: String,
    /// `failed` or `cancelled` (state written before there was a status says neither: failed).
    #[serde(default = "failed_status")]
    pub status: InstanceStatus,
    /// First line of the error.
    pub error: String,
}

fn failed_status() -> InstanceStatus {
    InstanceStatus::Failed
}

/// One line of `.cbound/state.jsonl`: an instance's state from then on.
#[derive(Serialize, Deserialize)]
struct StateLine {
    stage: String,
    instance: String,
    #[serde(flatten)]
    state: LastKey,
}

/// The state journal in memory: the last line of every instance wins.
#[derive(Default)]
struct StateIndex {
    entries: HashMap<String, HashMap<String, LastKey>>,
    /// Lines in the journal, superseded ones included (to know when to compact it).
    lines: usize,
    /// The journal does not end in a newline (a write was cut short): the next line must
    /// start on a fresh one, or it would be lost with the fragment.
    torn: bool,
    /// Opened for appending on the first change.
    file: Option<File>,
    /// `.cbound/state/<stage>/<instance>.json` files of stores written before the journal.
    legacy: bool,
}

impl StateIndex {
    fn get(&self, stage: &str, instance: &str) -> Option<&LastKey> {
        self.entries.get(stage)?.get(instance)
    }
}

/// Turns an instance id into a directory name (ids may hold any matrix value).
pub fn dir_name(instance: &str) -> String {
    // Percent-escapes only what a file name cannot hold, and `%` itself, so the mapping is
    // one-to-one: `a/b` and `a_b` (or `a%2Fb`) get different directories and links.
    let mut out = String::with_capacity(instance.len());
    for c in instance.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    out
}

impl Store {
    /// Opens (creating) `<out>/<pipeline>`, failing with the OS reason if it cannot be written.
    pub fn open(out: &Path, pipeline: &str) -> Result<Store, StoreError> {
        let store = Store::at(out.join(pipeline));
        for dir in [
            store.objects(),
            store.internal().join("staging"),
            store.trees(),
        ] {
            fs::create_dir_all(&dir).map_err(|source| StoreError::NotWritable {
                path: store.root.clone(),
                source,
            })?;
        }
        Ok(store)
    }

    /// Opens a store only to read it; a missing directory is simply empty.
    pub fn open_read_only(out: &Path, pipeline: &str) -> Store {
        Store::at(out.join(pipeline))
    }

    /// A store whose directories already exist (on a worker, after the submitter opened it).
    pub fn at(root: PathBuf) -> Store {
        Store {
            root,
            state: Mutex::new(None),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn internal(&self) -> PathBuf {
        self.root.join(".cbound")
    }

    fn objects(&self) -> PathBuf {
        self.internal().join("objects")
    }

    fn trees(&self) -> PathBuf {
        self.internal().join("trees")
    }

    pub fn object_dir(&self, key: &str) -> PathBuf {
        self.objects().join(key)
    }

    pub fn staging_dir(&self, key: &str) -> PathBuf {
        self.internal().join("staging").join(key)
    }

    /// The finished instance with this key, if there is one.
    pub fn lookup(&self, key: &str) -> Option<InstanceMeta> {
        read_json(&self.object_dir(key).join("meta.json")).ok()
    }

    /// Takes the store's lock or says who holds it.
    pub fn lock(&self, command: &str) -> Result<StoreLock, StoreError> {
        let path = self.internal().join("lock");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StoreError::NotWritable {
                path: self.root.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::Locked {
                    path: self.root.clone(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(StoreError::NotWritable {
                    path: self.root.clone(),
                    source,
                })
            }
        }
        let info = format!(
            "pid {} on {} since {}: {}",
            std::process::id(),
            cbound_core::host_name(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            command
        );
        file.set_len(0).map_err(io_err(&path))?;
        file.rewind().map_err(io_err(&path))?;
        file.write_all(info.as_bytes()).map_err(io_err(&path))?;
        // Holding the lock, no commit is in flight and no run is running: finish what a killed
        // one left.
        self.recover_replaced();
        self.mark_dead_runs();
        self.compact_state();
        Ok(StoreLock { _file: file })
    }

    /// A run whose `run.json` still says `running` while we hold the lock died without
    /// recording its end (SIGKILL, power loss, a second signal): record it as `killed`, so
    /// that no run stays "running" forever.
    fn mark_dead_runs(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path().join("run.json");
            let Ok(mut record) = read_json::<serde_json::Value>(&path) else {
                continue;
            };
            let status = record.get("status").and_then(|s| s.as_str());
            if status.and_then(RunStatus::parse) == Some(RunStatus::Running) {
                record["status"] = serde_json::json!(RunStatus::Killed);
                record["ended_by"] = serde_json::json!(
                    "the process died without recording its end (SIGKILL, power loss, or a \
                     second signal); found by the next run"
                );
                let _ = write_json(&path, &record);
            }
        }
    }

    /// A forced rerun moves the old result aside (`staging/<key>.old-<pid>`) before renaming
    /// the new one into place. Killed between the two, the key would have no result at all and
    /// `plan --why` would say "never run": put the old result back (the forced rerun did not
    /// finish, so the old one is still the key's finished result), or drop it when the new one
    /// made it.
    fn recover_replaced(&self) {
        let staging = self.internal().join("staging");
        let Ok(entries) = fs::read_dir(&staging) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((key, _pid)) = name.rsplit_once(".old-") else {
                continue;
            };
            let target = self.object_dir(key);
            if target.exists() {
                let _ = fs::remove_dir_all(entry.path());
            } else {
                let _ = fs::rename(entry.path(), &target);
            }
        }
    }

    /// Creates (or reuses, to resume) the staging directory of an instance.
    pub fn begin(&self, key: &str) -> Result<PathBuf, ArtifactError> {
        let dir = self.staging_dir(key);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// Publishes a finished staging directory: private `.` files are dropped, `meta.json`
    /// written, then the directory renamed under `objects/`.
    pub fn commit(&self, key: &str, meta: &InstanceMeta) -> Result<PathBuf, ArtifactError> {
        let staging = self.staging_dir(key);
        for entry in fs::read_dir(&staging).map_err(io_err(&staging))? {
            let entry = entry.map_err(io_err(&staging))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                let path = entry.path();
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(io_err(&path))?;
            }
        }
        write_json(&staging.join("meta.json"), meta)?;
        let target = self.object_dir(key);
        if target.exists() {
            // A forced rerun replaces the old result: move it aside first, because rename
            // cannot replace a non-empty directory.
            let trash = self
                .internal()
                .join("staging")
                .join(format!("{key}.old-{}", std::process::id()));
            fs::rename(&target, &trash).map_err(io_err(&target))?;
            // A kill here is repaired by the next run's `lock` (recover_replaced).
            crate::failpoint::hit("commit.old_moved_aside");
            let _ = fs::remove_dir_all(&trash);
        }
        crate::failpoint::hit("commit.before_rename");
        fs::rename(&staging, &target).map_err(io_err(&target))?;
        crate::failpoint::hit("commit.after_rename");
        Ok(target)
    }

    fn journal_path(&self) -> PathBuf {
        self.internal().join("state.jsonl")
    }

    /// Where a store written before the journal kept an instance's state.
    fn legacy_state_path(&self, stage: &str, instance: &str) -> PathBuf {
        self.internal()
            .join("state")
            .join(dir_name(stage))
            .join(format!("{}.json", dir_name(instance)))
    }

    fn load_state(&self) -> StateIndex {
        let mut index = StateIndex {
            legacy: fs::read_dir(self.internal().join("state"))
                .is_ok_and(|mut entries| entries.next().is_some()),
            ..StateIndex::default()
        };
        let Ok(text) = fs::read(self.journal_path()) else {
            return index;
        };
        index.torn = !text.is_empty() && !text.ends_with(b"\n");
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            index.lines += 1;
            // A line cut short by a kill is skipped; the lines after it still count.
            if let Ok(StateLine {
                stage,
                instance,
                state,
            }) = serde_json::from_slice(line)
            {
                index
                    .entries
                    .entry(stage)
                    .or_default()
                    .insert(instance, state);
            }
        }
        index
    }

    /// Runs `f` on the state, loading it first if this is the first use.
    fn with_state<R>(&self, f: impl FnOnce(&mut StateIndex) -> R) -> R {
        let mut guard = match self.state.lock() {
            Ok(guard) => guard,
            // A panic elsewhere while holding it leaves plain data; keep using it.
            Err(poisoned) => poisoned.into_inner(),
        };
        let index = guard.get_or_insert_with(|| self.load_state());
        f(index)
    }

    /// The state of an instance: from the journal, else from a pre-journal store's file.
    fn last_key(&self, stage: &str, instance: &str) -> Option<LastKey> {
        self.with_state(|index| {
            index.get(stage, instance).cloned().or_else(|| {
                index
                    .legacy
                    .then(|| read_json(&self.legacy_state_path(stage, instance)).ok())
                    .flatten()
            })
        })
    }

    /// Makes `state` the instance's state, appending a line to the journal unless it is
    /// its state already.
    fn set_state(&self, stage: &str, instance: &str, state: LastKey) -> Result<(), ArtifactError> {
        // Compared in place: a cached rerun asks this once per instance.
        let unchanged = self.with_state(|index| index.get(stage, instance) == Some(&state));
        if unchanged || self.last_key(stage, instance).as_ref() == Some(&state) {
            return Ok(());
        }
        let path = self.journal_path();
        let mut line = serde_json::to_vec(&StateLine {
            stage: stage.to_string(),
            instance: instance.to_string(),
            state: state.clone(),
        })
        .map_err(|source| ArtifactError::Json {
            path: path.clone(),
            source,
        })?;
        line.push(b'\n');
        self.with_state(|index| {
            if index.torn {
                line.insert(0, b'\n');
            }
            let file = match &mut index.file {
                Some(file) => file,
                slot => slot.insert(
                    File::options()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(io_err(&path))?,
                ),
            };
            // One write per line (O_APPEND): a kill leaves at most a fragment of this line.
            file.write_all(&line).map_err(io_err(&path))?;
            index.torn = false;
            index.lines += 1;
            index
                .entries
                .entry(stage.to_string())
                .or_default()
                .insert(instance.to_string(), state);
            Ok(())
        })
    }

    /// Rewrites the journal with one line per instance once superseded lines outnumber the
    /// live ones (and a thousand), so it stays proportional to the pipeline. Called holding
    /// the lock.
    fn compact_state(&self) {
        let lines = self.with_state(|index| {
            let live: usize = index.entries.values().map(HashMap::len).sum();
            if index.lines <= 2 * live + 1000 {
                return None;
            }
            let mut lines = Vec::new();
            let mut stages: Vec<_> = index.entries.iter().collect();
            stages.sort_by(|a, b| a.0.cmp(b.0));
            for (stage, instances) in stages {
                let mut instances: Vec<_> = instances.iter().collect();
                instances.sort_by(|a, b| a.0.cmp(b.0));
                for (instance, state) in instances {
                    let line = StateLine {
                        stage: stage.clone(),
                        instance: instance.clone(),
                        state: state.clone(),
                    };
                    if let Ok(mut bytes) = serde_json::to_vec(&line) {
                        bytes.push(b'\n');
                        lines.extend(bytes);
                    }
                }
            }
            index.file = None;
            Some((lines, live))
        });
        if let Some((bytes, live)) = lines {
            match write_atomic(&self.journal_path(), &bytes) {
                Ok(()) => self.with_state(|index| {
                    index.lines = live;
                    index.torn = false;
                }),
                Err(e) => tracing::warn!("compacting the state journal: {e}"),
            }
        }
    }

    /// The metadata of this instance's most recent result, whatever its key was.
    pub fn last_result(&self, stage: &str, instance: &str) -> Option<InstanceMeta> {
        self.lookup(&self.last_key(stage, instance)?.cache_key)
    }

    pub fn remember(&self, stage: &str, instance: &str, key: &str) -> Result<(), ArtifactError> {
        self.set_state(
            stage,
            instance,
            LastKey {
                cache_key: key.to_string(),
                failed: None,
            },
        )
    }

    /// Records an attempt that failed or was cancelled (`status`), keeping the pointer to
    /// the last good result.
    pub fn remember_attempt(
        &self,
        stage: &str,
        instance: &str,
        key: &str,
        status: InstanceStatus,
        error: &str,
    ) -> Result<(), ArtifactError> {
        let cache_key = self
            .last_key(stage, instance)
            .map(|l| l.cache_key)
            .unwrap_or_default();
        let error = error.lines().next().unwrap_or_default().to_string();
        self.set_state(
            stage,
            instance,
            LastKey {
                cache_key,
                failed: Some(FailedAttempt {
                    cache_key: key.to_string(),
                    status,
                    error,
                }),
            },
        )
    }

    /// The most recent attempt of an instance that failed or was cancelled, if it was its
    /// last attempt.
    pub fn last_failure(&self, stage: &str, instance: &str) -> Option<FailedAttempt> {
        self.last_key(stage, instance)?.failed
    }

    /// Makes a fresh run directory named after the current time.
    pub fn new_run(&self) -> Result<(String, PathBuf), ArtifactError> {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "-");
        let mut id = stamp.clone();
        let mut n = 1;
        loop {
            let dir = self.root.join(&id);
            match fs::create_dir(&dir) {
                Ok(()) => return Ok((id, dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    n += 1;
                    id = format!("{stamp}-{n}");
                }
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
    }

    /// Links the finished instances of one stage into a run directory, so that
    /// `<run>/<stage>/<instance>` is each one's result: `<run>/<stage>` points at the tree of
    /// exactly these (instance, key) pairs, made if no earlier run made it.
    pub fn link_stage(
        &self,
        run_dir: &Path,
        stage: &str,
        instances: &[(&str, &str)],
    ) -> Result<(), ArtifactError> {
        let mut entries: Vec<(String, &str)> = instances
            .iter()
            .map(|(instance, key)| (dir_name(instance), *key))
            .collect();
        entries.sort();
        entries.dedup_by(|a, b| a.0 == b.0);
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"cbound link tree 1\0");
        for (name, key) in &entries {
            hasher.update(name.as_bytes());
            hasher.update(b"\0");
            hasher.update(key.as_bytes());
            hasher.update(b"\n");
        }
        let digest = hasher.finalize().to_hex().to_string();
        let tree = self.trees().join(&digest);
        if !tree.is_dir() {
            // Built aside and renamed, so a tree under its name is always complete.
            let tmp = self
                .trees()
                .join(format!(".{digest}.tmp-{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
            for (name, key) in &entries {
                // Relative, so the whole outputs folder can be moved or copied.
                let target = Path::new("../../objects").join(key);
                let link = tmp.join(name);
                symlink_dir(&target, &link).map_err(io_err(&link))?;
            }
            if let Err(e) = fs::rename(&tmp, &tree) {
                let _ = fs::remove_dir_all(&tmp);
                if !tree.is_dir() {
                    return Err(io_err(&tree)(e));
                }
            }
        }
        let link = run_dir.join(dir_name(stage));
        let tmp = run_dir.join(format!(".{}.tmp-{}", dir_name(stage), std::process::id()));
        let _ = fs::remove_file(&tmp);
        symlink_dir(&Path::new("../.cbound/trees").join(&digest), &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &link).map_err(io_err(&link))
    }

    /// Points `latest` at a run directory.
    pub fn set_latest(&self, run_id: &str) -> Result<(), ArtifactError> {
        let link = self.root.join("latest");
        let tmp = self
            .root
            .join(format!(".latest.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        symlink_dir(Path::new(run_id), &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &link).map_err(io_err(&link))
    }
}

#[cfg(unix)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_dir(target, link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::KeyInputs;

    fn meta(key: &str) -> InstanceMeta {
        InstanceMeta {
            pipeline: "p".into(),
            stage: "s".into(),
            instance: "s@a=1".into(),
            kind: "k".into(),
            cache_key: key.into(),
            key_inputs: KeyInputs {
                kind: "k".into(),
                kind_version: 1,
                definition: None,
                cbound_version: "0".into(),
                seed: 0,
                params: serde_json::json!({}),
                inputs: vec![],
                files: vec![],
            },
            labels: Default::default(),
            outputs: vec![],
            outputs_digest: String::new(),
            metrics: Default::default(),
            facts: Default::default(),
            started: String::new(),
            finished: String::new(),
            seconds: 0.0,
            threads: 1,
            host: String::new(),
        }
    }

    #[test]
    fn commit_publishes_whole_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        let staging = store.begin("k1").unwrap();
        fs::write(staging.join("a.txt"), "x").unwrap();
        fs::create_dir(staging.join(".checkpoint")).unwrap();
        assert!(
            store.lookup("k1").is_none(),
            "unfinished work must not look finished"
        );
        store.commit("k1", &meta("k1")).unwrap();
        assert_eq!(store.lookup("k1").unwrap().cache_key, "k1");
        assert!(!store.object_dir("k1").join(".checkpoint").exists());
        assert!(!staging.exists());
        // A forced rerun replaces it.
        let staging = store.begin("k1").unwrap();
        fs::write(staging.join("b.txt"), "y").unwrap();
        store.commit("k1", &meta("k1")).unwrap();
        assert!(store.object_dir("k1").join("b.txt").exists());
        assert!(!store.object_dir("k1").join("a.txt").exists());
    }

    /// A NaN metric (an estimator that refused) is JSON `null` on disk; the result must still
    /// be found, with its NaN, or every rerun would compute it again.
    #[test]
    fn a_result_with_a_nan_metric_is_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        let mut m = meta("k1");
        m.metrics.insert("xy.histogram".into(), f64::NAN);
        m.metrics.insert("xy.ksg".into(), 0.5);
        store.begin("k1").unwrap();
        store.commit("k1", &m).unwrap();
        let text = fs::read_to_string(store.object_dir("k1").join("meta.json")).unwrap();
        assert!(text.contains("null"), "{text}");
        let back = store.lookup("k1").expect("found");
        assert!(back.metrics["xy.histogram"].is_nan());
        assert_eq!(back.metrics["xy.ksg"], 0.5);
    }

    #[test]
    fn a_stage_links_one_tree_and_an_unchanged_rerun_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        for key in ["k1", "k2", "k3"] {
            store.begin(key).unwrap();
            store.commit(key, &meta(key)).unwrap();
        }
        let trees = || fs::read_dir(store.trees()).unwrap().count();
        let (_, run1) = store.new_run().unwrap();
        store
            .link_stage(&run1, "s", &[("s@a=1", "k1"), ("s@a/2", "k2")])
            .unwrap();
        let read = |run: &Path, inst: &str| {
            read_json::<InstanceMeta>(&run.join("s").join(dir_name(inst)).join("meta.json"))
                .unwrap()
                .cache_key
        };
        assert_eq!(read(&run1, "s@a=1"), "k1");
        assert_eq!(read(&run1, "s@a/2"), "k2");
        assert_eq!(trees(), 1);
        // The same results in another order: the same tree, no new links.
        let run2 = store.root().join("run2");
        fs::create_dir(&run2).unwrap();
        store
            .link_stage(&run2, "s", &[("s@a/2", "k2"), ("s@a=1", "k1")])
            .unwrap();
        assert_eq!(trees(), 1);
        assert_eq!(
            fs::read_link(run1.join("s")).unwrap(),
            fs::read_link(run2.join("s")).unwrap()
        );
        // A changed result makes a new tree; the older run still shows its own.
        let run3 = store.root().join("run3");
        fs::create_dir(&run3).unwrap();
        store
            .link_stage(&run3, "s", &[("s@a=1", "k3"), ("s@a/2", "k2")])
            .unwrap();
        assert_eq!(trees(), 2);
        assert_eq!(read(&run3, "s@a=1"), "k3");
        assert_eq!(read(&run1, "s@a=1"), "k1");
    }

    #[test]
    fn the_state_journal_keeps_the_last_state_of_each_instance() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        store.begin("k1").unwrap();
        store.commit("k1", &meta("k1")).unwrap();
        store.remember("s", "s@a=1", "k1").unwrap();
        store.remember("s", "s@a=1", "k1").unwrap();
        store
            .remember_attempt("s", "s@a=1", "k2", InstanceStatus::Cancelled, "cancelled")
            .unwrap();
        store
            .remember_attempt("s", "s@a=2", "k9", InstanceStatus::Failed, "boom\nmore")
            .unwrap();
        let text = fs::read_to_string(store.journal_path()).unwrap();
        // An unchanged state appends nothing.
        assert_eq!(text.lines().count(), 3, "{text}");
        // A line cut short by a kill, then a later line: only the fragment is lost.
        let mut file = File::options()
            .append(true)
            .open(store.journal_path())
            .unwrap();
        file.write_all(b"{\"stage\":\"s\",\"inst").unwrap();
        drop(file);
        let reopened = Store::open(dir.path(), "p").unwrap();
        reopened.remember("s", "s@b=1", "k1").unwrap();
        let again = Store::open(dir.path(), "p").unwrap();
        let attempt = again.last_failure("s", "s@a=1").unwrap();
        assert_eq!(attempt.status, InstanceStatus::Cancelled);
        assert_eq!(attempt.cache_key, "k2");
        assert_eq!(again.last_result("s", "s@a=1").unwrap().cache_key, "k1");
        let failed = again.last_failure("s", "s@a=2").unwrap();
        assert_eq!(
            (failed.status, failed.error.as_str()),
            (InstanceStatus::Failed, "boom")
        );
        assert_eq!(again.last_result("s", "s@b=1").unwrap().cache_key, "k1");
    }

    #[test]
    fn a_journal_of_mostly_superseded_lines_is_compacted_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        for round in 0..1200 {
            store.remember("s", "s@a=1", &format!("k{round}")).unwrap();
        }
        store.remember("s", "s@a=2", "x").unwrap();
        let lines = || {
            fs::read_to_string(store.journal_path())
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(lines(), 1201);
        let fresh = Store::open(dir.path(), "p").unwrap();
        let _lock = fresh.lock("test").unwrap();
        assert_eq!(lines(), 2);
        let state: Vec<StateLine> = fs::read_to_string(store.journal_path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(state[0].state.cache_key, "k1199");
        assert_eq!(state[1].state.cache_key, "x");
    }

    #[test]
    fn state_written_before_the_journal_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        store.begin("old").unwrap();
        store.commit("old", &meta("old")).unwrap();
        let legacy = store.legacy_state_path("s", "s@a=1");
        fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        fs::write(
            &legacy,
            r#"{"cache_key": "old", "failed": {"cache_key": "new", "error": "x"}}"#,
        )
        .unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        assert_eq!(store.last_result("s", "s@a=1").unwrap().cache_key, "old");
        // State files had no status: their attempts failed.
        assert_eq!(
            store.last_failure("s", "s@a=1").unwrap().status,
            InstanceStatus::Failed
        );
    }

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        let _held = store.lock("cbound run first.yaml").unwrap();
        let other = Store::open(dir.path(), "p").unwrap();
        match other.lock("cbound run second.yaml") {
            Err(StoreError::Locked { holder, .. }) => {
                assert!(holder.contains("cbound run first.yaml"), "{holder}");
                assert!(holder.contains(&format!("pid {}", std::process::id())));
            }
            other => panic!("expected Locked, got {:?}", other.err()),
        }
    }

    #[test]
    fn unwritable_root_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        fs::write(&file, "").unwrap();
        let err = Store::open(&file, "p").err().unwrap();
        assert!(
            err.to_string().contains("cannot use output directory"),
            "{err}"
        );
    }
}
