//! Crash points for fault-injection tests: named places (every write-and-rename, every commit,
//! every training epoch's commit) where a test can make the process die as `kill -9` would.
//!
//! `CBOUND_FAILPOINTS=NAME:K[,NAME:K...]` aborts the process (no destructors, no cleanup, no
//! flushing: the state a SIGKILL leaves) the K-th time (1-based) it passes point NAME.
//! `CBOUND_FAILPOINT_LOG=FILE` appends `NAME K` for every point passed, so a test can run a
//! pipeline once uninterrupted, read the list of every kill point it has, and then kill a run
//! at each of them in turn. With neither variable set a point costs one atomic load.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

struct Config {
    /// Point name -> the pass on which to abort.
    kill: HashMap<String, u64>,
    log: Option<std::path::PathBuf>,
    passes: Mutex<HashMap<&'static str, u64>>,
}

fn config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let spec = std::env::var("CBOUND_FAILPOINTS").unwrap_or_default();
            let log = std::env::var_os("CBOUND_FAILPOINT_LOG").map(Into::into);
            let kill: HashMap<String, u64> = spec
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| match s.trim().rsplit_once(':') {
                    Some((name, k)) => (name.to_string(), k.parse().unwrap_or(1)),
                    None => (s.trim().to_string(), 1),
                })
                .collect();
            (!kill.is_empty() || log.is_some()).then(|| Config {
                kill,
                log,
                passes: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
}

/// Passes the crash point `name`: aborts here when a test asked for it (see the module doc).
pub fn hit(name: &'static str) {
    let Some(cfg) = config() else {
        return;
    };
    let pass = {
        let mut passes = cfg.passes.lock().unwrap_or_else(|e| e.into_inner());
        let n = passes.entry(name).or_insert(0);
        *n += 1;
        *n
    };
    if let Some(path) = &cfg.log {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{name} {pass}");
        }
    }
    if cfg.kill.get(name) == Some(&pass) {
        std::process::abort();
    }
}
