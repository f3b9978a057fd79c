//! The in-memory dataset that every reader returns, its selection operations (subset, class
//! filter, stratified subsample) and its conversion to normalised `f32` batches.
//!
//! Pixels are kept as `u8` so that a 50,000-image dataset costs 150 MB rather than 600 MB;
//! the float conversion happens only for the samples a batch actually needs.

use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::error::DataError;

/// Multiplying (rather than dividing) is used everywhere a pixel becomes a float, so that a
/// pixel converted by `sample_f32` and by an augmentation pipeline is bitwise the same value.
pub(crate) const INV_255: f32 = 1.0 / 255.0;

/// Which half of a dataset with a fixed train/test split to read.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    #[default]
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            other => Err(DataError::InvalidArgument(format!(
                "split: expected \"train\" or \"test\", found {other:?}"
            ))),
        }
    }
}

/// The shape of one sample, which is what augmentations and normalisation are checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleShape {
    /// Stored channel-major (C x H x W).
    Image {
        channels: usize,
        height: usize,
        width: usize,
    },
    Dense {
        dim: usize,
    },
}

impl SampleShape {
    /// Number of scalars in one sample.
    pub fn numel(self) -> usize {
        match self {
            SampleShape::Image {
                channels,
                height,
                width,
            } => channels * height * width,
            SampleShape::Dense { dim } => dim,
        }
    }
}

impl fmt::Display for SampleShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleShape::Image {
                channels,
                height,
                width,
            } => write!(f, "image {channels}x{height}x{width} (CxHxW)"),
            SampleShape::Dense { dim } => write!(f, "dense vector of {dim} features"),
        }
    }
}

/// Images stay u8 until a batch needs floats.
#[derive(Clone, Debug, PartialEq)]
pub enum Features {
    /// Layout: N x C x H x W (CHW per sample).
    Images {
        data: Vec<u8>,
        height: usize,
        width: usize,
        channels: usize,
    },
    Dense {
        data: Vec<f32>,
        dim: usize,
    },
}

impl Features {
    /// Features per sample.
    pub fn dim(&self) -> usize {
        self.shape().numel()
    }

    pub fn shape(&self) -> SampleShape {
        match *self {
            Features::Images {
                height,
                width,
                channels,
                ..
            } => SampleShape::Image {
                channels,
                height,
                width,
            },
            Features::Dense { dim, .. } => SampleShape::Dense { dim },
        }
    }

    /// Number of samples; zero-sized samples carry no count, so they report zero.
    pub fn len(&self) -> usize {
        let dim = self.dim();
        if dim == 0 {
            return 0;
        }
        match self {
            Features::Images { data, .. } => data.len() / dim,
            Features::Dense { data, .. } => data.len() / dim,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn data_len(&self) -> usize {
        match self {
            Features::Images { data, .. } => data.len(),
            Features::Dense { data, .. } => data.len(),
        }
    }

    /// Callers have already checked every index against `len()`.
    fn gather(&self, indices: &[usize]) -> Features {
        let dim = self.dim();
        match self {
            Features::Images {
                data,
                height,
                width,
                channels,
            } => {
                let mut out = Vec::with_capacity(indices.len() * dim);
                for &i in indices {
                    out.extend_from_slice(&data[i * dim..(i + 1) * dim]);
                }
                Features::Images {
                    data: out,
                    height: *height,
                    width: *width,
                    channels: *channels,
                }
            }
            Features::Dense { data, dim } => {
                let mut out = Vec::with_capacity(indices.len() * dim);
                for &i in indices {
                    out.extend_from_slice(&data[i * dim..(i + 1) * dim]);
                }
                Features::Dense {
                    data: out,
                    dim: *dim,
                }
            }
        }
    }

    fn truncate(&mut self, n: usize) {
        let keep = n * self.dim();
        match self {
            Features::Images { data, .. } => data.truncate(keep),
            Features::Dense { data, .. } => data.truncate(keep),
        }
    }
}

/// A labelled (or unlabelled) set of samples held in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub features: Features,
    /// One per sample, or empty when the dataset is unlabelled.
    pub labels: Vec<u32>,
    pub num_classes: Option<usize>,
    /// Sample ids: the index of each sample in the original file(s), kept through subsetting
    /// so that results can be traced back to source records.
    pub ids: Vec<u64>,
    pub label_names: Option<Vec<String>>,
    /// A second view of every sample, shaped like `features`, when the data comes in pairs
    /// (e.g. the two views of the synthetic mixture, independent given the label). The
    /// augmentation op `paired` starts a view from it.
    pub paired: Option<Features>,
    /// The half of a source with a fixed train/test split (CIFAR, IDX) these rows came from;
    /// `None` for sources without one. Recorded so that `embed` can label rows from several
    /// datasets with their split and held-out estimators can fit on `train`, score on `test`.
    pub split: Option<Split>,
}

/// How raw features become the floats a model sees.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Normalisation {
    /// Images: u8 -> x/255. Dense: values unchanged.
    #[default]
    None,
    /// Images: u8 -> x/255 (as `None`). Dense: each sample min-max scaled to [0, 1] (a
    /// constant sample maps to 0), because dense features carry no fixed range to divide by.
    Scale01,
    /// `(x - mean) / std`, per channel for images (applied to x/255, torchvision
    /// convention) and per feature for dense data. Length-1 vectors broadcast.
    Standardise { mean: Vec<f32>, std: Vec<f32> },
}

