//! Datasets as Parquet tables, the form `load` hands to `augment`, `train` and `embed`.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `id` | uint64 | index of the sample in its source file(s) |
//! | `label` | uint32 | class index (absent for unlabelled data) |
//! | `image` | fixed_size_list<uint8> | C x H x W pixels, channel-major (image datasets) |
//! | `x` | fixed_size_list<float32> | feature vector (dense datasets) |
//!
//! Images stay bytes on disk and in memory; floats are made per batch. The sample shape,
//! class names and the normalisation chosen at load time travel in the schema metadata
//! (`cbound.shape`, `cbound.num_classes`, `cbound.label_names`, `cbound.normalisation`,
//! and `cbound.split` where the source has a train/test split).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type, UInt64Type, UInt8Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow_schema::{DataType, Field, Schema};
use serde_json::json;

use super::{DataError, Dataset, Features, Normalisation, SampleShape};
use cbound_core::files::{read_parquet, write_parquet, ArtifactError};

fn bad(path: &Path, what: &str, expected: &str, found: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        what: what.to_string(),
        expected: expected.to_string(),
        found: found.into(),
    }
}

fn artifact(e: ArtifactError) -> DataError {
    DataError::InvalidArgument(e.to_string())
}

pub fn normalisation_json(n: &Normalisation) -> serde_json::Value {
    match n {
        Normalisation::None => json!({"kind": "none"}),
        Normalisation::Scale01 => json!({"kind": "scale01"}),
        Normalisation::Standardise { mean, std } => {
            json!({"kind": "standardise", "mean": mean, "std": std})
        }
    }
}

fn normalisation_from(v: &serde_json::Value) -> Option<Normalisation> {
    let floats = |k: &str| -> Option<Vec<f32>> {
        v.get(k)?
            .as_array()?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect()
    };
    match v.get("kind")?.as_str()? {
        "none" => Some(Normalisation::None),
        "scale01" => Some(Normalisation::Scale01),
        "standardise" => Some(Normalisation::Standardise {
            mean: floats("mean")?,
            std: floats("std")?,
        }),
        _ => None,
    }
}

fn shape_json(s: SampleShape) -> serde_json::Value {
    match s {
        SampleShape::Image {
            channels,
            height,
            width,
        } => {
            json!({"kind": "image", "channels": channels, "height": height, "width": width})
        }
        SampleShape::Dense { dim } => json!({"kind": "dense", "dim": dim}),
    }
}

fn list_of(
    values: ArrayRef,
    item: DataType,
    width: usize,
) -> Result<FixedSizeListArray, DataError> {
    FixedSizeListArray::try_new(
        Arc::new(Field::new("item", item, false)),
        width as i32,
        values,
        None,
    )
    .map_err(|e| DataError::InvalidArgument(format!("building a list column: {e}")))
}

/// Schema-metadata key of the split a dataset's rows came from ([`Dataset::split`]).
pub const SPLIT_KEY: &str = "cbound.split";

/// The dataset as one record batch with its metadata.
pub fn dataset_batch(
    ds: &Dataset,
    normalisation: &Normalisation,
) -> Result<RecordBatch, DataError> {
    let mut fields = vec![Field::new("id", DataType::UInt64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(ds.ids.clone()))];
    if ds.is_labelled() {
        fields.push(Field::new("label", DataType::UInt32, false));
        columns.push(Arc::new(UInt32Array::from(ds.labels.clone())));
    }
    // The paired view, when present, sits beside the features as `image_view` / `x_view`.
    for (features, suffix) in [(Some(&ds.features), ""), (ds.paired.as_ref(), "_view")] {
        let Some(features) = features else { continue };
        let (name, list) = match features {
            Features::Images { data, .. } => (
                "image",
                list_of(
                    Arc::new(UInt8Array::from(data.clone())),
                    DataType::UInt8,
                    ds.dim(),
                )?,
            ),
            Features::Dense { data, dim } => (
                "x",
                list_of(
                    Arc::new(Float32Array::from(data.clone())),
                    DataType::Float32,
                    *dim,
                )?,
            ),
        };
        fields.push(Field::new(
            format!("{name}{suffix}"),
            list.data_type().clone(),
            false,
        ));
        columns.push(Arc::new(list));
    }
    let mut meta = HashMap::new();
    meta.insert(
        "cbound.shape".to_string(),
        shape_json(ds.sample_shape()).to_string(),
    );
    if let Some(k) = ds.num_classes {
        meta.insert("cbound.num_classes".to_string(), k.to_string());
    }
    if let Some(names) = &ds.label_names {
        meta.insert("cbound.label_names".to_string(), json!(names).to_string());
    }
    meta.insert(
        "cbound.normalisation".to_string(),
        normalisation_json(normalisation).to_string(),
    );
    if let Some(split) = ds.split {
        meta.insert(SPLIT_KEY.to_string(), split.as_str().to_string());
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, meta));
    RecordBatch::try_new(schema, columns)
        .map_err(|e| DataError::InvalidArgument(format!("building the dataset table: {e}")))
}

