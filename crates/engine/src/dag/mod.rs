//! The graph of concrete jobs: every stage expanded over its `matrix:` and fanned out over
//! its upstream instances.
//!
//! Fan-out joins on lineage: an instance remembers which instance of every swept ancestor it
//! descends from, and a downstream stage only combines inputs that agree on shared ancestors.
//! So `bound` reading from both `train@t=0.1` descendants gets the two that belong together,
//! never a cross product of unrelated ones.
//!
//! Replicates (`repeat:`) are sweep values too. A stage's own `repeat: N` is one more axis of
//! that stage, `replicate` = 0..N-1, crossed with its matrix; the pipeline's `repeat: N` is
//! one axis shared by every root stage that has no `repeat` of its own, so a stage that
//! combines two such roots pairs replicate r with replicate r. Neither touches `params`; the
//! instance id, and so the seed, differ per replicate.

pub mod plan;
pub mod render;

use std::collections::{BTreeMap, HashMap, HashSet};

use std::sync::Arc;

use crate::config::{render_value, set_dotted, Pipeline, Replicates, Resources, REPLICATE};
use crate::stage::{PreparedStage, Registry};

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    /// Index into `pipeline.stages`.
    pub stage: usize,
    /// Sweep values that tell this instance apart, inherited ones first.
    pub labels: Vec<(String, serde_json::Value)>,
    /// The value of every matrix axis in the lineage, named as in `labels`: `labels` plus
    /// the axes a one-at-a-time sweep left at their `params` value (null where `params`
    /// does not set one), so that tables of one-at-a-time sweeps join on their sweep
    /// columns.
    pub sweep: Vec<(String, serde_json::Value)>,
    /// A stable hash of `sweep` without the replicate axes: one configuration, whichever
    /// replicate (16 hex digits of BLAKE3 over the canonical JSON).
    pub config_id: String,
    /// Parameters with this instance's matrix values applied.
    pub params: serde_json::Value,
    /// Derived from the pipeline seed and the instance id: stable under reordering and
    /// under adding unrelated stages.
    pub seed: u64,
    /// Instance indices, in the order of the stage's `inputs`.
    pub inputs: Vec<usize>,
    pub resources: Resources,
    /// `params` parsed by the stage kind, once, for its resources, tracked files and run;
    /// `None` when they do not parse (validation reports that before a DAG is built).
    pub prepared: Option<Arc<dyn PreparedStage>>,
    lineage: BTreeMap<usize, usize>,
}

pub struct Dag {
    pub pipeline: Pipeline,
    pub instances: Vec<Instance>,
    /// Stage indices in dependency order (file order among independent stages).
    pub stage_order: Vec<usize>,
    /// Instance indices per stage.
    pub by_stage: Vec<Vec<usize>>,
}

/// A `--only` / `--force` name that matches nothing.
#[derive(Debug, thiserror::Error)]
#[error("no stage or instance named `{name}`{hint}")]
pub struct UnknownTarget {
    pub name: String,
    pub hint: String,
}

/// Lineage key of the pipeline-wide replicate axis (stage indices are the other keys).
const PIPELINE_REPLICATE: usize = usize::MAX;