impl Normalisation {
    /// Standardisation with statistics measured on `dataset`; a zero standard deviation is
    /// replaced by 1 so that a constant channel maps to 0 instead of dividing by zero.
    pub fn standardise_from(dataset: &Dataset) -> Result<Normalisation, DataError> {
        let (mean, mut std) = compute_mean_std(dataset)?;
        for s in &mut std {
            if *s <= 0.0 {
                *s = 1.0;
            }
        }
        Ok(Normalisation::Standardise { mean, std })
    }

    /// Checks this normalisation against a sample shape and precomputes what the per-sample
    /// loops need.
    pub(crate) fn prepare(&self, shape: SampleShape) -> Result<Normaliser, DataError> {
        let (groups, group_len) = match shape {
            SampleShape::Image {
                channels,
                height,
                width,
            } => (channels, height * width),
            SampleShape::Dense { dim } => (dim, 1),
        };
        let is_image = matches!(shape, SampleShape::Image { .. });
        let mode = match self {
            Normalisation::None => Mode::Unit,
            Normalisation::Scale01 if is_image => Mode::Unit,
            Normalisation::Scale01 => Mode::MinMax,
            Normalisation::Standardise { mean, std } => {
                let what = if is_image { "channels" } else { "features" };
                for (name, v) in [("mean", mean), ("std", std)] {
                    if v.len() != groups && v.len() != 1 {
                        return Err(DataError::InvalidArgument(format!(
                            "standardise {name}: expected 1 or {groups} values (one per {what} of \
                             the {shape}), found {}",
                            v.len()
                        )));
                    }
                }
                if let Some(bad) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return Err(DataError::InvalidArgument(format!(
                        "standardise std: expected finite values > 0, found {bad}"
                    )));
                }
                if let Some(bad) = mean.iter().find(|m| !m.is_finite()) {
                    return Err(DataError::InvalidArgument(format!(
                        "standardise mean: expected finite values, found {bad}"
                    )));
                }
                let pick = |v: &Vec<f32>, g: usize| if v.len() == 1 { v[0] } else { v[g] };
                Mode::Affine {
                    mean: (0..groups).map(|g| pick(mean, g)).collect(),
                    inv_std: (0..groups).map(|g| 1.0 / pick(std, g)).collect(),
                }
            }
        };
        Ok(Normaliser {
            mode,
            group_len,
            is_image,
        })
    }
}

enum Mode {
    Unit,
    MinMax,
    Affine { mean: Vec<f32>, inv_std: Vec<f32> },
}

/// A [`Normalisation`] checked against one sample shape.
pub(crate) struct Normaliser {
    mode: Mode,
    /// Consecutive scalars sharing one mean/std: H*W for images, 1 for dense.
    group_len: usize,
    is_image: bool,
}

