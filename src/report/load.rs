//! Reading a finished run directory back for `cbound report`: `run.json`, `results.parquet`
//! and the per-instance tables, as loosely typed rows.
//!
//! The report is written against tables whose columns grow over time (an optional `epoch`
//! column, new metrics, new sweep keys), so rows are kept as name -> [`Cell`] and every
//! accessor returns `Option`: a missing column or a null is "no data", never an error.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::artifact::{read_parquet, ArtifactError};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "{} has no results.parquet: is it a run directory? try outputs/<pipeline>/latest \
         (a run writes results.parquet when it ends; an interrupted one may not have)",
        .0.display()
    )]
    NotARunDir(PathBuf),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing {name}: {message}")]
    Plot { name: String, message: String },
}

/// One value of a table, whatever its Arrow type; types the report does not draw
/// (lists, structs, binary) are kept as a short description so tables still show them.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Cell {
    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Int(i) => Some(*i as f64),
            Cell::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Text for tables and axis labels.
    pub fn display(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Bool(b) => b.to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => format_number(*f),
            Cell::Text(s) => s.clone(),
        }
    }
}

/// Four significant digits, scientific notation only where fixed notation would hide them.
pub fn format_number(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = f.abs();
    if f == f.trunc() && a < 1e9 {
        return format!("{f:.0}");
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{f:.3e}");
    }
    let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    format!("{f:.digits$}")
}

