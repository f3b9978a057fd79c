//! `estimate_mi`: mutual information between columns of upstream tables, by any of the
//! estimators in [`cbound_mi`], with preprocessing, resampling intervals and each estimate's
//! direction (`lower_bound`, `upper_bound` or point `estimate`), and for the probe, the kNN
//! classifier, InfoNCE and the Gaussian channel the certificate from which `bound` computes a
//! confidence bound. Writes `mi_estimates.parquet`; each estimate also becomes a metric
//! `<pair>.<estimator>` in nats (and `<pair>.<estimator>.accuracy` for probe and knn).
//!
//! The held-out classifiers (probe, knn) read embeddings as numbers, so the encoder is frozen
//! by construction; each is fitted on one seeded split of the pair's rows and scored on the
//! disjoint rest, and `mi_estimates.splits.parquet` lists every row of the upstream table with
//! the side it was on (`n_train`, `n_test` and `split_seed` in `mi_estimates.parquet`).
//!
//! An estimator that cannot run on a pair (a histogram in 128 dimensions, a probe on
//! non-label targets) gives a row with NaN and the reason, never a silent number; the other
//! estimates are still made.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use cbound_critic::OnnxCritic;
use cbound_data::table::Table;
use cbound_engine::config::yaml::PathSeg;
use cbound_engine::stage::{
    Need, ParamError, Stage, StageContext, StageError, StageOutput, Upstream, Wanted,
};
use cbound_mi::estimators::ksg::{KsgKind, KsgParams};
use cbound_mi::spec::{estimate_with, EstimatorSpec, IntervalSpec, Preprocess, Tools};
use cbound_mi::{Conditioning, HeldOut, Matrix};
use cbound_tables::estimates::{estimates_table, splits_table, timing_table, PairEstimate};
use cbound_tables::mi_estimates;

/// Columns of an upstream table.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnRef {
    /// Upstream stage; may be omitted when this stage has one input.
    #[serde(default)]
    pub stage: Option<String>,
    /// Table name (file without `.parquet`); may be omitted when the stage wrote one table.
    #[serde(default)]
    pub table: Option<String>,
    /// Comma-separated column names, globs (`x*`) or list columns (`u`).
    pub columns: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairSpec {
    /// Names the pair in the output and in metric names, e.g. `uy` for I(U;Y).
    pub name: String,
    pub x: ColumnRef,
    pub y: ColumnRef,
    /// Conditioning variable, for `ksg_cmi`: I(X;Y|Z).
    #[serde(default)]
    pub z: Option<ColumnRef>,
    /// Estimators for this pair; the stage's `estimators` when omitted.
    #[serde(default)]
    pub estimators: Option<Vec<EstimatorSpec>>,
    /// A column of `x`'s table whose values `train` and `test` say which rows the held-out
    /// estimators (probe, knn, trained critics) fit on and which they score, in place of
    /// their seeded `train_fraction` split: e.g. `split` of an embed stage given CIFAR's
    /// train and test loads, for the standard protocol (kNN bank and probe fitted on the
    /// training images, scored on the test images). The other estimators use every row.
    /// Not with `interval`.
    #[serde(default)]
    pub split: Option<String>,
}

fn default_estimators() -> Vec<EstimatorSpec> {
    vec![EstimatorSpec::of::<KsgKind>(KsgParams::default())]
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EstimateMiParams {
    /// The quantities to estimate.
    pub pairs: Vec<PairSpec>,
    /// Estimators applied to every pair (default: KSG with k = 3).
    #[serde(default = "default_estimators")]
    pub estimators: Vec<EstimatorSpec>,
    #[serde(default)]
    pub preprocess: Preprocess,
    /// Resampling interval for every estimate; none when omitted.
    #[serde(default)]
    pub interval: Option<IntervalSpec>,
}

pub struct EstimateMi;

/// The upstream table `r` names, read once per file.
fn table_of<'c>(
    ctx: &StageContext,
    r: &ColumnRef,
    cache: &'c mut HashMap<PathBuf, Table>,
) -> Result<&'c Table, StageError> {
    let input = match &r.stage {
        Some(s) => ctx.input(s)?,
        None => match ctx.inputs {
            [one] => one,
            _ => {
                return Err(StageError::Params(format!(
                    "`stage` is required to pick among {} inputs",
                    ctx.inputs.len()
                )))
            }
        },
    };
    let file = match &r.table {
        Some(t) => input.file(&format!("{t}.parquet"))?,
        None => input.only_table("table")?,
    };
    if !cache.contains_key(&file) {
        let table = Table::read(&file).map_err(|e| StageError::Input(e.to_string()))?;
        cache.insert(file.clone(), table);
    }
    Ok(&cache[&file])
}

