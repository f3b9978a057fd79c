//! Numeric matrices out of tables: reads Parquet or CSV and selects columns by name, glob
//! (`x*`) or list column, so estimators can take "U from embed" or "x0..x4 of a CSV" alike.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;

use cbound_core::files::{read_parquet, ArtifactError};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{path}: CSV: {message}")]
    Csv { path: PathBuf, message: String },
    #[error("{path}: no column matches `{pattern}` (columns: {available})")]
    NoColumn {
        path: PathBuf,
        pattern: String,
        available: String,
    },
    #[error("{path}: column `{column}` has type {found}, expected numbers")]
    NotNumeric {
        path: PathBuf,
        column: String,
        found: String,
    },
    #[error("{path}: column `{column}` is empty (null) at row {row}")]
    Null {
        path: PathBuf,
        column: String,
        row: usize,
    },
    #[error("{path}: unsupported file type (expected .parquet or .csv)")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: the table has no rows")]
    Empty { path: PathBuf },
    #[error(
        "{path}: column `{column}` row {row} holds {value}: features must be finite numbers \
         within the float32 range (|x| <= 3.4e38)"
    )]
    NotFinite {
        path: PathBuf,
        column: String,
        row: usize,
        value: f64,
    },
    #[error(
        "{path}: column `{column}` row {row} has label {value}: numeric labels must be class \
         indices 0..K-1 (K at most 100000); renumber them, or store them as strings to have \
         them numbered in order of appearance"
    )]
    BadLabel {
        path: PathBuf,
        column: String,
        row: usize,
        value: String,
    },
}

/// A table read into memory, remembering where it came from for messages.
pub struct Table {
    pub path: PathBuf,
    pub batches: Vec<RecordBatch>,
}

/// Selected columns as a row-major f64 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub data: Vec<f64>,
    pub rows: usize,
    pub cols: usize,
    pub names: Vec<String>,
}

impl Selection {
    /// The selection as float32 features: every value must be finite and within the float32
    /// range (a larger one would become inf, and NaN/inf make every later estimate NaN).
    pub fn to_f32_features(&self, path: &Path) -> Result<Vec<f32>, TableError> {
        let limit = f64::from(f32::MAX);
        self.data
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if v.is_finite() && v.abs() <= limit {
                    Ok(v as f32)
                } else {
                    let cols = self.cols.max(1);
                    Err(TableError::NotFinite {
                        path: path.to_path_buf(),
                        column: self.names.get(i % cols).cloned().unwrap_or_default(),
                        row: i / cols,
                        value: v,
                    })
                }
            })
            .collect()
    }
}