/// A whole table, column names in file order.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn read(path: &Path) -> Result<Table, ArtifactError> {
        Table::read_columns(path, &|_| true)
    }

    /// [`Table::read`] of the columns `keep` accepts: a wide results.parquet (thousands of
    /// `param.*` cells) converts only what the reader needs.
    pub fn read_columns(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Table, ArtifactError> {
        let batches = read_parquet(path)?;
        let mut table = Table::default();
        for batch in &batches {
            let schema = batch.schema();
            let wanted: Vec<usize> = (0..schema.fields().len())
                .filter(|&i| keep(schema.field(i).name()))
                .collect();
            let projected = batch.project(&wanted).map_err(|e| ArtifactError::Invalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            table.append(&projected);
        }
        Ok(table)
    }

    fn append(&mut self, batch: &RecordBatch) {
        if self.columns.is_empty() {
            self.columns = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        }
        let cols: Vec<Vec<Cell>> = batch.columns().iter().map(|c| cells(c.as_ref())).collect();
        for r in 0..batch.num_rows() {
            self.rows
                .push(cols.iter().map(|c| c[r].clone()).collect::<Vec<_>>());
        }
    }

    pub fn index(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }

    pub fn has(&self, column: &str) -> bool {
        self.index(column).is_some()
    }

    pub fn cell(&self, row: usize, column: &str) -> &Cell {
        static NULL: Cell = Cell::Null;
        match (self.index(column), self.rows.get(row)) {
            (Some(c), Some(r)) => r.get(c).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    pub fn f64(&self, row: usize, column: &str) -> Option<f64> {
        self.cell(row, column).as_f64()
    }

    pub fn str(&self, row: usize, column: &str) -> Option<&str> {
        self.cell(row, column).as_str()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn cells(a: &dyn Array) -> Vec<Cell> {
    let n = a.len();
    let each = |f: &dyn Fn(usize) -> Cell| -> Vec<Cell> {
        (0..n)
            .map(|i| if a.is_null(i) { Cell::Null } else { f(i) })
            .collect()
    };
    macro_rules! int {
        ($t:ty) => {{
            let p = a.as_primitive::<$t>();
            each(&|i| Cell::Int(p.value(i) as i64))
        }};
    }
    match a.data_type() {
        DataType::Null => vec![Cell::Null; n],
        DataType::Boolean => {
            let b = a.as_boolean();
            each(&|i| Cell::Bool(b.value(i)))
        }
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => {
            // Seeds use the full u64 range; past i64 they are identifiers, not numbers.
            let p = a.as_primitive::<UInt64Type>();
            each(&|i| match i64::try_from(p.value(i)) {
                Ok(v) => Cell::Int(v),
                Err(_) => Cell::Text(p.value(i).to_string()),
            })
        }
        DataType::Float32 => {
            let p = a.as_primitive::<Float32Type>();
            each(&|i| Cell::Float(p.value(i) as f64))
        }
        DataType::Float64 => {
            let p = a.as_primitive::<Float64Type>();
            each(&|i| Cell::Float(p.value(i)))
        }
        DataType::Utf8 => {
            let s = a.as_string::<i32>();
            each(&|i| Cell::Text(s.value(i).to_string()))
        }
        DataType::LargeUtf8 => {
            let s = a.as_string::<i64>();
            each(&|i| Cell::Text(s.value(i).to_string()))
        }
        other => {
            let label = format!("<{other}>");
            each(&|_| Cell::Text(label.clone()))
        }
    }
}

/// One row of `results.parquet`, with the pieces the report groups by pulled out.
#[derive(Debug, Clone)]
pub struct Instance {
    pub stage: String,
    pub instance: String,
    pub kind: String,
    pub status: String,
    pub error: Option<String>,
    /// `sweep.<name>` columns without the prefix, of the axes the instance varies
    /// (`sweep_axes`); nulls (other grids) left out.
    pub sweeps: Vec<(String, Cell)>,
    /// `metric.<name>` columns without the prefix; nulls left out.
    pub metrics: Vec<(String, f64)>,
    /// Where its tables are (`RUN_DIR/<stage>/<instance>`); may not exist if it failed.
    pub dir: PathBuf,
}

impl Instance {
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
    }

    pub fn sweep(&self, name: &str) -> Option<&Cell> {
        self.sweeps.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Finished now or earlier: its tables are there to read.
    pub fn has_result(&self) -> bool {
        use crate::exec::outcome::InstanceStatus;
        [InstanceStatus::Ok, InstanceStatus::Cached]
            .iter()
            .any(|s| self.status == s.as_str())
    }
}

/// A run directory as the report sees it.
#[derive(Debug)]
pub struct Run {
    pub dir: PathBuf,
    /// `run.json`, or null if it is missing or unreadable (the report still works).
    pub meta: serde_json::Value,
    pub results: Table,
    pub instances: Vec<Instance>,
}

impl Run {
    /// Opens `dir`, or `dir/latest` when given a pipeline's output directory.
    pub fn open(dir: &Path) -> Result<Run, ReportError> {
        Run::open_columns(dir, &|_| true)
    }

    /// [`Run::open`], reading only the results.parquet columns `keep` accepts.
    pub fn open_columns(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Run, ReportError> {
        let dir = if !dir.join("results.parquet").is_file()
            && dir.join("latest/results.parquet").is_file()
        {
            dir.join("latest")
        } else {
            dir.to_path_buf()
        };
        let results_path = dir.join("results.parquet");
        if !results_path.is_file() {
            return Err(ReportError::NotARunDir(dir));
        }
        let results = Table::read_columns(&results_path, keep)?;
        let meta = std::fs::read(dir.join("run.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let instances = instances(&dir, &results);
        Ok(Run {
            dir,
            meta,
            results,
            instances,
        })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.iter().filter(move |i| i.kind == kind)
    }

    /// Names of the `sweep.*` columns, in file order.
    pub fn sweep_names(&self) -> Vec<String> {
        self.results
            .columns
            .iter()
            .filter_map(|c| c.strip_prefix("sweep."))
            .map(str::to_string)
            .collect()
    }
}

fn instances(dir: &Path, results: &Table) -> Vec<Instance> {
    (0..results.len())
        .map(|r| {
            let text = |c: &str| results.str(r, c).unwrap_or_default().to_string();
            let mut sweeps = vec![];
            let mut metrics = vec![];
            // The axes the instance varies: a one-at-a-time sweep fills the others with their
            // params values (so tables join), but the plots group by what was varied. Runs
            // from before `sweep_axes` have nulls there instead.
            let axes = results.str(r, "sweep_axes").map(|a| {
                a.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            });
            for (c, name) in results.columns.iter().enumerate() {
                let cell = &results.rows[r][c];
                if let Some(key) = name.strip_prefix("sweep.") {
                    let varied = axes.as_ref().is_none_or(|a| a.iter().any(|k| k == key));
                    if !cell.is_null() && varied {
                        sweeps.push((key.to_string(), cell.clone()));
                    }
                } else if let Some(key) = name.strip_prefix("metric.") {
                    if let Some(v) = cell.as_f64() {
                        metrics.push((key.to_string(), v));
                    }
                }
            }
            let (stage, instance) = (text("stage"), text("instance"));
            Instance {
                dir: dir.join(&stage).join(&instance),
                stage,
                instance,
                kind: text("kind"),
                status: text("status"),
                error: results.str(r, "error").map(str::to_string),
                sweeps,
                metrics,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(format_number(0.123456), "0.1235");
        assert_eq!(format_number(12.3456), "12.35");
        assert_eq!(format_number(256.0), "256");
        assert_eq!(format_number(1.5e-5), "1.500e-5");
        assert_eq!(format_number(f64::NAN), "NaN");
    }

    #[test]
    fn missing_results_says_what_a_run_directory_is() {
        let dir = tempfile::tempdir().unwrap();
        let e = Run::open(dir.path()).unwrap_err();
        assert!(matches!(e, ReportError::NotARunDir(_)));
        assert!(e.to_string().contains("outputs/<pipeline>/latest"), "{e}");
    }
}
