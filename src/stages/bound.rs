//! `bound`: the information bounds on downstream performance, computed from upstream
//! estimates (and, on synthetic data, checked against the exact values).
//!
//! Each quantity is taken either from an `estimate_mi` row (`{pair, estimator}`: its value and
//! its direction, lower bound or estimate) or from any upstream metric (`{metric}`, e.g. a
//! synthetic stage's `true_i_xz`). Every inequality of [`crate::bounds`] becomes a row of
//! `bounds.parquet`: the study's as stated (never certified) and the valid ones, each
//! `certified` only when every added term is a lower bound and every subtracted term an upper
//! bound. With `truth`, each row is compared with the exact left-hand side and violations are
//! counted. With `classes`, I(U;Z) becomes accuracy bounds (Feder-Merhav, Fano) beside the
//! probe's measured accuracy.

use std::collections::BTreeMap;
use std::f64::consts::LN_2;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Stage, StageContext, StageError, StageOutput};
use crate::artifact::{documented_schema, read_parquet};
use crate::bounds::accuracy::{bayes_accuracy_lower_bound, fano_accuracy_upper_bound};
use crate::bounds::inequalities::{
    check_against_truth_with_tolerance, evaluate_all, Assumptions, BoundRow, Side, Status,
};
use crate::bounds::terms::{Direction, Quantity, Term, Terms};

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum QuantityName {
    IUz,
    IUy,
    IXy,
    IXz,
    IYz,
    IXyGivenZ,
    IUyGivenXz,
    HZ,
    HZGivenXy,
}