/// Columns as a matrix, with the table's `epoch` column when it has one (an embed stage's
/// encoder snapshots: rows of different epochs must never be pooled into one estimate).
fn load_matrix(
    ctx: &StageContext,
    r: &ColumnRef,
    cache: &mut HashMap<PathBuf, Table>,
) -> Result<(Matrix, Option<Vec<i64>>), StageError> {
    let table = table_of(ctx, r, cache)?;
    let sel = table
        .select(&r.columns)
        .map_err(|e| StageError::Input(e.to_string()))?;
    // Only an embed table's snapshot epochs; an augment table's `epoch` counts passes of
    // fresh views, not encoders, and bounds must not try to match it to a snapshot.
    let epochs = if table
        .schema_metadata(cbound_tables::SNAPSHOT_KEY)
        .as_deref()
        == Some("true")
    {
        let e = table
            .select("epoch")
            .map_err(|e| StageError::Input(e.to_string()))?;
        Some(e.data.iter().map(|&v| v as i64).collect())
    } else {
        None
    };
    let m =
        Matrix::new(sel.rows, sel.cols, sel.data).map_err(|e| StageError::Input(e.to_string()))?;
    Ok((m, epochs))
}

/// Which side of a split given by the data a row is on.
#[derive(Clone, Copy)]
enum Side {
    Fit,
    Score,
}

