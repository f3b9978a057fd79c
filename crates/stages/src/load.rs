//! `load`: brings a real dataset in — CIFAR-10/100 binary, IDX (MNIST, Fashion-MNIST), a
//! Parquet table, or NPY/NPZ arrays — with split, class subset, limit, seeded stratified
//! subsample and the normalisation later stages apply. Writes `dataset.parquet` (see
//! [`cbound_data::parquet_io`]); images stay bytes.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use cbound_data::cifar::{load_cifar10, load_cifar100, Cifar100Labels};
use cbound_data::idx::{load_idx_dir, FASHION_MNIST_LABEL_NAMES};
use cbound_data::npy::{load_npy, load_npz, ImageLayout, NpzKeys};
use cbound_data::parquet_io::write_dataset;
use cbound_data::table::Table;
use cbound_data::{Dataset, Features, Normalisation, Split};
use cbound_engine::stage::{
    Need, ParamError, Stage, StageContext, StageError, StageOutput, Upstream, Wanted,
};

/// Where the README's setup puts Fashion-MNIST (Debian package `dataset-fashion-mnist`).
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// CIFAR-10 binary (data_batch_1..5.bin, test_batch.bin) in `path`.
    Cifar10,
    /// CIFAR-100 binary (train.bin, test.bin) in `path`.
    Cifar100,
    /// IDX files `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` in `path` (MNIST layout).
    Idx,
    /// IDX, with Fashion-MNIST's class names; `path` defaults to /usr/share/datasets/fashion-mnist.
    FashionMnist,
    /// A Parquet (or CSV) table: `feature_columns` (dense) or `image_column` + `image_shape`, and `label_column`.
    Parquet,
    /// A `.npy` feature array (`path`) and optional `.npy` labels (`labels_path`).
    Npy,
    /// A `.npz` archive with arrays `npz_x` and `npz_y`.
    Npz,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NormalisationName {
    /// Images x/255; dense features unchanged.
    #[default]
    None,
    /// Images x/255; dense samples min-max scaled to [0, 1].
    Scale01,
    /// Per channel (images) or per feature (dense), with statistics of the loaded data.
    Standardise,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    pub format: Format,
    /// Directory (cifar10, cifar100, idx) or file (parquet, npy, npz). For `parquet` it may be
    /// omitted when the stage has one input: that stage's table is read.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub split: Split,
    /// Keep only these classes.
    #[serde(default)]
    pub classes: Option<Vec<u32>>,
    /// With `classes`: renumber them 0..k in the order given.
    #[serde(default = "yes")]
    pub relabel: bool,
    /// Keep the first `limit` samples (after the class subset).
    #[serde(default)]
    pub limit: Option<usize>,
    /// A stratified subsample of this size, drawn with the instance seed.
    #[serde(default)]
    pub subsample: Option<usize>,
    #[serde(default)]
    pub normalisation: NormalisationName,
    #[serde(default)]
    pub cifar100_labels: Cifar100Labels,
    /// Parquet: numeric feature columns (names, globs, list columns).
    #[serde(default)]
    pub feature_columns: Option<String>,
    /// Parquet: numeric columns of a second view of each sample, paired with
    /// `feature_columns` (e.g. the mixture's `y*`); augmentation ops reach it with `{op: paired}`.
    #[serde(default)]
    pub view_columns: Option<String>,
    /// Parquet: a column of raw image bytes (list or fixed-size list of uint8), C x H x W.
    #[serde(default)]
    pub image_column: Option<String>,
    /// Parquet: [channels, height, width] of `image_column`.
    #[serde(default)]
    pub image_shape: Option<[usize; 3]>,
    /// Parquet: the label column (integers 0..K-1, or strings); none for unlabelled data.
    #[serde(default)]
    pub label_column: Option<String>,
    /// Parquet: number of classes; labels must be below it.
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// NPY: the label array.
    #[serde(default)]
    pub labels_path: Option<PathBuf>,
    /// NPZ: member names.
    #[serde(default = "default_npz_x")]
    pub npz_x: String,
    #[serde(default = "default_npz_y")]
    pub npz_y: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_npz_x() -> String {
    "x".into()
}
fn default_npz_y() -> Option<String> {
    Some("y".into())
}

impl LoadParams {
    fn resolved_path(&self) -> Result<PathBuf, StageError> {
        match (&self.path, self.format) {
            (Some(p), _) => Ok(p.clone()),
            (None, Format::FashionMnist) => Ok(PathBuf::from(FASHION_MNIST_DIR)),
            (None, f) => Err(StageError::Params(format!(
                "`path` is required for format {f:?}"
            ))),
        }
    }
}

/// Every regular file under `path` (or `path` itself), so the cache key follows the data.
/// The most files a load path may hold: a data set directory has a handful; more means the
/// path is wrong (`path: /usr`), and hashing it all would take minutes.
pub const MAX_TRACKED_FILES: usize = 10_000;

/// Every file under `path`, for the cache key. Symlinked directories are not entered (a link
/// to `.` would never end, one elsewhere leaves the tracked tree); symlinked files are hashed
/// by their content.
fn files_under(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else {
                continue;
            };
            let p = e.path();
            if kind.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
                if out.len() > MAX_TRACKED_FILES {
                    return Err(format!(
                        "`path` {} holds more than {MAX_TRACKED_FILES} files: point it at the \
                         data set's own directory",
                        path.display()
                    ));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// An error message that names the file (or directory) it came from: the readers' errors
/// do, but a few checks on the assembled dataset do not know the path.
fn locate(path: &Path, message: &str) -> String {
    let shown = path.display().to_string();
    if message.contains(&shown) {
        message.to_string()
    } else {
        format!("{shown}: {message}")
    }
}

fn read_parquet_dataset(p: &LoadParams, path: &Path) -> Result<Dataset, StageError> {
    let input = |e: cbound_data::table::TableError| StageError::Input(e.to_string());
    let table = Table::read(path).map_err(input)?;
    let (labels, names) = match &p.label_column {
        Some(c) => {
            let (codes, names) = table.labels(c).map_err(input)?;
            (codes, Some(names))
        }
        None => (Vec::new(), None),
    };
    if let (Some(k), Some(&max)) = (p.num_classes, labels.iter().max()) {
        if max as usize >= k {
            return Err(StageError::Input(format!(
                "{}: column `{}` has label {max}, but num_classes is {k} (labels must be 0..{})",
                path.display(),
                p.label_column.as_deref().unwrap_or(""),
                k - 1
            )));
        }
    }
    let features = match (&p.feature_columns, &p.image_column) {
        (Some(cols), None) => {
            let sel = table.select(cols).map_err(input)?;
            Features::Dense {
                data: sel.to_f32_features(path).map_err(input)?,
                dim: sel.cols,
            }
        }
        (None, Some(col)) => {
            let [channels, height, width] = p.image_shape.ok_or_else(|| {
                StageError::Params(
                    "`image_shape: [channels, height, width]` is required with `image_column`"
                        .into(),
                )
            })?;
            let sel = table.select(col).map_err(input)?;
            if sel.cols != channels * height * width {
                return Err(StageError::Input(format!(
                    "{}: column `{col}` holds {} values per row, image_shape {channels}x{height}x{width} needs {}",
                    path.display(),
                    sel.cols,
                    channels * height * width
                )));
            }
            if let Some(v) = sel
                .data
                .iter()
                .find(|v| !(0.0..=255.0).contains(*v) || v.fract() != 0.0)
            {
                return Err(StageError::Input(format!(
                    "{}: column `{col}` holds {v}, not a byte (0..255)",
                    path.display()
                )));
            }
            Features::Images {
                data: sel.data.iter().map(|&v| v as u8).collect(),
                channels,
                height,
                width,
            }
        }
        _ => return Err(StageError::Params(
            "give exactly one of `feature_columns` (dense features) or `image_column` (raw images)"
                .into(),
        )),
    };
    let paired = match (&p.view_columns, &features) {
        (None, _) => None,
        (Some(cols), Features::Dense { dim, .. }) => {
            let sel = table.select(cols).map_err(input)?;
            if sel.cols != *dim {
                return Err(StageError::Input(format!(
                    "{}: view_columns `{cols}` give {} values per row, feature_columns give {dim}; a view must match its sample",
                    path.display(),
                    sel.cols
                )));
            }
            Some(Features::Dense {
                data: sel.to_f32_features(path).map_err(input)?,
                dim: sel.cols,
            })
        }
        (Some(_), Features::Images { .. }) => {
            return Err(StageError::Params(
                "`view_columns` pairs dense features; it cannot be used with `image_column`".into(),
            ))
        }
    };
    let num_classes = p.num_classes.or_else(|| names.as_ref().map(|n| n.len()));
    let located = |e: cbound_data::DataError| StageError::Input(locate(path, &e.to_string()));
    let mut ds = Dataset::new(features, labels, num_classes).map_err(located)?;
    ds.label_names = names;
    ds.paired = paired;
    ds.validate().map_err(located)?;
    Ok(ds)
}

/// For a dataset that is not there, the command that puts it there: `cbound data fetch`
/// unpacks each archive into a folder of a known name, so the hint names the parent folder
/// of the one the pipeline points at (`datasets/cifar-10-batches-bin` -> `--dest datasets`).
fn fetch_hint(
    format: Format,
    path: &std::path::Path,
    e: &cbound_data::DataError,
) -> Option<String> {
    let missing = match e {
        cbound_data::DataError::MissingFiles { .. } => true,
        cbound_data::DataError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    };
    let name = match format {
        Format::Cifar10 => "cifar10",
        Format::Cifar100 => "cifar100",
        Format::Idx => "mnist",
        _ => return None,
    };
    if !missing {
        return None;
    }
    let dest = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| ".".to_string(), |d| d.display().to_string());
    Some(format!(
        "to download it, run `cbound data fetch {name} --dest {dest}`"
    ))
}

pub struct Load;

impl Stage for Load {
    type Params = LoadParams;
    const KIND: &'static str = "load";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Load a dataset (CIFAR-10/100, IDX, Parquet, NPY/NPZ) into dataset.parquet.";
    const EXAMPLE: &'static str = r#"data:
  kind: load
  params: {format: fashion_mnist, split: train, subsample: 10000, normalisation: scale01}
"#;
    const WRITES: Option<&'static [&'static str]> = Some(&["dataset.parquet"]);

    fn needs(p: &LoadParams) -> Vec<Need> {
        // `format: parquet` without `path` reads the one input's one table.
        if p.format == Format::Parquet && p.path.is_none() {
            vec![Need {
                from: Upstream::Only,
                wanted: Wanted::OnlyTable,
                at: Vec::new(),
            }]
        } else {
            Vec::new()
        }
    }

    fn check(p: &LoadParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        let parquet = p.format == Format::Parquet;
        if p.view_columns.is_some() && !parquet {
            out.push(ParamError::at(
                &["view_columns"],
                "`view_columns` reads paired views from a Parquet/CSV table (`format: parquet`)",
            ));
        }
        if !parquet {
            if let Err(StageError::Params(m)) = p.resolved_path() {
                out.push(ParamError::at(&["format"], m));
            }
        }
        if parquet {
            match (&p.feature_columns, &p.image_column) {
                (Some(_), None) => {}
                (None, Some(_)) => {
                    if p.image_shape.is_none() {
                        out.push(ParamError::at(
                            &["image_column"],
                            "`image_shape: [channels, height, width]` is required with `image_column`",
                        ));
                    }
                    if p.view_columns.is_some() {
                        out.push(ParamError::at(
                            &["view_columns"],
                            "`view_columns` pairs dense features; it cannot be used with `image_column`",
                        ));
                    }
                }
                _ => out.push(ParamError::at(
                    &["format"],
                    "give exactly one of `feature_columns` (dense features) or `image_column` (raw images)",
                )),
            }
        }
        if p.num_classes == Some(0) {
            out.push(ParamError::at(
                &["num_classes"],
                "num_classes must be at least 1",
            ));
        }
        if p.subsample == Some(0) {
            out.push(ParamError::at(
                &["subsample"],
                "subsample must be at least 1",
            ));
        }
        out
    }

    fn tracked_files(params: &LoadParams) -> Result<Vec<PathBuf>, String> {
        let mut files = match params.resolved_path() {
            Ok(p) => files_under(&p)?,
            Err(_) => Vec::new(),
        };
        files.extend(params.labels_path.iter().filter(|p| p.is_file()).cloned());
        Ok(files)
    }

    fn run(p: &LoadParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        // A table from an upstream stage (e.g. `synthetic`): `format: parquet` without `path`.
        let path = match (p.format, &p.path, ctx.inputs) {
            (Format::Parquet, None, [input]) => input.only_table("path")?,
            _ => p.resolved_path()?,
        };
        let split = p.split;
        let data_err = |e: cbound_data::DataError| StageError::Input(e.to_string());
        let read_err = |e: cbound_data::DataError| {
            let mut message = locate(&path, &e.to_string());
            if let Some(hint) = fetch_hint(p.format, &path, &e) {
                message.push_str(&format!(" ({hint})"));
            }
            StageError::Input(message)
        };
        ctx.progress(0, 3, "reading");
        let mut ds = match p.format {
            Format::Cifar10 => load_cifar10(&path, split).map_err(read_err)?,
            Format::Cifar100 => load_cifar100(&path, split, p.cifar100_labels).map_err(read_err)?,
            Format::Idx => load_idx_dir(&path, split).map_err(read_err)?,
            Format::FashionMnist => {
                let mut ds = load_idx_dir(&path, split).map_err(|e| {
                    StageError::Input(format!("{e} (Fashion-MNIST is installed by scripts/setup.sh: apt-get install dataset-fashion-mnist; or `cbound data fetch fashion-mnist`)"))
                })?;
                ds.label_names = Some(
                    FASHION_MNIST_LABEL_NAMES
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                );
                ds
            }
            Format::Parquet => read_parquet_dataset(p, &path)?,
            Format::Npy => {
                load_npy(&path, p.labels_path.as_deref(), ImageLayout::Auto).map_err(read_err)?
            }
            Format::Npz => load_npz(
                &path,
                &NpzKeys {
                    x: p.npz_x.clone(),
                    y: p.npz_y.clone(),
                },
                ImageLayout::Auto,
            )
            .map_err(read_err)?,
        };
        // Sources with a fixed train/test split record which half this is, for `embed` to
        // label rows of several datasets and held-out estimators to fit on `train` only.
        if matches!(
            p.format,
            Format::Cifar10 | Format::Cifar100 | Format::Idx | Format::FashionMnist
        ) {
            ds.split = Some(split);
        }
        ctx.check_cancelled()?;
        ctx.progress(1, 3, "selecting");
        if let Some(classes) = &p.classes {
            ds = ds.class_subset(classes, p.relabel).map_err(data_err)?;
        }
        if let Some(n) = p.limit {
            ds = ds.limit(n);
        }
        if let Some(n) = p.subsample {
            ds = ds.stratified_subsample(n, ctx.seed).map_err(data_err)?;
        }
        if ds.is_empty() {
            return Err(StageError::Input(format!(
                "{}: the {:?} split is empty after selection (classes {:?}, limit {:?})",
                path.display(),
                p.split,
                p.classes,
                p.limit
            )));
        }
        let normalisation = match p.normalisation {
            NormalisationName::None => Normalisation::None,
            NormalisationName::Scale01 => Normalisation::Scale01,
            NormalisationName::Standardise => {
                Normalisation::standardise_from(&ds).map_err(data_err)?
            }
        };
        ctx.progress(2, 3, "writing");
        write_dataset(&ctx.out_dir.join("dataset.parquet"), &ds, &normalisation)
            .map_err(data_err)?;
        Ok(StageOutput::default()
            .metric("n", ds.len() as f64)
            .metric("dim", ds.dim() as f64)
            .metric("classes", ds.class_count() as f64))
    }
}