pub fn write_dataset(
    path: &Path,
    ds: &Dataset,
    normalisation: &Normalisation,
) -> Result<(), DataError> {
    write_parquet(path, &dataset_batch(ds, normalisation)?).map_err(artifact)
}

/// Reads a table written by [`write_dataset`], with its normalisation.
pub fn read_dataset(path: &Path) -> Result<(Dataset, Normalisation), DataError> {
    let batches = read_parquet(path).map_err(artifact)?;
    let first = batches
        .first()
        .ok_or_else(|| bad(path, "dataset table", "at least one row", "no rows"))?;
    let schema = first.schema();
    let meta = schema.metadata();
    let shape: serde_json::Value = meta
        .get("cbound.shape")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            bad(
                path,
                "metadata",
                "a cbound dataset table (written by the load stage)",
                "no cbound.shape",
            )
        })?;
    let dim_of = |k: &str| {
        shape
            .get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .unwrap_or(0)
    };
    let normalisation = meta
        .get("cbound.normalisation")
        .and_then(|s| serde_json::from_str(s).ok())
        .and_then(|v: serde_json::Value| normalisation_from(&v))
        .unwrap_or_default();
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    let mut bytes = Vec::new();
    let mut floats = Vec::new();
    let (mut paired_bytes, mut paired_floats) = (Vec::new(), Vec::new());
    let has_paired = ["image_view", "x_view"]
        .iter()
        .any(|c| schema.column_with_name(c).is_some());
    for b in &batches {
        let col = |name: &str| b.column_by_name(name);
        ids.extend(
            col("id")
                .ok_or_else(|| bad(path, "columns", "an `id` column", "none"))?
                .as_primitive::<UInt64Type>()
                .values()
                .iter(),
        );
        if let Some(l) = col("label") {
            labels.extend(l.as_primitive::<UInt32Type>().values().iter());
        }
        if let Some(img) = col("image") {
            let list = img.as_fixed_size_list();
            bytes.extend(list.values().as_primitive::<UInt8Type>().values().iter());
        } else if let Some(x) = col("x") {
            let list = x.as_fixed_size_list();
            floats.extend(list.values().as_primitive::<Float32Type>().values().iter());
        } else {
            return Err(bad(path, "columns", "an `image` or `x` column", "neither"));
        }
        if let Some(img) = col("image_view") {
            let list = img.as_fixed_size_list();
            paired_bytes.extend(list.values().as_primitive::<UInt8Type>().values().iter());
        } else if let Some(x) = col("x_view") {
            let list = x.as_fixed_size_list();
            paired_floats.extend(list.values().as_primitive::<Float32Type>().values().iter());
        }
    }
    let kind = shape.get("kind").and_then(|k| k.as_str());
    let make = |bytes: Vec<u8>, floats: Vec<f32>| match kind {
        Some("image") => Ok(Features::Images {
            data: bytes,
            channels: dim_of("channels"),
            height: dim_of("height"),
            width: dim_of("width"),
        }),
        Some("dense") => Ok(Features::Dense {
            data: floats,
            dim: dim_of("dim"),
        }),
        other => Err(bad(
            path,
            "cbound.shape",
            "image or dense",
            format!("{other:?}"),
        )),
    };
    let features = make(bytes, floats)?;
    let paired = if has_paired {
        Some(make(paired_bytes, paired_floats)?)
    } else {
        None
    };
    let num_classes = meta.get("cbound.num_classes").and_then(|s| s.parse().ok());
    let label_names = meta
        .get("cbound.label_names")
        .and_then(|s| serde_json::from_str(s).ok());
    let mut ds = Dataset::new(features, labels, num_classes)?;
    ds.ids = ids;
    ds.label_names = label_names;
    ds.paired = paired;
    ds.split = match meta.get(SPLIT_KEY) {
        Some(s) => Some(
            s.parse()
                .map_err(|_| bad(path, SPLIT_KEY, "\"train\" or \"test\"", format!("{s:?}")))?,
        ),
        None => None,
    };
    ds.validate()?;
    Ok((ds, normalisation))
}