impl Table {
    pub fn read(path: &Path) -> Result<Table, TableError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let batches = match ext.as_str() {
            "parquet" | "pq" => read_parquet(path)?,
            "csv" => vec![read_csv(path)?],
            _ => {
                return Err(TableError::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        Ok(Table {
            path: path.to_path_buf(),
            batches,
        })
    }

    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// A key of the Parquet schema metadata (cbound's own tables describe themselves there).
    pub fn schema_metadata(&self, key: &str) -> Option<String> {
        self.batches
            .first()
            .and_then(|b| b.schema().metadata().get(key).cloned())
    }

    pub fn column_names(&self) -> Vec<String> {
        self.batches
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Columns named by a comma-separated spec: exact names, globs with `*`, or a list
    /// column (expanded into its elements). Order follows the spec, then the table.
    pub fn select(&self, spec: &str) -> Result<Selection, TableError> {
        // A table without rows may have no schema either (no batches): say that, rather
        // than that no column matches.
        if self.rows() == 0 {
            return Err(TableError::Empty {
                path: self.path.clone(),
            });
        }
        let names = self.column_names();
        let mut chosen: Vec<String> = Vec::new();
        for pattern in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let matched: Vec<&String> = names.iter().filter(|n| glob_match(pattern, n)).collect();
            if matched.is_empty() {
                return Err(TableError::NoColumn {
                    path: self.path.clone(),
                    pattern: pattern.to_string(),
                    available: names.join(", "),
                });
            }
            for m in matched {
                if !chosen.contains(m) {
                    chosen.push(m.clone());
                }
            }
        }
        let rows = self.rows();
        if rows == 0 {
            return Err(TableError::Empty {
                path: self.path.clone(),
            });
        }
        // Per column: its values as f64, and how many matrix columns it spans.
        let mut columns: Vec<(Vec<f64>, usize, String)> = Vec::new();
        for name in &chosen {
            let mut values = Vec::with_capacity(rows);
            let mut width = 1;
            let mut row0 = 0;
            for batch in &self.batches {
                let Some(array) = batch.column_by_name(name) else {
                    continue;
                };
                width = append_numeric(&self.path, name, array, row0, &mut values)?;
                row0 += batch.num_rows();
            }
            columns.push((values, width, name.clone()));
        }
        let cols: usize = columns.iter().map(|c| c.1).sum();
        let mut data = vec![0.0; rows * cols];
        let mut out_names = Vec::with_capacity(cols);
        let mut offset = 0;
        for (values, width, name) in &columns {
            for r in 0..rows {
                data[r * cols + offset..r * cols + offset + width]
                    .copy_from_slice(&values[r * width..(r + 1) * width]);
            }
            if *width == 1 {
                out_names.push(name.clone());
            } else {
                out_names.extend((0..*width).map(|j| format!("{name}[{j}]")));
            }
            offset += width;
        }
        Ok(Selection {
            data,
            rows,
            cols,
            names: out_names,
        })
    }

    /// A label column as class codes 0..K in order of first appearance (integers keep
    /// their order when they already are 0..K-1), with the class names.
    pub fn labels(&self, column: &str) -> Result<(Vec<u32>, Vec<String>), TableError> {
        if self.rows() == 0 {
            return Err(TableError::Empty {
                path: self.path.clone(),
            });
        }
        let mut raw: Vec<String> = Vec::with_capacity(self.rows());
        let mut numeric = false;
        for batch in &self.batches {
            let array = batch
                .column_by_name(column)
                .ok_or_else(|| TableError::NoColumn {
                    path: self.path.clone(),
                    pattern: column.to_string(),
                    available: self.column_names().join(", "),
                })?;
            numeric |= array.data_type().is_numeric();
            for i in 0..array.len() {
                if array.is_null(i) {
                    return Err(TableError::Null {
                        path: self.path.clone(),
                        column: column.into(),
                        row: raw.len(),
                    });
                }
                raw.push(label_text(array, i));
            }
        }
        let mut names: Vec<String> = Vec::new();
        let all_ints: Option<Vec<u32>> = raw.iter().map(|s| s.parse::<u32>().ok()).collect();
        if let Some(ints) = all_ints {
            let k = ints
                .iter()
                .copied()
                .max()
                .map(|m| m as usize + 1)
                .unwrap_or(0);
            if k <= 100_000 {
                names = (0..k).map(|i| i.to_string()).collect();
                return Ok((ints, names));
            }
        }
        // Numbers that are not class indices (1000000, -1, 1.5) must not be renumbered
        // silently: every other label would change meaning, and `classes: [0, 1]` with it.
        if numeric {
            let bad = raw
                .iter()
                .position(|s| s.parse::<u32>().map_or(true, |v| v >= 100_000))
                .unwrap_or(0);
            return Err(TableError::BadLabel {
                path: self.path.clone(),
                column: column.into(),
                row: bad,
                value: raw[bad].clone(),
            });
        }
        let codes = raw
            .iter()
            .map(|s| match names.iter().position(|n| n == s) {
                Some(p) => p as u32,
                None => {
                    names.push(s.clone());
                    (names.len() - 1) as u32
                }
            })
            .collect();
        Ok((codes, names))
    }
}

fn label_text(array: &ArrayRef, i: usize) -> String {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(i).to_string(),
        DataType::Boolean => array.as_boolean().value(i).to_string(),
        _ => {
            let mut v = Vec::new();
            match append_numeric(Path::new(""), "", &array.slice(i, 1), 0, &mut v) {
                Ok(_) if v.len() == 1 && v[0].fract() == 0.0 && v[0] >= 0.0 => {
                    format!("{}", v[0] as u64)
                }
                Ok(_) if v.len() == 1 => format!("{}", v[0]),
                Ok(_) => format!("{:?}", v),
                Err(_) => format!("{array:?}"),
            }
        }
    }
}

fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            name.len() >= prefix.len()
                && name.starts_with(prefix)
                && (0..=name.len() - prefix.len()).any(|i| {
                    name.is_char_boundary(prefix.len() + i)
                        && glob_match(rest, &name[prefix.len() + i..])
                })
        }
    }
}