impl Normaliser {
    /// A u8 image sample straight into its output slot.
    pub(crate) fn image_u8(&self, src: &[u8], out: &mut [f32]) {
        match &self.mode {
            Mode::Affine { mean, inv_std } => {
                for ((s, o), (m, k)) in src
                    .chunks(self.group_len.max(1))
                    .zip(out.chunks_mut(self.group_len.max(1)))
                    .zip(mean.iter().zip(inv_std))
                {
                    for (x, y) in s.iter().zip(o) {
                        *y = (f32::from(*x) * INV_255 - m) * k;
                    }
                }
            }
            Mode::Unit | Mode::MinMax => {
                for (x, y) in src.iter().zip(out) {
                    *y = f32::from(*x) * INV_255;
                }
            }
        }
    }

    /// An image already converted to [0, 1] floats (after augmentation).
    pub(crate) fn image_f32(&self, src: &[f32], out: &mut [f32]) {
        match &self.mode {
            Mode::Affine { mean, inv_std } => {
                for ((s, o), (m, k)) in src
                    .chunks(self.group_len.max(1))
                    .zip(out.chunks_mut(self.group_len.max(1)))
                    .zip(mean.iter().zip(inv_std))
                {
                    for (x, y) in s.iter().zip(o) {
                        *y = (x - m) * k;
                    }
                }
            }
            Mode::Unit | Mode::MinMax => out.copy_from_slice(src),
        }
    }

    pub(crate) fn dense(&self, src: &[f32], out: &mut [f32]) {
        match &self.mode {
            Mode::Unit => out.copy_from_slice(src),
            Mode::MinMax => {
                let (lo, hi) = src
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                        (lo.min(x), hi.max(x))
                    });
                let range = hi - lo;
                if range > 0.0 && range.is_finite() {
                    let inv = 1.0 / range;
                    for (x, y) in src.iter().zip(out) {
                        *y = (x - lo) * inv;
                    }
                } else {
                    out.fill(0.0);
                }
            }
            Mode::Affine { mean, inv_std } => {
                for (((x, y), m), k) in src.iter().zip(out).zip(mean).zip(inv_std) {
                    *y = (x - m) * k;
                }
            }
        }
    }

    pub(crate) fn is_image(&self) -> bool {
        self.is_image
    }
}

impl Dataset {
    /// A dataset with ids `0..n` and no label names, after checking that the pieces agree.
    pub fn new(
        features: Features,
        labels: Vec<u32>,
        num_classes: Option<usize>,
    ) -> Result<Dataset, DataError> {
        let n = features.len();
        let ds = Dataset {
            features,
            labels,
            num_classes,
            ids: (0..n as u64).collect(),
            label_names: None,
            paired: None,
            split: None,
        };
        ds.validate()?;
        Ok(ds)
    }

