//! Submission: which instances become which job arrays, the `sbatch` arguments of each
//! array (also printed by `cbound plan --executor slurm`), and the task files and batch
//! script written before an array is submitted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::cluster::Cluster;
use super::follow::Task;
use super::{
    absolute, io, slurm_dir, task_path, InputSource, SlurmError, SlurmSettings, TaskFile, TaskInput,
};
use crate::artifact::store::{dir_name, Store};
use crate::artifact::{write_atomic, write_json};
use crate::config::{ClusterResources, Resources};
use crate::dag::plan::Decision;
use crate::dag::plan::Reason;
use crate::dag::Dag;
use crate::exec::outcome::{Failure, Outcome, SkipReason};
use crate::exec::scheduler::RunOptions;

/// The instances of one stage submitted as one job array, in task index order.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub stage: usize,
    pub instances: Vec<usize>,
    /// Earlier groups this one waits for (`afterok`).
    pub after: Vec<usize>,
}

/// What a run submits, and the instances settled without submitting anything.
#[derive(Debug)]
pub struct Submission {
    pub groups: Vec<Group>,
    pub settled: Vec<(usize, Outcome)>,
}

/// Splits the plan into job arrays: instances cached (with cached inputs) are settled, as are
/// those whose key cannot be computed and those downstream of them; the rest are grouped by
/// stage, each group waiting for the groups holding its instances' inputs.
pub fn submission(
    dag: &Dag,
    decisions: &[Decision],
    selected: &dyn Fn(usize) -> bool,
) -> Submission {
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    let mut group_of_stage: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut settled: Vec<(usize, Outcome)> = Vec::new();
    let mut settled_ok: HashMap<usize, bool> = HashMap::new();
    for (i, inst) in dag.instances.iter().enumerate() {
        if !selected(i) {
            settled.push((i, Outcome::NotSelected));
            settled_ok.insert(i, false);
            continue;
        }
        if let Some(&u) = inst
            .inputs
            .iter()
            .find(|u| settled_ok.get(u) == Some(&false))
        {
            let outcome =
                Outcome::Skipped(SkipReason::InputDidNotFinish(dag.instances[u].id.clone()));
            settled.push((i, outcome));
            settled_ok.insert(i, false);
            continue;
        }
        let waits = inst.inputs.iter().any(|u| group_of.contains_key(u));
        match &decisions[i] {
            Decision::Cached(meta) if !waits => {
                settled.push((i, Outcome::Cached(meta.clone())));
                settled_ok.insert(i, true);
            }
            Decision::Run(Reason::KeyError(e)) if !waits => {
                settled.push((i, Outcome::Failed(Failure::Key(e.clone()))));
                settled_ok.insert(i, false);
            }
            _ => {
                let g = *group_of_stage.entry(inst.stage).or_insert_with(|| {
                    groups.push(Group {
                        stage: inst.stage,
                        instances: Vec::new(),
                        after: Vec::new(),
                    });
                    groups.len() - 1
                });
                for u in &inst.inputs {
                    if let Some(&ug) = group_of.get(u) {
                        if ug != g && !groups[g].after.contains(&ug) {
                            groups[g].after.push(ug);
                        }
                    }
                }
                groups[g].instances.push(i);
                group_of.insert(i, g);
            }
        }
    }
    Submission { groups, settled }
}

/// One `sbatch` call, as data, so that `plan` can print it and tests can check it.
#[derive(Debug, Clone)]
pub struct ArraySpec<'a> {
    pub tasks: usize,
    pub max_parallel: Option<usize>,
    pub job_name: String,
    /// The largest need among the array's instances (an array has one resource request).
    pub resources: Resources,
    pub cluster: &'a ClusterResources,
    /// Job ids (or placeholders) of the arrays it waits for.
    pub after: Vec<String>,
    pub task_dir: &'a Path,
    pub workdir: &'a Path,
}

