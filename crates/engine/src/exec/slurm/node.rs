//! The node side: what `cbound exec-instance` runs for one array task. It reads the task
//! file, learns the cache keys of inputs computed in the same run from their result files,
//! reuses a result that has appeared meanwhile or computes the instance through
//! [`execute`], and always leaves a result file (and progress reports) for the submitter.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{task_path, InputSource, ProgressFile, SlurmError, TaskFile, TaskResult};
use crate::artifact::store::Store;
use crate::artifact::{read_json, write_json, InstanceMeta};
use crate::dag::plan::key_inputs_of;
use crate::exec::{execute, JobSpec};
use crate::stage::{InputArtifact, Progress, Registry};

/// Runs one array task on a node: the instance of `<task_dir>/<index>.json`. Always leaves a
/// [`TaskResult`] behind unless the task file itself is unreadable; an `Err` is the
/// instance's error (the caller prints it and exits non-zero, so `afterok` holds back
/// dependents).
pub fn run_task(task_dir: &Path, index: usize, registry: &Registry) -> Result<(), SlurmError> {
    let path = task_path(task_dir, index, ".json");
    let task: TaskFile = read_json(&path).map_err(|e| SlurmError::TaskFile {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let result_path = task_path(task_dir, index, ".result.json");
    let mut result = TaskResult {
        host: cbound_core::host_name(),
        ..TaskResult::default()
    };
    let outcome = compute_task(&task, task_dir, index, registry, &mut result);
    if let Err(e) = &outcome {
        result.error = Some(e.clone());
    }
    write_json(&result_path, &result).map_err(|e| SlurmError::TaskFile {
        path: result_path.clone(),
        message: e.to_string(),
    })?;
    outcome.map_err(|error| SlurmError::InstanceFailed {
        instance: task.instance.clone(),
        error,
    })
}

fn compute_task(
    task: &TaskFile,
    task_dir: &Path,
    index: usize,
    registry: &Registry,
    result: &mut TaskResult,
) -> Result<(), String> {
    let store = Store::at(task.store_root.clone());
    let mut upstream: Vec<InstanceMeta> = Vec::new();
    for input in &task.inputs {
        let key = match &input.source {
            InputSource::Cached { cache_key } => cache_key.clone(),
            InputSource::Task { result } => {
                let r: TaskResult = read_json(result).map_err(|e| {
                    format!(
                        "input {} has no result ({e}): did its task run?",
                        input.instance
                    )
                })?;
                match (r.cache_key, r.error) {
                    (Some(key), None) => key,
                    (_, error) => {
                        return Err(format!(
                            "input {} failed: {}",
                            input.instance,
                            error.unwrap_or_default()
                        ))
                    }
                }
            }
        };
        let meta = store.lookup(&key).ok_or_else(|| {
            format!(
                "input {}: result {key} is missing from the store",
                input.instance
            )
        })?;
        upstream.push(meta);
    }
    let refs: Vec<&InstanceMeta> = upstream.iter().collect();
    let key_inputs = key_inputs_of(&task.kind, &task.params, task.seed, registry, &refs)?;
    let key = key_inputs.key();
    result.cache_key = Some(key.clone());
    if !task.forced && store.lookup(&key).is_some() {
        result.cached = true;
        return Ok(());
    }
    let inputs = task
        .inputs
        .iter()
        .zip(upstream)
        .map(|(input, meta)| InputArtifact {
            stage: input.stage.clone(),
            instance: input.instance.clone(),
            dir: store.object_dir(&meta.cache_key),
            meta,
        })
        .collect();
    let spec = JobSpec {
        job: index,
        pipeline: task.pipeline.clone(),
        stage: task.stage.clone(),
        instance: task.instance.clone(),
        kind: task.kind.clone(),
        params: task.params.clone(),
        prepared: None,
        seed: task.seed,
        labels: task.labels.clone(),
        sweep: task.sweep.clone(),
        config_id: task.config_id.clone(),
        key,
        key_inputs,
        inputs,
        resources: task.resources,
        // Slurm gives the job its GPUs (--gres) and sets CUDA_VISIBLE_DEVICES to them, so
        // inside the job they are devices 0..n.
        gpu_ids: (0..task.resources.gpus.devices()).collect(),
        store_root: task.store_root.clone(),
    };
    // Progress goes to a file the submitter reads; at most once a second, to spare a shared
    // filesystem.
    let progress_path = task_path(task_dir, index, ".progress.json");
    let last = Mutex::new(None::<Instant>);
    let sink = move |p: Progress| {
        let Ok(mut last) = last.lock() else { return };
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) || p.done >= p.total;
        if due {
            *last = Some(Instant::now());
            let file = ProgressFile {
                done: p.done,
                total: p.total,
                message: p.message,
            };
            let _ = write_json(&progress_path, &file);
        }
    };
    // Slurm stops a cancelled task by signals; its staging directory survives for resume.
    let cancel = AtomicBool::new(false);
    execute(&spec, registry, &cancel, &sink)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