    /// Checks the invariants the other methods rely on; the fields are public, so a dataset
    /// assembled by hand may not hold them.
    pub fn validate(&self) -> Result<(), DataError> {
        let dim = self.dim();
        if dim == 0 {
            return Err(DataError::InvalidArgument(format!(
                "dataset: expected at least one feature per sample, found {}",
                self.sample_shape()
            )));
        }
        if !self.features.data_len().is_multiple_of(dim) {
            return Err(DataError::InvalidArgument(format!(
                "dataset: feature buffer of {} values is not a multiple of {dim} per sample",
                self.features.data_len()
            )));
        }
        let n = self.len();
        if !self.labels.is_empty() && self.labels.len() != n {
            return Err(DataError::InvalidArgument(format!(
                "dataset: expected {n} labels (one per sample) or none, found {}",
                self.labels.len()
            )));
        }
        if self.ids.len() != n {
            return Err(DataError::InvalidArgument(format!(
                "dataset: expected {n} ids, found {}",
                self.ids.len()
            )));
        }
        if let Some(p) = &self.paired {
            if p.shape() != self.sample_shape() || p.data_len() != self.features.data_len() {
                return Err(DataError::InvalidArgument(format!(
                    "dataset: the paired view must match the features ({} per sample, {} values), found {} per sample, {} values",
                    self.sample_shape(),
                    self.features.data_len(),
                    p.shape(),
                    p.data_len()
                )));
            }
        }
        if let Some(k) = self.num_classes {
            if let Some((i, &l)) = self
                .labels
                .iter()
                .enumerate()
                .find(|(_, &l)| l as usize >= k)
            {
                return Err(DataError::InvalidArgument(format!(
                    "dataset: sample {i} has label {l}, expected < num_classes {k}"
                )));
            }
            if let Some(names) = &self.label_names {
                if names.len() != k {
                    return Err(DataError::InvalidArgument(format!(
                        "dataset: expected {k} label names, found {}",
                        names.len()
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Features per sample.
    pub fn dim(&self) -> usize {
        self.features.dim()
    }

    pub fn sample_shape(&self) -> SampleShape {
        self.features.shape()
    }

    pub fn is_labelled(&self) -> bool {
        !self.labels.is_empty()
    }

    /// Number of classes: the declared count, else one more than the largest label.
    pub fn class_count(&self) -> usize {
        self.num_classes
            .unwrap_or_else(|| self.labels.iter().max().map_or(0, |&m| m as usize + 1))
    }

    /// Samples per class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.class_count()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    fn check_index(&self, i: usize) -> Result<(), DataError> {
        if i >= self.len() {
            return Err(DataError::InvalidArgument(format!(
                "sample index {i} out of range for a dataset of {} samples",
                self.len()
            )));
        }
        Ok(())
    }

    /// Writes sample `i` as normalised floats into `out` (length `dim()`).
    pub fn sample_f32(
        &self,
        i: usize,
        out: &mut [f32],
        normalisation: &Normalisation,
    ) -> Result<(), DataError> {
        self.check_index(i)?;
        if out.len() != self.dim() {
            return Err(DataError::InvalidArgument(format!(
                "sample_f32: output buffer holds {} values, expected {}",
                out.len(),
                self.dim()
            )));
        }
        let norm = normalisation.prepare(self.sample_shape())?;
        self.write_sample(i, out, &norm);
        Ok(())
    }

    fn write_sample(&self, i: usize, out: &mut [f32], norm: &Normaliser) {
        let dim = self.dim();
        match &self.features {
            Features::Images { data, .. } => norm.image_u8(&data[i * dim..(i + 1) * dim], out),
            Features::Dense { data, .. } => norm.dense(&data[i * dim..(i + 1) * dim], out),
        }
    }

    /// The samples at `indices` as one contiguous `len(indices) x dim()` row-major batch.
    pub fn batch_f32(
        &self,
        indices: &[usize],
        normalisation: &Normalisation,
    ) -> Result<Vec<f32>, DataError> {
        for &i in indices {
            self.check_index(i)?;
        }
        let norm = normalisation.prepare(self.sample_shape())?;
        let dim = self.dim();
        let mut out = vec![0.0f32; indices.len() * dim];
        out.par_chunks_mut(dim)
            .zip(indices.par_iter())
            .with_min_len(64)
            .for_each(|(row, &i)| self.write_sample(i, row, &norm));
        Ok(out)
    }

    /// A new dataset of the samples at `indices`, in that order (repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        for &i in indices {
            self.check_index(i)?;
        }
        Ok(Dataset {
            features: self.features.gather(indices),
            labels: if self.labels.is_empty() {
                Vec::new()
            } else {
                indices.iter().map(|&i| self.labels[i]).collect()
            },
            num_classes: self.num_classes,
            ids: indices.iter().map(|&i| self.ids[i]).collect(),
            label_names: self.label_names.clone(),
            paired: self.paired.as_ref().map(|p| p.gather(indices)),
            split: self.split,
        })
    }

    /// Keeps the first `n` samples (all of them if there are fewer).
    pub fn limit(mut self, n: usize) -> Dataset {
        if n < self.len() {
            self.features.truncate(n);
            if let Some(p) = &mut self.paired {
                p.truncate(n);
            }
            self.labels.truncate(n);
            self.ids.truncate(n);
        }
        self
    }

    /// Keeps only samples whose label is in `classes`, in their original order. With
    /// `relabel`, `classes[k]` becomes label `k` (and the names follow), so the result is a
    /// self-contained k-class problem.
    pub fn class_subset(&self, classes: &[u32], relabel: bool) -> Result<Dataset, DataError> {
        if !self.is_labelled() {
            return Err(DataError::InvalidArgument(
                "class_subset: the dataset is unlabelled".into(),
            ));
        }
        let k = self.class_count();
        let mut new_label = vec![None; k];
        for (pos, &c) in classes.iter().enumerate() {
            let slot = new_label.get_mut(c as usize).ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "class_subset: class {c} out of range, expected < {k}"
                ))
            })?;
            if slot.is_some() {
                return Err(DataError::InvalidArgument(format!(
                    "class_subset: class {c} listed twice"
                )));
            }
            *slot = Some(pos as u32);
        }
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| matches!(new_label.get(self.labels[i] as usize), Some(Some(_))))
            .collect();
        let mut out = self.subset(&keep)?;
        if relabel {
            for l in &mut out.labels {
                if let Some(Some(m)) = new_label.get(*l as usize) {
                    *l = *m;
                }
            }
            out.num_classes = Some(classes.len());
            out.label_names = self.label_names.as_ref().and_then(|names| {
                classes
                    .iter()
                    .map(|&c| names.get(c as usize).cloned())
                    .collect()
            });
        }
        Ok(out)
    }

    /// Exactly `n` samples, each class represented in proportion to its size (largest
    /// remainder rounding, ties to the lower class id, so every class is within one sample
    /// of its ideal share). Which samples are drawn depends only on `seed`. The result keeps
    /// the original sample order.
    pub fn stratified_subsample(&self, n: usize, seed: u64) -> Result<Dataset, DataError> {
        if !self.is_labelled() {
            return Err(DataError::InvalidArgument(
                "stratified_subsample: the dataset is unlabelled".into(),
            ));
        }
        let total = self.len();
        if n > total {
            return Err(DataError::InvalidArgument(format!(
                "stratified_subsample: asked for {n} samples, the dataset has {total}"
            )));
        }
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); self.class_count()];
        for (i, &l) in self.labels.iter().enumerate() {
            match members.get_mut(l as usize) {
                Some(m) => m.push(i),
                None => {
                    return Err(DataError::InvalidArgument(format!(
                        "stratified_subsample: sample {i} has label {l}, expected < {}",
                        members.len()
                    )))
                }
            }
        }
        // u128 keeps n * count exact for any dataset that fits in memory.
        let (n128, total128) = (n as u128, total as u128);
        let mut quota: Vec<usize> = members
            .iter()
            .map(|m| (n128 * m.len() as u128 / total128) as usize)
            .collect();
        let remainder = n - quota.iter().sum::<usize>();
        let mut by_fraction: Vec<usize> = (0..members.len()).collect();
        by_fraction.sort_by_key(|&c| std::cmp::Reverse(n128 * members[c].len() as u128 % total128));
        for &c in by_fraction.iter().take(remainder) {
            quota[c] += 1;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut chosen = Vec::with_capacity(n);
        for (m, &q) in members.iter().zip(&quota) {
            chosen.extend(
                rand::seq::index::sample(&mut rng, m.len(), q)
                    .into_iter()
                    .map(|j| m[j]),
            );
        }
        chosen.sort_unstable();
        self.subset(&chosen)
    }
}