/// The arguments of `sbatch` for a job array; the batch script comes last.
pub fn sbatch_args(spec: &ArraySpec) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_string(),
        format!(
            "--array=0-{}{}",
            spec.tasks.saturating_sub(1),
            spec.max_parallel
                .map(|k| format!("%{k}"))
                .unwrap_or_default()
        ),
        format!("--job-name={}", spec.job_name),
        format!("--chdir={}", spec.workdir.display()),
        // %a is the task index: one log pair per instance, read back when a task fails.
        format!("--output={}", spec.task_dir.join("%a.out").display()),
        format!("--error={}", spec.task_dir.join("%a.err").display()),
        format!("--cpus-per-task={}", spec.resources.cpus.max(1)),
    ];
    // Slurm allocates whole GPUs (its `shard` GRES needs site configuration), so a share of
    // one (`gpus: 0.5`) asks for a whole device; only the local executor packs shares.
    if !spec.resources.gpus.is_none() {
        args.push(format!("--gres=gpu:{}", spec.resources.gpus.devices()));
    }
    if let Some(m) = &spec.cluster.memory {
        args.push(format!("--mem={m}"));
    }
    if let Some(t) = &spec.cluster.time {
        args.push(format!("--time={t}"));
    }
    if let Some(p) = &spec.cluster.partition {
        args.push(format!("--partition={p}"));
    }
    if !spec.after.is_empty() {
        args.push(format!("--dependency=afterok:{}", spec.after.join(":")));
        // Without it, dependents of a failed task would wait in the queue forever.
        args.push("--kill-on-invalid-dep=yes".to_string());
    }
    args.extend(spec.cluster.sbatch.iter().cloned());
    args.push(spec.task_dir.join("task.sh").display().to_string());
    args
}

/// A command line as a shell would read it back (arguments quoted where needed; `$` kept
/// bare so placeholders like `$JOB_train` read as variables).
pub fn shell_line(program: &str, args: &[String]) -> String {
    let quote = |a: &str| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=/.,:%@+$".contains(c))
        {
            a.to_string()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for `sh`, whatever it holds.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The shell variable `plan` uses for a stage's not-yet-known array job id.
fn job_var(stage: &str) -> String {
    let name: String = stage
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("JOB_{name}")
}

fn array_spec<'a>(
    dag: &Dag,
    group: &Group,
    settings: &'a SlurmSettings,
    cluster: &'a ClusterResources,
    after: Vec<String>,
    task_dir: &'a Path,
) -> ArraySpec<'a> {
    let resources = group
        .instances
        .iter()
        .map(|&i| dag.instances[i].resources)
        .fold(Resources::default(), |a, r| Resources {
            cpus: a.cpus.max(r.cpus),
            gpus: a.gpus.max(r.gpus),
        });
    ArraySpec {
        tasks: group.instances.len(),
        max_parallel: settings.max_parallel,
        job_name: format!(
            "cbound:{}:{}",
            dag.pipeline.name,
            dag.stage_id(group.instances[0])
        ),
        resources,
        cluster,
        after,
        task_dir,
        workdir: &settings.workdir,
    }
}

/// The `sbatch` command lines a run would submit, for `cbound plan --executor slurm`. Job ids
/// are known only once submitted, so dependencies read `$JOB_<stage>` and paths `$RUN`.
pub fn plan_lines(
    dag: &Dag,
    decisions: &[Decision],
    selected: &dyn Fn(usize) -> bool,
    settings: &SlurmSettings,
    store_root: &Path,
) -> Vec<String> {
    let sub = submission(dag, decisions, selected);
    let base = slurm_dir(store_root, "$RUN");
    let mut lines = Vec::new();
    for g in &sub.groups {
        let decl = &dag.pipeline.stages[g.stage];
        let cluster = decl.cluster.or(&settings.defaults);
        let task_dir = base.join(dir_name(&decl.id));
        let after = g
            .after
            .iter()
            .map(|&a| format!("${}", job_var(&dag.pipeline.stages[sub.groups[a].stage].id)))
            .collect();
        let spec = array_spec(dag, g, settings, &cluster, after, &task_dir);
        lines.push(format!(
            "{}=$({})",
            job_var(&decl.id),
            shell_line("sbatch", &sbatch_args(&spec))
        ));
    }
    lines
}

