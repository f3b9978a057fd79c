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
    /// Positive numbers on a log10 scale: factors that span more than a decade, and batch
    /// sizes and learning rates, which are swept geometrically.
    Log,
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
    /// A dashed line of the series' colour: what the results are to be read against
    /// (chance accuracy, the untrained encoder at epoch 0).
    Baseline,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
    /// (x, low, high) intervals drawn as vertical bars.
    pub errors: Vec<(f64, f64, f64)>,
    /// Vacuous bounds of this series: true but trivial, so drawn as hollow marks at the
    /// trivial value (0 for a lower bound on information) rather than as a result.
    pub vacuous: Vec<(f64, f64)>,
}

impl Series {
    fn new(label: impl Into<String>, points: Vec<(f64, f64)>, style: Style) -> Series {
        Series {
            label: label.into(),
            points,
            style,
            errors: vec![],
            vacuous: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x: XAxis,
    /// Where the x ticks go; empty: round numbers chosen by the plotter. Factor axes tick
    /// at the values that were run.
    pub x_ticks: Vec<f64>,
    pub series: Vec<Series>,
}

/// More legend entries than this do not fit inside a panel without hiding data: the
/// legend then goes beside the plot ([`legend_outside`]).
pub const MAX_LEGEND_INSIDE: usize = 8;

/// Entries a panel's legend has: one per series, and one explaining the vacuous marks.
pub fn legend_entries(p: &Panel) -> usize {
    p.series.len() + usize::from(p.series.iter().any(|s| !s.vacuous.is_empty()))
}

pub fn legend_outside(p: &Panel) -> bool {
    legend_entries(p) > MAX_LEGEND_INSIDE
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem: `<name>.png`, `<name>.svg`.
    pub name: String,
    pub title: String,
    /// One sentence under the plot in report.html: what to read from it.
    pub caption: String,
    pub panels: Vec<Panel>,
    /// Facets of the same series (one panel per quantity, one series per configuration):
    /// one legend beside the grid of panels, the colours the same in every panel.
    pub shared_legend: bool,
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

/// An instance's label without its replicate: replicates are seeds of one configuration,
/// so their series are drawn as one (mean and spread), not one line per seed.
pub fn without_replicate(label: &str) -> String {
    let (head, sweep) = match label.split_once('@') {
        Some((h, s)) => (Some(h), s),
        None => (None, label),
    };
    // Sweep values may hold commas themselves ("[128, 128]"): only whole `key=value`
    // pieces whose key is a replicate axis are dropped, the rest is re-joined as it was.
    let kept: Vec<&str> = sweep
        .split(',')
        .filter(|p| {
            let key = p.trim_start().split('=').next().unwrap_or_default();
            !(p.contains('=') && (key == "replicate" || key.ends_with(".replicate")))
        })
        .collect();
    let sweep = kept.join(",");
    match (head, sweep.is_empty()) {
        (Some(h), true) => h.to_string(),
        (Some(h), false) => format!("{h}@{sweep}"),
        (None, true) => "all replicates".to_string(),
        (None, false) => sweep,
    }
}

/// The label series of an instance get: its short label without the replicate.
fn group_label(run: &Run, inst: &Instance) -> String {
    without_replicate(&short_label(run, inst))
}

/// The means at each x, (x, mean - sd, mean + sd) where an x has several values, and how
/// many values the largest group has.
type MeanSd = (Vec<(f64, f64)>, Vec<(f64, f64, f64)>, usize);

/// Mean and sample standard deviation of the y values sharing an x, sorted by x.
fn mean_sd(points: &[(f64, f64)]) -> MeanSd {
    let mut groups: Vec<(f64, Vec<f64>)> = vec![];
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (x, y) in sorted {
        match groups.last_mut() {
            Some((gx, ys)) if *gx == x => ys.push(y),
            _ => groups.push((x, vec![y])),
        }
    }
    let mut means = vec![];
    let mut errors = vec![];
    let mut most = 0;
    for (x, ys) in groups {
        let n = ys.len() as f64;
        let m = ys.iter().sum::<f64>() / n;
        most = most.max(ys.len());
        means.push((x, m));
        if ys.len() > 1 {
            let sd = (ys.iter().map(|y| (y - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            errors.push((x, m - sd, m + sd));
        }
    }
    (means, errors, most)
}

/// Series of the same label (replicates of one configuration) merged into one: the mean
/// at each x, with bars of plus or minus one standard deviation. The label says so, so a
/// bar is never mistaken for a confidence interval.
pub fn merge_replicates(series: Vec<Series>) -> Vec<Series> {
    let mut groups: Vec<Vec<Series>> = vec![];
    for s in series {
        match groups.iter_mut().find(|g| g[0].label == s.label) {
            Some(g) => g.push(s),
            None => groups.push(vec![s]),
        }
    }
    groups
        .into_iter()
        .filter_map(|mut g| {
            if g.len() == 1 {
                return g.pop();
            }
            let n = g.len();
            let first = g.first()?;
            let (label, style) = (first.label.clone(), first.style);
            let pooled: Vec<(f64, f64)> = g.iter().flat_map(|s| s.points.clone()).collect();
            let (points, errors, _) = mean_sd(&pooled);
            let mut vacuous: Vec<(f64, f64)> = g.iter().flat_map(|s| s.vacuous.clone()).collect();
            vacuous.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            vacuous.dedup();
            Some(Series {
                label: format!("{label} (mean ± sd of {n})"),
                points,
                style,
                errors,
                vacuous,
            })
        })
        .collect()
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
        x_ticks: vec![],
        series: merge_replicates(
            tables
                .curves
                .iter()
                .filter(|(_, t)| t.has(column))
                .map(|(i, t)| {
                    let mut pts: Vec<(f64, f64)> = (0..t.len())
                        .filter_map(|r| Some((t.f64(r, EPOCH.name)?, finite(t.f64(r, column))?)))
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series::new(group_label(run, &run.instances[*i]), pts, Style::LinePoints)
                })
                .filter(|s| !s.points.is_empty())
                .collect(),
        ),
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
    let spread = spread_note(&panels);
    let shared_legend = panels.iter().any(legend_outside);
    Ok(Figure {
        shared_legend,
        name: "training_curves".into(),
        title: "Training curves".into(),
        caption: format!(
            "Mean training loss per epoch, and the held-out InfoNCE estimate log N - L \
             (a lower bound on the views' mutual information, capped at log N).{spread}"
        ),
        panels,
    })
}

/// The caption's sentence on bars, only when some are drawn: a caption must not promise
/// intervals the plot does not have.
fn spread_note(panels: &[Panel]) -> String {
    let sd = panels
        .iter()
        .flat_map(|p| &p.series)
        .any(|s| !s.errors.is_empty() && s.label.contains("mean ± sd"));
    let ci = panels
        .iter()
        .flat_map(|p| &p.series)
        .any(|s| !s.errors.is_empty() && !s.label.contains("mean ± sd"));
    let mut out = String::new();
    if sd {
        out.push_str(" Replicates (seeds) are drawn as their mean, bars one standard deviation.");
    }
    if ci {
        out.push_str(" Bars on single values are the estimators' confidence intervals.");
    }
    out
}

/// The caption's sentence on vacuous marks, only when some are drawn.
fn vacuous_note(panels: &[Panel]) -> &'static str {
    if panels
        .iter()
        .flat_map(|p| &p.series)
        .any(|s| !s.vacuous.is_empty())
    {
        " Crosses mark vacuous bounds (true but trivial: a lower bound on information at or \
         below 0, an accuracy lower bound at or below chance): drawn at the trivial value, not \
         at their computed value, since they say nothing."
    } else {
        ""
    }
}

/// The column a bound is drawn by (see [`bound_point`]).
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
    let params = t.str(r, mi_estimates::PARAMS.name);
    // One estimator run twice with different settings (KSG's two algorithms) is two
    // series, told apart by their settings; otherwise the settings are noise.
    let twice = (0..t.len()).any(|o| {
        t.str(o, mi_estimates::PAIR.name) == Some(pair)
            && t.str(o, mi_estimates::ESTIMATOR.name) == Some(est)
            && t.str(o, mi_estimates::PARAMS.name) != params
    });
    match params.map(params_label) {
        Some(p) if twice && !p.is_empty() => Some(format!("{prefix}{pair} / {est} {p}")),
        _ => Some(format!("{prefix}{pair} / {est}")),
    }
}

/// What a bound row contributes to a plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BoundPoint {
    /// A certified value: a result.
    Value(f64),
    /// A vacuous bound, placed at this (trivial) value and marked as vacuous.
    Vacuous(f64),
}

/// Bounds are drawn by their certified values, and only those that certify something; a
/// vacuous one is marked as such at its trivial value (a lower bound at or below 0 says
/// nothing, whatever number it came out as); estimates of bounds, statements that are no
/// bounds, rows not computed and inconsistent ones are not drawn. Tables from before
/// certification: every valid row, by its value.
pub fn bound_point(t: &Table, r: usize, prefix: &str) -> Option<(String, BoundPoint)> {
    if t.str(r, bounds::STATUS.name) != Some("valid") {
        return None;
    }
    let name = t.str(r, bounds::NAME.name)?;
    // Accuracy rows are probabilities, not nats: they have their own figure.
    if name.starts_with("accuracy_") {
        return None;
    }
    let certification = t.str(r, bounds::CERTIFICATION.name);
    if t.has(bounds::CERTIFICATION.name) && !matches!(certification, Some("certified" | "vacuous"))
    {
        return None;
    }
    let lhs = t.str(r, bounds::LHS.name).unwrap_or("?");
    let side = t.str(r, bounds::SIDE.name).unwrap_or("bound");
    let key = format!("{prefix}{name} ({side} bound on {lhs})");
    let value = finite(t.f64(r, bound_column(t)));
    let point = match (certification, side, value) {
        // The trivial value of a lower bound on information is 0.
        (Some("vacuous"), "lower", _) => BoundPoint::Vacuous(0.0),
        (Some("vacuous"), _, Some(v)) => BoundPoint::Vacuous(v),
        (_, "lower", Some(v)) if v <= 0.0 => BoundPoint::Vacuous(0.0),
        (Some("vacuous"), _, None) | (_, _, None) => return None,
        (_, _, Some(v)) => BoundPoint::Value(v),
    };
    Some((key, point))
}

fn add_bound(s: &mut Series, x: f64, p: BoundPoint) {
    match p {
        BoundPoint::Value(v) => s.points.push((x, v)),
        BoundPoint::Vacuous(v) => s.vacuous.push((x, v)),
    }
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
        let groups: std::collections::BTreeSet<String> = all
            .iter()
            .map(|(n, _)| group_label(run, &run.instances[*n]))
            .collect();
        if groups.len() > 1 {
            format!("{}: ", group_label(run, &run.instances[i]))
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
        if let Some(fig) = faceted_epochs(run, tables) {
            return Ok(fig);
        }
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
            bounds.extend(bound_epoch_series(t, &p));
        }
        let panels: Vec<Panel> = [
            ("mutual information estimates", mi),
            ("certified bounds", bounds),
        ]
        .into_iter()
        .map(|(t, s)| (t, merge_replicates(s)))
        .filter(|(_, s)| !s.is_empty())
        .map(|(title, series)| Panel {
            title: title.into(),
            x_label: "epoch".into(),
            y_label: "nats".into(),
            x: XAxis::Numeric,
            x_ticks: vec![],
            series,
        })
        .collect();
        let (spread, vacuous) = (spread_note(&panels), vacuous_note(&panels));
        return Ok(Figure {
            shared_legend: false,
            name: "mi_bounds_epochs".into(),
            title: "Mutual information and bounds over epochs".into(),
            caption: format!(
                "Estimates and the certified values of the bounds for encoder snapshots \
                 during training; epoch 0 is the untrained encoder, the baseline training \
                 is measured against.{spread}{vacuous}"
            ),
            panels,
        });
    }
    // No snapshots: one category per instance, the final value of each estimate/bound.
    let names: Vec<String> = {
        let mut n: Vec<String> = tables
            .estimates
            .iter()
            .chain(&tables.bounds)
            .map(|(i, _)| short_label(run, &run.instances[*i]))
            .collect();
        n.sort();
        n.dedup();
        n
    };
    let position = |i: usize| {
        let l = short_label(run, &run.instances[i]);
        names.iter().position(|n| *n == l).unwrap_or(0) as f64
    };
    let mut estimates: BTreeMap<String, Series> = BTreeMap::new();
    for (i, t) in &tables.estimates {
        let x = position(*i);
        for r in final_rows(t) {
            let (Some(k), Some(v)) = (
                estimate_key(t, r, ""),
                finite(t.f64(r, mi_estimates::NATS.name)),
            ) else {
                continue;
            };
            let s = estimates
                .entry(k.clone())
                .or_insert_with(|| Series::new(k, vec![], Style::Points));
            s.points.push((x, v));
            if let (Some(lo), Some(hi)) = (
                finite(t.f64(r, mi_estimates::CI_LOW.name)),
                finite(t.f64(r, mi_estimates::CI_HIGH.name)),
            ) {
                s.errors.push((x, lo, hi));
            }
        }
    }
    let mut bound_series: BTreeMap<String, Series> = BTreeMap::new();
    for (i, t) in &tables.bounds {
        let x = position(*i);
        for r in final_rows(t) {
            if let Some((k, p)) = bound_point(t, r, "") {
                let s = bound_series
                    .entry(k.clone())
                    .or_insert_with(|| Series::new(k, vec![], Style::Points));
                add_bound(s, x, p);
            }
        }
    }
    let panels: Vec<Panel> = [
        ("mutual information estimates", estimates),
        ("certified bounds", bound_series),
    ]
    .into_iter()
    .filter(|(_, s)| !s.is_empty())
    .map(|(title, s)| Panel {
        title: title.into(),
        x_label: "instance".into(),
        y_label: "nats".into(),
        x: XAxis::Categories(names.clone()),
        x_ticks: vec![],
        series: s.into_values().collect(),
    })
    .collect();
    if panels.is_empty() {
        return Err("mutual information and bounds: no finite estimate or valid bound".into());
    }
    let (spread, vacuous) = (spread_note(&panels), vacuous_note(&panels));
    Ok(Figure {
        shared_legend: false,
        name: "mi_bounds_final".into(),
        title: "Mutual information and bounds (final encoders)".into(),
        caption: format!(
            "Final estimates and certified bounds per instance. The tables have no `epoch` \
             column, so there is no curve over training.{spread}{vacuous}"
        ),
        panels,
    })
}

/// The configuration an instance stands for: its sweep values without the replicate (the
/// stage is in the panel's title), or its id when it has none.
fn config_label(inst: &Instance) -> String {
    let l = without_replicate(&inst.instance);
    match l.split_once('@') {
        Some((_, sweep)) => sweep.to_string(),
        None => l,
    }
}

/// Estimates and bounds over epochs of many configurations (an ablation): one panel per
/// quantity (estimate or bound), one series per configuration, so no panel carries a
/// legend of every pair of configuration and quantity. None when they fit one legend.
fn faceted_epochs(run: &Run, tables: &Tables) -> Option<Figure> {
    let configs: std::collections::BTreeSet<String> = tables
        .estimates
        .iter()
        .chain(&tables.bounds)
        .map(|(i, _)| config_label(&run.instances[*i]))
        .collect();
    // In order of first appearance: estimates before bounds, as in the tables.
    let mut facets: Vec<(String, Vec<Series>)> = vec![];
    let mut add = |title: String, s: Series| match facets.iter_mut().find(|f| f.0 == title) {
        Some(f) => f.1.push(s),
        None => facets.push((title, vec![s])),
    };
    let stages = |all: &[(usize, Table)]| {
        all.iter()
            .map(|(i, _)| run.instances[*i].stage.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let (estimate_stages, bound_stages) = (stages(&tables.estimates), stages(&tables.bounds));
    let title = |i: usize, key: &str, n_stages: usize| {
        if n_stages > 1 {
            format!("{}: {key}", run.instances[i].stage)
        } else {
            key.to_string()
        }
    };
    let mut total = 0;
    for (i, t) in &tables.estimates {
        let per = epoch_series(
            t,
            |r| estimate_key(t, r, ""),
            mi_estimates::NATS.name,
            Some((mi_estimates::CI_LOW.name, mi_estimates::CI_HIGH.name)),
        );
        for (key, mut s) in per {
            s.label = config_label(&run.instances[*i]);
            total += 1;
            add(title(*i, &key, estimate_stages), s);
        }
    }
    for (i, t) in &tables.bounds {
        for mut s in bound_epoch_series(t, "") {
            let key = std::mem::take(&mut s.label);
            s.label = config_label(&run.instances[*i]);
            total += 1;
            add(title(*i, &key, bound_stages), s);
        }
    }
    if configs.len() < 2 || total <= MAX_LEGEND_INSIDE {
        return None;
    }
    let panels: Vec<Panel> = facets
        .into_iter()
        .map(|(title, series)| {
            // A bound that is vacuous at every snapshot of every configuration is a
            // finding of its own: say it where the eye lands.
            let never = series.iter().all(|s| s.points.is_empty());
            let title = if never {
                format!("{title}: vacuous throughout")
            } else {
                title
            };
            Panel {
                title: truncate_title(&title),
                x_label: "epoch".into(),
                y_label: "nats".into(),
                x: XAxis::Numeric,
                x_ticks: vec![],
                series: merge_replicates(series),
            }
        })
        .collect();
    let (spread, vacuous) = (spread_note(&panels), vacuous_note(&panels));
    Some(Figure {
        name: "mi_bounds_epochs".into(),
        title: "Mutual information and bounds over epochs".into(),
        caption: format!(
            "One panel per estimate (\"pair / estimator\") and per certified bound \
             (\"name (side bound on quantity)\"), one line per configuration, for \
             encoder snapshots during training; epoch 0 is the untrained encoder, the \
             baseline training is measured against.{spread}{vacuous}"
        ),
        panels,
        shared_legend: true,
    })
}

/// Panel titles are one line over a 640 px panel.
fn truncate_title(s: &str) -> String {
    if s.chars().count() <= 66 {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(65).collect();
        t.push('…');
        t
    }
}

/// The bounds of one table over epochs, one series per bound, vacuous epochs marked.
fn bound_epoch_series(t: &Table, prefix: &str) -> Vec<Series> {
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    for r in 0..t.len() {
        let Some(epoch) = t.f64(r, EPOCH.name) else {
            continue;
        };
        if let Some((k, p)) = bound_point(t, r, prefix) {
            let s = out
                .entry(k.clone())
                .or_insert_with(|| Series::new(k, vec![], Style::LinePoints));
            add_bound(s, epoch, p);
        }
    }
    for s in out.values_mut() {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out.into_values().collect()
}

/// A list-valued factor ("[128, 128]", hidden widths): its numbers, when it is a list of
/// numbers.
fn number_list(s: &str) -> Option<Vec<f64>> {
    let v: Vec<f64> = serde_json::from_str(s).ok()?;
    (!v.is_empty()).then_some(v)
}

/// A list of numbers as a short tick label: "128×128".
fn list_label(v: &[f64]) -> String {
    v.iter()
        .map(|x| super::load::format_number(*x))
        .collect::<Vec<_>>()
        .join("×")
}

/// Factors swept geometrically by convention, drawn on a log axis whatever their span.
fn conventionally_log(factor: &str) -> bool {
    let last = factor.rsplit('.').next().unwrap_or(factor);
    matches!(
        last,
        "lr" | "learning_rate" | "batch_size" | "batch" | "weight_decay"
    )
}

/// The axis a factor's values go on, and each value's x. Numbers go on a numeric axis,
/// logarithmic when they span more than a decade or the factor is a batch size or a
/// learning rate, ticked at the values run; lists of numbers are categories in numeric
/// order (by product, then element by element) labelled "128×128"; anything else is a
/// category in text order.
pub fn factor_axis(factor: &str, values: &[&Cell]) -> (XAxis, Vec<f64>, Vec<f64>) {
    if values.iter().all(|v| v.as_f64().is_some()) {
        let xs: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
        let mut distinct = xs.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        let (lo, hi) = (
            distinct.first().copied().unwrap_or(0.0),
            distinct.last().copied().unwrap_or(0.0),
        );
        let log = lo > 0.0 && (hi / lo > 10.0 || (conventionally_log(factor) && hi > lo));
        let ticks = if distinct.len() <= 8 {
            distinct
        } else {
            vec![]
        };
        return (if log { XAxis::Log } else { XAxis::Numeric }, xs, ticks);
    }
    let lists: Option<Vec<Vec<f64>>> = values
        .iter()
        .map(|v| v.as_str().and_then(number_list))
        .collect();
    let (keys, labels): (Vec<Vec<f64>>, Vec<String>) = match &lists {
        Some(l) => (l.clone(), l.iter().map(|v| list_label(v)).collect()),
        None => (vec![], values.iter().map(|v| v.display()).collect()),
    };
    let mut order: Vec<usize> = (0..labels.len()).collect();
    if keys.is_empty() {
        order.sort_by(|a, b| labels[*a].cmp(&labels[*b]));
    } else {
        let product = |v: &[f64]| v.iter().product::<f64>();
        order.sort_by(|a, b| {
            product(&keys[*a])
                .total_cmp(&product(&keys[*b]))
                .then_with(|| {
                    keys[*a]
                        .iter()
                        .zip(&keys[*b])
                        .map(|(x, y)| x.total_cmp(y))
                        .find(|o| o.is_ne())
                        .unwrap_or(keys[*a].len().cmp(&keys[*b].len()))
                })
        });
    }
    let mut names: Vec<String> = order.iter().map(|i| labels[*i].clone()).collect();
    names.dedup();
    let xs = labels
        .iter()
        .map(|l| names.iter().position(|n| n == l).unwrap_or(0) as f64)
        .collect();
    (XAxis::Categories(names), xs, vec![])
}

/// One value of a metric at a factor value, with its interval where the data has one.
#[derive(Debug, Clone, Copy)]
struct Obs {
    x: f64,
    y: f64,
    interval: Option<(f64, f64)>,
}

/// Points of one metric against the factor, joined in factor order. Where several runs
/// share an x (replicates, or other factors of a full grid) the mean is drawn with bars of
/// one standard deviation, and the label says so; single values keep their intervals.
fn factor_series(label: String, obs: Vec<Obs>) -> Series {
    let pts: Vec<(f64, f64)> = obs.iter().map(|o| (o.x, o.y)).collect();
    let (points, sd, most) = mean_sd(&pts);
    if most > 1 {
        let mut s = Series::new(
            format!("{label} (mean ± sd of {most})"),
            points,
            Style::LinePoints,
        );
        s.errors = sd;
        return s;
    }
    let mut s = Series::new(label, points, Style::LinePoints);
    s.errors = obs
        .iter()
        .filter_map(|o| o.interval.map(|(lo, hi)| (o.x, lo, hi)))
        .collect();
    s
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

/// The estimate_mi instance of the same configuration as `inst` (same sweep values), whose
/// epoch-0 rows are the untrained encoder's.
fn estimates_of<'a>(run: &Run, tables: &'a Tables, inst: &Instance) -> Option<&'a Table> {
    tables
        .estimates
        .iter()
        .find(|(n, _)| run.instances[*n].sweeps == inst.sweeps)
        .map(|(_, t)| t)
}

/// The untrained encoder's (epoch 0) probe accuracy in an estimates table.
fn untrained_accuracy(t: &Table) -> Option<f64> {
    (0..t.len())
        .filter(|&r| t.f64(r, EPOCH.name) == Some(0.0))
        .find_map(|r| finite(t.f64(r, mi_estimates::ACCURACY.name)))
}

/// Chance accuracy, 1/classes, from the instance's `classes` parameter.
fn chance(run: &Run, n: usize) -> Option<f64> {
    run.results
        .f64(n, "param.classes")
        .filter(|k| *k >= 2.0)
        .map(|k| 1.0 / k)
}

/// A horizontal baseline across the x values drawn.
fn flat(label: &str, y: f64, xs: &[f64]) -> Option<Series> {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo.is_finite() && hi.is_finite())
        .then(|| Series::new(label, vec![(lo, y), (hi, y)], Style::Baseline))
}

fn bound_ablation(run: &Run, tables: &Tables, factor: &str) -> Result<Figure, String> {
    let rows: Vec<(usize, &Instance, &Cell)> = run
        .instances
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind == "bound" && i.has_result())
        .filter_map(|(n, i)| Some((n, i, i.sweep(factor)?)))
        .collect();
    let (axis, xs, x_ticks) = factor_axis(factor, &rows.iter().map(|r| r.2).collect::<Vec<_>>());
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
    let mut untrained = ByLabel::new();
    // Per bound: its certified observations, and where it is vacuous.
    type Split = (Vec<Obs>, Vec<(f64, f64)>);
    let mut bounds: BTreeMap<String, Split> = BTreeMap::new();
    // Accuracy lower bounds at or below chance: marked at chance, not drawn as values.
    let mut accuracy_vacuous: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut chances = vec![];
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
                    .push(Obs {
                        x: *x,
                        y: v,
                        interval: None,
                    });
            }
        }
        if let Some(a) = estimates_of(run, tables, inst).and_then(untrained_accuracy) {
            untrained
                .entry(format!(
                    "probe accuracy, untrained encoder (epoch 0){}",
                    suffix(&inst.stage)
                ))
                .or_default()
                .push(Obs {
                    x: *x,
                    y: a,
                    interval: None,
                });
        }
        chances.extend(chance(run, *n));
        if let Some((_, t)) = tables.bounds.iter().find(|(i, _)| i == n) {
            let vacuous_lower = (0..t.len()).any(|r| {
                t.str(r, bounds::NAME.name)
                    .is_some_and(|s| s.starts_with("accuracy_"))
                    && t.str(r, bounds::SIDE.name) == Some("lower")
                    && t.str(r, bounds::CERTIFICATION.name) == Some("vacuous")
            });
            if let (true, None, Some(c)) = (
                vacuous_lower,
                inst.metric("accuracy_lower_bound"),
                chance(run, *n),
            ) {
                accuracy_vacuous
                    .entry(format!("accuracy lower bound{}", suffix(&inst.stage)))
                    .or_default()
                    .push((*x, c));
            }
            for r in final_rows(t) {
                if let Some((k, p)) = bound_point(t, r, "") {
                    let e = bounds
                        .entry(format!("{k}{}", suffix(&inst.stage)))
                        .or_default();
                    match p {
                        BoundPoint::Value(y) => e.0.push(Obs {
                            x: *x,
                            y,
                            interval: None,
                        }),
                        BoundPoint::Vacuous(y) => e.1.push((*x, y)),
                    }
                }
            }
        }
    }
    let mut accuracy_series: Vec<Series> = accuracy
        .into_iter()
        .map(|(k, o)| factor_series(k, o))
        .collect();
    for (label, marks) in accuracy_vacuous {
        match accuracy_series
            .iter_mut()
            .find(|s| s.label.starts_with(&label))
        {
            Some(s) => s.vacuous.extend(marks),
            None => {
                let mut s = Series::new(label, vec![], Style::LinePoints);
                s.vacuous = marks;
                accuracy_series.push(s);
            }
        }
    }
    for (k, o) in untrained {
        let mut s = factor_series(k, o);
        s.style = Style::Baseline;
        accuracy_series.push(s);
    }
    // Chance is one number only when every instance has the same number of classes.
    chances.dedup();
    if let ([c], false) = (chances.as_slice(), accuracy_series.is_empty()) {
        accuracy_series.extend(flat("chance (1 / classes)", *c, &xs));
    }
    let bound_series: Vec<Series> = bounds
        .into_iter()
        .map(|(k, (o, vac))| {
            let mut s = factor_series(k, o);
            s.vacuous = vac;
            s
        })
        .collect();
    let panel = |title: &str, y: &str, series: Vec<Series>| Panel {
        title: title.into(),
        x_label: factor.into(),
        y_label: y.into(),
        x: axis.clone(),
        x_ticks: x_ticks.clone(),
        series,
    };
    // Lower and upper bounds apart: an upper bound of hundreds of nats (a channel's
    // I(X;Y|Z)) would otherwise flatten lower bounds of one nat onto the axis.
    let (lower, upper): (Vec<Series>, Vec<Series>) = bound_series
        .into_iter()
        .partition(|s| !s.label.contains("(upper bound on"));
    let panels: Vec<Panel> = [
        panel("accuracy", "accuracy", accuracy_series),
        panel("final certified lower bounds", "nats", lower),
        panel("final certified upper bounds", "nats", upper),
    ]
    .into_iter()
    .filter(|p| !p.series.is_empty())
    .collect();
    if panels.is_empty() {
        return Err(format!(
            "ablation of {factor}: its bound instances report no accuracy bound, probe \
             accuracy or valid bound (give the bound stage `classes` and an i_uz term)"
        ));
    }
    let (spread, vacuous) = (spread_note(&panels), vacuous_note(&panels));
    Ok(Figure {
        shared_legend: false,
        name: format!("ablation_{}", sanitize(factor)),
        title: format!("Ablation: {factor}"),
        caption: format!(
            "Each value of {factor} (other factors at their defaults) against the final \
             accuracy bounds, the probe's measured accuracy (dashed: the same probe on the \
             untrained encoder, and chance), and the certified bounds.{spread}{vacuous}"
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
    let (axis, xs, x_ticks) = factor_axis(factor, &rows.iter().map(|r| r.1).collect::<Vec<_>>());
    distinct_enough(factor, &xs)?;
    let mut accuracy = ByLabel::new();
    let mut nats = ByLabel::new();
    for ((t, _), x) in rows.iter().zip(&xs) {
        for r in final_rows(t) {
            let Some(k) = estimate_key(t, r, "") else {
                continue;
            };
            if let Some(a) = finite(t.f64(r, mi_estimates::ACCURACY.name)) {
                accuracy.entry(k.clone()).or_default().push(Obs {
                    x: *x,
                    y: a,
                    interval: None,
                });
            }
            if let Some(v) = finite(t.f64(r, mi_estimates::NATS.name)) {
                let interval = finite(t.f64(r, mi_estimates::CI_LOW.name))
                    .zip(finite(t.f64(r, mi_estimates::CI_HIGH.name)));
                nats.entry(k).or_default().push(Obs {
                    x: *x,
                    y: v,
                    interval,
                });
            }
        }
    }
    let panel = |title: &str, y: &str, m: ByLabel| Panel {
        title: title.into(),
        x_label: factor.into(),
        y_label: y.into(),
        x: axis.clone(),
        x_ticks: x_ticks.clone(),
        series: m.into_iter().map(|(k, o)| factor_series(k, o)).collect(),
    };
    let panels: Vec<Panel> = [
        panel("probe accuracy (measured)", "accuracy", accuracy),
        panel("mutual information estimates", "nats", nats),
    ]
    .into_iter()
    .filter(|p| !p.series.is_empty())
    .collect();
    if panels.is_empty() {
        return Err(format!("ablation of {factor}: no finite estimate to plot"));
    }
    let spread = spread_note(&panels);
    Ok(Figure {
        shared_legend: false,
        name: format!("ablation_{}", sanitize(factor)),
        title: format!("Ablation: {factor}"),
        caption: format!(
            "Each value of {factor} against the final estimates and probe accuracy (the \
             pipeline has no bound stage).{spread}"
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

/// Observations per series label.
type ByLabel = BTreeMap<String, Vec<Obs>>;

/// Accuracy bounds against the probe's measured accuracy, one point per bound instance,
/// with y = x. Only an upper bound below the line contradicts the measurement (no
/// classifier beats the Bayes accuracy); a lower bound above it does not, since the probe
/// is one classifier and may sit below the Bayes accuracy.
pub fn bound_vs_accuracy(run: &Run) -> Result<Figure, String> {
    let bounds: Vec<(usize, &Instance)> = run
        .instances
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind == "bound" && i.has_result())
        .collect();
    if bounds.is_empty() {
        return Err("bound versus measured accuracy: the pipeline has no bound results".into());
    }
    let mut lower = vec![];
    let mut upper = vec![];
    let mut chances = vec![];
    for (n, i) in &bounds {
        let Some(measured) = i.metric("probe_accuracy") else {
            continue;
        };
        chances.extend(chance(run, *n));
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
    chances.dedup();
    let xs: Vec<f64> = series[1..]
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    if let [c] = chances.as_slice() {
        series.extend(flat("chance (1 / classes)", *c, &xs));
    }
    Ok(Figure {
        shared_legend: false,
        name: "bound_vs_accuracy".into(),
        title: "Accuracy bounds versus measured accuracy".into(),
        caption: "One point per bound instance: the certified bounds on the Bayes accuracy of \
                  predicting Z from U against the probe's measured accuracy. Only an upper \
                  bound clearly below the diagonal would contradict the measurement (no \
                  classifier beats the Bayes accuracy); a lower bound above it contradicts \
                  nothing, since the probe is one classifier and may sit below the Bayes \
                  accuracy."
            .into(),
        panels: vec![Panel {
            title: "bound versus probe accuracy".into(),
            x_label: "probe accuracy (measured)".into(),
            y_label: "bound on accuracy".into(),
            x: XAxis::Numeric,
            x_ticks: vec![],
            series,
        }],
    })
}

/// The names of an instance's inputs, from its `meta.json` (`key_inputs.inputs`). Missing
/// or unreadable: none (the plot that needs them is then skipped with a note).
fn inputs_of(inst: &Instance) -> Vec<String> {
    let Ok(bytes) = std::fs::read(inst.dir.join("meta.json")) else {
        return vec![];
    };
    let Ok(meta) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return vec![];
    };
    meta.pointer("/key_inputs/inputs")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("instance").and_then(|s| s.as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Metric names that are estimates of mutual information in nats, by the words in them
/// (`gaussian_mi_x0_y0`): a command stage's metrics have no declared meaning.
fn is_mi_metric(name: &str) -> bool {
    let words: Vec<&str> = name.split(['_', '.']).collect();
    words.contains(&"mi")
        && !words
            .iter()
            .any(|w| matches!(*w, "true" | "bits" | "truth" | "exact"))
}

/// An estimator's parameters (JSON) as "k=3 algorithm=1", its name left out (it is
/// already in the label); text that is no JSON object is kept as it is.
fn params_label(params: &str) -> String {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(params) {
        Ok(m) => m
            .iter()
            .filter(|(k, _)| k.as_str() != "name")
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => params.to_string(),
    }
}

/// Estimates against the exact mutual information, with y = x, for pipelines on data with
/// a known truth: every estimate (the `estimate_mi` tables' final rows, or an MI metric of
/// another stage, such as a script's) whose input instance reports `metric.true_mi_nats`.
pub fn estimate_vs_truth(run: &Run, tables: &Tables) -> Result<Figure, String> {
    let truth: BTreeMap<&str, f64> = run
        .instances
        .iter()
        .filter_map(|i| Some((i.instance.as_str(), i.metric("true_mi_nats")?)))
        .collect();
    if truth.is_empty() {
        return Err(
            "estimate versus truth: no instance reports metric.true_mi_nats (no ground truth)"
                .into(),
        );
    }
    let mut by: ByLabel = BTreeMap::new();
    for (n, inst) in run.instances.iter().enumerate() {
        if !inst.has_result() || truth.contains_key(inst.instance.as_str()) {
            continue;
        }
        let inputs = inputs_of(inst);
        let truths: Vec<f64> = inputs
            .iter()
            .filter_map(|i| truth.get(i.as_str()).copied())
            .collect();
        // With two inputs of known truth it is not known which the estimate is of.
        let [t] = truths.as_slice() else {
            continue;
        };
        let obs = |y: f64, interval| Obs { x: *t, y, interval };
        if let Some((_, table)) = tables.estimates.iter().find(|(i, _)| *i == n) {
            for r in final_rows(table) {
                let (Some(est), Some(v)) = (
                    table.str(r, mi_estimates::ESTIMATOR.name),
                    finite(table.f64(r, mi_estimates::NATS.name)),
                ) else {
                    continue;
                };
                let interval = finite(table.f64(r, mi_estimates::CI_LOW.name))
                    .zip(finite(table.f64(r, mi_estimates::CI_HIGH.name)));
                let label = match table.str(r, mi_estimates::PARAMS.name).map(params_label) {
                    Some(p) if !p.is_empty() => format!("{est} {p}"),
                    _ => est.to_string(),
                };
                by.entry(label).or_default().push(obs(v, interval));
            }
        } else {
            for (name, v) in &inst.metrics {
                if is_mi_metric(name) && v.is_finite() {
                    by.entry(format!("{} {name}", inst.stage))
                        .or_default()
                        .push(obs(*v, None));
                }
            }
        }
    }
    if by.is_empty() {
        return Err(
            "estimate versus truth: no estimate is of an instance with a known true MI".into(),
        );
    }
    let all = by.values().flatten().flat_map(|o| [o.x, o.y]);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let lo = lo.min(0.0);
    let mut series = vec![Series::new(
        "y = x (exact)",
        vec![(lo, lo), (hi, hi)],
        Style::Reference,
    )];
    for (label, mut obs) in by {
        obs.sort_by(|a, b| a.x.total_cmp(&b.x));
        let mut s = Series::new(
            label,
            obs.iter().map(|o| (o.x, o.y)).collect(),
            Style::Points,
        );
        s.errors = obs
            .iter()
            .filter_map(|o| o.interval.map(|(l, h)| (o.x, l, h)))
            .collect();
        series.push(s);
    }
    let panels = vec![Panel {
        title: "estimated against true mutual information".into(),
        x_label: "true I (nats)".into(),
        y_label: "estimate (nats)".into(),
        x: XAxis::Numeric,
        x_ticks: vec![],
        series,
    }];
    let ci = if panels[0].series.iter().any(|s| !s.errors.is_empty()) {
        " Bars are the estimators' confidence intervals."
    } else {
        ""
    };
    Ok(Figure {
        shared_legend: false,
        name: "estimate_vs_truth".into(),
        title: "Estimates versus the true mutual information".into(),
        caption: format!(
            "Each estimate of a data set with known mutual information against the truth: \
             points on the dashed line y = x are exact, below it underestimates.{ci}"
        ),
        panels,
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
        // Widths in numeric order, not text order ("[128]" sorts before "[64]").
        assert_eq!(
            h.panels[0].x,
            XAxis::Categories(vec!["64".into(), "128".into()])
        );
        let measured = h.panels[0]
            .series
            .iter()
            .find(|s| s.label.starts_with("probe accuracy"))
            .unwrap();
        assert_eq!(measured.points, vec![(0.0, 0.6), (1.0, 0.65)]);
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
    fn list_valued_factors_are_ordered_by_their_numbers() {
        let cells: Vec<Cell> = ["[1024, 1024]", "[128,128]", "[256, 256]", "[512, 512]"]
            .iter()
            .map(|s| T(s.to_string()))
            .collect();
        let refs: Vec<&Cell> = cells.iter().collect();
        let (axis, xs, _) = factor_axis("model.encoder.hidden", &refs);
        assert_eq!(
            axis,
            XAxis::Categories(vec![
                "128×128".into(),
                "256×256".into(),
                "512×512".into(),
                "1024×1024".into()
            ])
        );
        assert_eq!(xs, vec![3.0, 0.0, 1.0, 2.0]);
        // Lists that are not numbers stay categories in text order.
        let cells = [T("b".into()), T("a".into())];
        let (axis, _, _) = factor_axis("views", &cells.iter().collect::<Vec<_>>());
        assert_eq!(axis, XAxis::Categories(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn log_axes_for_factors_over_a_decade_and_for_batch_sizes() {
        let axis = |name: &str, v: &[f64]| {
            let cells: Vec<Cell> = v.iter().map(|x| F(*x)).collect();
            factor_axis(name, &cells.iter().collect::<Vec<_>>())
        };
        assert_eq!(axis("optimizer.lr", &[1e-4, 1e-3, 1e-2]).0, XAxis::Log);
        assert_eq!(axis("batch_size", &[64.0, 128.0, 256.0]).0, XAxis::Log);
        assert_eq!(axis("noise", &[0.01, 0.5]).0, XAxis::Log);
        assert_eq!(
            axis("loss.temperature", &[0.05, 0.1, 0.5]).0,
            XAxis::Numeric
        );
        // Zero cannot go on a log axis, whatever the factor.
        assert_eq!(axis("noise", &[0.0, 0.5, 10.0]).0, XAxis::Numeric);
        // Few values: ticks at the values run.
        assert_eq!(axis("batch_size", &[64.0, 256.0]).2, vec![64.0, 256.0]);
    }

    /// (epoch, name, side, certification, certified_nats) of a valid bound on I(U;Z).
    type BoundRow<'a> = (Option<i64>, &'a str, &'a str, &'a str, Option<f64>);

    fn bounds_table(rows: Vec<BoundRow>) -> Table {
        table(
            &[
                "epoch",
                "name",
                "status",
                "side",
                "lhs",
                "certification",
                "certified_nats",
            ],
            rows.into_iter()
                .map(|(e, name, side, cert, v)| {
                    vec![
                        e.map(I).unwrap_or(N),
                        T(name.into()),
                        T("valid".into()),
                        T(side.into()),
                        T("I(U;Z)".into()),
                        T(cert.into()),
                        v.map(F).unwrap_or(N),
                    ]
                })
                .collect(),
        )
    }

    #[test]
    fn vacuous_bounds_are_marked_at_the_trivial_value_not_drawn_as_results() {
        let t = bounds_table(vec![
            (Some(0), "valid_general", "lower", "vacuous", Some(-153.0)),
            (Some(2), "valid_general", "lower", "certified", Some(0.4)),
            // Certified yet at or below 0: a lower bound on information that says nothing.
            (Some(4), "valid_general", "lower", "certified", Some(-0.2)),
            (Some(0), "estimate_row", "lower", "estimate", Some(0.9)),
            (Some(0), "missing", "lower", "not_computed", None),
        ]);
        let s = bound_epoch_series(&t, "");
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].points, vec![(2.0, 0.4)]);
        assert_eq!(s[0].vacuous, vec![(0.0, 0.0), (4.0, 0.0)]);
        assert!(s
            .iter()
            .all(|s| s.points.iter().chain(&s.vacuous).all(|p| p.1 > -1.0)));
        assert!(
            bound_point(&t, 4, "").is_none(),
            "not_computed has no value"
        );
        assert!(bound_point(&t, 3, "").is_none(), "an estimate is no bound");
    }

    #[test]
    fn an_accuracy_lower_bound_at_chance_is_marked_not_drawn() {
        let b = |id: &str, t: f64, metrics: &[(&str, f64)]| {
            inst("bound", id, "bound", &[("t", F(t))], metrics)
        };
        let mut r = run(
            vec![
                b(
                    "bound@t=0.1",
                    0.1,
                    &[("accuracy_lower_bound", 0.5), ("probe_accuracy", 0.8)],
                ),
                // Its lower bound came out at chance: vacuous, so no metric.
                b("bound@t=0.5", 0.5, &[("probe_accuracy", 0.3)]),
            ],
            &["t"],
        );
        r.results = table(
            &["stage", "sweep.t", "param.classes"],
            vec![
                vec![T("bound".into()), F(0.1), I(4)],
                vec![T("bound".into()), F(0.5), I(4)],
            ],
        );
        let accuracy_rows = |cert: &str, v: f64| {
            table(
                &["name", "status", "side", "certification", "certified_nats"],
                vec![vec![
                    T("accuracy_feder_merhav".into()),
                    T("valid".into()),
                    T("lower".into()),
                    T(cert.into()),
                    F(v),
                ]],
            )
        };
        let tables = Tables {
            bounds: vec![
                (0, accuracy_rows("certified", 0.5)),
                (1, accuracy_rows("vacuous", 0.25)),
            ],
            ..Tables::default()
        };
        let (figs, notes) = ablations(&r, &tables);
        assert_eq!(figs.len(), 1, "{notes:?}");
        let lower = figs[0].panels[0]
            .series
            .iter()
            .find(|s| s.label == "accuracy lower bound")
            .unwrap();
        assert_eq!(lower.points, vec![(0.1, 0.5)]);
        assert_eq!(lower.vacuous, vec![(0.5, 0.25)], "marked at chance");
        assert!(
            figs[0].caption.contains("at or below chance"),
            "{}",
            figs[0].caption
        );
    }

    #[test]
    fn replicates_become_a_mean_with_a_standard_deviation() {
        assert_eq!(
            without_replicate("train@lr=0.1,replicate=2"),
            "train@lr=0.1"
        );
        assert_eq!(
            without_replicate("h=[128, 128],train.replicate=0"),
            "h=[128, 128]"
        );
        let s = |y: f64| Series::new("a", vec![(0.0, y), (1.0, y + 1.0)], Style::LinePoints);
        let merged = merge_replicates(vec![s(1.0), s(3.0), Series::new("b", vec![], Style::Line)]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].points, vec![(0.0, 2.0), (1.0, 3.0)]);
        let sd = 2f64.sqrt();
        assert_eq!(
            merged[0].errors,
            vec![(0.0, 2.0 - sd, 2.0 + sd), (1.0, 3.0 - sd, 3.0 + sd)]
        );
        assert!(
            merged[0].label.contains("mean ± sd of 2"),
            "{}",
            merged[0].label
        );
        let panels = [Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            x: XAxis::Numeric,
            x_ticks: vec![],
            series: merged,
        }];
        assert!(spread_note(&panels).contains("standard deviation"));
        assert!(!spread_note(&panels).contains("confidence"));
    }

    #[test]
    fn many_configurations_over_epochs_are_facets_with_one_legend() {
        let mut instances = vec![];
        let mut tables = Tables::default();
        for k in 0..12 {
            instances.push(inst(
                "estimate",
                &format!("estimate@t={k}"),
                "estimate_mi",
                &[("t", I(k))],
                &[],
            ));
            tables.estimates.push((
                k as usize,
                table(
                    &["epoch", "pair", "estimator", "nats"],
                    vec![
                        vec![I(0), T("uy".into()), T("infonce".into()), F(0.1)],
                        vec![I(1), T("uy".into()), T("infonce".into()), F(0.5)],
                        vec![I(0), T("uz".into()), T("probe".into()), F(0.2)],
                    ],
                ),
            ));
        }
        let r = run(instances, &["t"]);
        let f = mi_and_bounds(&r, &tables).unwrap();
        assert!(f.shared_legend);
        assert_eq!(f.panels.len(), 2);
        assert_eq!(f.panels[0].title, "uy / infonce");
        assert_eq!(f.panels[0].series.len(), 12);
        assert_eq!(f.panels[0].series[0].label, "t=0");
    }

    #[test]
    fn truth_plot_pairs_estimates_with_their_inputs_truth() {
        let dir = tempfile::tempdir().unwrap();
        let mut est = inst("est", "est@rho=0.5", "estimate_mi", &[], &[]);
        est.dir = dir.path().to_path_buf();
        std::fs::write(
            dir.path().join("meta.json"),
            r#"{"key_inputs": {"inputs": [{"instance": "data@rho=0.5", "digest": "x"}]}}"#,
        )
        .unwrap();
        let mut script = inst(
            "s",
            "s@rho=0.5",
            "command",
            &[],
            &[("gaussian_mi_x0_y0", 0.2)],
        );
        script.dir = dir.path().to_path_buf();
        let r = run(
            vec![
                inst(
                    "data",
                    "data@rho=0.5",
                    "synthetic",
                    &[],
                    &[("true_mi_nats", 0.14)],
                ),
                est,
                script,
            ],
            &[],
        );
        let mut tables = Tables::default();
        tables.estimates.push((
            1,
            table(
                &["pair", "estimator", "params", "nats", "ci_low", "ci_high"],
                vec![vec![
                    T("xy".into()),
                    T("ksg".into()),
                    T(r#"{"name":"ksg","k":3}"#.into()),
                    F(0.13),
                    F(0.1),
                    F(0.16),
                ]],
            ),
        ));
        let f = estimate_vs_truth(&r, &tables).unwrap();
        let s = &f.panels[0].series;
        assert_eq!(s[0].style, Style::Reference);
        let ksg = s.iter().find(|s| s.label == "ksg k=3").unwrap();
        assert_eq!(ksg.points, vec![(0.14, 0.13)]);
        assert_eq!(ksg.errors, vec![(0.14, 0.1, 0.16)]);
        let script = s.iter().find(|s| s.label.contains("gaussian_mi")).unwrap();
        assert_eq!(script.points, vec![(0.14, 0.2)]);
        assert!(f.caption.contains("confidence intervals"));
        let none = run(vec![inst("d", "d", "synthetic", &[], &[])], &[]);
        assert!(estimate_vs_truth(&none, &Tables::default()).is_err());
    }

    #[test]
    fn accuracy_caption_does_not_call_a_lower_bound_above_the_probe_a_contradiction() {
        let r = run(
            vec![inst(
                "bound",
                "bound",
                "bound",
                &[],
                &[("accuracy_lower_bound", 0.9), ("probe_accuracy", 0.8)],
            )],
            &[],
        );
        let f = bound_vs_accuracy(&r).unwrap();
        assert!(f
            .caption
            .contains("a lower bound above it contradicts nothing"));
        assert!(f
            .caption
            .contains("upper bound clearly below the diagonal would contradict"));
    }

    #[test]
    fn no_train_stage_is_a_note_not_an_error() {
        let r = run(vec![inst("data", "data", "synthetic", &[], &[])], &[]);
        let e = training_curves(&r, &Tables::default()).unwrap_err();
        assert!(e.contains("no train stage"), "{e}");
        assert!(mi_and_bounds(&r, &Tables::default()).is_err());
    }
}
