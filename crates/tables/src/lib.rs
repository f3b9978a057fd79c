//! cbound-tables: the tables stages exchange.
//!
//! Declared tables: the Parquet tables one stage writes and another (or the report, or a
//! user with pandas) reads, each declared once as a list of [`Column`]s with name, type,
//! nullability and meaning.
//!
//! Writers build their batch through [`Builder`], which refuses an undeclared column, a
//! column of another type, or a missing one, and attaches each column's description to the
//! schema; readers fetch columns through [`Reader`] by the same declarations, so a renamed
//! column is a compile error in every reader instead of a silent `None`.

pub mod bounds;
pub mod estimates;
pub mod mi_estimates;
pub mod model;
pub mod training_curve;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field};

/// Schema metadata key (value `"true"`) of tables whose `epoch` column tells encoder
/// snapshots apart (`embed` with `snapshots: true`): rows of different epochs must never be
/// pooled into one estimate. An augment table's `epoch` counts passes of fresh views instead.
pub const SNAPSHOT_KEY: &str = "cbound.snapshots";

/// A column's Arrow type, as far as cbound's tables use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Utf8,
    Float64,
    UInt64,
    Int64,
    Boolean,
}

impl ColumnType {
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::UInt64 => DataType::UInt64,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Boolean => DataType::Boolean,
        }
    }
}

/// One declared column.
#[derive(Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    /// Whether values may be null.
    pub nullable: bool,
    /// Present in every table of this kind; `false` for columns that only some instances
    /// write (an `epoch` column only with encoder snapshots).
    pub always: bool,
    /// The meaning, written into the Parquet schema's field metadata (`description`).
    pub doc: &'static str,
}

/// One declared table.
#[derive(Debug)]
pub struct Table {
    /// The file name without `.parquet`.
    pub name: &'static str,
    /// The file an instance writes it to (`<name>.parquet`).
    pub file: &'static str,
    /// What one row is.
    pub row: &'static str,
    pub columns: &'static [&'static Column],
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table {table}: column `{column}` is not declared")]
    Undeclared {
        table: &'static str,
        column: &'static str,
    },
    #[error("table {table}: column `{column}` is declared {declared:?} but given {given}")]
    WrongType {
        table: &'static str,
        column: &'static str,
        declared: ColumnType,
        given: DataType,
    },
    #[error("table {table}: column `{column}` is missing")]
    Missing {
        table: &'static str,
        column: &'static str,
    },
    #[error("table {table}: {message}")]
    Arrow {
        table: &'static str,
        message: String,
    },
}

/// Builds a batch of a declared table; columns may be given in any order and come out in
/// the declared one.
pub struct Builder {
    table: &'static Table,
    given: Vec<(&'static Column, ArrayRef)>,
}

impl Builder {
    pub fn new(table: &'static Table) -> Builder {
        Builder {
            table,
            given: Vec::new(),
        }
    }

    pub fn column(mut self, column: &'static Column, values: ArrayRef) -> Builder {
        self.given.push((column, values));
        self
    }

    /// [`Builder::column`] where there are values; a column not declared `always` may be
    /// left out (`None`).
    pub fn optional_column(self, column: &'static Column, values: Option<ArrayRef>) -> Builder {
        match values {
            Some(v) => self.column(column, v),
            None => self,
        }
    }

    pub fn build(self) -> Result<RecordBatch, TableError> {
        let table = self.table.name;
        for (c, values) in &self.given {
            if !self.table.columns.iter().any(|d| std::ptr::eq(*d, *c)) {
                return Err(TableError::Undeclared {
                    table,
                    column: c.name,
                });
            }
            if values.data_type() != &c.ty.arrow() {
                return Err(TableError::WrongType {
                    table,
                    column: c.name,
                    declared: c.ty,
                    given: values.data_type().clone(),
                });
            }
        }
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for declared in self.table.columns {
            match self.given.iter().find(|(c, _)| std::ptr::eq(*c, *declared)) {
                Some((c, values)) => {
                    fields.push((Field::new(c.name, c.ty.arrow(), c.nullable), c.doc));
                    arrays.push(Arc::clone(values));
                }
                None if declared.always => {
                    return Err(TableError::Missing {
                        table,
                        column: declared.name,
                    })
                }
                None => {}
            }
        }
        RecordBatch::try_new(cbound_core::files::documented_schema(fields), arrays).map_err(|e| {
            TableError::Arrow {
                table,
                message: e.to_string(),
            }
        })
    }
}

/// Reads the columns of one batch of a declared table, checking each column's type.
pub struct Reader<'a> {
    table: &'static Table,
    batch: &'a RecordBatch,
}

