//! The wide table of a run's headline numbers: one row per configuration, one column per key
//! metric of each stage, aggregated over replicates. Built from `results.parquet` alone, and
//! shared by `cbound show`, `cbound diff` and the summary at the end of `cbound run`.
//!
//! A *configuration* is an instance's sweep values without its replicate axes (`replicate`,
//! `<stage>.replicate`). Sweep values are inherited downstream, so an instance whose
//! configuration is a subset of another's is (by the engine's pairing rule) on its lineage:
//! the table has one row per maximal configuration, and each row takes the metrics of every
//! instance whose configuration it contains (a shared, unswept `load` stage appears in every
//! row). Stages with `gather: true` (in the run's pipeline.yaml) summarise the whole sweep and
//! belong to no one configuration: they get a last row of their own, without sweep values.
//! Replicates of one configuration are aggregated as mean, sample sd and n. With `--columns`,
//! a row none of whose chosen numbers has a value is left out (unless it did not finish and
//! `status` is chosen), and so is an axis none of the remaining rows has a value for.
//!
//! Default columns (the rule `--columns` replaces), by stage kind, named `<stage>.<metric>`:
//! - `train`: `final_loss`, `heldout_infonce`
//! - `estimate_mi`: every metric (`<pair>.<estimator>` in nats, `<pair>.probe.accuracy`)
//! - `bound`: `bound.*.certified`, `iuz_lower_nats`, `accuracy_lower_bound`,
//!   `accuracy_upper_bound`
//! - `synthetic`: `true_mi_nats`
//! - `command` and kinds declared in YAML: their first 6 metrics (what the program chose to
//!   report)
//! - `load`, `augment`, `embed`: none (sizes and dimensions, not findings)
//!
//! plus `status` (`ok` when every instance of the row finished, else the counts that did not),
//! after the sweep axes and `n` (replicates), which are always shown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::load::{format_number, Cell, Instance, ReportError, Run};

/// Why a table could not be built or shaped as asked.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error(transparent)]
    Run(#[from] ReportError),
    #[error("--columns {pattern}: matches no column; the columns are: {available}")]
    NoSuchColumns { pattern: String, available: String },
    #[error("--sort {column}: no such column; the columns are: {available}")]
    NoSuchSortColumn { column: String, available: String },
}

/// Output formats of `show` and `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    Csv,
    /// One object per row; numbers as {mean, sd, n}.
    Json,
    Markdown,
}

/// A number aggregated over replicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    pub mean: f64,
    /// Sample standard deviation (n - 1); None for a single value.
    pub sd: Option<f64>,
    pub n: usize,
}

impl Agg {
    /// Mean, sample sd and count of the finite values; None if there are none.
    pub fn of(values: &[f64]) -> Option<Agg> {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        // Equal values (a shared upstream instance, an exact truth) have sd 0 exactly, not
        // the rounding of their sum.
        if v.iter().all(|x| *x == v[0]) {
            return Some(Agg {
                mean: v[0],
                sd: (n > 1).then_some(0.0),
                n,
            });
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = (n > 1).then(|| {
            let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Some(Agg { mean, sd, n })
    }

    /// `mean ± sd`, with `(n=k)` when k differs from the row's replicate count.
    fn text(&self, row_n: usize) -> String {
        let mut s = format_number(self.mean);
        if let Some(sd) = self.sd {
            let _ = write!(s, " ± {}", format_number(sd));
        }
        if self.n != row_n {
            let _ = write!(s, " (n={})", self.n);
        }
        s
    }
}

/// One cell of a [`Grid`].
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Null,
    Text(String),
    Int(i64),
    /// A single number that is not aggregated (a sweep value).
    Float(f64),
    Num(Agg),
}

impl Field {
    fn from_cell(c: &Cell) -> Field {
        match c {
            Cell::Null => Field::Null,
            Cell::Int(i) => Field::Int(*i),
            Cell::Float(f) => Field::Float(*f),
            other => Field::Text(other.display()),
        }
    }

    fn text(&self, row_n: usize) -> String {
        match self {
            Field::Null => String::new(),
            Field::Text(s) => s.clone(),
            Field::Int(i) => i.to_string(),
            Field::Float(f) => format_number(*f),
            Field::Num(a) => a.text(row_n),
        }
    }

    /// The text of a single value (no replicate mark).
    pub fn text_plain(&self) -> String {
        self.text(1)
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Field::Int(_) | Field::Float(_) | Field::Num(_))
    }

    fn json(&self) -> serde_json::Value {
        let num = |f: f64| {
            serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null)
        };
        match self {
            Field::Null => serde_json::Value::Null,
            Field::Text(s) => s.clone().into(),
            Field::Int(i) => (*i).into(),
            Field::Float(f) => num(*f),
            Field::Num(a) => serde_json::json!({
                "mean": num(a.mean),
                "sd": a.sd.map(num),
                "n": a.n,
            }),
        }
    }
}

