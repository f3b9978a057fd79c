//! Garbage collection of one pipeline's output directory (`cbound gc`).
//!
//! What is kept is what a kept run can reach: each run directory links its stages' trees
//! (`<run>/<stage> -> .cbound/trees/<digest>`), and each tree links the objects of that
//! stage's instances. Everything else under `.cbound/objects` and `.cbound/trees` is
//! unreachable and goes, with run directories beyond `--keep-runs`. The run `latest` points
//! at is always kept, and so is `.cbound/staging` (failed instances' partial work, which a
//! rerun resumes from). Collection holds the store's lock, so no run can be writing while
//! objects disappear; a removed object is only a cache miss later, never a wrong result.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::io_err;
use super::store::{Store, StoreError};

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Keep only the newest N run directories (plus the one `latest` names); None keeps all.
    pub keep_runs: Option<usize>,
    /// Report what would go without removing anything.
    pub dry_run: bool,
}

/// What was (or, with `dry_run`, would be) removed, and what stays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcReport {
    pub runs_removed: Vec<String>,
    pub runs_kept: usize,
    pub objects_removed: usize,
    pub objects_kept: usize,
    pub trees_removed: usize,
    /// Bytes of the files removed (links count as nothing).
    pub bytes_freed: u64,
    /// Bytes still held by kept objects.
    pub bytes_kept: u64,
}

/// Run directories of the store, oldest first: directories (not links) with a `run.json`.
/// Run ids are an RFC 3339 time stamp, with `-N` added for the N-th run in the same second.
fn run_dirs(root: &Path) -> Result<Vec<String>, StoreError> {
    let mut runs = Vec::new();
    for entry in fs::read_dir(root).map_err(io_err(root))? {
        let entry = entry.map_err(io_err(root))?;
        let file_type = entry.file_type().map_err(io_err(&entry.path()))?;
        if file_type.is_dir() && entry.path().join("run.json").is_file() {
            runs.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    // `<stamp>`, `<stamp>-2`, ..., `<stamp>-10`: by time, then by the number after it.
    runs.sort_by_key(|id| match id.rsplit_once("Z-") {
        Some((stamp, n)) if n.parse::<u32>().is_ok() => {
            (stamp.to_string(), n.parse::<u32>().unwrap_or(0))
        }
        _ => (id.trim_end_matches('Z').to_string(), 1),
    });
    Ok(runs)
}

/// The last component of a symlink's target (`../.cbound/trees/<digest>` -> `<digest>`).
fn link_name(link: &Path) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Names of the entries of `dir` that are symlinks, with the names they point at.
fn links_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter_map(|e| link_name(&e.path()))
        .collect()
}

/// Bytes of the regular files under `path`, links not followed.
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0)
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    }
}

fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(out)
}

