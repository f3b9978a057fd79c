//! Computing one instance: run the stage into its staging directory, then publish the
//! result with its `meta.json`. Used by every executor, locally or on a cluster node.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use super::JobSpec;
use crate::artifact::store::Store;
use crate::artifact::{collect_outputs, outputs_digest, InstanceMeta};
use crate::stages::{Progress, Registry, StageContext};

/// Runs `spec` to completion. Errors are messages for the user; the staging directory is
/// kept on failure so partial work (checkpoints, logs) survives for inspection and resume.
pub fn execute(
    spec: &JobSpec,
    registry: &Registry,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<InstanceMeta, String> {
    let store = Store::at(spec.store_root.clone());
    let stage = registry
        .get(&spec.kind)
        .ok_or_else(|| format!("unknown stage kind `{}`", spec.kind))?;
    let staging = store.begin(&spec.key).map_err(|e| e.to_string())?;
    let started = SystemTime::now();
    let clock = Instant::now();
    let threads = spec.resources.cpus.max(1);
    let ctx = StageContext {
        instance: &spec.instance,
        seed: spec.seed,
        threads,
        out_dir: &staging,
        inputs: &spec.inputs,
        cancel,
        progress_sink: progress,
    };
    let output = match catch_unwind(AssertUnwindSafe(|| stage.run(&spec.params, &ctx))) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return Err(format!(
                "{e} (partial outputs kept in {})",
                staging.display()
            ));
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            return Err(format!(
                "internal error: stage `{}` panicked: {msg}",
                spec.kind
            ));
        }
    };
    let seconds = clock.elapsed().as_secs_f64();
    let outputs = collect_outputs(&staging).map_err(|e| e.to_string())?;
    let meta = InstanceMeta {
        pipeline: spec.pipeline.clone(),
        stage: spec.stage.clone(),
        instance: spec.instance.clone(),
        kind: spec.kind.clone(),
        cache_key: spec.key.clone(),
        key_inputs: spec.key_inputs.clone(),
        labels: spec.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        outputs_digest: outputs_digest(&outputs),
        outputs,
        metrics: output.metrics,
        started: humantime::format_rfc3339_millis(started).to_string(),
        finished: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        seconds,
        threads,
        host: crate::host_name(),
    };
    store.commit(&spec.key, &meta).map_err(|e| e.to_string())?;
    Ok(meta)
}