/// Appends a numeric (or list-of-numeric) column's values, row-major; returns its width.
fn append_numeric(
    path: &Path,
    name: &str,
    array: &ArrayRef,
    row0: usize,
    out: &mut Vec<f64>,
) -> Result<usize, TableError> {
    let null_at = |i: usize| TableError::Null {
        path: path.to_path_buf(),
        column: name.to_string(),
        row: row0 + i,
    };
    if let Some(i) = (0..array.len()).find(|&i| array.is_null(i)) {
        return Err(null_at(i));
    }
    macro_rules! prim {
        ($t:ty) => {{
            out.extend(
                array
                    .as_primitive::<$t>()
                    .values()
                    .iter()
                    .map(|&v| v as f64),
            );
            Ok(1)
        }};
    }
    match array.data_type() {
        DataType::Float64 => prim!(Float64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Boolean => {
            let b = array.as_boolean();
            out.extend((0..b.len()).map(|i| if b.value(i) { 1.0 } else { 0.0 }));
            Ok(1)
        }
        DataType::FixedSizeList(_, width) => {
            let list = array.as_fixed_size_list();
            let values = list.values().slice(
                list.offset() * *width as usize,
                list.len() * *width as usize,
            );
            append_numeric(path, name, &values, row0, out)?;
            Ok(*width as usize)
        }
        other => Err(TableError::NotNumeric {
            path: path.to_path_buf(),
            column: name.to_string(),
            found: other.to_string(),
        }),
    }
}

/// Reads a CSV with a header row: numeric columns become Float64, others Utf8.
fn read_csv(path: &Path) -> Result<RecordBatch, TableError> {
    use std::sync::Arc;
    let csv_err = |message: String| TableError::Csv {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| csv_err(e.to_string()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| csv_err(e.to_string()))?
        .iter()
        .map(String::from)
        .collect();
    let mut cells: Vec<Vec<String>> = vec![Vec::new(); headers.len()];
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_err(e.to_string()))?;
        if record.len() != headers.len() {
            return Err(csv_err(format!(
                "row {} has {} fields, the header has {}",
                line + 1,
                record.len(),
                headers.len()
            )));
        }
        for (j, field) in record.iter().enumerate() {
            cells[j].push(field.trim().to_string());
        }
    }
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, column) in headers.iter().zip(cells) {
        let numbers: Option<Vec<f64>> = column.iter().map(|c| c.parse::<f64>().ok()).collect();
        match numbers {
            Some(v) => {
                fields.push(arrow_schema::Field::new(name, DataType::Float64, false));
                arrays.push(Arc::new(arrow_array::Float64Array::from(v)));
            }
            None => {
                fields.push(arrow_schema::Field::new(name, DataType::Utf8, false));
                arrays.push(Arc::new(arrow_array::StringArray::from(column)));
            }
        }
    }
    RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), arrays)
        .map_err(|e| csv_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{FixedSizeListArray, Float32Array, Int64Array, StringArray};
    use arrow_schema::Field;
    use std::sync::Arc;

    fn parquet_fixture(dir: &Path) -> PathBuf {
        let values = Float32Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let list = FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            2,
            Arc::new(values),
            None,
        );
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            Field::new("u", list.data_type().clone(), false),
            Field::new("x0", DataType::Int64, false),
            Field::new("x1", DataType::Int64, false),
            Field::new("label", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(list),
                Arc::new(Int64Array::from(vec![10, 20, 30])),
                Arc::new(Int64Array::from(vec![11, 21, 31])),
                Arc::new(StringArray::from(vec!["cat", "dog", "cat"])),
            ],
        )
        .unwrap();
        let path = dir.join("t.parquet");
        cbound_core::files::write_parquet(&path, &batch).unwrap();
        path
    }

    #[test]
    fn a_zero_row_table_says_it_has_no_rows() {
        // It said "no column matches `x0` (columns: )": a zero-row Parquet file reads as no
        // batches, so no schema.
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            Field::new("x0", DataType::Float64, false),
            Field::new("label", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow_array::Float64Array::from(Vec::<f64>::new())),
                Arc::new(Int64Array::from(Vec::<i64>::new())),
            ],
        )
        .unwrap();
        let path = dir.path().join("empty.parquet");
        cbound_core::files::write_parquet(&path, &batch).unwrap();
        let t = Table::read(&path).unwrap();
        for err in [
            t.select("x0").err().unwrap().to_string(),
            t.labels("label").err().unwrap().to_string(),
        ] {
            assert!(
                err.contains("empty.parquet") && err.contains("the table has no rows"),
                "{err}"
            );
        }
    }

    #[test]
    fn non_finite_or_out_of_f32_range_features_are_refused_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        for (cell, shown) in [
            ("1e39", "1000000000000000000000000000000000000000"),
            ("nan", "NaN"),
            ("-inf", "-inf"),
        ] {
            let path = dir.path().join("t.csv");
            std::fs::write(&path, format!("x0,x1\n1,2\n3,{cell}\n")).unwrap();
            let sel = Table::read(&path).unwrap().select("x*").unwrap();
            let err = sel.to_f32_features(&path).unwrap_err().to_string();
            assert!(
                err.contains("t.csv") && err.contains("column `x1` row 1") && err.contains(shown),
                "{err}"
            );
        }
        let path = dir.path().join("ok.csv");
        std::fs::write(&path, "x0\n3.4e38\n-1\n").unwrap();
        let sel = Table::read(&path).unwrap().select("x0").unwrap();
        assert_eq!(sel.to_f32_features(&path).unwrap()[1], -1.0);
    }

    #[test]
    fn selects_lists_globs_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::read(&parquet_fixture(dir.path())).unwrap();
        let s = t.select("u").unwrap();
        assert_eq!((s.rows, s.cols), (3, 2));
        assert_eq!(s.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(s.names, vec!["u[0]", "u[1]"]);
        let s = t.select("x*, u").unwrap();
        assert_eq!(s.cols, 4);
        assert_eq!(&s.data[..4], &[10.0, 11.0, 1.0, 2.0]);
        let err = t.select("z").unwrap_err().to_string();
        assert!(
            err.contains("no column matches `z`") && err.contains("x0"),
            "{err}"
        );
        let err = t.select("label").unwrap_err().to_string();
        assert!(err.contains("expected numbers"), "{err}");
        let (codes, names) = t.labels("label").unwrap();
        assert_eq!(codes, vec![0, 1, 0]);
        assert_eq!(names, vec!["cat", "dog"]);
        let (codes, _) = t.labels("x0").unwrap();
        assert_eq!(codes, vec![10, 20, 30]);
    }

    #[test]
    fn reads_csv_with_mixed_columns_and_reports_ragged_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "a,b,name\n1,2.5,x\n3,4.5,y\n").unwrap();
        let t = Table::read(&path).unwrap();
        assert_eq!(t.select("a,b").unwrap().data, vec![1.0, 2.5, 3.0, 4.5]);
        std::fs::write(&path, "a,b\n1,2\n3\n").unwrap();
        let err = Table::read(&path).err().unwrap().to_string();
        assert!(err.contains("t.csv"), "{err}");
        assert!(Table::read(&dir.path().join("t.txt")).is_err());
    }

    #[test]
    fn glob() {
        assert!(glob_match("x*", "x12"));
        assert!(glob_match("*_u", "enc_u"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("x*", "y1"));
    }
}