/// A table ready to print: a header and rows of fields, with the replicate count of each
/// row (for the `(n=k)` marks).
#[derive(Debug, Clone, Default)]
pub struct Grid {
    pub header: Vec<String>,
    pub rows: Vec<Vec<Field>>,
    /// Per row: its replicate count, or 1.
    pub row_n: Vec<usize>,
    /// Columns that identify a row (kept when the table is cut to fit a terminal).
    pub keys: usize,
}

/// Axes that number replicates, not configurations.
pub fn is_replicate_axis(name: &str) -> bool {
    name == "replicate" || name.ends_with(".replicate")
}

/// What a column of the show table holds.
#[derive(Debug, Clone)]
struct MetricColumn {
    name: String,
    stage: String,
    metric: String,
}

/// The show table of one run: configurations as rows, every metric column available (the
/// selection happens in [`ShowTable::grid`]).
#[derive(Debug, Clone)]
pub struct ShowTable {
    pub run_dir: PathBuf,
    /// Sweep axes (replicate axes excluded), in results.parquet order.
    pub axes: Vec<String>,
    /// Each configuration's values, one per axis (Null where it has none).
    pub configs: Vec<Vec<Cell>>,
    columns: Vec<MetricColumn>,
    defaults: Vec<usize>,
    /// Per configuration, per column: the aggregate.
    values: Vec<Vec<Option<Agg>>>,
    status: Vec<String>,
    n: Vec<usize>,
}

fn key_of(inst: &Instance) -> Vec<(String, Cell)> {
    let mut k: Vec<(String, Cell)> = inst
        .sweeps
        .iter()
        .filter(|(n, _)| !is_replicate_axis(n))
        .cloned()
        .collect();
    k.sort_by(|a, b| a.0.cmp(&b.0));
    k
}

