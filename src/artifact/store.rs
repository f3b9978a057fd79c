//! One pipeline's output directory.
//!
//! ```text
//! outputs/<pipeline>/
//!   <run-id>/results.parquet      one row per instance of that run
//!   <run-id>/run.json             what ran, how it ended
//!   <run-id>/<stage>/<instance>/  -> .cbound/objects/<key>  (symlink)
//!   latest                        -> <run-id>
//!   .cbound/objects/<key>/        finished instances, content addressed by cache key
//!   .cbound/staging/<key>/        instances being computed (kept on failure: resumable)
//!   .cbound/state/<stage>/<instance>.json  the key an instance had last time (for --why)
//!   .cbound/lock                  held by the cbound process writing here
//! ```
//!
//! An instance becomes visible under `objects/` only by renaming its complete staging
//! directory, after its `meta.json` is written: whatever is there is finished.

use std::fs::{self, File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io_err, read_json, write_json, ArtifactError, InstanceMeta};

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
}

/// Held while a run writes into a store; released when dropped (or when the process dies:
/// it is an OS file lock, so a killed run never leaves a stale lock behind).
pub struct StoreLock {
    _file: File,
}

#[derive(Serialize, Deserialize)]
struct LastKey {
    /// Key of the instance's most recent successful result; empty if it never succeeded.
    #[serde(default)]
    cache_key: String,
    /// The most recent failed attempt, if it came after that result.
    #[serde(default)]
    failed: Option<FailedAttempt>,
}

/// A failed attempt, remembered so `plan --why` can say so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub cache_key: String,
    /// First line of the error.
    pub error: String,
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
        let root = out.join(pipeline);
        let store = Store { root };
        for dir in [
            store.objects(),
            store.internal().join("staging"),
            store.internal().join("state"),
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
        Store {
            root: out.join(pipeline),
        }
    }

    /// A store whose directories already exist (on a worker, after the submitter opened it).
    pub fn at(root: PathBuf) -> Store {
        Store { root }
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
            crate::host_name(),
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
            if record.get("status").and_then(|s| s.as_str()) == Some("running") {
                record["status"] = serde_json::json!("killed");
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

    fn state_path(&self, stage: &str, instance: &str) -> PathBuf {
        self.internal()
            .join("state")
            .join(dir_name(stage))
            .join(format!("{}.json", dir_name(instance)))
    }

    /// The metadata of this instance's most recent result, whatever its key was.
    pub fn last_result(&self, stage: &str, instance: &str) -> Option<InstanceMeta> {
        let last: LastKey = read_json(&self.state_path(stage, instance)).ok()?;
        self.lookup(&last.cache_key)
    }

    pub fn remember(&self, stage: &str, instance: &str, key: &str) -> Result<(), ArtifactError> {
        let path = self.state_path(stage, instance);
        if let Ok(last) = read_json::<LastKey>(&path) {
            if last.cache_key == key && last.failed.is_none() {
                return Ok(());
            }
        }
        self.write_state(
            &path,
            LastKey {
                cache_key: key.to_string(),
                failed: None,
            },
        )
    }

    /// Records a failed attempt, keeping the pointer to the last good result.
    pub fn remember_failure(
        &self,
        stage: &str,
        instance: &str,
        key: &str,
        error: &str,
    ) -> Result<(), ArtifactError> {
        let path = self.state_path(stage, instance);
        let cache_key = read_json::<LastKey>(&path)
            .map(|l| l.cache_key)
            .unwrap_or_default();
        let error = error.lines().next().unwrap_or_default().to_string();
        self.write_state(
            &path,
            LastKey {
                cache_key,
                failed: Some(FailedAttempt {
                    cache_key: key.to_string(),
                    error,
                }),
            },
        )
    }

    /// The most recent failed attempt of an instance, if its last attempt failed.
    pub fn last_failure(&self, stage: &str, instance: &str) -> Option<FailedAttempt> {
        read_json::<LastKey>(&self.state_path(stage, instance))
            .ok()?
            .failed
    }

    fn write_state(&self, path: &Path, state: LastKey) -> Result<(), ArtifactError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        write_json(path, &state)
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

    /// Links a finished instance into a run directory as `<run>/<stage>/<instance>`.
    pub fn link_into_run(
        &self,
        run_dir: &Path,
        stage: &str,
        instance: &str,
        key: &str,
    ) -> Result<(), ArtifactError> {
        let stage_dir = run_dir.join(dir_name(stage));
        fs::create_dir_all(&stage_dir).map_err(io_err(&stage_dir))?;
        let link = stage_dir.join(dir_name(instance));
        // Relative, so the whole outputs folder can be moved or copied.
        let target = Path::new("../../.cbound/objects").join(key);
        let _ = fs::remove_file(&link);
        symlink_dir(&target, &link).map_err(io_err(&link))
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
