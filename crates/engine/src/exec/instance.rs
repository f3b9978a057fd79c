//! Computing one instance: run the stage into its staging directory, inside a rayon pool of
//! the instance's CPU weight, then publish the result with its `meta.json`. Used by every
//! executor, locally or on a cluster node.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use super::outcome::{Failure, InstanceError};
use super::pools::{Lease, Pools};
use super::JobSpec;
use crate::artifact::store::Store;
use crate::artifact::{collect_outputs, outputs_digest, InstanceMeta};
use crate::stage::{Progress, Registry, StageContext, StageError};

/// Runs `spec` to completion in a pool of `spec.resources.cpus` threads. The staging
/// directory is kept on failure and on cancellation, so partial work (checkpoints, logs)
/// survives for inspection and resume.
pub fn execute(
    spec: &JobSpec,
    registry: &Registry,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<InstanceMeta, InstanceError> {
    let threads = spec.resources.cpus.max(1);
    let lease = Pools::shared()
        .take(threads)
        .map_err(|e| Failure::ThreadPool {
            threads,
            message: e.to_string(),
        })?;
    execute_in(&lease, spec, registry, cancel, progress)
}

/// [`execute`] in a pool the caller leased (the local executor starts the job on one of its
/// threads, so the stage runs there without a hand-over).
pub fn execute_in(
    pool: &Lease,
    spec: &JobSpec,
    registry: &Registry,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<InstanceMeta, InstanceError> {
    let store = Store::at(spec.store_root.clone());
    let stage = registry
        .get(&spec.kind)
        .ok_or_else(|| Failure::UnknownKind(spec.kind.clone()))?;
    let staging = store.begin(&spec.key)?;
    let stage_error = |error: StageError| match error {
        StageError::Cancelled => InstanceError::Cancelled {
            staging: staging.clone(),
        },
        error => InstanceError::Failed(Failure::Stage {
            error,
            staging: staging.clone(),
        }),
    };
    // Parsed once while planning; a cluster node, which has no plan, parses here.
    let prepared = match &spec.prepared {
        Some(prepared) => prepared.clone(),
        None => stage
            .prepare(&spec.params)
            .map_err(|e| stage_error(StageError::Params(e.message)))?,
    };
    let started = SystemTime::now();
    let clock = Instant::now();
    let threads = pool.threads();
    let ctx = StageContext {
        instance: &spec.instance,
        seed: spec.seed,
        threads,
        gpus: &spec.gpu_ids,
        gpu_share: spec.resources.gpus.share(),
        out_dir: &staging,
        inputs: &spec.inputs,
        sweep: &spec.sweep,
        config_id: &spec.config_id,
        cancel,
        progress_sink: progress,
    };
    let ran = pool.install(|| catch_unwind(AssertUnwindSafe(|| prepared.run(&ctx))));
    let output = match ran {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(stage_error(e)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            return Err(Failure::Panicked {
                kind: spec.kind.clone(),
                message,
            }
            .into());
        }
    };
    let seconds = clock.elapsed().as_secs_f64();
    let outputs = collect_outputs(&staging)?;
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
        facts: output.facts,
        started: humantime::format_rfc3339_millis(started).to_string(),
        finished: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        seconds,
        threads,
        host: cbound_core::host_name(),
    };
    store.commit(&spec.key, &meta)?;
    Ok(meta)
}