pub fn instance_seed(pipeline_seed: u64, instance_id: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&pipeline_seed.to_le_bytes());
    hasher.update(instance_id.as_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

fn stage_order(p: &Pipeline) -> Vec<usize> {
    let index: HashMap<&str, usize> = p
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut done = vec![false; p.stages.len()];
    let mut order = Vec::new();
    // Validation guarantees acyclicity, so each pass places at least one stage.
    while order.len() < p.stages.len() {
        let before = order.len();
        for (i, s) in p.stages.iter().enumerate() {
            if !done[i]
                && s.inputs
                    .iter()
                    .all(|inp| index.get(inp.as_str()).is_none_or(|&j| done[j]))
            {
                done[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            break;
        }
    }
    order
}

/// The configuration id of a sweep: its values without the replicate axes (`replicate`,
/// `<stage>.replicate`), hashed over canonical JSON so it does not depend on key order.
pub fn config_id(sweep: &[(String, serde_json::Value)]) -> String {
    let config: BTreeMap<&str, serde_json::Value> = sweep
        .iter()
        .filter(|(k, _)| k != REPLICATE && !k.ends_with(&format!(".{REPLICATE}")))
        .map(|(k, v)| (k.as_str(), crate::artifact::canonical_json(v)))
        .collect();
    let text = serde_json::to_string(&config).unwrap_or_default();
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// The stage's own matrix choices: per instance, the value index of each axis, or `None` for
/// an axis left at its `params` value. Cross product in file order (last axis fastest), or
/// with `one_at_a_time` each axis alone in turn.
fn matrix_combinations(
    axes: &[crate::config::MatrixAxis],
    one_at_a_time: bool,
) -> Vec<Vec<Option<usize>>> {
    if one_at_a_time && !axes.is_empty() {
        let mut combos = Vec::new();
        for (a, axis) in axes.iter().enumerate() {
            for j in 0..axis.values.len() {
                let mut c = vec![None; axes.len()];
                c[a] = Some(j);
                combos.push(c);
            }
        }
        return combos;
    }
    let mut combos = vec![vec![]];
    for axis in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                (0..axis.values.len()).map(move |j| {
                    let mut next = c.clone();
                    next.push(Some(j));
                    next
                })
            })
            .collect();
    }
    combos
}

/// The lineage keys (swept ancestors) that every combination so far and every instance of
/// the next input share, when each side has one set of keys (as a DAG built stage by stage
/// does); `None` otherwise, and the join then tests each pair.
fn shared_keys(
    combos: &[(Vec<usize>, BTreeMap<usize, usize>)],
    upstream: &[usize],
    instances: &[Instance],
) -> Option<Vec<usize>> {
    let (_, first) = combos.first()?;
    if combos.iter().any(|(_, l)| !l.keys().eq(first.keys())) {
        return None;
    }
    let theirs = &instances[*upstream.first()?].lineage;
    if upstream
        .iter()
        .any(|&x| !instances[x].lineage.keys().eq(theirs.keys()))
    {
        return None;
    }
    Some(
        first
            .keys()
            .filter(|k| theirs.contains_key(k))
            .copied()
            .collect(),
    )
}

impl Dag {
    pub fn build(pipeline: Pipeline, registry: &Registry) -> Dag {
        let order = stage_order(&pipeline);
        let index: HashMap<&str, usize> = pipeline
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut instances: Vec<Instance> = Vec::new();
        let mut by_stage = vec![Vec::new(); pipeline.stages.len()];
        // Own matrix assignment of every instance of a swept stage, for label building.
        let mut own_labels: HashMap<(usize, usize), Vec<(String, serde_json::Value)>> =
            HashMap::new();
        let mut own_sweep: HashMap<(usize, usize), Vec<(String, serde_json::Value)>> =
            HashMap::new();
        for &s in &order {
            let decl = &pipeline.stages[s];
            // Every consistent combination of upstream instances.
            let mut combos: Vec<(Vec<usize>, BTreeMap<usize, usize>)> =
                vec![(vec![], BTreeMap::new())];
            if decl.gather {
                // One instance reading all upstream instances; it descends from no sweep value.
                let all = decl
                    .inputs
                    .iter()
                    .filter_map(|i| index.get(i.as_str()))
                    .flat_map(|&u| by_stage[u].iter().copied())
                    .collect();
                combos = vec![(all, BTreeMap::new())];
            }
            for input in decl.inputs.iter().filter(|_| !decl.gather) {
                let Some(&u) = index.get(input.as_str()) else {
                    continue;
                };
                let mut next = Vec::new();
                let mut join = |chosen: &Vec<usize>, lineage: &BTreeMap<usize, usize>, inst| {
                    let other: &Instance = &instances[inst];
                    let mut l = lineage.clone();
                    l.extend(other.lineage.iter().map(|(k, v)| (*k, *v)));
                    let mut c = chosen.clone();
                    c.push(inst);
                    next.push((c, l));
                };
                match shared_keys(&combos, &by_stage[u], &instances) {
                    // Upstream instances grouped by their values on the ancestors shared
                    // with the combinations so far: each combination looks up the ones that
                    // agree with it instead of testing every one (quadratic when two inputs
                    // are swept alike).
                    Some(keys) => {
                        let mut groups: HashMap<Vec<Option<usize>>, Vec<usize>> = HashMap::new();
                        for &inst in &by_stage[u] {
                            let lineage = &instances[inst].lineage;
                            let at = keys.iter().map(|k| lineage.get(k).copied()).collect();
                            groups.entry(at).or_default().push(inst);
                        }
                        for (chosen, lineage) in &combos {
                            let at: Vec<Option<usize>> =
                                keys.iter().map(|k| lineage.get(k).copied()).collect();
                            for &inst in groups.get(&at).map(Vec::as_slice).unwrap_or(&[]) {
                                join(chosen, lineage, inst);
                            }
                        }
                    }
                    None => {
                        for (chosen, lineage) in &combos {
                            for &inst in &by_stage[u] {
                                if instances[inst]
                                    .lineage
                                    .iter()
                                    .all(|(k, v)| lineage.get(k).is_none_or(|x| x == v))
                                {
                                    join(chosen, lineage, inst);
                                }
                            }
                        }
                    }
                }
                combos = next;
            }
            let own = matrix_combinations(&decl.matrix, decl.one_at_a_time);
            let replicates = pipeline.replicates(decl);
            // Replicates vary fastest: every configuration's replicates are adjacent.
            let (own_reps, shared_reps) = match replicates {
                Replicates::Single => (1, 1),
                Replicates::Own(n) => (n, 1),
                Replicates::Pipeline(n) => (1, n),
            };
            let swept = !decl.matrix.is_empty() || own_reps > 1;
            let stage = registry.get(&decl.kind);
            for (chosen, lineage) in &combos {
                for ((m, choice), r) in own
                    .iter()
                    .enumerate()
                    .flat_map(|mc| (0..own_reps.max(shared_reps)).map(move |r| (mc, r)))
                {
                    let mut lineage = lineage.clone();
                    let mut params = decl.params.clone();
                    let mut mine = Vec::new();
                    let mut full = Vec::new();
                    for (axis, j) in decl.matrix.iter().zip(choice) {
                        let Some(j) = *j else {
                            let kept = crate::config::get_dotted(&decl.params, &axis.key);
                            full.push((axis.key.clone(), kept.cloned().unwrap_or_default()));
                            continue;
                        };
                        set_dotted(&mut params, &axis.key, axis.values[j].clone());
                        mine.push((axis.key.clone(), axis.values[j].clone()));
                        full.push((axis.key.clone(), axis.values[j].clone()));
                    }
                    if own_reps > 1 {
                        mine.push((REPLICATE.to_string(), serde_json::Value::from(r)));
                        full.push((REPLICATE.to_string(), serde_json::Value::from(r)));
                    }
                    if swept {
                        let index = m * own_reps + if own_reps > 1 { r } else { 0 };
                        lineage.insert(s, index);
                        own_labels.insert((s, index), mine);
                        own_sweep.insert((s, index), full);
                    }
                    if shared_reps > 1 {
                        lineage.insert(PIPELINE_REPLICATE, r);
                    }
                    let labels = Self::labels(&pipeline, &order, &lineage, &own_labels);
                    let sweep = Self::labels(&pipeline, &order, &lineage, &own_sweep);
                    let config_id = config_id(&sweep);
                    let id = if labels.is_empty() {
                        decl.id.clone()
                    } else {
                        let parts: Vec<String> = labels
                            .iter()
                            .map(|(k, v)| format!("{k}={}", render_value(v)))
                            .collect();
                        format!("{}@{}", decl.id, parts.join(","))
                    };
                    let prepared = stage.and_then(|st| st.prepare(&params).ok());
                    let resources = decl
                        .resources
                        .or_else(|| prepared.as_ref().map(|p| p.resources()))
                        .unwrap_or_default();
                    by_stage[s].push(instances.len());
                    instances.push(Instance {
                        seed: instance_seed(pipeline.seed, &id),
                        id,
                        stage: s,
                        labels,
                        sweep,
                        config_id,
                        params,
                        inputs: chosen.clone(),
                        resources,
                        prepared,
                        lineage,
                    });
                }
            }
        }
        Dag {
            pipeline,
            instances,
            stage_order: order,
            by_stage,
        }
    }

    /// Labels from every swept stage in the lineage, in dependency order, then the
    /// pipeline-wide replicate. A key swept in two stages is qualified with its stage id to
    /// stay unambiguous (the pipeline's `replicate` never is: a stage's own one is).
    fn labels(
        pipeline: &Pipeline,
        order: &[usize],
        lineage: &BTreeMap<usize, usize>,
        own: &HashMap<(usize, usize), Vec<(String, serde_json::Value)>>,
    ) -> Vec<(String, serde_json::Value)> {
        let mut raw: Vec<(usize, String, serde_json::Value)> = Vec::new();
        for &s in order {
            if let Some(&m) = lineage.get(&s) {
                for (k, v) in own.get(&(s, m)).into_iter().flatten() {
                    raw.push((s, k.clone(), v.clone()));
                }
            }
        }
        if let Some(&r) = lineage.get(&PIPELINE_REPLICATE) {
            raw.push((PIPELINE_REPLICATE, REPLICATE.into(), r.into()));
        }
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (_, k, _) in &raw {
            *count.entry(k.as_str()).or_default() += 1;
        }
        raw.iter()
            .map(|(s, k, v)| {
                let key = if count[k.as_str()] > 1 && *s != PIPELINE_REPLICATE {
                    format!("{}.{k}", pipeline.stages[*s].id)
                } else {
                    k.clone()
                };
                (key, v.clone())
            })
            .collect()
    }

    pub fn stage_id(&self, instance: usize) -> &str {
        &self.pipeline.stages[self.instances[instance].stage].id
    }

    pub fn kind(&self, instance: usize) -> &str {
        &self.pipeline.stages[self.instances[instance].stage].kind
    }

    /// Instances named by stage ids or instance ids; unknown names are errors.
    pub fn resolve(&self, names: &[String]) -> Result<HashSet<usize>, UnknownTarget> {
        let mut out = HashSet::new();
        for name in names {
            let before = out.len();
            if let Some(s) = self.pipeline.stages.iter().position(|st| &st.id == name) {
                out.extend(self.by_stage[s].iter().copied());
            } else if let Some(i) = self.instances.iter().position(|inst| &inst.id == name) {
                out.insert(i);
            }
            if out.len() == before && !self.instances.iter().any(|i| &i.id == name) {
                let ids: Vec<&str> = self.pipeline.stages.iter().map(|s| s.id.as_str()).collect();
                let hint = match crate::config::diagnostics::did_you_mean(name, &ids) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None => format!("; stages are: {}", ids.join(", ")),
                };
                return Err(UnknownTarget {
                    name: name.clone(),
                    hint,
                });
            }
        }
        Ok(out)
    }

    /// The given instances and everything downstream of them.
    pub fn downstream_closure(&self, start: &HashSet<usize>) -> HashSet<usize> {
        let mut out = start.clone();
        // Instances are created in dependency order, so one forward pass suffices.
        for (i, inst) in self.instances.iter().enumerate() {
            if inst.inputs.iter().any(|u| out.contains(u)) {
                out.insert(i);
            }
        }
        out
    }

    /// The given instances and everything they need.
    pub fn upstream_closure(&self, start: &HashSet<usize>) -> HashSet<usize> {
        let mut out = start.clone();
        for i in (0..self.instances.len()).rev() {
            if out.contains(&i) {
                out.extend(self.instances[i].inputs.iter().copied());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn dag(text: &str) -> Dag {
        let registry = crate::stage::testkinds::registry();
        let p = crate::config::load_str(text, Path::new("t.yaml"), &[], &registry).unwrap();
        Dag::build(p, &registry)
    }

    fn ids(d: &Dag) -> Vec<&str> {
        d.instances.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn matrix_expands_to_the_cross_product_with_readable_ids() {
        let d = dag("stages:\n  a:\n    kind: synthetic\n    matrix: {rho: [0.1, 0.5], n: [100, 200, 300]}\n");
        assert_eq!(d.instances.len(), 6);
        assert_eq!(d.instances[0].id, "a@rho=0.1,n=100");
        assert_eq!(d.instances[5].id, "a@rho=0.5,n=300");
        assert_eq!(d.instances[4].params["n"], 200);
    }

    #[test]
    fn sweep_fills_one_at_a_time_axes_and_config_id_ignores_the_replicate() {
        let d = dag(concat!(
            "stages:\n",
            "  a:\n",
            "    kind: synthetic\n",
            "    params: {rho: 0.5, n: 200}\n",
            "    matrix: {rho: [0.1, 0.5], n: [100, 300]}\n",
            "    matrix_mode: one_at_a_time\n",
            "    repeat: 2\n",
            "  b: {kind: synthetic, inputs: a}\n",
        ));
        let first = &d.instances[0];
        assert_eq!(first.id, "a@rho=0.1,replicate=0");
        // The axis left at its params value is in `sweep`, not in the id's labels.
        assert_eq!(
            first.sweep,
            vec![
                ("rho".to_string(), serde_json::json!(0.1)),
                ("n".to_string(), serde_json::json!(200)),
                ("replicate".to_string(), serde_json::json!(0)),
            ]
        );
        assert_eq!(first.labels.len(), 2);
        // Replicates of one configuration share an id; configurations differ; downstream
        // instances inherit the configuration of their lineage.
        let a: Vec<&Instance> = d.instances.iter().filter(|i| i.stage == 0).collect();
        assert_eq!(a[0].config_id, a[1].config_id);
        assert_ne!(a[0].config_id, a[2].config_id);
        let distinct: HashSet<&str> = a.iter().map(|i| i.config_id.as_str()).collect();
        assert_eq!(distinct.len(), 4);
        for b in d.instances.iter().filter(|i| i.stage == 1) {
            let up = &d.instances[b.inputs[0]];
            assert_eq!(b.config_id, up.config_id, "{}", b.id);
            assert_eq!(b.sweep, up.sweep, "{}", b.id);
        }
        assert_eq!(a[0].config_id.len(), 16);
    }

    #[test]
    fn one_at_a_time_varies_each_axis_alone_at_the_params_defaults() {
        let d = dag(concat!(
            "stages:\n",
            "  a:\n",
            "    kind: synthetic\n",
            "    params: {rho: 0.5, n: 200}\n",
            "    matrix: {rho: [0.1, 0.5], n: [100, 200, 300]}\n",
            "    matrix_mode: one_at_a_time\n",
            "  b: {kind: synthetic, inputs: a}\n",
        ));
        let a: Vec<&Instance> = d.instances.iter().filter(|i| i.stage == 0).collect();
        assert_eq!(a.len(), 5);
        assert_eq!(a[0].id, "a@rho=0.1");
        assert_eq!(
            (a[0].params["rho"].as_f64(), a[0].params["n"].as_i64()),
            (Some(0.1), Some(200))
        );
        assert_eq!(a[4].id, "a@n=300");
        assert_eq!(
            (a[4].params["rho"].as_f64(), a[4].params["n"].as_i64()),
            (Some(0.5), Some(300))
        );
        // Downstream follows each ablation instance, labelled by the one axis it varies.
        assert!(ids(&d).contains(&"b@n=100"));
        assert_eq!(d.instances.len(), 10);
    }

    #[test]
    fn downstream_fans_out_and_joins_on_lineage() {
        let d = dag(concat!(
            "stages:\n",
            "  data: {kind: synthetic}\n",
            "  train: {kind: synthetic, inputs: [data], matrix: {n: [1, 2]}}\n",
            "  embed: {kind: synthetic, inputs: [train]}\n",
            "  bound: {kind: synthetic, inputs: [embed, train], matrix: {rho: [0.1, 0.2]}}\n",
        ));
        assert_eq!(
            ids(&d),
            vec![
                "data",
                "train@n=1",
                "train@n=2",
                "embed@n=1",
                "embed@n=2",
                "bound@n=1,rho=0.1",
                "bound@n=1,rho=0.2",
                "bound@n=2,rho=0.1",
                "bound@n=2,rho=0.2",
            ]
        );
        // bound@n=2,... reads embed@n=2 and train@n=2, never a mismatched pair.
        let b = &d.instances[7];
        assert_eq!(b.inputs, vec![4, 2]);
    }

    #[test]
    fn gather_runs_once_over_every_upstream_instance() {
        let d = dag("stages:\n  a: {kind: synthetic, matrix: {n: [1, 2, 3]}}\n  b: {kind: synthetic, inputs: a}\n  all: {kind: synthetic, inputs: [a, b], gather: true}\n");
        assert_eq!(d.instances.len(), 7);
        let all = &d.instances[6];
        assert_eq!(all.id, "all");
        assert_eq!(all.inputs, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn keys_swept_in_two_stages_are_qualified() {
        let d = dag("stages:\n  a: {kind: synthetic, matrix: {n: [1, 2]}}\n  b: {kind: synthetic, inputs: a, matrix: {n: [5]}}\n");
        assert_eq!(d.instances[2].id, "b@a.n=1,b.n=5");
    }

    #[test]
    fn seeds_are_deterministic_and_distinct() {
        let d1 = dag("seed: 1\nstages:\n  a: {kind: synthetic, matrix: {n: [1, 2]}}\n");
        let d2 = dag("seed: 1\nstages:\n  z: {kind: synthetic}\n  a: {kind: synthetic, matrix: {n: [1, 2]}}\n");
        assert_eq!(d1.instances[0].seed, d2.instances[1].seed);
        assert_ne!(d1.instances[0].seed, d1.instances[1].seed);
        assert_eq!(d1.instances[0].seed, instance_seed(1, "a@n=1"));
    }

    fn label<'a>(inst: &'a Instance, key: &str) -> Option<&'a serde_json::Value> {
        inst.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn repeat_is_an_axis_crossed_with_the_matrix_and_not_a_parameter() {
        let d = dag(concat!(
            "seed: 3\n",
            "stages:\n",
            "  a:\n",
            "    kind: synthetic\n",
            "    params: {task: bivariate, n: 200}\n",
            "    matrix: {rho: [0.1, 0.5]}\n",
            "    repeat: 3\n",
            "  b: {kind: synthetic, inputs: a}\n",
        ));
        let a: Vec<&Instance> = d.instances.iter().filter(|i| i.stage == 0).collect();
        let a_ids: Vec<&str> = a.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            a_ids,
            vec![
                "a@rho=0.1,replicate=0",
                "a@rho=0.1,replicate=1",
                "a@rho=0.1,replicate=2",
                "a@rho=0.5,replicate=0",
                "a@rho=0.5,replicate=1",
                "a@rho=0.5,replicate=2",
            ]
        );
        for inst in &a {
            assert!(inst.params.get("replicate").is_none(), "{:?}", inst.params);
            assert_eq!(inst.seed, instance_seed(3, &inst.id));
        }
        // Replicates of one configuration share its params and differ in seed.
        assert_eq!(a[0].params, a[2].params);
        let seeds: HashSet<u64> = a.iter().map(|i| i.seed).collect();
        assert_eq!(seeds.len(), 6);
        assert_eq!(label(a[4], "replicate"), Some(&serde_json::json!(1)));
        assert_eq!(label(a[4], "rho"), Some(&serde_json::json!(0.5)));
        // Downstream fans out once per replicate, reading its own replicate.
        let b: Vec<&Instance> = d.instances.iter().filter(|i| i.stage == 1).collect();
        assert_eq!(b.len(), 6);
        assert_eq!(b[4].id, "b@rho=0.5,replicate=1");
        assert_eq!(d.instances[b[4].inputs[0]].id, "a@rho=0.5,replicate=1");
    }

    #[test]
    fn repeat_crosses_each_one_at_a_time_configuration() {
        let d = dag(concat!(
            "stages:\n",
            "  a:\n",
            "    kind: synthetic\n",
            "    params: {rho: 0.5, n: 200}\n",
            "    matrix: {rho: [0.1, 0.5], n: [100, 200, 300]}\n",
            "    matrix_mode: one_at_a_time\n",
            "    repeat: 2\n",
        ));
        assert_eq!(d.instances.len(), 10);
        assert_eq!(
            ids(&d)[..3],
            [
                "a@rho=0.1,replicate=0",
                "a@rho=0.1,replicate=1",
                "a@rho=0.5,replicate=0"
            ]
        );
        assert_eq!(d.instances[9].id, "a@n=300,replicate=1");
        assert_eq!(d.instances[9].params["rho"], 0.5);
    }

    #[test]
    fn repeat_without_a_matrix_and_on_a_downstream_stage() {
        let d = dag(concat!(
            "stages:\n",
            "  data: {kind: synthetic}\n",
            "  train: {kind: synthetic, inputs: data, repeat: 2}\n",
            "  post: {kind: synthetic, inputs: [train, data]}\n",
        ));
        assert_eq!(
            ids(&d),
            vec![
                "data",
                "train@replicate=0",
                "train@replicate=1",
                "post@replicate=0",
                "post@replicate=1"
            ]
        );
        assert_eq!(d.instances[4].inputs, vec![2, 0]);
    }

    #[test]
    fn repeat_one_changes_nothing() {
        let text = "seed: 5\nstages:\n  a: {kind: synthetic, matrix: {n: [1, 2]}}\n  b: {kind: synthetic, inputs: a}\n";
        let plain = dag(text);
        let once = dag(&text
            .replace("seed: 5\n", "seed: 5\nrepeat: 1\n")
            .replace("a: {kind: synthetic,", "a: {kind: synthetic, repeat: 1,"));
        let view = |d: &Dag| -> Vec<(String, u64, serde_json::Value, Vec<usize>)> {
            d.instances
                .iter()
                .map(|i| (i.id.clone(), i.seed, i.params.clone(), i.inputs.clone()))
                .collect()
        };
        assert_eq!(view(&plain), view(&once));
        assert_eq!(once.pipeline.stages[0].repeat, Some(1));
    }

    #[test]
    fn pipeline_repeat_is_one_axis_shared_by_the_root_stages() {
        let d = dag(concat!(
            "repeat: 2\n",
            "stages:\n",
            "  data: {kind: synthetic, matrix: {rho: [0.1, 0.5]}}\n",
            "  test: {kind: synthetic}\n",
            "  fixed: {kind: synthetic, repeat: 1}\n",
            "  train: {kind: synthetic, inputs: data}\n",
            "  score: {kind: synthetic, inputs: [train, test, fixed]}\n",
            "  all: {kind: synthetic, inputs: score, gather: true}\n",
        ));
        let of = |stage: &str| -> Vec<&str> {
            d.instances
                .iter()
                .filter(|i| d.pipeline.stages[i.stage].id == stage)
                .map(|i| i.id.as_str())
                .collect()
        };
        assert_eq!(
            of("data"),
            vec![
                "data@rho=0.1,replicate=0",
                "data@rho=0.1,replicate=1",
                "data@rho=0.5,replicate=0",
                "data@rho=0.5,replicate=1"
            ]
        );
        assert_eq!(of("test"), vec!["test@replicate=0", "test@replicate=1"]);
        // `repeat: 1` opts a root stage out; non-root stages inherit, not multiply.
        assert_eq!(of("fixed"), vec!["fixed"]);
        assert_eq!(of("train").len(), 4);
        let score: Vec<&Instance> = d
            .instances
            .iter()
            .filter(|i| d.pipeline.stages[i.stage].id == "score")
            .collect();
        assert_eq!(score.len(), 4, "{:?}", of("score"));
        for s in &score {
            let r = label(s, "replicate").unwrap();
            assert!(s.id.ends_with(&format!("replicate={r}")), "{}", s.id);
            // train and test of the same replicate, never a mismatched pair.
            for &u in &s.inputs[..2] {
                assert_eq!(label(&d.instances[u], "replicate"), Some(r), "{}", s.id);
            }
        }
        assert_eq!(score[1].id, "score@rho=0.1,replicate=1");
        assert_eq!(of("all"), vec!["all"]);
        assert_eq!(d.instances.last().unwrap().inputs.len(), 4);
    }

    #[test]
    fn a_stage_repeat_under_a_pipeline_repeat_multiplies_and_is_qualified() {
        let d = dag(concat!(
            "repeat: 2\n",
            "stages:\n",
            "  data: {kind: synthetic}\n",
            "  train: {kind: synthetic, inputs: data, repeat: 3}\n",
        ));
        assert_eq!(d.instances.len(), 2 + 6);
        assert_eq!(d.instances[2].id, "train@train.replicate=0,replicate=0");
        assert_eq!(d.instances[7].id, "train@train.replicate=2,replicate=1");
        let seeds: HashSet<u64> = d.instances.iter().map(|i| i.seed).collect();
        assert_eq!(seeds.len(), 8);
    }

    #[test]
    fn closures_and_resolution() {
        let d = dag("stages:\n  a: {kind: synthetic}\n  b: {kind: synthetic, inputs: a, matrix: {n: [1, 2]}}\n  c: {kind: synthetic, inputs: b}\n");
        let b = d.resolve(&["b".into()]).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(d.downstream_closure(&b).len(), 4);
        let c1 = d.resolve(&["c@n=1".into()]).unwrap();
        assert_eq!(d.upstream_closure(&c1).len(), 3);
        let err = d.resolve(&["bb".into()]).unwrap_err();
        assert!(err.to_string().contains("did you mean `b`"), "{err}");
    }
}