/// The task file of instance `i`: its inputs are either results cached before the run or
/// tasks of this run, named by their result files.
fn task_file(
    dag: &Dag,
    i: usize,
    decisions: &[Decision],
    tasks: &[Task],
    task_of: &HashMap<usize, usize>,
    store_root: &Path,
    options: &RunOptions,
) -> TaskFile {
    let inst = &dag.instances[i];
    let inputs = inst
        .inputs
        .iter()
        .map(|&u| {
            let source = match (task_of.get(&u), &decisions[u]) {
                (Some(&t), _) => InputSource::Task {
                    result: task_path(&tasks[t].dir, tasks[t].index, ".result.json"),
                },
                (None, Decision::Cached(meta)) => InputSource::Cached {
                    cache_key: meta.cache_key.clone(),
                },
                // Unreachable by construction (an input is either cached or submitted); the
                // task then reports the missing input by name.
                (None, Decision::Run(_)) => InputSource::Task {
                    result: PathBuf::from("/nonexistent"),
                },
            };
            TaskInput {
                stage: dag.stage_id(u).to_string(),
                instance: dag.instances[u].id.clone(),
                source,
            }
        })
        .collect();
    TaskFile {
        pipeline: dag.pipeline.name.clone(),
        stage: dag.stage_id(i).to_string(),
        instance: inst.id.clone(),
        kind: dag.kind(i).to_string(),
        params: inst.params.clone(),
        seed: inst.seed,
        labels: inst.labels.clone(),
        sweep: inst.sweep.clone(),
        config_id: inst.config_id.clone(),
        resources: inst.resources,
        store_root: store_root.to_path_buf(),
        forced: options.forced.contains(&i),
        inputs,
    }
}