/// Each row's side, from the `column` of x's table (`train` fits, `test` scores).
fn split_sides(
    ctx: &StageContext,
    pair: &str,
    x: &ColumnRef,
    column: &str,
    cache: &mut HashMap<PathBuf, Table>,
) -> Result<Vec<Side>, StageError> {
    let table = table_of(ctx, x, cache)?;
    if !table.column_names().iter().any(|c| c == column) {
        return Err(StageError::Input(format!(
            "pair `{pair}`: x's table has no column `{column}` for `split` (embed writes `split` when given datasets of both splits)"
        )));
    }
    let (codes, names) = table
        .labels(column)
        .map_err(|e| StageError::Input(format!("pair `{pair}`: `split`: {e}")))?;
    let side_of: Vec<Side> = names
        .iter()
        .map(|n| match n.as_str() {
            "train" => Ok(Side::Fit),
            "test" => Ok(Side::Score),
            other => Err(StageError::Input(format!(
                "pair `{pair}`: the `{column}` column holds `{other}`; a split column's values must be `train` (fitted on) or `test` (scored)"
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(codes.iter().map(|&c| side_of[c as usize]).collect())
}

/// A snapshot's epoch (none without snapshots) and its row indices.
type EpochRows = (Option<i64>, Vec<usize>);

/// Row indices of each snapshot, in epoch order; one group of all rows without snapshots.
fn epoch_groups(
    pair: &str,
    epochs: &[Option<Vec<i64>>],
    rows: usize,
) -> Result<Vec<EpochRows>, StageError> {
    let mut known = epochs.iter().flatten();
    let Some(first) = known.next() else {
        return Ok(vec![(None, (0..rows).collect())]);
    };
    if known.any(|e| e != first) {
        return Err(StageError::Input(format!(
            "pair `{pair}`: its columns come from tables with different epoch snapshots; \
             take them from one embed table"
        )));
    }
    let mut groups: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, e) in first.iter().enumerate() {
        groups.entry(*e).or_default().push(i);
    }
    Ok(groups.into_iter().map(|(e, idx)| (Some(e), idx)).collect())
}

impl Stage for EstimateMi {
    type Params = EstimateMiParams;
    const KIND: &'static str = "estimate_mi";
    // 5: `{name: ksg}` means algorithm 2 (was 1), and held-out estimates (probe, knn) record
    // their split (n_train, n_test, split_seed columns and mi_estimates.splits.parquet); cache
    // keys hold the params as written, so a cached estimate from before must not be reused.
    const VERSION: u32 = 5;
    const SUMMARY: &'static str =
        "Estimate mutual information between columns of upstream tables (mi_estimates.parquet; metrics <pair>.<estimator>).";
    const EXAMPLE: &'static str = r#"estimate:
  kind: estimate_mi
  inputs: [data]
  params:
    pairs:
      - {name: xy, x: {columns: "x*"}, y: {columns: "y*"}}
    estimators: [{name: ksg, k: 3}, {name: gaussian}]
    interval: {reps: 20, level: 0.9}
"#;
    const WRITES: Option<&'static [&'static str]> = Some(&[
        mi_estimates::FILE,
        mi_estimates::TIMING_FILE,
        mi_estimates::SPLITS_FILE,
    ]);

    fn needs(p: &EstimateMiParams) -> Vec<Need> {
        let mut out = Vec::new();
        for (i, pair) in p.pairs.iter().enumerate() {
            let sides = [
                ("x", Some(&pair.x)),
                ("y", Some(&pair.y)),
                ("z", pair.z.as_ref()),
            ];
            for (side, r) in sides {
                let Some(r) = r else { continue };
                out.push(Need {
                    from: match &r.stage {
                        Some(s) => Upstream::Named(s.clone()),
                        None => Upstream::Only,
                    },
                    wanted: match &r.table {
                        Some(t) => Wanted::File(format!("{t}.parquet")),
                        None => Wanted::OnlyTable,
                    },
                    at: vec![
                        PathSeg::Key("pairs".into()),
                        PathSeg::Index(i),
                        PathSeg::Key(side.into()),
                    ],
                });
            }
        }
        out
    }

    fn check(p: &EstimateMiParams) -> Vec<ParamError> {
        let key = |k: &str| PathSeg::Key(k.into());
        let mut out = Vec::new();
        if p.pairs.is_empty() {
            out.push(ParamError::at(
                &["pairs"],
                "`pairs` is empty: name at least one pair to estimate",
            ));
        }
        // Each estimator's own rules, at its place in the file.
        let listed = |list: &[EstimatorSpec], out: &mut Vec<ParamError>, at: &[PathSeg]| {
            for (j, spec) in list.iter().enumerate() {
                for e in spec.check() {
                    let mut e = e.under(PathSeg::Index(j));
                    for seg in at.iter().rev() {
                        e = e.under(seg.clone());
                    }
                    out.push(e);
                }
            }
        };
        listed(&p.estimators, &mut out, &[key("estimators")]);
        for (i, pair) in p.pairs.iter().enumerate() {
            if pair.split.is_some() && p.interval.is_some() {
                out.push(ParamError {
                    path: vec![key("pairs"), PathSeg::Index(i), key("split")],
                    message: format!(
                        "pair `{}` takes its held-out split from the data, which `interval`'s replicates (resampled rows) cannot follow: drop `interval` or the pair's `split`",
                        pair.name
                    ),
                });
            }
            if pair.split.as_deref().is_some_and(|c| c.trim().is_empty()) {
                out.push(ParamError {
                    path: vec![key("pairs"), PathSeg::Index(i), key("split")],
                    message: "`split` names a column of x's table (e.g. `split`); it is empty"
                        .into(),
                });
            }
            let at = [key("pairs"), PathSeg::Index(i), key("estimators")];
            if let Some(list) = &pair.estimators {
                listed(list, &mut out, &at);
            }
            // A kind that needs `z` on a pair without one: known before any data is read.
            if pair.z.is_none() {
                let list = pair.estimators.as_ref().unwrap_or(&p.estimators);
                for (j, spec) in list.iter().enumerate() {
                    if let Conditioning::Required(_) = spec.inputs().z {
                        let from = match pair.estimators {
                            Some(_) => format!("its estimators[{j}]"),
                            None => format!("the stage's estimators[{j}]"),
                        };
                        out.push(ParamError {
                            path: vec![key("pairs"), PathSeg::Index(i)],
                            message: format!(
                                "pair `{}` has no `z`, but {from}, `{}`, estimates I(X;Y|Z): give the pair a `z` (columns to condition on)",
                                pair.name,
                                spec.name()
                            ),
                        });
                    }
                }
            }
        }
        out.extend(
            p.preprocess
                .check()
                .into_iter()
                .map(|e| e.under(key("preprocess"))),
        );
        if let Some(interval) = &p.interval {
            out.extend(
                interval
                    .check()
                    .into_iter()
                    .map(|e| e.under(key("interval"))),
            );
        }
        out
    }

    fn run(params: &EstimateMiParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        let mut cache = HashMap::new();
        let mut rows = Vec::new();
        // Trained-critic estimators fit on ONNX Runtime with one thread whatever the stage's
        // CPU budget, so their values do not depend on the machine; the library is loaded
        // only when one runs.
        let critic = OnnxCritic::default();
        let any_critic = params
            .pairs
            .iter()
            .flat_map(|p| p.estimators.as_ref().unwrap_or(&params.estimators))
            .any(|e| cbound_mi::estimators::critic::is_critic(e.name()));
        if any_critic {
            critic.check_available().map_err(|e| {
                StageError::Failed(format!("trained-critic estimators need it: {e}"))
            })?;
        }
        let mut total: usize = params
            .pairs
            .iter()
            .map(|p| p.estimators.as_ref().unwrap_or(&params.estimators).len())
            .sum();
        let mut done = 0;
        for (pi, pair) in params.pairs.iter().enumerate() {
            let (x, ex) = load_matrix(ctx, &pair.x, &mut cache)?;
            let (y, ey) = load_matrix(ctx, &pair.y, &mut cache)?;
            let (z, ez) = match pair.z.as_ref() {
                Some(z) => {
                    let (m, e) = load_matrix(ctx, z, &mut cache)?;
                    (Some(m), e)
                }
                None => (None, None),
            };
            let groups = epoch_groups(&pair.name, &[ex, ey, ez], x.rows())?;
            let sides = match &pair.split {
                Some(column) => Some(split_sides(ctx, &pair.name, &pair.x, column, &mut cache)?),
                None => None,
            };
            let estimators = pair.estimators.as_ref().unwrap_or(&params.estimators);
            // Each further snapshot repeats the pair's estimators; the bar grows to match.
            total += estimators.len() * (groups.len() - 1);
            for (epoch, idx) in &groups {
                let subset = |m: &Matrix| -> Result<Matrix, StageError> {
                    if epoch.is_none() {
                        return Ok(m.clone());
                    }
                    m.select_rows(idx)
                        .map_err(|e| StageError::Input(format!("pair `{}`: {e}", pair.name)))
                };
                let (x, y) = (subset(&x)?, subset(&y)?);
                let z = z.as_ref().map(&subset).transpose()?;
                // The data's split over this snapshot's rows.
                let given = match &sides {
                    Some(sides) => {
                        let (mut fit, mut score) = (Vec::new(), Vec::new());
                        for (j, &row) in idx.iter().enumerate() {
                            match sides[row] {
                                Side::Fit => fit.push(j),
                                Side::Score => score.push(j),
                            }
                        }
                        Some(HeldOut::given(idx.len(), fit, score).map_err(|e| {
                            StageError::Input(format!(
                                "pair `{}`: the `{}` column: {e}",
                                pair.name,
                                pair.split.as_deref().unwrap_or_default()
                            ))
                        })?)
                    }
                    None => None,
                };
                for (ei, spec) in estimators.iter().enumerate() {
                    ctx.check_cancelled()?;
                    let at = epoch.map(|e| format!(" @ epoch {e}")).unwrap_or_default();
                    ctx.progress(
                        done as u64,
                        total as u64,
                        format!("{} / {}{at}", pair.name, spec.name()),
                    );
                    let seed = ctx.seed
                        ^ ((pi as u64) << 32 | ei as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let result = estimate_with(
                        spec,
                        &x,
                        &y,
                        z.as_ref(),
                        &params.preprocess,
                        params.interval.as_ref(),
                        seed,
                        Tools {
                            critic: Some(&critic),
                            split: given.as_ref(),
                        },
                    )
                    .map_err(|e| e.to_string())
                    // A held-out split names rows of the table, not of this snapshot.
                    .and_then(|mut row| {
                        if let (Some(h), Some(_)) = (&row.held_out, epoch) {
                            row.held_out = Some(h.remap(idx).map_err(|e| e.to_string())?);
                        }
                        Ok(row)
                    });
                    rows.push(PairEstimate {
                        pair: pair.name.clone(),
                        epoch: *epoch,
                        estimator: spec.name().to_string(),
                        result,
                    });
                    done += 1;
                }
            }
        }
        ctx.write_result_table(
            "mi_estimates",
            &estimates_table(&rows).map_err(|e| StageError::Failed(e.to_string()))?,
        )?;
        if let Some(splits) = splits_table(&rows).map_err(|e| StageError::Failed(e.to_string()))? {
            ctx.write_table("mi_estimates.splits", &splits)?;
        }
        ctx.write_table(
            "mi_estimates.timing",
            &timing_table(&rows).map_err(|e| StageError::Failed(e.to_string()))?,
        )?;
        let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
        // Metrics describe the final encoder: with snapshots, the last epoch's estimates.
        let last = rows.iter().filter_map(|r| r.epoch).max();
        for row in rows.iter().filter(|r| r.epoch == last) {
            let (pair, name) = (&row.pair, &row.estimator);
            let (value, accuracy) = match &row.result {
                Ok(r) => (r.nats, r.accuracy),
                Err(_) => (f64::NAN, None),
            };
            let mut key = format!("{pair}.{name}");
            let mut n = 2;
            while metrics.contains_key(&key) {
                key = format!("{pair}.{name}#{n}");
                n += 1;
            }
            if let Some(a) = accuracy {
                metrics.insert(format!("{key}.accuracy"), a);
            }
            metrics.insert(key, value);
        }
        Ok(StageOutput {
            metrics,
            ..Default::default()
        })
    }
}