/// The maximal configurations among the instances `among` (in order of first appearance: the
/// DAG's, which follows the matrices' order), and for each the instances whose configuration
/// it contains, in table order.
///
/// Every (axis, value) pair is interned to a number once, and an index from each pair to the
/// configurations holding it answers "which contain this key", so that ten thousand
/// instances cost ten thousand look-ups rather than a hundred million comparisons (and the
/// end-of-run summary of a large sweep stays cheap).
#[allow(clippy::type_complexity)]
fn configurations(
    keys: &[Vec<(String, Cell)>],
    among: &[usize],
) -> (Vec<Vec<(String, Cell)>>, Vec<Vec<usize>>) {
    use std::collections::HashMap;
    // Cells hold floats (no Hash); their Debug text is exact and round-trips.
    let mut interned: HashMap<String, u32> = HashMap::new();
    let mut text = String::new();
    let mut ids: Vec<Vec<u32>> = vec![vec![]; keys.len()];
    for &i in among {
        ids[i] = keys[i]
            .iter()
            .map(|(n, v)| {
                use std::fmt::Write;
                text.clear();
                let _ = write!(text, "{n}\u{0}{v:?}");
                let next = interned.len() as u32;
                *interned.entry(text.clone()).or_insert(next)
            })
            .collect();
    }
    let mut distinct: Vec<usize> = vec![]; // first instance of each distinct key
    let mut seen: HashMap<&[u32], usize> = HashMap::new();
    for &i in among {
        seen.entry(&ids[i]).or_insert_with(|| {
            distinct.push(i);
            distinct.len() - 1
        });
    }
    // pair -> distinct keys holding it, ascending (distinct keys are visited in order).
    let mut holding: Vec<Vec<usize>> = vec![vec![]; interned.len()];
    for (d, &i) in distinct.iter().enumerate() {
        for &p in &ids[i] {
            holding[p as usize].push(d);
        }
    }
    // The distinct keys that contain key `k` (all of them for the empty key), ascending.
    let containing = |k: &[u32]| -> Vec<usize> {
        match k.split_first() {
            None => (0..distinct.len()).collect(),
            Some((first, rest)) => {
                let mut acc = holding[*first as usize].clone();
                for p in rest {
                    let s = &holding[*p as usize];
                    acc.retain(|d| s.binary_search(d).is_ok());
                }
                acc
            }
        }
    };
    let is_maximal: Vec<bool> = distinct
        .iter()
        .map(|&i| {
            let len = ids[i].len();
            !containing(&ids[i])
                .iter()
                .any(|&d| ids[distinct[d]].len() > len)
        })
        .collect();
    let row_of: Vec<Option<usize>> = {
        let mut next = 0;
        is_maximal
            .iter()
            .map(|&m| {
                m.then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    let maximal: Vec<Vec<(String, Cell)>> = distinct
        .iter()
        .zip(&is_maximal)
        .filter(|(_, m)| **m)
        .map(|(&i, _)| keys[i].clone())
        .collect();
    let mut members: Vec<Vec<usize>> = vec![vec![]; maximal.len()];
    for &i in among {
        for d in containing(&ids[i]) {
            if let Some(r) = row_of[d] {
                members[r].push(i);
            }
        }
    }
    (maximal, members)
}

/// Whether `metric` of a stage of `kind` is a default column (the module doc's rule);
/// `rank` is its position among its stage's metrics, for the cap on program-chosen ones.
fn default_metric(kind: &str, metric: &str, rank: usize) -> bool {
    match kind {
        "train" => matches!(metric, "final_loss" | "heldout_infonce"),
        "estimate_mi" => true,
        "bound" => {
            (metric.starts_with("bound.") && metric.ends_with(".certified"))
                || matches!(
                    metric,
                    "iuz_lower_nats" | "accuracy_lower_bound" | "accuracy_upper_bound"
                )
        }
        "synthetic" => metric == "true_mi_nats",
        "load" | "augment" | "embed" => false,
        _ => rank < 6,
    }
}

impl ShowTable {
    /// The table of the run at `dir` (a run directory, or a pipeline's output directory for
    /// its latest run).
    pub fn open(dir: &Path) -> Result<ShowTable, ShowError> {
        // The table uses no parameter column: leaving them unread is most of the cost of
        // the end-of-run summary of a large sweep.
        let run = Run::open_columns(dir, &|c| !c.starts_with("param."))?;
        Ok(ShowTable::of_run(&run))
    }

    pub fn of_run(run: &Run) -> ShowTable {
        let insts = &run.instances;
        let axes: Vec<String> = run
            .sweep_names()
            .into_iter()
            .filter(|a| !is_replicate_axis(a))
            .collect();
        let gathers = gather_stages(&run.dir);
        let gathered = |i: &Instance| gathers.contains(&i.stage);
        let keys: Vec<Vec<(String, Cell)>> = insts.iter().map(key_of).collect();
        let swept: Vec<usize> = (0..insts.len()).filter(|&i| !gathered(&insts[i])).collect();
        let (mut maximal, members) = configurations(&keys, &swept);
        // Rows as the instances in each: a configuration's lineage; then the stages that
        // gather over the whole sweep, which belong to no one configuration, in a row of
        // their own (no sweep values).
        let mut groups: Vec<Vec<&Instance>> = members
            .iter()
            .map(|m| m.iter().map(|&i| &insts[i]).collect())
            .collect();
        if insts.iter().any(gathered) {
            groups.push(insts.iter().filter(|i| gathered(i)).collect());
            maximal.push(vec![]);
        }

        // Columns: stages in order of first appearance, metrics in name order.
        let mut stages: Vec<(String, String)> = vec![];
        let mut metrics: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for i in insts {
            if !stages.iter().any(|(s, _)| s == &i.stage) {
                stages.push((i.stage.clone(), i.kind.clone()));
            }
            let set = metrics.entry(i.stage.clone()).or_default();
            for (m, _) in &i.metrics {
                set.insert(m.clone());
            }
        }
        let mut columns = vec![];
        let mut defaults = vec![];
        for (stage, kind) in &stages {
            for (rank, m) in metrics.get(stage).into_iter().flatten().enumerate() {
                if default_metric(kind, m, rank) {
                    defaults.push(columns.len());
                }
                columns.push(MetricColumn {
                    name: format!("{stage}.{m}"),
                    stage: stage.clone(),
                    metric: m.clone(),
                });
            }
        }

        let mut values = vec![];
        let mut status = vec![];
        let mut n = vec![];
        for members in &groups {
            let row: Vec<Option<Agg>> = columns
                .iter()
                .map(|c| {
                    let v: Vec<f64> = members
                        .iter()
                        .filter(|i| i.stage == c.stage)
                        .filter_map(|i| {
                            i.metrics
                                .iter()
                                .find(|(m, _)| m == &c.metric)
                                .map(|(_, v)| *v)
                        })
                        .collect();
                    Agg::of(&v)
                })
                .collect();
            // The row's replicate count: the most instances any one stage has in it.
            let mut per_stage: BTreeMap<&str, usize> = BTreeMap::new();
            for i in members {
                *per_stage.entry(i.stage.as_str()).or_default() += 1;
            }
            n.push(per_stage.values().copied().max().unwrap_or(0));
            status.push(status_text(members));
            values.push(row);
        }
        let configs = maximal
            .iter()
            .map(|k| {
                axes.iter()
                    .map(|a| {
                        k.iter()
                            .find(|(n, _)| n == a)
                            .map(|(_, v)| v.clone())
                            .unwrap_or(Cell::Null)
                    })
                    .collect()
            })
            .collect();
        ShowTable {
            run_dir: run.dir.clone(),
            axes,
            configs,
            columns,
            defaults,
            values,
            status,
            n,
        }
    }

    /// Every selectable column name: the metric columns, then `status`.
    pub fn column_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        v.push("status".into());
        v
    }

    /// Names of the sweep axes as headers; an axis that a metric column also names gets
    /// its `sweep.` prefix back, so no two columns share a name.
    fn axis_headers(&self) -> Vec<String> {
        self.axes
            .iter()
            .map(|a| {
                if self.columns.iter().any(|c| &c.name == a) || a == "n" || a == "status" {
                    format!("sweep.{a}")
                } else {
                    a.clone()
                }
            })
            .collect()
    }

    /// The selected columns (glob patterns; the defaults when empty), sorted by `sort`.
    pub fn grid(
        &self,
        patterns: &[String],
        sort: Option<&str>,
        desc: bool,
    ) -> Result<Grid, ShowError> {
        let names = self.column_names();
        let status_index = self.columns.len();
        let selected: Vec<usize> = if patterns.is_empty() {
            let mut d = self.defaults.clone();
            d.push(status_index);
            d
        } else {
            let mut picked = vec![];
            for p in patterns {
                let hits: Vec<usize> = (0..names.len()).filter(|&i| glob(p, &names[i])).collect();
                if hits.is_empty() {
                    return Err(ShowError::NoSuchColumns {
                        pattern: p.clone(),
                        available: names.join(", "),
                    });
                }
                picked.extend(hits);
            }
            // Table order, each once, whatever the order of the patterns.
            picked.sort_unstable();
            picked.dedup();
            picked
        };
        // A default column with no value anywhere says nothing; a chosen one stays.
        let selected: Vec<usize> = selected
            .into_iter()
            .filter(|&c| {
                !patterns.is_empty()
                    || c == status_index
                    || self.values.iter().any(|r| r[c].is_some())
            })
            .collect();
        let mut header = self.axis_headers();
        header.push("n".into());
        let mut keys = header.len();
        header.extend(selected.iter().map(|&c| names[c].clone()));
        // A row with none of the chosen numbers (another family's configuration, when
        // `--columns` picks one family) is noise; one that did not finish stays, to say so.
        let chosen: Vec<usize> = selected
            .iter()
            .copied()
            .filter(|&c| c != status_index)
            .collect();
        let mut rows: Vec<(Vec<Field>, usize)> = (0..self.configs.len())
            .filter(|&r| {
                chosen.is_empty()
                    || (selected.contains(&status_index) && self.status[r] != "ok")
                    || chosen.iter().any(|&c| self.values[r][c].is_some())
            })
            .map(|r| {
                let mut row: Vec<Field> = self.configs[r].iter().map(Field::from_cell).collect();
                row.push(Field::Int(self.n[r] as i64));
                for &c in &selected {
                    row.push(if c == status_index {
                        Field::Text(self.status[r].clone())
                    } else {
                        self.values[r][c].clone().map_or(Field::Null, Field::Num)
                    });
                }
                (row, self.n[r])
            })
            .collect();
        // An axis none of the rows left has a value for (another family's) says nothing.
        for c in (0..self.axes.len()).rev() {
            if !rows.is_empty() && rows.iter().all(|(row, _)| row[c] == Field::Null) {
                header.remove(c);
                for (row, _) in rows.iter_mut() {
                    row.remove(c);
                }
                keys -= 1;
            }
        }
        if let Some(col) = sort {
            let Some(at) = header.iter().position(|h| h == col) else {
                return Err(ShowError::NoSuchSortColumn {
                    column: col.to_string(),
                    available: header.join(", "),
                });
            };
            sort_rows(&mut rows, at, desc);
        }
        Ok(Grid {
            header,
            row_n: rows.iter().map(|(_, n)| *n).collect(),
            rows: rows.into_iter().map(|(r, _)| r).collect(),
            keys,
        })
    }
}

/// The stages of the run's pipeline file with `gather: true`; none if it has no readable
/// pipeline.yaml (then a gathering stage joins every row, as an unswept upstream one does).
fn gather_stages(run_dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(run_dir.join("pipeline.yaml")) else {
        return vec![];
    };
    let Ok(docs) = yaml_rust2::YamlLoader::load_from_str(&text) else {
        return vec![];
    };
    let Some(stages) = docs.first().and_then(|d| d["stages"].as_hash()) else {
        return vec![];
    };
    stages
        .iter()
        .filter(|(_, v)| v["gather"].as_bool() == Some(true))
        .filter_map(|(k, _)| k.as_str().map(str::to_string))
        .collect()
}

/// `ok` when every instance finished (now or cached), else the counts of those that did not.
fn status_text(members: &[&Instance]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in members {
        if !i.has_result() {
            *counts.entry(i.status.as_str()).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return "ok".into();
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sorts by one column: numbers by value (the mean), text by text, empty cells last in both
/// directions; ties keep their order.
fn sort_rows(rows: &mut [(Vec<Field>, usize)], at: usize, desc: bool) {
    use std::cmp::Ordering;
    let key = |f: &Field| -> Option<Result<f64, String>> {
        match f {
            Field::Null => None,
            Field::Int(i) => Some(Ok(*i as f64)),
            Field::Float(f) => Some(Ok(*f)),
            Field::Num(a) => Some(Ok(a.mean)),
            Field::Text(s) => Some(Err(s.clone())),
        }
    };
    rows.sort_by(|a, b| match (key(&a.0[at]), key(&b.0[at])) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let o = match (x, y) {
                (Ok(x), Ok(y)) => x.total_cmp(&y),
                (Err(x), Err(y)) => x.cmp(&y),
                (Ok(_), Err(_)) => Ordering::Less,
                (Err(_), Ok(_)) => Ordering::Greater,
            };
            if desc {
                o.reverse()
            } else {
                o
            }
        }
    });
}

/// Shell-style glob over a whole name: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, no recursion depth
    // a long pattern could exhaust.
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl Grid {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.table(usize::MAX, usize::MAX).0,
            Format::Csv => self.csv(),
            Format::Json => self.json(),
            Format::Markdown => self.markdown(),
        }
    }

    /// The first `rows` rows as text (only those: a summary shows 15 of 10,000).
    fn texts(&self, rows: usize) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .take(rows)
            .zip(&self.row_n)
            .map(|(r, &n)| r.iter().map(|f| f.text(n)).collect())
            .collect()
    }

    /// Aligned columns (numbers to the right), cut to `width` characters by leaving out the
    /// leftmost non-key columns and to `max_rows` rows. Returns the text and how many
    /// columns and rows were left out.
    pub fn table(&self, width: usize, max_rows: usize) -> (String, usize, usize) {
        let shown_rows = self.rows.len().min(max_rows);
        let texts = self.texts(shown_rows);
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                texts
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([self.header[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        // Key columns always; of the others, the rightmost that fit. Stages are in pipeline
        // order, so what is cut first is upstream (data sizes, truths) and what stays is the
        // findings (bounds, accuracy) and the status.
        let keys = self.keys.max(1).min(self.header.len());
        let mut visible: Vec<usize> = (0..self.header.len()).collect();
        let total = |v: &[usize]| {
            v.iter().map(|&c| widths[c]).sum::<usize>() + 2 * v.len().saturating_sub(1)
        };
        while visible.len() > keys && total(&visible) > width {
            visible.remove(keys);
        }
        let numeric: Vec<bool> = (0..self.header.len())
            .map(|c| {
                self.rows.iter().any(|r| r[c].is_numeric())
                    && self
                        .rows
                        .iter()
                        .all(|r| r[c].is_numeric() || r[c] == Field::Null)
            })
            .collect();
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let parts: Vec<String> = visible
                .iter()
                .map(|&c| {
                    if numeric[c] {
                        format!("{:>w$}", cells[c], w = widths[c])
                    } else {
                        format!("{:<w$}", cells[c], w = widths[c])
                    }
                })
                .collect();
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        line(&self.header, &mut out);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&rule, &mut out);
        for r in &texts {
            line(r, &mut out);
        }
        (
            out,
            self.header.len() - visible.len(),
            self.rows.len() - shown_rows,
        )
    }

    fn csv(&self) -> String {
        fn quote(s: &str) -> String {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        }
        // Numbers as three columns (mean, sd, n) wherever a column has a replicated value, so
        // a spreadsheet gets numbers, not "0.1 ± 0.02".
        let split: Vec<bool> = (0..self.header.len())
            .map(|c| {
                self.rows
                    .iter()
                    .any(|r| matches!(&r[c], Field::Num(a) if a.n > 1))
            })
            .collect();
        let mut out = String::new();
        let mut head = vec![];
        for (c, h) in self.header.iter().enumerate() {
            head.push(quote(h));
            if split[c] {
                head.push(quote(&format!("{h}.sd")));
                head.push(quote(&format!("{h}.n")));
            }
        }
        out.push_str(&head.join(","));
        out.push('\n');
        for r in &self.rows {
            let mut cells = vec![];
            for (c, f) in r.iter().enumerate() {
                match f {
                    Field::Num(a) => {
                        cells.push(a.mean.to_string());
                        if split[c] {
                            cells.push(a.sd.map(|s| s.to_string()).unwrap_or_default());
                            cells.push(a.n.to_string());
                        }
                    }
                    Field::Float(f) => {
                        cells.push(f.to_string());
                        if split[c] {
                            cells.push(String::new());
                            cells.push(String::new());
                        }
                    }
                    other => {
                        cells.push(quote(&other.text(1)));
                        if split[c] {
                            cells.push(String::new());
                            cells.push(String::new());
                        }
                    }
                }
            }
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    fn json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut m = serde_json::Map::new();
                for (h, f) in self.header.iter().zip(r) {
                    m.insert(h.clone(), f.json());
                }
                serde_json::Value::Object(m)
            })
            .collect();
        let mut s = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        s
    }

    fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let mut out = String::new();
        let head: Vec<String> = self.header.iter().map(|h| esc(h)).collect();
        let _ = writeln!(out, "| {} |", head.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(self.header.len()));
        for r in self.texts(self.rows.len()) {
            let cells: Vec<String> = r.iter().map(|c| esc(c)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

/// The terminal's width in columns: `COLUMNS`, else the terminal on stderr or stdout, else
/// 100 (a log file has no width; 100 keeps lines readable).
pub fn terminal_width() -> usize {
    if let Some(w) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|w| *w > 0)
    {
        return w;
    }
    #[cfg(unix)]
    for fd in [libc::STDERR_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we own; on a descriptor that
        // is not a terminal it fails and leaves it untouched.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 {
            return ws.ws_col as usize;
        }
    }
    100
}

/// The end-of-run summary: the default table cut to `width` and at most `max_rows` rows, with
/// where to see the rest.
pub fn summary(table: &ShowTable, width: usize, max_rows: usize) -> String {
    let Ok(grid) = table.grid(&[], None, false) else {
        return String::new();
    };
    if grid.rows.is_empty() {
        return String::new();
    }
    let (mut text, cols_left, rows_left) = grid.table(width, max_rows);
    let dir = table.run_dir.display();
    if rows_left > 0 {
        let _ = writeln!(text, "... {rows_left} more: cbound show {dir}");
    }
    if cols_left > 0 {
        let _ = writeln!(
            text,
            "({cols_left} more column(s) than fit in {width} characters: cbound show {dir})"
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(stage: &str, kind: &str, sweeps: &[(&str, Cell)], metrics: &[(&str, f64)]) -> Instance {
        Instance {
            stage: stage.into(),
            instance: stage.into(),
            kind: kind.into(),
            status: "ok".into(),
            error: None,
            sweeps: sweeps
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            metrics: metrics.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            dir: PathBuf::new(),
        }
    }

    fn run(instances: Vec<Instance>, sweeps: &[&str]) -> Run {
        let results = super::super::load::Table {
            columns: sweeps.iter().map(|s| format!("sweep.{s}")).collect(),
            ..Default::default()
        };
        Run {
            dir: PathBuf::from("r"),
            meta: serde_json::Value::Null,
            results,
            instances,
        }
    }

    #[test]
    fn mean_and_sample_sd() {
        let a = Agg::of(&[1.0, 2.0, 6.0, f64::NAN]).unwrap();
        assert_eq!(a.n, 3);
        assert_eq!(a.mean, 3.0);
        // Squared deviations 4 + 1 + 9 = 14 over n - 1 = 2.
        assert!((a.sd.unwrap() - 7f64.sqrt()).abs() < 1e-12);
        assert_eq!(Agg::of(&[5.0]).unwrap().sd, None);
        assert!(Agg::of(&[]).is_none());
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("train.*", "train.final_loss"));
        assert!(glob("*.certified", "bound.bound.valid.certified"));
        assert!(!glob("*.certified", "bound.bound.valid"));
        assert!(glob("a?c", "abc") && !glob("a?c", "abbc"));
        assert!(glob("*", ""));
        assert!(!glob("train", "train.final_loss"));
    }

    #[test]
    fn replicates_aggregate_and_shared_stages_join_every_row() {
        let r = |rho: f64, rep: i64| vec![("rho", Cell::Float(rho)), ("replicate", Cell::Int(rep))];
        let mut insts = vec![inst("load", "load", &[], &[("n", 10.0)])];
        for (rho, vals) in [(0.1, [1.0, 2.0, 3.0]), (0.5, [4.0, 4.0, 7.0])] {
            for (rep, v) in vals.iter().enumerate() {
                insts.push(inst(
                    "train",
                    "train",
                    &r(rho, rep as i64),
                    &[("final_loss", *v)],
                ));
            }
        }
        let t = ShowTable::of_run(&run(insts, &["replicate", "rho"]));
        assert_eq!(t.axes, vec!["rho"]);
        let g = t.grid(&[], None, false).unwrap();
        assert_eq!(g.header, vec!["rho", "n", "train.final_loss", "status"]);
        assert_eq!(g.rows.len(), 2);
        assert_eq!(g.rows[0][1], Field::Int(3));
        let Field::Num(a) = &g.rows[1][2] else {
            panic!("{:?}", g.rows[1])
        };
        assert_eq!((a.mean, a.n), (5.0, 3));
        assert!((a.sd.unwrap() - 3f64.sqrt()).abs() < 1e-12);
        // The unswept load stage is in both rows, chosen explicitly.
        let g = t.grid(&["load.*".into()], Some("rho"), true).unwrap();
        assert_eq!(g.header, vec!["rho", "n", "load.n"]);
        assert_eq!(g.rows[0][0], Field::from_cell(&Cell::Float(0.5)));
        assert!(g
            .rows
            .iter()
            .all(|r| matches!(&r[2], Field::Num(a) if a.mean == 10.0)));
        // One value in a row of three is marked with its n.
        assert_eq!(
            g.render(Format::Table).lines().nth(2).unwrap().trim_end(),
            "0.5000  3  10 (n=1)"
        );
    }

    #[test]
    fn rows_are_the_maximal_configurations_and_take_their_lineage() {
        let k = |pairs: &[(&str, i64)]| -> Vec<(String, Cell)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), Cell::Int(*v)))
                .collect()
        };
        // A root, a swept stage, a stage below it with its own axis, another branch.
        let keys = vec![
            k(&[]),
            k(&[("a", 1)]),
            k(&[("a", 1), ("b", 1)]),
            k(&[("a", 1), ("b", 2)]),
            k(&[("a", 2)]),
            k(&[("c", 1)]),
        ];
        let all: Vec<usize> = (0..keys.len()).collect();
        let (rows, members) = configurations(&keys, &all);
        assert_eq!(
            rows,
            vec![
                keys[2].clone(),
                keys[3].clone(),
                keys[4].clone(),
                keys[5].clone()
            ]
        );
        assert_eq!(
            members,
            vec![vec![0, 1, 2], vec![0, 1, 3], vec![0, 4], vec![0, 5]]
        );
        // Only unswept instances: one row holding them all.
        let (rows, members) = configurations(&[k(&[]), k(&[])], &[0, 1]);
        assert_eq!(rows, vec![k(&[])]);
        assert_eq!(members, vec![vec![0, 1]]);
    }

    #[test]
    fn a_gathering_stage_gets_its_own_row_not_every_row() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pipeline.yaml"),
            "stages:\n  t: {kind: train}\n  sum: {kind: command, inputs: t, gather: true}\n",
        )
        .unwrap();
        let mut insts: Vec<Instance> = [1, 2]
            .iter()
            .map(|&i| {
                inst(
                    "t",
                    "train",
                    &[("lr", Cell::Int(i))],
                    &[("final_loss", 1.0)],
                )
            })
            .collect();
        let mut sum = inst("sum", "command", &[], &[]);
        sum.status = "failed".into();
        insts.push(sum);
        let mut r = run(insts, &["lr"]);
        r.dir = dir.path().to_path_buf();
        let g = ShowTable::of_run(&r)
            .grid(&["status".into()], None, false)
            .unwrap();
        let status: Vec<String> = g.rows.iter().map(|row| row[2].text_plain()).collect();
        assert_eq!(status, ["ok", "ok", "1 failed"]);
        assert_eq!(g.rows[2][0], Field::Null);
    }

    #[test]
    fn unknown_columns_and_sort_keys_name_what_exists() {
        let t = ShowTable::of_run(&run(
            vec![inst("t", "train", &[], &[("final_loss", 1.0)])],
            &[],
        ));
        let e = t.grid(&["nope*".into()], None, false).unwrap_err();
        assert!(e.to_string().contains("t.final_loss"), "{e}");
        let e = t.grid(&[], Some("loss"), false).unwrap_err();
        assert!(
            e.to_string().contains("--sort loss") && e.to_string().contains("status"),
            "{e}"
        );
    }

    #[test]
    fn sort_puts_empty_cells_last_both_ways() {
        let f = |v: Option<f64>| {
            (
                vec![v.map_or(Field::Null, |m| {
                    Field::Num(Agg {
                        mean: m,
                        sd: None,
                        n: 1,
                    })
                })],
                1,
            )
        };
        let mut rows = vec![f(Some(2.0)), f(None), f(Some(1.0)), f(Some(3.0))];
        sort_rows(&mut rows, 0, true);
        let means: Vec<Option<f64>> = rows
            .iter()
            .map(|(r, _)| match &r[0] {
                Field::Num(a) => Some(a.mean),
                _ => None,
            })
            .collect();
        assert_eq!(means, vec![Some(3.0), Some(2.0), Some(1.0), None]);
    }

    #[test]
    fn a_narrow_table_keeps_its_key_columns_and_says_what_is_cut() {
        let insts = (0..20)
            .map(|i| {
                inst(
                    "t",
                    "train",
                    &[("lr", Cell::Int(i))],
                    &[("final_loss", i as f64), ("heldout_infonce", 1.5)],
                )
            })
            .collect();
        let t = ShowTable::of_run(&run(insts, &["lr"]));
        let s = summary(&t, 20, 15);
        let lines: Vec<&str> = s.lines().collect();
        // The rightmost columns are kept: status, then the last stage's numbers.
        assert_eq!(lines[0], "lr  n  status");
        assert!(lines
            .iter()
            .all(|l| l.chars().count() <= 20 || l.starts_with("...") || l.starts_with('(')));
        assert!(s.contains("... 5 more: cbound show r"), "{s}");
        assert!(s.contains("2 more column(s)"), "{s}");
    }

    #[test]
    fn csv_splits_replicated_numbers_and_markdown_escapes_pipes() {
        let g = Grid {
            header: vec!["a|b".into(), "m".into()],
            rows: vec![vec![
                Field::Text("x,y".into()),
                Field::Num(Agg {
                    mean: 1.5,
                    sd: Some(0.5),
                    n: 2,
                }),
            ]],
            row_n: vec![2],
            keys: 1,
        };
        assert_eq!(g.render(Format::Csv), "a|b,m,m.sd,m.n\n\"x,y\",1.5,0.5,2\n");
        assert!(g
            .render(Format::Markdown)
            .starts_with("| a\\|b | m |\n|---|---|\n| x,y | 1.500 ± 0.5000 |"));
        let j: serde_json::Value = serde_json::from_str(&g.render(Format::Json)).unwrap();
        assert_eq!(j[0]["m"]["sd"], 0.5);
    }
}