/// The first columns of a float view table (`view_0`, ...): one batch per view.
pub fn float_list_column(batch: &RecordBatch, name: &str) -> Option<(Vec<f32>, usize)> {
    let col = batch.column_by_name(name)?;
    let list = col.as_fixed_size_list_opt()?;
    let width = list.value_length() as usize;
    let values = list.values().as_primitive_opt::<Float32Type>()?;
    Some((
        values.values()[list.offset() * width..(list.offset() + list.len()) * width].to_vec(),
        width,
    ))
}

/// A float matrix as a fixed-size-list column.
pub fn float_list_array(data: Vec<f32>, width: usize) -> Result<FixedSizeListArray, DataError> {
    list_of(Arc::new(Float32Array::from(data)), DataType::Float32, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_and_dense_round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let images = Features::Images {
            data: (0..2 * 3 * 2 * 2).map(|v| v as u8).collect(),
            channels: 3,
            height: 2,
            width: 2,
        };
        let mut ds = Dataset::new(images, vec![1, 0], Some(2)).unwrap();
        ds.ids = vec![10, 11];
        ds.label_names = Some(vec!["a".into(), "b".into()]);
        ds.split = Some(crate::dataset::Split::Test);
        let norm = Normalisation::Standardise {
            mean: vec![0.5; 3],
            std: vec![0.25; 3],
        };
        let path = dir.path().join("d.parquet");
        write_dataset(&path, &ds, &norm).unwrap();
        let (back, n) = read_dataset(&path).unwrap();
        assert_eq!(back, ds);
        assert_eq!(back.split, Some(crate::dataset::Split::Test));
        assert_eq!(back.subset(&[0]).unwrap().split, ds.split);
        assert_eq!(n, norm);

        let dense = Dataset::new(
            Features::Dense {
                data: vec![0.5, 1.5, 2.5, 3.5],
                dim: 2,
            },
            vec![],
            None,
        )
        .unwrap();
        write_dataset(&path, &dense, &Normalisation::None).unwrap();
        assert_eq!(read_dataset(&path).unwrap().0, dense);

        let mut paired = dense.clone();
        paired.paired = Some(Features::Dense {
            data: vec![9.0, 8.0, 7.0, 6.0],
            dim: 2,
        });
        write_dataset(&path, &paired, &Normalisation::None).unwrap();
        let back = read_dataset(&path).unwrap().0;
        assert_eq!(back, paired);
        assert_eq!(
            back.subset(&[1]).unwrap().paired,
            Some(Features::Dense {
                data: vec![7.0, 6.0],
                dim: 2
            })
        );
    }

    #[test]
    fn foreign_tables_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::UInt64, false)])),
            vec![Arc::new(UInt64Array::from(vec![1u64]))],
        )
        .unwrap();
        write_parquet(&path, &batch).unwrap();
        let err = read_dataset(&path).unwrap_err().to_string();
        assert!(
            err.contains("t.parquet") && err.contains("load stage"),
            "{err}"
        );
    }
}