impl<'a> Reader<'a> {
    pub fn new(table: &'static Table, batch: &'a RecordBatch) -> Reader<'a> {
        Reader { table, batch }
    }

    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The column, or `None` when this table was written without it (an optional column,
    /// or a file from an older cbound); an error when it has another type.
    fn get(&self, c: &'static Column) -> Result<Option<&'a ArrayRef>, TableError> {
        debug_assert!(self.table.columns.iter().any(|d| std::ptr::eq(*d, c)));
        match self.batch.column_by_name(c.name) {
            None => Ok(None),
            Some(a) if a.data_type() == &c.ty.arrow() => Ok(Some(a)),
            Some(a) => Err(TableError::WrongType {
                table: self.table.name,
                column: c.name,
                declared: c.ty,
                given: a.data_type().clone(),
            }),
        }
    }

    /// A column the table must have.
    fn require(&self, c: &'static Column) -> Result<&'a ArrayRef, TableError> {
        self.get(c)?.ok_or(TableError::Missing {
            table: self.table.name,
            column: c.name,
        })
    }

    /// Text values, null as `None`; a column that is absent reads as all null unless
    /// declared `always`.
    pub fn strings(&self, c: &'static Column) -> Result<Vec<Option<&'a str>>, TableError> {
        Ok(match self.column(c)? {
            Some(a) => a.as_string::<i32>().iter().collect(),
            None => vec![None; self.rows()],
        })
    }

    pub fn f64s(&self, c: &'static Column) -> Result<Vec<Option<f64>>, TableError> {
        Ok(match self.column(c)? {
            Some(a) => a.as_primitive::<Float64Type>().iter().collect(),
            None => vec![None; self.rows()],
        })
    }

    pub fn i64s(&self, c: &'static Column) -> Result<Vec<Option<i64>>, TableError> {
        Ok(match self.column(c)? {
            Some(a) => a.as_primitive::<Int64Type>().iter().collect(),
            None => vec![None; self.rows()],
        })
    }

    pub fn u64s(&self, c: &'static Column) -> Result<Vec<Option<u64>>, TableError> {
        Ok(match self.column(c)? {
            Some(a) => a.as_primitive::<UInt64Type>().iter().collect(),
            None => vec![None; self.rows()],
        })
    }

    fn column(&self, c: &'static Column) -> Result<Option<&'a ArrayRef>, TableError> {
        if c.always {
            self.require(c).map(Some)
        } else {
            self.get(c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, StringArray};

    static A: Column = Column {
        name: "a",
        ty: ColumnType::Utf8,
        nullable: false,
        always: true,
        doc: "first",
    };
    static B: Column = Column {
        name: "b",
        ty: ColumnType::Float64,
        nullable: true,
        always: false,
        doc: "second",
    };
    static OTHER: Column = Column {
        name: "other",
        ty: ColumnType::Float64,
        nullable: true,
        always: false,
        doc: "not in the table",
    };
    static T: Table = Table {
        name: "t",
        file: "t.parquet",
        row: "one thing",
        columns: &[&A, &B],
    };

    fn strings(v: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    #[test]
    fn columns_come_out_in_declared_order_with_descriptions() {
        let batch = Builder::new(&T)
            .column(&B, Arc::new(Float64Array::from(vec![Some(1.0), None])))
            .column(&A, strings(&["x", "y"]))
            .build()
            .unwrap();
        let schema = batch.schema();
        assert_eq!(schema.field(0).name(), "a");
        assert_eq!(schema.field(1).metadata()["description"], "second");
        let r = Reader::new(&T, &batch);
        assert_eq!(r.strings(&A).unwrap(), vec![Some("x"), Some("y")]);
        assert_eq!(r.f64s(&B).unwrap(), vec![Some(1.0), None]);
    }

    #[test]
    fn undeclared_mistyped_and_missing_columns_are_errors() {
        let e = Builder::new(&T)
            .column(&A, strings(&["x"]))
            .column(&OTHER, Arc::new(Float64Array::from(vec![1.0])))
            .build()
            .unwrap_err();
        assert!(
            matches!(
                e,
                TableError::Undeclared {
                    column: "other",
                    ..
                }
            ),
            "{e}"
        );
        let e = Builder::new(&T)
            .column(&A, Arc::new(Float64Array::from(vec![1.0])))
            .build()
            .unwrap_err();
        assert!(
            matches!(e, TableError::WrongType { column: "a", .. }),
            "{e}"
        );
        let e = Builder::new(&T)
            .column(&B, Arc::new(Float64Array::from(vec![1.0])))
            .build()
            .unwrap_err();
        assert!(matches!(e, TableError::Missing { column: "a", .. }), "{e}");
        // An optional column may be left out, and reads as null.
        let batch = Builder::new(&T)
            .column(&A, strings(&["x"]))
            .build()
            .unwrap();
        assert_eq!(batch.num_columns(), 1);
        assert_eq!(Reader::new(&T, &batch).f64s(&B).unwrap(), vec![None]);
    }
}