/// Per-channel (images, in x/255 units) or per-feature (dense) mean and population standard
/// deviation of the whole dataset.
pub fn compute_mean_std(dataset: &Dataset) -> Result<(Vec<f32>, Vec<f32>), DataError> {
    let n = dataset.len();
    if n == 0 {
        return Err(DataError::InvalidArgument(
            "compute_mean_std: the dataset is empty".into(),
        ));
    }
    let dim = dataset.dim();
    match &dataset.features {
        Features::Images {
            data,
            height,
            width,
            channels,
        } => {
            let plane = height * width;
            // Integer sums are exact (255^2 * 2^40 still fits in u64), so the statistics do
            // not depend on how rayon splits the work.
            let (sum, sq) = data
                .par_chunks(dim)
                .with_min_len(256)
                .fold(
                    || (vec![0u64; *channels], vec![0u64; *channels]),
                    |(mut s, mut q), sample| {
                        for (c, px) in sample.chunks(plane).enumerate() {
                            for &p in px {
                                let p = u64::from(p);
                                s[c] += p;
                                q[c] += p * p;
                            }
                        }
                        (s, q)
                    },
                )
                .reduce(
                    || (vec![0u64; *channels], vec![0u64; *channels]),
                    |(mut s, mut q), (s2, q2)| {
                        for c in 0..s.len() {
                            s[c] += s2[c];
                            q[c] += q2[c];
                        }
                        (s, q)
                    },
                );
            let count = (n * plane) as f64;
            let mut mean = Vec::with_capacity(*channels);
            let mut std = Vec::with_capacity(*channels);
            for c in 0..*channels {
                let m = sum[c] as f64 / count;
                let var = (sq[c] as f64 / count - m * m).max(0.0);
                mean.push((m / 255.0) as f32);
                std.push((var.sqrt() / 255.0) as f32);
            }
            Ok((mean, std))
        }
        Features::Dense { data, dim } => {
            // Shifting by the first sample keeps sum-of-squares from cancelling
            // catastrophically when a feature's mean is large compared to its spread.
            let shift: Vec<f64> = data[..*dim].iter().map(|&x| f64::from(x)).collect();
            let mut sum = vec![0f64; *dim];
            let mut sq = vec![0f64; *dim];
            for row in data.chunks(*dim) {
                for j in 0..*dim {
                    let d = f64::from(row[j]) - shift[j];
                    sum[j] += d;
                    sq[j] += d * d;
                }
            }
            let nf = n as f64;
            let mean = (0..*dim).map(|j| (shift[j] + sum[j] / nf) as f32).collect();
            let std = (0..*dim)
                .map(|j| {
                    let m = sum[j] / nf;
                    ((sq[j] / nf - m * m).max(0.0)).sqrt() as f32
                })
                .collect();
            Ok((mean, std))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(counts: &[usize]) -> Dataset {
        let mut labels = Vec::new();
        // Interleave classes so that original order is not grouped by class.
        let mut left = counts.to_vec();
        while left.iter().any(|&c| c > 0) {
            for (c, l) in left.iter_mut().enumerate() {
                if *l > 0 {
                    labels.push(c as u32);
                    *l -= 1;
                }
            }
        }
        let n = labels.len();
        let data = (0..n * 2).map(|v| v as f32).collect();
        Dataset::new(Features::Dense { data, dim: 2 }, labels, Some(counts.len())).unwrap()
    }

    #[test]
    fn stratified_subsample_exact_proportional_deterministic() {
        let ds = labelled(&[500, 300, 150, 49, 1]);
        let total = ds.len() as f64;
        for n in [0, 1, 7, 100, 333, 1000] {
            let sub = ds.stratified_subsample(n, 42).unwrap();
            assert_eq!(sub.len(), n);
            sub.validate().unwrap();
            let counts = sub.class_counts();
            for (c, &orig) in ds.class_counts().iter().enumerate() {
                let ideal = n as f64 * orig as f64 / total;
                assert!(
                    (counts[c] as f64 - ideal).abs() < 1.0,
                    "n={n} class {c}: {} vs ideal {ideal}",
                    counts[c]
                );
            }
            let again = ds.stratified_subsample(n, 42).unwrap();
            assert_eq!(sub, again);
            // Ids stay sorted (original order) and unique.
            assert!(sub.ids.windows(2).all(|w| w[0] < w[1]));
        }
        let a = ds.stratified_subsample(100, 1).unwrap();
        let b = ds.stratified_subsample(100, 2).unwrap();
        assert_ne!(a.ids, b.ids);
        assert!(ds.stratified_subsample(1001, 0).is_err());
    }

    #[test]
    fn subset_limit_and_class_subset() {
        let mut ds = labelled(&[3, 3, 3]);
        ds.label_names = Some(vec!["a".into(), "b".into(), "c".into()]);
        let s = ds.subset(&[4, 0, 4]).unwrap();
        assert_eq!(s.ids, vec![4, 0, 4]);
        assert_eq!(s.labels, vec![ds.labels[4], ds.labels[0], ds.labels[4]]);
        assert!(ds.subset(&[9]).is_err());

        let l = ds.clone().limit(2);
        assert_eq!(l.len(), 2);
        assert_eq!(l.ids, vec![0, 1]);

        let cs = ds.class_subset(&[2, 0], true).unwrap();
        assert_eq!(cs.len(), 6);
        assert_eq!(cs.num_classes, Some(2));
        assert_eq!(cs.label_names, Some(vec!["c".to_string(), "a".to_string()]));
        for (&l, &id) in cs.labels.iter().zip(&cs.ids) {
            let orig = ds.labels[id as usize];
            assert_eq!(l, if orig == 2 { 0 } else { 1 });
        }
        cs.validate().unwrap();
        let kept = ds.class_subset(&[1], false).unwrap();
        assert!(kept.labels.iter().all(|&l| l == 1));
        assert_eq!(kept.num_classes, Some(3));
        assert!(ds.class_subset(&[5], true).is_err());
        assert!(ds.class_subset(&[1, 1], true).is_err());
    }

    #[test]
    fn normalisation_and_batches() {
        let data: Vec<u8> = (0..2 * 2 * 2 * 2).map(|v| (v * 10) as u8).collect();
        let ds = Dataset::new(
            Features::Images {
                data,
                height: 2,
                width: 2,
                channels: 2,
            },
            vec![],
            None,
        )
        .unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.dim(), 8);
        let mut out = vec![0.0; 8];
        ds.sample_f32(1, &mut out, &Normalisation::None).unwrap();
        assert_eq!(out[0], 80.0 * INV_255);
        let norm = Normalisation::Standardise {
            mean: vec![0.5, 0.0],
            std: vec![0.5, 2.0],
        };
        ds.sample_f32(0, &mut out, &norm).unwrap();
        assert!((out[0] - (0.0 - 0.5) / 0.5).abs() < 1e-6);
        assert!((out[4] - (40.0 / 255.0) / 2.0).abs() < 1e-6);
        let batch = ds.batch_f32(&[1, 0], &norm).unwrap();
        assert_eq!(&batch[8..], &out[..]);
        let bad = Normalisation::Standardise {
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
        };
        assert!(ds.sample_f32(0, &mut out, &bad).is_err());
        assert!(ds.sample_f32(2, &mut out, &Normalisation::None).is_err());

        let (mean, std) = compute_mean_std(&ds).unwrap();
        // Channel 0 holds 0,10,20,30 and 80,90,100,110.
        let vals = [0.0, 10.0, 20.0, 30.0, 80.0, 90.0, 100.0, 110.0f64];
        let m = vals.iter().sum::<f64>() / 8.0;
        let v = vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 8.0;
        assert!((mean[0] as f64 - m / 255.0).abs() < 1e-6);
        assert!((std[0] as f64 - v.sqrt() / 255.0).abs() < 1e-6);

        let dense = Dataset::new(
            Features::Dense {
                data: vec![1.0, 3.0, 2.0, 2.0],
                dim: 2,
            },
            vec![],
            None,
        )
        .unwrap();
        let mut o = vec![0.0; 2];
        dense
            .sample_f32(0, &mut o, &Normalisation::Scale01)
            .unwrap();
        assert_eq!(o, vec![0.0, 1.0]);
        dense
            .sample_f32(1, &mut o, &Normalisation::Scale01)
            .unwrap();
        assert_eq!(o, vec![0.0, 0.0]);
        let (m, s) = compute_mean_std(&dense).unwrap();
        assert_eq!(m, vec![1.5, 2.5]);
        assert_eq!(s, vec![0.5, 0.5]);
    }

    #[test]
    fn split_parses() {
        assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
        assert!("validation".parse::<Split>().is_err());
    }
}