/// Writes the task files and the batch script of each group and submits its array, in group
/// order (an array waits only for earlier ones), stopping before the next group on Ctrl-C.
/// `job_ids` and `tasks` receive what was submitted, also when an error ends it early, so the
/// caller can cancel those arrays.
#[allow(clippy::too_many_arguments)]
pub(super) fn submit(
    cluster: &mut dyn Cluster,
    dag: &Dag,
    groups: &[Group],
    decisions: &[Decision],
    options: &RunOptions,
    settings: &SlurmSettings,
    store: &Store,
    run_id: &str,
    interrupt: &AtomicBool,
    job_ids: &mut Vec<String>,
    tasks: &mut Vec<Task>,
) -> Result<(), SlurmError> {
    let base = slurm_dir(store.root(), run_id);
    let store_root = absolute(store.root());
    let mut task_of: HashMap<usize, usize> = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        if interrupt.load(Ordering::Relaxed) {
            break;
        }
        let decl = &dag.pipeline.stages[group.stage];
        let dir = base.join(dir_name(&decl.id));
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        for (index, &i) in group.instances.iter().enumerate() {
            let task = task_file(dag, i, decisions, tasks, &task_of, &store_root, options);
            write_json(&task_path(&dir, index, ".json"), &task).map_err(|e| {
                SlurmError::TaskFile {
                    path: task_path(&dir, index, ".json"),
                    message: e.to_string(),
                }
            })?;
            task_of.insert(i, tasks.len());
            tasks.push(Task::new(i, g, index, dir.clone()));
        }
        let script = format!(
            "#!/bin/sh\n# cbound: each task of this array computes one instance of stage `{}` (pipeline `{}`, run {run_id}).\nexec {} exec-instance --task-dir {}\n",
            decl.id,
            dag.pipeline.name,
            sh_quote(&settings.cbound.display().to_string()),
            sh_quote(&dir.display().to_string()),
        );
        let script_path = dir.join("task.sh");
        write_atomic(&script_path, script.as_bytes()).map_err(|e| SlurmError::TaskFile {
            path: script_path.clone(),
            message: e.to_string(),
        })?;
        let requests = decl.cluster.or(&settings.defaults);
        let after = group.after.iter().map(|&a| job_ids[a].clone()).collect();
        let args = sbatch_args(&array_spec(dag, group, settings, &requests, after, &dir));
        tracing::debug!("{}", shell_line("sbatch", &args));
        let id = cluster.submit(&args).map_err(|e| match e {
            SlurmError::Command { message, .. } => SlurmError::Rejected {
                stage: decl.id.clone(),
                message,
            },
            other => other,
        })?;
        job_ids.push(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Gpus;
    use std::path::Path;

    fn cluster() -> ClusterResources {
        ClusterResources {
            memory: Some("4G".into()),
            time: Some("1:00:00".into()),
            partition: Some("gpu".into()),
            sbatch: vec!["--qos=high".into()],
        }
    }

    #[test]
    fn sbatch_arguments_carry_every_resource_and_the_dependency() {
        let c = cluster();
        let spec = ArraySpec {
            tasks: 6,
            max_parallel: Some(3),
            job_name: "cbound:p:train".into(),
            resources: Resources {
                cpus: 4,
                gpus: Gpus::whole(1),
            },
            cluster: &c,
            after: vec!["101".into(), "102".into()],
            task_dir: Path::new("/o/p/.cbound/slurm/r/train"),
            workdir: Path::new("/home/me/study"),
        };
        let line = shell_line("sbatch", &sbatch_args(&spec));
        assert_eq!(
            line,
            "sbatch --parsable --array=0-5%3 --job-name=cbound:p:train --chdir=/home/me/study \
             --output=/o/p/.cbound/slurm/r/train/%a.out --error=/o/p/.cbound/slurm/r/train/%a.err \
             --cpus-per-task=4 --gres=gpu:1 --mem=4G --time=1:00:00 --partition=gpu \
             --dependency=afterok:101:102 --kill-on-invalid-dep=yes --qos=high \
             /o/p/.cbound/slurm/r/train/task.sh"
        );
    }

    #[test]
    fn a_first_stage_has_no_dependency_and_no_gpu_request() {
        let c = ClusterResources::default();
        let spec = ArraySpec {
            tasks: 1,
            max_parallel: None,
            job_name: "j".into(),
            resources: Resources::default(),
            cluster: &c,
            after: vec![],
            task_dir: Path::new("/t"),
            workdir: Path::new("/w"),
        };
        let args = sbatch_args(&spec);
        assert!(args.contains(&"--array=0-0".to_string()), "{args:?}");
        assert!(!args.iter().any(|a| a.starts_with("--dependency")
            || a.starts_with("--gres")
            || a.starts_with("--mem")));
    }

    #[test]
    fn stage_settings_override_executor_defaults_and_flags_add_up() {
        let stage = ClusterResources {
            memory: Some("1G".into()),
            sbatch: vec!["--qos=low".into()],
            ..Default::default()
        };
        let merged = stage.or(&cluster());
        assert_eq!(merged.memory.as_deref(), Some("1G"));
        assert_eq!(merged.partition.as_deref(), Some("gpu"));
        assert_eq!(merged.sbatch, vec!["--qos=high", "--qos=low"]);
    }

    #[test]
    fn shell_lines_quote_what_a_shell_would_split() {
        assert_eq!(
            shell_line(
                "sbatch",
                &[
                    "--chdir=/my dir".into(),
                    "--dependency=afterok:$JOB_a".into()
                ]
            ),
            "sbatch '--chdir=/my dir' --dependency=afterok:$JOB_a"
        );
        assert_eq!(shell_line("x", &["it's".into()]), r"x 'it'\''s'");
        assert_eq!(job_var("my-stage"), "JOB_my_stage");
    }
}
