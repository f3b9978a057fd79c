//! What each plot of a report shows, as plain data: extracted from the run's tables here,
//! drawn by [`super::plots`]. Keeping the two apart lets the grouping logic (which rows go
//! into which series, what the x axis is) be tested without rendering anything.
//!
//! Every builder returns `Err(note)` when the run has no data for its plot; the note ends
//! up in the report so a reader knows why a plot is missing rather than guessing.

use crate::tables::{bounds, mi_estimates, training_curve};

/// The snapshot column every per-epoch table shares (training_curve, mi_estimates, bounds).
const EPOCH: &crate::tables::Column = &mi_estimates::EPOCH;
use std::collections::BTreeMap;

use super::load::{Cell, Instance, Run, Table};

#[derive(Debug, Clone, PartialEq)]
pub enum XAxis {
    Numeric,
    /// Values are category indices 0..n, labelled with these names.
    Categories(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Points,
    LinePoints,
    /// A thin grey reference line (y = x).
    Reference,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
    /// (x, low, high) intervals drawn as vertical bars.
    pub errors: Vec<(f64, f64, f64)>,
}

impl Series {
    fn new(label: impl Into<String>, points: Vec<(f64, f64)>, style: Style) -> Series {
        Series {
            label: label.into(),
            points,
            style,
            errors: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x: XAxis,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem: `<name>.png`, `<name>.svg`.
    pub name: String,
    pub title: String,
    /// One sentence under the plot in report.html: what to read from it.
    pub caption: String,
    pub panels: Vec<Panel>,
}

/// The per-instance tables a report draws from, read once.
#[derive(Debug, Default)]
pub struct Tables {
    /// (instance index into `Run::instances`, table)
    pub curves: Vec<(usize, Table)>,
    pub estimates: Vec<(usize, Table)>,
    pub bounds: Vec<(usize, Table)>,
}

/// Instance ids are `stage@key=value,...`; within one stage the stage name is noise.
pub fn short_label(run: &Run, inst: &Instance) -> String {
    let stages_of_kind: std::collections::BTreeSet<&str> =
        run.of_kind(&inst.kind).map(|i| i.stage.as_str()).collect();
    match inst.instance.split_once('@') {
        Some((_, sweep)) if stages_of_kind.len() <= 1 => sweep.to_string(),
        _ => inst.instance.clone(),
    }
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// Rows of a table that describe the final model: those without an epoch, or, when every
/// row has one, those of the last epoch. Tables without an `epoch` column are all final.
pub fn final_rows(t: &Table) -> Vec<usize> {
    if !t.has(EPOCH.name) {
        return (0..t.len()).collect();
    }
    let without: Vec<usize> = (0..t.len())
        .filter(|&r| t.cell(r, EPOCH.name).is_null())
        .collect();
    if !without.is_empty() {
        return without;
    }
    let last = (0..t.len())
        .filter_map(|r| t.f64(r, EPOCH.name))
        .fold(f64::NEG_INFINITY, f64::max);
    (0..t.len())
        .filter(|&r| t.f64(r, EPOCH.name) == Some(last))
        .collect()
}

/// Groups rows with an epoch into series keyed by `key`, points (epoch, `value`) sorted by
/// epoch, with intervals from `low`/`high` where present.
pub fn epoch_series(
    t: &Table,
    key: impl Fn(usize) -> Option<String>,
    value: &str,
    low_high: Option<(&str, &str)>,
) -> BTreeMap<String, Series> {
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    if !t.has(EPOCH.name) {
        return out;
    }
    for r in 0..t.len() {
        let (Some(epoch), Some(v), Some(k)) =
            (t.f64(r, EPOCH.name), finite(t.f64(r, value)), key(r))
        else {
            continue;
        };
        let s = out
            .entry(k.clone())
            .or_insert_with(|| Series::new(k, vec![], Style::LinePoints));
        s.points.push((epoch, v));
        if let Some((lo, hi)) = low_high {
            if let (Some(lo), Some(hi)) = (finite(t.f64(r, lo)), finite(t.f64(r, hi))) {
                s.errors.push((epoch, lo, hi));
            }
        }
    }
    for s in out.values_mut() {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

pub fn training_curves(run: &Run, tables: &Tables) -> Result<Figure, String> {
    if tables.curves.is_empty() {
        return Err(if run.of_kind("train").next().is_some() {
            "training curves: no train instance left a readable training_curve.parquet".into()
        } else {
            "training curves: the pipeline has no train stage".into()
        });
    }
    let panel = |title: &str, y: &str, column: &str| Panel {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: y.into(),
        x: XAxis::Numeric,
        series: tables
            .curves
            .iter()
            .filter(|(_, t)| t.has(column))
            .map(|(i, t)| {
                let mut pts: Vec<(f64, f64)> = (0..t.len())
                    .filter_map(|r| Some((t.f64(r, EPOCH.name)?, finite(t.f64(r, column))?)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series::new(short_label(run, &run.instances[*i]), pts, Style::LinePoints)
            })
            .filter(|s| !s.points.is_empty())
            .collect(),
    };
    let panels: Vec<Panel> = [
        panel("training loss", "loss", training_curve::LOSS.name),
        panel(
            "held-out InfoNCE bound, log N - L",
            "nats",
            training_curve::HELDOUT_INFONCE.name,
        ),
    ]
    .into_iter()
    .filter(|p| !p.series.is_empty())
    .collect();
    if panels.is_empty() {
        return Err("training curves: training_curve.parquet has no loss values".into());
    }
    Ok(Figure {
        name: "training_curves".into(),
        title: "Training curves".into(),
        caption: "Mean training loss per epoch, and the held-out InfoNCE estimate log N - L \
                  (a lower bound on the views' mutual information, capped at log N)."
            .into(),
        panels,
    })
}

/// The column a bound is drawn by (see [`bound_key`]).
fn bound_column(t: &Table) -> &'static str {
    if t.has(bounds::CERTIFIED_NATS.name) {
        bounds::CERTIFIED_NATS.name
    } else {
        bounds::VALUE_NATS.name
    }
}

fn estimate_key(t: &Table, r: usize, prefix: &str) -> Option<String> {
    let pair = t.str(r, mi_estimates::PAIR.name)?;
    let est = t.str(r, mi_estimates::ESTIMATOR.name)?;
    Some(format!("{prefix}{pair} / {est}"))
}

/// Bounds are drawn by their certified values, and only those that certify something: a
/// vacuous or uncertified row is not a result (tables from before certification: every valid
/// row, by its value).
fn bound_key(t: &Table, r: usize, prefix: &str) -> Option<String> {
    if t.str(r, bounds::STATUS.name) != Some("valid") {
        return None;
    }
    if t.has(bounds::CERTIFICATION.name)
        && t.str(r, bounds::CERTIFICATION.name) != Some("certified")
    {
        return None;
    }
    // Accuracy rows are probabilities, not nats: they have their own figure.
    if t.str(r, bounds::NAME.name)
        .is_some_and(|n| n.starts_with("accuracy_"))
    {
        return None;
    }
    let name = t.str(r, bounds::NAME.name)?;
    let lhs = t.str(r, bounds::LHS.name).unwrap_or("?");
    let side = t.str(r, bounds::SIDE.name).unwrap_or("bound");
    Some(format!("{prefix}{name} ({side} bound on {lhs})"))
}

/// "I(U;Y) and the bounds over epochs": estimates and valid bounds per epoch when the
/// tables have an `epoch` column, else their final values per instance.
pub fn mi_and_bounds(run: &Run, tables: &Tables) -> Result<Figure, String> {
    if tables.estimates.is_empty() && tables.bounds.is_empty() {
        return Err(
            "mutual information and bounds: the pipeline has no estimate_mi or bound results"
                .into(),
        );
    }
    let prefix = |i: usize, all: &[(usize, Table)]| {
        if all.len() > 1 {
            format!("{}: ", short_label(run, &run.instances[i]))
        } else {
            String::new()
        }
    };
    let with_epochs = tables
        .estimates
        .iter()
        .chain(&tables.bounds)
        .any(|(_, t)| (0..t.len()).any(|r| t.f64(r, EPOCH.name).is_some()));
    if with_epochs {
        let mut mi = vec![];
        for (i, t) in &tables.estimates {
            let p = prefix(*i, &tables.estimates);
            mi.extend(
                epoch_series(
                    t,
                    |r| estimate_key(t, r, &p),
                    mi_estimates::NATS.name,
                    Some((mi_estimates::CI_LOW.name, mi_estimates::CI_HIGH.name)),
                )
                .into_values(),
            );
        }
        let mut bounds = vec![];
        for (i, t) in &tables.bounds {
            let p = prefix(*i, &tables.bounds);
            bounds.extend(
                epoch_series(t, |r| bound_key(t, r, &p), bound_column(t), None).into_values(),
            );
        }
        let panels: Vec<Panel> = [
            ("mutual information estimates", mi),
            ("certified bounds", bounds),
        ]
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(title, series)| Panel {
            title: title.into(),
            x_label: "epoch".into(),
            y_label: "nats".into(),
            x: XAxis::Numeric,
            series,
        })
        .collect();
        return Ok(Figure {
            name: "mi_bounds_epochs".into(),
            title: "Mutual information and bounds over epochs".into(),
            caption: "Estimates (with intervals where computed) and the certified values of the \
                      bounds that certify something (not vacuous) for encoder snapshots during \
                      training."
                .into(),
            panels,
        });
    }
    // No snapshots: one category per instance, the final value of each estimate/bound.
    let panel = |title: &str,
                 all: &[(usize, Table)],
                 key: &dyn Fn(&Table, usize) -> Option<String>,
                 value: &str,
                 interval: bool| {
        let names: Vec<String> = all
            .iter()
            .map(|(i, _)| short_label(run, &run.instances[*i]))
            .collect();
        let mut series: BTreeMap<String, Series> = BTreeMap::new();
        for (x, (_, t)) in all.iter().enumerate() {
            for r in final_rows(t) {
                let (Some(k), Some(v)) = (key(t, r), finite(t.f64(r, value))) else {
                    continue;
                };
                let s = series
                    .entry(k.clone())
                    .or_insert_with(|| Series::new(k, vec![], Style::Points));
                s.points.push((x as f64, v));
                if interval {
                    if let (Some(lo), Some(hi)) = (
                        finite(t.f64(r, mi_estimates::CI_LOW.name)),
                        finite(t.f64(r, mi_estimates::CI_HIGH.name)),
                    ) {
                        s.errors.push((x as f64, lo, hi));
                    }
                }
            }
        }
        Panel {
            title: title.into(),
            x_label: "instance".into(),
            y_label: "nats".into(),
            x: XAxis::Categories(names),
            series: series.into_values().collect(),
        }
    };
    let panels: Vec<Panel> = [
        panel(
            "mutual information estimates",
            &tables.estimates,
            &|t, r| estimate_key(t, r, ""),
            mi_estimates::NATS.name,
            true,
        ),
        panel(
            "certified bounds",
            &tables.bounds,
            &|t, r| bound_key(t, r, ""),
            tables
                .bounds
                .first()
                .map(|(_, t)| bound_column(t))
                .unwrap_or(bounds::VALUE_NATS.name),
            false,
        ),
    ]
    .into_iter()
    .filter(|p| !p.series.is_empty())
    .collect();
    if panels.is_empty() {
        return Err("mutual information and bounds: no finite estimate or valid bound".into());
    }
    Ok(Figure {
        name: "mi_bounds_final".into(),
        title: "Mutual information and bounds (final encoders)".into(),
        caption: "Final estimates and valid bounds per instance. The tables have no `epoch` \
                  column, so there is no curve over training."
            .into(),
        panels,
    })
}

/// Sorted distinct values of a factor and the axis they go on: numeric when every value is a
/// number, else categories in sorted text order.
fn factor_axis(values: &[&Cell]) -> (XAxis, Vec<f64>) {
    if values.iter().all(|v| v.as_f64().is_some()) {
        return (
            XAxis::Numeric,
            values.iter().filter_map(|v| v.as_f64()).collect(),
        );
    }
    let mut names: Vec<String> = values.iter().map(|v| v.display()).collect();
    names.sort();
    names.dedup();
    let xs = values
        .iter()
        .map(|v| {
            let d = v.display();
            names.iter().position(|n| *n == d).unwrap_or(0) as f64
        })
        .collect();
    (XAxis::Categories(names), xs)
}

/// Points of one metric against the factor: joined by a line when each factor value has one
/// point, loose points when repeats (other factors, seeds) share an x.
fn factor_series(label: String, mut points: Vec<(f64, f64)>) -> Series {
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let repeated = points.windows(2).any(|w| w[0].0 == w[1].0);
    Series::new(
        label,
        points,
        if repeated {
            Style::Points
        } else {
            Style::LinePoints
        },
    )
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// One figure per sweep factor: the factor against the final accuracy bounds and the probe's
/// accuracy, and against the final valid bounds. Instances of other grids (null for this
/// factor) are left out, which is what makes a one-at-a-time ablation readable.
///
/// Pipelines without a bound stage get the estimate_mi results instead, so a sweep is
/// never left unplotted just because the bounds were not computed.
pub fn ablations(run: &Run, tables: &Tables) -> (Vec<Figure>, Vec<String>) {
    let mut figures = vec![];
    let mut notes = vec![];
    let sweeps = run.sweep_names();
    if sweeps.is_empty() {
        notes.push("ablations: the pipeline has no matrix (no sweep columns)".into());
    }
    let has_bounds = run.of_kind("bound").any(|i| i.has_result());
    // A replicate is a seed, not a factor: its spread belongs to every factor's plot.
    for factor in sweeps
        .into_iter()
        .filter(|f| f != "replicate" && !f.ends_with(".replicate"))
    {
        let fig = if has_bounds {
            bound_ablation(run, tables, &factor)
        } else {
            estimate_ablation(run, tables, &factor)
        };
        match fig {
            Ok(f) => figures.push(f),
            Err(n) => notes.push(n),
        }
    }
    (figures, notes)
}

fn bound_ablation(run: &Run, tables: &Tables, factor: &str) -> Result<Figure, String> {
    let rows: Vec<(usize, &Instance, &Cell)> = run
        .instances
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind == "bound" && i.has_result())
        .filter_map(|(n, i)| Some((n, i, i.sweep(factor)?)))
        .collect();
    let (axis, xs) = factor_axis(&rows.iter().map(|r| r.2).collect::<Vec<_>>());
    distinct_enough(factor, &xs)?;
    let stages: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.1.stage.as_str()).collect();
    let suffix = |stage: &str| {
        if stages.len() > 1 {
            format!(" ({stage})")
        } else {
            String::new()
        }
    };
    let mut accuracy = ByLabel::new();
    let mut bounds = ByLabel::new();
    for ((n, inst, _), x) in rows.iter().zip(&xs) {
        for (metric, label) in [
            ("accuracy_lower_bound", "accuracy lower bound"),
            ("probe_accuracy", "probe accuracy (measured)"),
            ("accuracy_upper_bound", "accuracy upper bound"),
        ] {
            if let Some(v) = inst.metric(metric) {
                accuracy
                    .entry(format!("{label}{}", suffix(&inst.stage)))
                    .or_default()
                    .push((*x, v));
            }
        }
        if let Some((_, t)) = tables.bounds.iter().find(|(i, _)| i == n) {
            for r in final_rows(t) {
                if let (Some(k), Some(v)) = (bound_key(t, r, ""), finite(t.f64(r, bound_column(t))))
                {
                    bounds
                        .entry(format!("{k}{}", suffix(&inst.stage)))
                        .or_default()
                        .push((*x, v));
                }
            }
        }
    }
    let panels = factor_panels(
        factor,
        &axis,
        [
            ("accuracy", "accuracy", accuracy),
            ("final certified bounds", "nats", bounds),
        ],
    );
    if panels.is_empty() {
        return Err(format!(
            "ablation of {factor}: its bound instances report no accuracy bound, probe \
             accuracy or valid bound (give the bound stage `classes` and an i_uz term)"
        ));
    }
    Ok(Figure {
        name: format!("ablation_{}", sanitize(factor)),
        title: format!("Ablation: {factor}"),
        caption: format!(
            "Each value of {factor} (other factors at their defaults) against the final \
             accuracy bounds, the probe's measured accuracy, and the valid bounds."
        ),
        panels,
    })
}

fn estimate_ablation(run: &Run, tables: &Tables, factor: &str) -> Result<Figure, String> {
    let rows: Vec<(&Table, &Cell)> = tables
        .estimates
        .iter()
        .filter_map(|(n, t)| Some((t, run.instances[*n].sweep(factor)?)))
        .collect();
    if rows.is_empty() {
        return Err(format!(
            "ablation of {factor}: no bound or estimate_mi instance varies it"
        ));
    }
    let (axis, xs) = factor_axis(&rows.iter().map(|r| r.1).collect::<Vec<_>>());
    distinct_enough(factor, &xs)?;
    let mut accuracy = ByLabel::new();
    let mut nats = ByLabel::new();
    for ((t, _), x) in rows.iter().zip(&xs) {
        for r in final_rows(t) {
            let Some(k) = estimate_key(t, r, "") else {
                continue;
            };
            if let Some(a) = finite(t.f64(r, mi_estimates::ACCURACY.name)) {
                accuracy.entry(k.clone()).or_default().push((*x, a));
            }
            if let Some(v) = finite(t.f64(r, mi_estimates::NATS.name)) {
                nats.entry(k).or_default().push((*x, v));
            }
        }
    }
    let panels = factor_panels(
        factor,
        &axis,
        [
            ("probe accuracy (measured)", "accuracy", accuracy),
            ("mutual information estimates", "nats", nats),
        ],
    );
    if panels.is_empty() {
        return Err(format!("ablation of {factor}: no finite estimate to plot"));
    }
    Ok(Figure {
        name: format!("ablation_{}", sanitize(factor)),
        title: format!("Ablation: {factor}"),
        caption: format!(
            "Each value of {factor} against the final estimates and probe accuracy (the \
             pipeline has no bound stage)."
        ),
        panels,
    })
}

fn distinct_enough(factor: &str, xs: &[f64]) -> Result<(), String> {
    let mut d = xs.to_vec();
    d.sort_by(f64::total_cmp);
    d.dedup();
    if d.len() < 2 {
        return Err(format!(
            "ablation of {factor}: fewer than two values among finished instances"
        ));
    }
    Ok(())
}

/// Points per series label.
type ByLabel = BTreeMap<String, Vec<(f64, f64)>>;

fn factor_panels<const N: usize>(
    factor: &str,
    axis: &XAxis,
    parts: [(&str, &str, ByLabel); N],
) -> Vec<Panel> {
    parts
        .into_iter()
        .filter(|(_, _, m)| !m.is_empty())
        .map(|(title, y, m)| Panel {
            title: title.into(),
            x_label: factor.into(),
            y_label: y.into(),
            x: axis.clone(),
            series: m
                .into_iter()
                .map(|(k, pts)| factor_series(k, pts))
                .collect(),
        })
        .collect()
}

/// Accuracy bounds against the probe's measured accuracy, one point per bound instance,
/// with y = x: lower bounds belong below the line, upper bounds above.
pub fn bound_vs_accuracy(run: &Run) -> Result<Figure, String> {
    let bounds: Vec<&Instance> = run.of_kind("bound").filter(|i| i.has_result()).collect();
    if bounds.is_empty() {
        return Err("bound versus measured accuracy: the pipeline has no bound results".into());
    }
    let mut lower = vec![];
    let mut upper = vec![];
    for i in &bounds {
        let Some(measured) = i.metric("probe_accuracy") else {
            continue;
        };
        if let Some(l) = i.metric("accuracy_lower_bound") {
            lower.push((measured, l));
        }
        if let Some(u) = i.metric("accuracy_upper_bound") {
            upper.push((measured, u));
        }
    }
    if lower.is_empty() && upper.is_empty() {
        return Err(
            "bound versus measured accuracy: no bound instance has both an accuracy bound and \
             a probe accuracy (give the bound stage `classes` and an i_uz term from a probe)"
                .into(),
        );
    }
    let all = lower.iter().chain(&upper).flat_map(|(x, y)| [*x, *y]);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let mut series = vec![Series::new(
        "y = x",
        vec![(lo.min(hi - 0.05), lo.min(hi - 0.05)), (hi, hi)],
        Style::Reference,
    )];
    for (label, pts) in [
        (
            "certified accuracy lower bound (Feder-Merhav or Clopper-Pearson)",
            lower,
        ),
        ("certified accuracy upper bound (Fano)", upper),
    ] {
        if !pts.is_empty() {
            series.push(Series::new(label, pts, Style::Points));
        }
    }
    Ok(Figure {
        name: "bound_vs_accuracy".into(),
        title: "Accuracy bounds versus measured accuracy".into(),
        caption: "One point per bound instance: the certified bounds on the Bayes accuracy of \
                  predicting Z from U against the probe's measured accuracy. The probe is one \
                  classifier, so it may sit below the Bayes accuracy (a lower bound above the \
                  diagonal contradicts nothing); an upper bound clearly below it would."
            .into(),
        panels: vec![Panel {
            title: "bound versus probe accuracy".into(),
            x_label: "probe accuracy (measured)".into(),
            y_label: "bound on accuracy".into(),
            x: XAxis::Numeric,
            series,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn table(columns: &[&str], rows: Vec<Vec<Cell>>) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
        }
    }

    fn inst(
        stage: &str,
        id: &str,
        kind: &str,
        sweeps: &[(&str, Cell)],
        metrics: &[(&str, f64)],
    ) -> Instance {
        Instance {
            stage: stage.into(),
            instance: id.into(),
            kind: kind.into(),
            status: "ok".into(),
            error: None,
            sweeps: sweeps
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            dir: PathBuf::new(),
        }
    }

    fn run(instances: Vec<Instance>, sweeps: &[&str]) -> Run {
        let mut columns = vec!["stage".to_string()];
        columns.extend(sweeps.iter().map(|s| format!("sweep.{s}")));
        Run {
            dir: PathBuf::new(),
            meta: serde_json::Value::Null,
            results: Table {
                columns,
                rows: vec![],
            },
            instances,
        }
    }

    use Cell::{Float as F, Int as I, Null as N, Text as T};

    #[test]
    fn epoch_series_groups_by_key_and_sorts_by_epoch() {
        let t = table(
            &["epoch", "pair", "estimator", "nats", "ci_low", "ci_high"],
            vec![
                vec![
                    I(4),
                    T("uy".into()),
                    T("ksg".into()),
                    F(0.9),
                    F(0.8),
                    F(1.0),
                ],
                vec![I(0), T("uy".into()), T("ksg".into()), F(0.2), N, N],
                vec![I(0), T("uz".into()), T("probe".into()), F(0.5), N, N],
                // The final row of the lead's layout: no epoch, not part of the curve.
                vec![N, T("uz".into()), T("probe".into()), F(0.7), N, N],
                vec![I(4), T("uz".into()), T("probe".into()), F(f64::NAN), N, N],
            ],
        );
        let s = epoch_series(
            &t,
            |r| estimate_key(&t, r, ""),
            "nats",
            Some(("ci_low", "ci_high")),
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s["uy / ksg"].points, vec![(0.0, 0.2), (4.0, 0.9)]);
        assert_eq!(s["uy / ksg"].errors, vec![(4.0, 0.8, 1.0)]);
        assert_eq!(s["uz / probe"].points, vec![(0.0, 0.5)]);
        assert_eq!(final_rows(&t), vec![3]);
    }

    #[test]
    fn tables_without_epoch_are_all_final_and_have_no_curve() {
        let t = table(&["pair", "nats"], vec![vec![T("a".into()), F(1.0)]]);
        assert!(epoch_series(&t, |_| Some("k".into()), "nats", None).is_empty());
        assert_eq!(final_rows(&t), vec![0]);
        let last = table(
            &["epoch", "nats"],
            vec![vec![I(1), F(1.0)], vec![I(3), F(2.0)]],
        );
        assert_eq!(final_rows(&last), vec![1]);
    }

    #[test]
    fn ablation_takes_only_rows_of_its_grid() {
        let b = |id: &str, sweeps: &[(&str, Cell)], lo: f64, acc: f64| {
            inst(
                "bound",
                id,
                "bound",
                sweeps,
                &[("accuracy_lower_bound", lo), ("probe_accuracy", acc)],
            )
        };
        let r = run(
            vec![
                inst("train", "train@t=0.1", "train", &[("t", F(0.1))], &[]),
                b("bound@t=0.1", &[("t", F(0.1))], 0.5, 0.8),
                b("bound@t=0.5", &[("t", F(0.5))], 0.4, 0.7),
                b("bound@h=[64]", &[("h", T("[64]".into()))], 0.3, 0.6),
                b("bound@h=[128]", &[("h", T("[128]".into()))], 0.35, 0.65),
                b("bound@seed=1", &[("seed", I(1))], 0.35, 0.65),
            ],
            &["t", "h", "seed"],
        );
        let (figs, notes) = ablations(&r, &Tables::default());
        assert_eq!(figs.len(), 2, "{notes:?}");
        let t = &figs[0];
        assert_eq!(t.name, "ablation_t");
        assert_eq!(t.panels[0].x, XAxis::Numeric);
        let lower = t.panels[0]
            .series
            .iter()
            .find(|s| s.label == "accuracy lower bound")
            .unwrap();
        assert_eq!(lower.points, vec![(0.1, 0.5), (0.5, 0.4)]);
        assert_eq!(lower.style, Style::LinePoints);
        let h = &figs[1];
        assert_eq!(
            h.panels[0].x,
            XAxis::Categories(vec!["[128]".into(), "[64]".into()])
        );
        let measured = h.panels[0]
            .series
            .iter()
            .find(|s| s.label.starts_with("probe accuracy"))
            .unwrap();
        assert_eq!(measured.points, vec![(0.0, 0.65), (1.0, 0.6)]);
        // A factor with one value is no ablation: noted, not drawn.
        assert!(notes.iter().any(|n| n.contains("seed")), "{notes:?}");
    }

    #[test]
    fn bound_vs_accuracy_needs_both_numbers() {
        let r = run(
            vec![inst(
                "bound",
                "bound",
                "bound",
                &[],
                &[("accuracy_lower_bound", 0.6)],
            )],
            &[],
        );
        assert!(bound_vs_accuracy(&r)
            .unwrap_err()
            .contains("probe accuracy"));
        let r = run(
            vec![inst(
                "bound",
                "bound",
                "bound",
                &[],
                &[("accuracy_lower_bound", 0.6), ("probe_accuracy", 0.8)],
            )],
            &[],
        );
        let f = bound_vs_accuracy(&r).unwrap();
        assert_eq!(f.panels[0].series[1].points, vec![(0.8, 0.6)]);
        assert_eq!(f.panels[0].series[0].style, Style::Reference);
    }

    #[test]
    fn no_train_stage_is_a_note_not_an_error() {
        let r = run(vec![inst("data", "data", "synthetic", &[], &[])], &[]);
        let e = training_curves(&r, &Tables::default()).unwrap_err();
        assert!(e.contains("no train stage"), "{e}");
        assert!(mi_and_bounds(&r, &Tables::default()).is_err());
    }
}
