//! The graph of concrete jobs: every stage expanded over its `matrix:` and fanned out over
//! its upstream instances.
//!
//! Fan-out joins on lineage: an instance remembers which instance of every swept ancestor it
//! descends from, and a downstream stage only combines inputs that agree on shared ancestors.
//! So `bound` reading from both `train@t=0.1` descendants gets the two that belong together,
//! never a cross product of unrelated ones.

pub mod plan;
pub mod render;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::{render_value, set_dotted, Pipeline, Resources};
use crate::stages::Registry;

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    /// Index into `pipeline.stages`.
    pub stage: usize,
    /// Sweep values that tell this instance apart, inherited ones first.
    pub labels: Vec<(String, serde_json::Value)>,
    /// Parameters with this instance's matrix values applied.
    pub params: serde_json::Value,
    /// Derived from the pipeline seed and the instance id: stable under reordering and
    /// under adding unrelated stages.
    pub seed: u64,
    /// Instance indices, in the order of the stage's `inputs`.
    pub inputs: Vec<usize>,
    pub resources: Resources,
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
                for (chosen, lineage) in &combos {
                    for &inst in &by_stage[u] {
                        let other: &Instance = &instances[inst];
                        if other
                            .lineage
                            .iter()
                            .all(|(k, v)| lineage.get(k).is_none_or(|x| x == v))
                        {
                            let mut l = lineage.clone();
                            l.extend(other.lineage.iter().map(|(k, v)| (*k, *v)));
                            let mut c = chosen.clone();
                            c.push(inst);
                            next.push((c, l));
                        }
                    }
                }
                combos = next;
            }
            let own = matrix_combinations(&decl.matrix, decl.one_at_a_time);
            let stage = registry.get(&decl.kind);
            for (chosen, lineage) in &combos {
                for (m, choice) in own.iter().enumerate() {
                    let mut lineage = lineage.clone();
                    let mut params = decl.params.clone();
                    let mut mine = Vec::new();
                    for (axis, j) in decl.matrix.iter().zip(choice) {
                        let Some(j) = *j else { continue };
                        set_dotted(&mut params, &axis.key, axis.values[j].clone());
                        mine.push((axis.key.clone(), axis.values[j].clone()));
                    }
                    if !decl.matrix.is_empty() {
                        lineage.insert(s, m);
                        own_labels.insert((s, m), mine);
                    }
                    let labels = Self::labels(&pipeline, &order, &lineage, &own_labels);
                    let id = if labels.is_empty() {
                        decl.id.clone()
                    } else {
                        let parts: Vec<String> = labels
                            .iter()
                            .map(|(k, v)| format!("{k}={}", render_value(v)))
                            .collect();
                        format!("{}@{}", decl.id, parts.join(","))
                    };
                    let resources = decl
                        .resources
                        .or_else(|| stage.map(|st| st.resources(&params)))
                        .unwrap_or_default();
                    by_stage[s].push(instances.len());
                    instances.push(Instance {
                        seed: instance_seed(pipeline.seed, &id),
                        id,
                        stage: s,
                        labels,
                        params,
                        inputs: chosen.clone(),
                        resources,
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

    /// Labels from every swept stage in the lineage, in dependency order. A key swept in two
    /// stages is qualified with its stage id to stay unambiguous.
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
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (_, k, _) in &raw {
            *count.entry(k.as_str()).or_default() += 1;
        }
        raw.iter()
            .map(|(s, k, v)| {
                let key = if count[k.as_str()] > 1 {
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
        let registry = Registry::builtin();
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