impl QuantityName {
    fn quantity(self) -> Quantity {
        match self {
            QuantityName::IUz => Quantity::IUZ,
            QuantityName::IUy => Quantity::IUY,
            QuantityName::IXy => Quantity::IXY,
            QuantityName::IXz => Quantity::IXZ,
            QuantityName::IYz => Quantity::IYZ,
            QuantityName::IXyGivenZ => Quantity::IXYgivenZ,
            QuantityName::IUyGivenXz => Quantity::IUYgivenXZ,
            QuantityName::HZ => Quantity::HZ,
            QuantityName::HZGivenXy => Quantity::HZgivenXY,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DirectionName {
    LowerBound,
    UpperBound,
    Estimate,
    Exact,
}

impl DirectionName {
    fn direction(self) -> Direction {
        match self {
            DirectionName::LowerBound => Direction::LowerBound,
            DirectionName::UpperBound => Direction::UpperBound,
            DirectionName::Estimate => Direction::Estimate,
            DirectionName::Exact => Direction::Exact,
        }
    }
}

/// Where a quantity comes from: an estimate_mi row, or an upstream metric.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TermSource {
    /// estimate_mi pair name.
    #[serde(default)]
    pub pair: Option<String>,
    /// estimate_mi estimator name (with `pair`).
    #[serde(default)]
    pub estimator: Option<String>,
    /// An upstream metric name (e.g. `true_i_xz` of a synthetic stage).
    #[serde(default)]
    pub metric: Option<String>,
    /// A known value in nats, exact by default (e.g. 0 for I(U;Y|X,Z) when U = f(X)).
    #[serde(default)]
    pub value: Option<f64>,
    /// What the number promises; default: the estimate's recorded kind, or `estimate` for metrics.
    #[serde(default)]
    pub kind: Option<DirectionName>,
    /// Unit of a `metric` or `value`: default nats, bits for metrics named `*_bits`.
    /// estimate_mi rows are read in nats. Terms in different units are refused.
    #[serde(default)]
    pub unit: Option<Unit>,
}

impl TermSource {
    fn unit(&self) -> Unit {
        match (&self.unit, &self.metric) {
            (Some(u), _) => *u,
            (None, Some(m)) if m.ends_with("_bits") => Unit::Bits,
            _ => Unit::Nats,
        }
    }
}

/// Refuses terms in different units: a bits value subtracted from a nats value is a silent
/// factor-of-0.69 error, exactly the mistake the study's code makes easy.
fn common_unit<'a>(
    sources: impl Iterator<Item = (QuantityName, &'a TermSource)>,
) -> Result<Unit, StageError> {
    let (mut nats, mut bits) = (vec![], vec![]);
    for (q, src) in sources {
        let name = q.quantity().symbol();
        match src.unit() {
            Unit::Nats => nats.push(name),
            Unit::Bits => bits.push(name),
        }
    }
    match (nats.is_empty(), bits.is_empty()) {
        (_, true) => Ok(Unit::Nats),
        (true, false) => Ok(Unit::Bits),
        (false, false) => Err(StageError::Params(format!(
            "terms mix units: {} in nats, {} in bits; give every term in one unit \
             (estimate_mi rows are nats; set `unit:` on metrics and values)",
            nats.join(", "),
            bits.join(", ")
        ))),
    }
}

/// An assumption: asserted in the pipeline, or read from an upstream metric (1 = holds), so a
/// sweep over synthetic tasks can carry each task's own facts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Assume {
    Given(bool),
    FromMetric {
        /// Upstream metric that is 1 when the assumption holds, 0 when not.
        metric: String,
    },
}

impl Default for Assume {
    fn default() -> Self {
        Assume::Given(false)
    }
}

impl Assume {
    fn holds(&self, ctx: &StageContext, what: &str) -> Result<bool, StageError> {
        match self {
            Assume::Given(b) => Ok(*b),
            Assume::FromMetric { metric } => {
                let v = ctx
                    .inputs
                    .iter()
                    .find_map(|i| i.meta.metrics.get(metric).copied())
                    .ok_or_else(|| {
                        StageError::Input(format!(
                            "assumption `{what}`: no input reports metric `{metric}`"
                        ))
                    })?;
                Ok(v == 1.0)
            }
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssumptionSpec {
    /// U = f(X) is a deterministic encoder (true for every trained encoder).
    #[serde(default)]
    pub u_is_function_of_x: Assume,
    /// X and Y are independent given Z (true for the conditionally independent mixture).
    #[serde(default)]
    pub x_indep_y_given_z: Assume,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Nats,
    Bits,
}

fn default_tolerance() -> f64 {
    1e-3
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BoundParams {
    /// Quantity (`i_uz`, `i_uy`, `i_xy`, `i_xz`, `i_yz`, `i_xy_given_z`, `i_uy_given_xz`, `h_z`, `h_z_given_xy`) -> source.
    pub terms: BTreeMap<QuantityName, TermSource>,
    /// Exact values of left-hand sides (synthetic data) to check every inequality against.
    #[serde(default)]
    pub truth: BTreeMap<QuantityName, TermSource>,
    #[serde(default)]
    pub assumptions: AssumptionSpec,
    /// alpha, beta, gamma of the study's multi-view form.
    #[serde(default)]
    pub weights: Option<[f64; 3]>,
    /// Number of classes of Z, for the accuracy bounds.
    #[serde(default)]
    pub classes: Option<usize>,
    /// Slack in nats before a bound exceeding the truth counts as a violation (Monte Carlo truth has error).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

pub struct Bound;

struct Resolved {
    term: Term,
    accuracy: Option<f64>,
}

/// Which estimates to read: every row, or those of one encoder snapshot (`epoch` column).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Group {
    epoch: Option<i64>,
    /// Converts the source's unit to nats.
    scale: f64,
}

fn resolve(
    ctx: &StageContext,
    estimates: &[EstimateTable],
    q: QuantityName,
    src: &TermSource,
    force: Option<Direction>,
    group: Group,
) -> Result<Resolved, StageError> {
    let what = q.quantity().symbol();
    if src.pair.is_some() && src.unit == Some(Unit::Bits) {
        return Err(StageError::Params(format!(
            "{what}: estimate_mi rows are read in nats; drop `unit: bits`"
        )));
    }
    if let Some(v) = src.value {
        let v = v * group.scale;
        if src.pair.is_some() || src.metric.is_some() {
            return Err(StageError::Params(format!(
                "{what}: give one of `value`, `metric`, or `pair` + `estimator`"
            )));
        }
        let kind = force
            .or(src.kind.map(DirectionName::direction))
            .unwrap_or(Direction::Exact);
        let term = Term::new(v, kind, "given").map_err(|e| StageError::Params(e.to_string()))?;
        return Ok(Resolved {
            term,
            accuracy: None,
        });
    }
    match (&src.pair, &src.estimator, &src.metric) {
        (Some(pair), Some(estimator), None) => {
            for (input, batches) in estimates {
                for batch in batches {
                    let col = |name: &str| batch.column_by_name(name).cloned();
                    let (Some(pairs), Some(ests), Some(nats)) =
                        (col("pair"), col("estimator"), col("nats"))
                    else {
                        continue;
                    };
                    use arrow_array::cast::AsArray;
                    let pairs = pairs.as_string::<i32>();
                    let ests = ests.as_string::<i32>();
                    let nats = nats.as_primitive::<arrow_array::types::Float64Type>();
                    let kinds = col("kind");
                    let accs = col("accuracy");
                    let epochs = col("epoch");
                    for r in 0..batch.num_rows() {
                        if pairs.value(r) != pair || ests.value(r) != estimator {
                            continue;
                        }
                        // A table without snapshots applies to every epoch group.
                        if let (Some(e), Some(want)) = (&epochs, group.epoch) {
                            let e = e.as_primitive::<arrow_array::types::Int64Type>();
                            if arrow_array::Array::is_null(e, r) || e.value(r) != want {
                                continue;
                            }
                        }
                        let v = nats.value(r);
                        if !v.is_finite() {
                            return Err(StageError::Input(format!("{what}: `{pair}`/`{estimator}` in `{}` is NaN (the estimator could not run; see its error column)", input.instance)));
                        }
                        let recorded = kinds
                            .as_ref()
                            .map(|k| k.as_string::<i32>().value(r).to_string())
                            .unwrap_or_default();
                        let kind = force.or(src.kind.map(DirectionName::direction)).unwrap_or(
                            match recorded.as_str() {
                                "lower_bound" => Direction::LowerBound,
                                "upper_bound" => Direction::UpperBound,
                                _ => Direction::Estimate,
                            },
                        );
                        let accuracy = accs.as_ref().and_then(|a| {
                            let a = a.as_primitive::<arrow_array::types::Float64Type>();
                            (!arrow_array::Array::is_null(a, r)).then(|| a.value(r))
                        });
                        let term = Term::new(v, kind, format!("{estimator} ({pair})"))
                            .map_err(|e| StageError::Input(e.to_string()))?;
                        return Ok(Resolved { term, accuracy });
                    }
                }
            }
            let at = group
                .epoch
                .map(|e| format!(" at epoch {e}"))
                .unwrap_or_default();
            Err(StageError::Input(format!(
                "{what}: no estimate_mi input has pair `{pair}` with estimator `{estimator}`{at}"
            )))
        }
        (None, None, Some(metric)) => {
            let found = ctx
                .inputs
                .iter()
                .find_map(|i| i.meta.metrics.get(metric).map(|v| (*v, &i.instance)));
            let (v, from) = found.ok_or_else(|| {
                StageError::Input(format!("{what}: no input reports metric `{metric}`"))
            })?;
            let v = v * group.scale;
            let kind = force
                .or(src.kind.map(DirectionName::direction))
                .unwrap_or(Direction::Estimate);
            let term = Term::new(v, kind, format!("{metric} of {from}"))
                .map_err(|e| StageError::Input(e.to_string()))?;
            Ok(Resolved {
                term,
                accuracy: None,
            })
        }
        _ => Err(StageError::Params(format!(
            "{what}: give one of `value`, `metric`, or `pair` + `estimator`"
        ))),
    }
}

impl Stage for Bound {
    type Params = BoundParams;
    const KIND: &'static str = "bound";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str =
        "Information bounds on downstream performance: the study's inequalities as stated, the valid ones, certification, violations against truth, accuracy bounds (bounds.parquet).";
    const EXAMPLE: &'static str = r#"bound:
  kind: bound
  inputs: [estimate, mixture]
  params:
    terms:
      i_uz: {pair: uz, estimator: probe}
      i_uy: {pair: uy, estimator: ksg}
      i_xy_given_z: {metric: true_i_xy_given_z, kind: exact}
    truth: {i_uz: {metric: true_i_xz}}
    assumptions: {u_is_function_of_x: true}
    classes: 4
"#;

    fn run(p: &BoundParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        let unit = common_unit(
            p.terms
                .iter()
                .chain(p.truth.iter())
                .map(|(q, src)| (*q, src)),
        )?;
        let scale = if unit == Unit::Bits { LN_2 } else { 1.0 };
        let assumptions = Assumptions {
            u_is_function_of_x: p
                .assumptions
                .u_is_function_of_x
                .holds(ctx, "u_is_function_of_x")?,
            x_indep_y_given_z: p
                .assumptions
                .x_indep_y_given_z
                .holds(ctx, "x_indep_y_given_z")?,
        };
        // Read once: every snapshot group and every term looks values up in them.
        let estimates = estimate_tables(ctx)?;
        let epochs = snapshot_epochs(&estimates);
        let mut table = BoundsTable::default();
        let mut out = StageOutput::default();
        for (gi, epoch) in epochs.iter().enumerate() {
            let group = Group {
                epoch: *epoch,
                scale,
            };
            // The last snapshot is the final encoder: its bounds become the metrics.
            let last = gi + 1 == epochs.len();
            let before = table.inconsistencies;
            let (terms, rows, probe_accuracy) = evaluate_group(
                p,
                ctx,
                &estimates,
                group,
                &assumptions,
                &mut table,
                &mut out,
                last,
            )?;
            // Contradictory terms certify nothing, so no accuracy bound is derived from them.
            if last && table.inconsistencies == before {
                accuracy_metrics(p, &terms, &rows, probe_accuracy, &mut out)?;
            }
        }
        let with_epoch = epochs.iter().any(|e| e.is_some());
        ctx.write_table("bounds", &table.batch(with_epoch)?)?;
        out.metrics
            .insert("violations".into(), table.violations as f64);
        out.metrics
            .insert("violations_valid".into(), table.valid_violations as f64);
        out.metrics
            .insert("inconsistencies".into(), table.inconsistencies as f64);
        Ok(out)
    }
}

/// An input that wrote `mi_estimates.parquet`, with the table's batches.
type EstimateTable<'a> = (&'a super::InputArtifact, Vec<RecordBatch>);

/// Every input that wrote `mi_estimates.parquet`, with the table's batches.
fn estimate_tables<'a>(ctx: &StageContext<'a>) -> Result<Vec<EstimateTable<'a>>, StageError> {
    let mut out = Vec::new();
    for input in ctx.inputs {
        if input
            .meta
            .outputs
            .iter()
            .any(|o| o.name == "mi_estimates.parquet")
        {
            out.push((
                input,
                read_parquet(&input.dir.join("mi_estimates.parquet"))?,
            ));
        }
    }
    Ok(out)
}

/// The encoder snapshots the upstream estimates cover (`epoch` column of mi_estimates), in
/// order; `[None]` when they carry no epochs.
fn snapshot_epochs(estimates: &[EstimateTable]) -> Vec<Option<i64>> {
    let mut epochs = std::collections::BTreeSet::new();
    for (_, batches) in estimates {
        for batch in batches {
            if let Some(e) = batch.column_by_name("epoch") {
                use arrow_array::cast::AsArray;
                let e = e.as_primitive::<arrow_array::types::Int64Type>();
                epochs.extend(e.iter().flatten());
            }
        }
    }
    if epochs.is_empty() {
        vec![None]
    } else {
        epochs.into_iter().map(Some).collect()
    }
}

/// Accuracy bounds from the tightest certified bounds on I(U;Z) of the final encoder (a
/// lower-bound term such as the probe, or a certified valid inequality), beside the probe's
/// measured accuracy. Uncertified numbers never become accuracy bounds.
fn accuracy_metrics(
    p: &BoundParams,
    terms: &Terms,
    rows: &[BoundRow],
    probe_accuracy: Option<f64>,
    out: &mut StageOutput,
) -> Result<(), StageError> {
    let certified = |side: Side| {
        rows.iter()
            .filter(move |r| {
                r.status == Status::Valid && r.certified && r.side == side && r.lhs == Quantity::IUZ
            })
            .map(|r| r.value)
    };
    let iuz = terms.find(Quantity::IUZ);
    let lower = certified(Side::Lower)
        .chain(iuz.filter(|t| t.kind.is_lower()).map(|t| t.nats))
        .fold(f64::NEG_INFINITY, f64::max);
    let upper = certified(Side::Upper)
        .chain(iuz.filter(|t| t.kind.is_upper()).map(|t| t.nats))
        .fold(f64::INFINITY, f64::min);
    if lower.is_finite() {
        out.metrics.insert("iuz_lower_nats".into(), lower.max(0.0));
    }
    if upper.is_finite() {
        out.metrics.insert("iuz_upper_nats".into(), upper);
    }
    if let Some(k) = p.classes {
        let h_z = terms
            .find(Quantity::HZ)
            .map(|t| t.nats)
            .unwrap_or((k as f64).ln());
        let err = |e: crate::bounds::BoundsError| StageError::Input(e.to_string());
        if lower.is_finite() {
            out.metrics.insert(
                "accuracy_lower_bound".into(),
                bayes_accuracy_lower_bound(lower.max(0.0).min(h_z), h_z, k).map_err(err)?,
            );
        }
        if upper.is_finite() {
            out.metrics.insert(
                "accuracy_upper_bound".into(),
                fano_accuracy_upper_bound(upper.min(h_z), h_z, k).map_err(err)?,
            );
        }
    }
    if let Some(a) = probe_accuracy {
        out.metrics.insert("probe_accuracy".into(), a);
    }
    Ok(())
}

/// Columns of `bounds.parquet`, one entry per row.
#[derive(Default)]
struct BoundsTable {
    epoch: Vec<Option<i64>>,
    names: Vec<Option<String>>,
    statements: Vec<Option<String>>,
    status: Vec<Option<String>>,
    side: Vec<Option<String>>,
    lhs: Vec<Option<String>>,
    values: Vec<Option<f64>>,
    certified: Vec<Option<bool>>,
    terms_json: Vec<Option<String>>,
    truth: Vec<Option<f64>>,
    violated: Vec<Option<bool>>,
    margins: Vec<Option<f64>>,
    errors: Vec<Option<String>>,
    violations: usize,
    valid_violations: usize,
    inconsistencies: usize,
}

/// Evaluates every inequality for one snapshot group, appending its rows.
#[allow(clippy::too_many_arguments)]
fn evaluate_group(
    p: &BoundParams,
    ctx: &StageContext,
    estimates: &[EstimateTable],
    group: Group,
    assumptions: &Assumptions,
    table: &mut BoundsTable,
    out: &mut StageOutput,
    metrics: bool,
) -> Result<(Terms, Vec<BoundRow>, Option<f64>), StageError> {
    let mut terms = Terms::new();
    let mut probe_accuracy = None;
    for (q, src) in &p.terms {
        let r = resolve(ctx, estimates, *q, src, None, group)?;
        if *q == QuantityName::IUz {
            probe_accuracy = r.accuracy;
        }
        terms.insert(q.quantity(), r.term);
    }
    let mut truth = Terms::new();
    for (q, src) in &p.truth {
        truth.insert(
            q.quantity(),
            resolve(ctx, estimates, *q, src, Some(Direction::Exact), group)?.term,
        );
    }
    let rows = evaluate_all(&terms, assumptions, p.weights.map(|w| (w[0], w[1], w[2])));
    let t = table;
    let mut ok_rows = Vec::new();
    for row in rows {
        t.epoch.push(group.epoch);
        match row {
            Ok(r) => {
                let check = if p.truth.is_empty() {
                    None
                } else {
                    check_against_truth_with_tolerance(&r, &truth, p.tolerance).ok()
                };
                let v = check.as_ref().map(|v| v.is_some());
                if v == Some(true) {
                    t.violations += 1;
                    if r.status == Status::Valid {
                        t.valid_violations += 1;
                    }
                }
                if metrics {
                    out.metrics.insert(format!("bound.{}", r.name), r.value);
                }
                t.names.push(Some(r.name.to_string()));
                t.statements.push(Some(r.statement.clone()));
                t.status.push(Some(
                    if r.status == Status::Valid {
                        "valid"
                    } else {
                        "as_stated"
                    }
                    .to_string(),
                ));
                t.side.push(Some(
                    if r.side == Side::Lower {
                        "lower"
                    } else {
                        "upper"
                    }
                    .to_string(),
                ));
                t.lhs.push(Some(r.lhs.symbol().to_string()));
                t.values.push(Some(r.value));
                t.certified.push(Some(r.certified));
                let used: serde_json::Map<String, serde_json::Value> = r
                    .terms_used
                    .iter()
                    .map(|(q, t)| {
                        (
                            q.symbol().to_string(),
                            serde_json::json!({"nats": t.nats, "kind": format!("{:?}", t.kind), "source": t.source}),
                        )
                    })
                    .collect();
                t.terms_json
                    .push(Some(serde_json::Value::Object(used).to_string()));
                t.truth.push(truth.find(r.lhs).map(|t| t.nats));
                t.violated.push(v);
                t.margins.push(check.flatten().map(|v| v.margin));
                t.errors.push(None);
                ok_rows.push(r);
            }
            Err(e) => {
                t.names.push(None);
                t.statements.push(None);
                t.status.push(None);
                t.side.push(None);
                t.lhs.push(None);
                t.values.push(None);
                t.certified.push(None);
                t.terms_json.push(None);
                t.truth.push(None);
                t.violated.push(None);
                t.margins.push(None);
                t.errors.push(Some(e.to_string()));
            }
        }
    }
    for clash in inconsistencies(&terms, &ok_rows, p.tolerance) {
        t.epoch.push(group.epoch);
        t.names.push(Some("consistency".into()));
        t.statements.push(Some(clash.clone()));
        t.status.push(Some("inconsistent".into()));
        for v in [&mut t.side, &mut t.lhs, &mut t.terms_json] {
            v.push(None);
        }
        for v in [&mut t.values, &mut t.truth, &mut t.margins] {
            v.push(None);
        }
        t.certified.push(None);
        t.violated.push(None);
        t.errors.push(Some(clash));
        t.inconsistencies += 1;
    }
    Ok((terms, ok_rows, probe_accuracy))
}

/// Terms that contradict a certified bound on the same quantity: a claimed lower bound above a
/// certified upper bound (or the reverse) means some estimator's promise failed, typically a
/// critic or probe scored on the samples it was trained on. Such a run certifies nothing.
fn inconsistencies(terms: &Terms, rows: &[BoundRow], tolerance: f64) -> Vec<String> {
    let mut out = Vec::new();
    for (q, term) in terms.iter() {
        for r in rows
            .iter()
            .filter(|r| r.lhs == q && r.status == Status::Valid && r.certified)
        {
            let (clash, relation) = match r.side {
                Side::Upper if term.kind.is_lower() => (term.nats > r.value + tolerance, "above"),
                Side::Lower if term.kind.is_upper() => (term.nats < r.value - tolerance, "below"),
                _ => (false, ""),
            };
            if clash {
                out.push(format!(
                    "{q} from {} is {:.4} nats, {relation} the certified bound {:.4} of {}: an estimator's \
                     assumption failed (e.g. a critic or probe scored on its own training samples); \
                     nothing here is certified until it is resolved",
                    term.source, term.nats, r.value, r.name
                ));
            }
        }
    }
    out
}

impl BoundsTable {
    fn batch(&self, with_epoch: bool) -> Result<RecordBatch, StageError> {
        let s = |v: &Vec<Option<String>>| -> ArrayRef { Arc::new(StringArray::from(v.clone())) };
        let f = |v: &Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v.clone())) };
        let b = |v: &Vec<Option<bool>>| -> ArrayRef { Arc::new(BooleanArray::from(v.clone())) };
        let mut cols: Vec<(Field, &str, ArrayRef)> = vec![
            (
                Field::new("name", DataType::Utf8, true),
                "inequality",
                s(&self.names),
            ),
            (
                Field::new("statement", DataType::Utf8, true),
                "the inequality in words",
                s(&self.statements),
            ),
            (
                Field::new("status", DataType::Utf8, true),
                "valid, as_stated (the study's claim; not a bound), or inconsistent (a term contradicts a certified bound)",
                s(&self.status),
            ),
            (
                Field::new("side", DataType::Utf8, true),
                "lower or upper bound on the left-hand side",
                s(&self.side),
            ),
            (
                Field::new("lhs", DataType::Utf8, true),
                "the bounded quantity",
                s(&self.lhs),
            ),
            (
                Field::new("value_nats", DataType::Float64, true),
                "the bound, nats",
                f(&self.values),
            ),
            (
                Field::new("certified", DataType::Boolean, true),
                "every added term a lower bound and every subtracted term an upper bound",
                b(&self.certified),
            ),
            (
                Field::new("terms", DataType::Utf8, true),
                "terms used, with value, direction and source (JSON)",
                s(&self.terms_json),
            ),
            (
                Field::new("truth_nats", DataType::Float64, true),
                "exact value of the left-hand side, when known",
                f(&self.truth),
            ),
            (
                Field::new("violated", DataType::Boolean, true),
                "the bound contradicts the truth (beyond the tolerance)",
                b(&self.violated),
            ),
            (
                Field::new("margin_nats", DataType::Float64, true),
                "by how much",
                f(&self.margins),
            ),
            (
                Field::new("error", DataType::Utf8, true),
                "why the row could not be computed (missing term and which estimator provides it)",
                s(&self.errors),
            ),
        ];
        if with_epoch {
            cols.insert(
                0,
                (
                    Field::new("epoch", DataType::Int64, true),
                    "training epoch of the encoder snapshot the estimates came from",
                    Arc::new(Int64Array::from(self.epoch.clone())),
                ),
            );
        }
        let schema = documented_schema(cols.iter().map(|(fl, d, _)| (fl.clone(), *d)).collect());
        RecordBatch::try_new(schema, cols.into_iter().map(|(_, _, a)| a).collect())
            .map_err(|e| StageError::Failed(format!("building bounds table: {e}")))
    }
}