/// Removes what no kept run reaches. Takes the store's lock for the whole collection.
pub fn collect(store: &Store, options: &GcOptions) -> Result<GcReport, StoreError> {
    let _lock = store.lock("gc")?;
    let root = store.root();
    let internal = root.join(".cbound");
    let runs = run_dirs(root)?;
    let latest = link_name(&root.join("latest"));
    let keep_from = options
        .keep_runs
        .map_or(0, |n| runs.len().saturating_sub(n));
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for (i, run) in runs.iter().enumerate() {
        if i >= keep_from || latest.as_deref() == Some(run.as_str()) {
            kept.push(run.clone());
        } else {
            removed.push(run.clone());
        }
    }
    let mut report = GcReport {
        runs_kept: kept.len(),
        ..GcReport::default()
    };

    // What the kept runs reach: their stage links' trees, and those trees' objects.
    let live_trees: BTreeSet<String> = kept
        .iter()
        .flat_map(|run| links_in(&root.join(run)))
        .collect();
    let trees_dir = internal.join("trees");
    let live_objects: BTreeSet<String> = live_trees
        .iter()
        .flat_map(|digest| links_in(&trees_dir.join(digest)))
        .collect();

    for run in &removed {
        let dir = root.join(run);
        report.bytes_freed += size_of(&dir);
        if !options.dry_run {
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
    }
    report.runs_removed = removed;
    for (name, path) in entries(&trees_dir)? {
        if !live_trees.contains(&name) {
            report.trees_removed += 1;
            if !options.dry_run {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
    }
    for (name, path) in entries(&internal.join("objects"))? {
        let bytes = size_of(&path);
        if live_objects.contains(&name) {
            report.objects_kept += 1;
            report.bytes_kept += bytes;
        } else {
            report.objects_removed += 1;
            report.bytes_freed += bytes;
            if !options.dry_run {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::InstanceMeta;

    fn meta(key: &str) -> InstanceMeta {
        serde_json::from_value(serde_json::json!({
            "pipeline": "p", "stage": "s", "instance": key, "kind": "k",
            "cache_key": key, "key_inputs": {"kind": "k", "kind_version": 1,
            "cbound_version": "0", "seed": 0, "params": {}, "inputs": [], "files": []},
            "labels": {}, "metrics": {}, "outputs": [], "outputs_digest": "",
            "started": "", "finished": "", "seconds": 0.0, "host": "h", "threads": 1
        }))
        .unwrap()
    }

    /// A run that committed `keys` (each with a 100-byte file) and linked them as stage `s`.
    fn run_with(store: &Store, keys: &[&str]) -> String {
        for key in keys {
            if store.lookup(key).is_none() {
                let dir = store.begin(key).unwrap();
                fs::write(dir.join("data.bin"), [7u8; 100]).unwrap();
                store.commit(key, &meta(key)).unwrap();
            }
        }
        let (id, dir) = store.new_run().unwrap();
        fs::write(dir.join("run.json"), "{}").unwrap();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (*k, *k)).collect();
        store.link_stage(&dir, "s", &pairs).unwrap();
        store.set_latest(&id).unwrap();
        id
    }

    #[test]
    fn objects_no_kept_run_reaches_are_removed_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        let first = run_with(&store, &["a", "b"]);
        // Run ids have one-second resolution: a second run in the same second gets `-2`.
        let second = run_with(&store, &["b", "c"]);
        assert_ne!(first, second);

        // Keeping every run keeps every object.
        let all = collect(&store, &GcOptions::default()).unwrap();
        assert_eq!((all.objects_removed, all.trees_removed), (0, 0));
        assert_eq!(all.objects_kept, 3);

        // Keeping the newest run: `a` and the first run's tree go; a dry run only counts.
        let options = GcOptions {
            keep_runs: Some(1),
            dry_run: true,
        };
        let dry = collect(&store, &options).unwrap();
        assert_eq!(dry.runs_removed, vec![first.clone()]);
        assert_eq!((dry.objects_removed, dry.trees_removed), (1, 1));
        assert!(dry.bytes_freed >= 100, "{dry:?}");
        assert!(store.lookup("a").is_some(), "a dry run removed something");

        let real = collect(
            &store,
            &GcOptions {
                dry_run: false,
                ..options
            },
        )
        .unwrap();
        assert_eq!(real, dry);
        assert!(store.lookup("a").is_none());
        assert!(store.lookup("b").is_some() && store.lookup("c").is_some());
        assert!(!dir.path().join("p").join(&first).exists());
        assert!(dir
            .path()
            .join("p")
            .join(&second)
            .join("s")
            .join("c")
            .is_dir());
        // Nothing left to collect.
        let again = collect(&store, &GcOptions::default()).unwrap();
        assert_eq!((again.objects_removed, again.bytes_freed), (0, 0));
    }

    #[test]
    fn the_latest_run_is_kept_even_beyond_keep_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "p").unwrap();
        let first = run_with(&store, &["a"]);
        let _second = run_with(&store, &["b"]);
        store.set_latest(&first).unwrap();
        let report = collect(
            &store,
            &GcOptions {
                keep_runs: Some(1),
                dry_run: false,
            },
        )
        .unwrap();
        assert!(report.runs_removed.is_empty(), "{report:?}");
        assert_eq!(report.runs_kept, 2);
        assert!(store.lookup("a").is_some());
    }
}
