//! View-making augmentations for contrastive learning: an op list per view turns a batch of
//! dataset samples into one contiguous `f32` batch per view.
//!
//! Every sample's randomness comes from its own ChaCha8 stream keyed by
//! (seed, epoch, sample index, view index), so a view is reproducible from those four numbers
//! alone: it does not depend on the thread count, on scheduling order, or on which other
//! samples share the batch.
//!
//! Images are converted to floats in [0, 1] (x/255) before the ops run, the ops follow
//! torchvision's float-tensor semantics (colour ops clamp to [0, 1]), and the dataset
//! normalisation is applied last, as torchvision pipelines end in `Normalize`. Dense vectors
//! are normalised first, so that noise and mask act in normalised units, where one `std`
//! means the same thing for every feature.

use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::dataset::{Dataset, Features, Normalisation, Normaliser, SampleShape, INV_255};
use super::error::DataError;

/// Crops a random region of random area and aspect ratio and resizes it to `size x size`
/// (torchvision `RandomResizedCrop`, bilinear, antialiased when shrinking).
#[derive(Clone, Debug, PartialEq)]
pub struct RandomResizedCrop {
    /// Output height and width.
    pub size: usize,
    /// Range of the crop's area as a fraction of the image's.
    pub scale: (f32, f32),
    /// Range of the crop's width / height.
    pub ratio: (f32, f32),
}

impl RandomResizedCrop {
    pub const DEFAULT_SCALE: (f32, f32) = (0.08, 1.0);
    pub const DEFAULT_RATIO: (f32, f32) = (3.0 / 4.0, 4.0 / 3.0);

    pub fn new(size: usize) -> Self {
        RandomResizedCrop {
            size,
            scale: Self::DEFAULT_SCALE,
            ratio: Self::DEFAULT_RATIO,
        }
    }
}

/// Mirrors the image left-right with probability `p`.
#[derive(Clone, Debug, PartialEq)]
pub struct HorizontalFlip {
    pub p: f32,
}

/// torchvision `ColorJitter`: each enabled factor is drawn uniformly, brightness, contrast
/// and saturation from `[max(0, 1 - v), 1 + v]` and the hue shift from `[-hue, hue]`, and the
/// enabled adjustments run in a random order. Applied with probability `p` (1 for plain
/// `ColorJitter`; SimCLR wraps it in `RandomApply(p = 0.8)`).
#[derive(Clone, Debug, PartialEq)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    /// At most 0.5: a shift of the hue by a fraction of the colour circle.
    pub hue: f32,
    pub p: f32,
}

impl ColorJitter {
    pub fn new(brightness: f32, contrast: f32, saturation: f32) -> Self {
        ColorJitter {
            brightness,
            contrast,
            saturation,
            hue: 0.0,
            p: 1.0,
        }
    }
}

/// Replaces every channel by the luma (0.2989 R + 0.587 G + 0.114 B, torchvision's
/// `rgb_to_grayscale` on tensors) with probability `p`, keeping three channels so the output
/// shape does not depend on the draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Grayscale {
    pub p: f32,
}

/// Separable Gaussian blur with reflect padding, sigma uniform in `sigma`, applied with
/// probability `p`.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianBlur {
    /// Odd, in pixels.
    pub kernel_size: usize,
    pub sigma: (f32, f32),
    pub p: f32,
}

/// With probability `p`, zeroes a `size x size` square (all channels) centred on a uniform
/// random pixel and clipped at the border (DeVries & Taylor, 2017).
#[derive(Clone, Debug, PartialEq)]
pub struct Cutout {
    pub size: usize,
    pub p: f32,
}

/// `x + std * N(0, 1)` independently per value, without clipping.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianNoise {
    pub std: f32,
}

/// Zeroes each value independently with probability `p`.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomMask {
    pub p: f32,
}

/// The SimCLR CIFAR-10 view at `size` x `size` (Chen et al. 2020, appendix B.9, colour
/// strength 0.5; the reference code's and torchvision's recipe): RandomResizedCrop(scale
/// 0.08-1, ratio 3/4-4/3), horizontal flip p = 0.5, ColorJitter(0.4, 0.4, 0.4, 0.1) with
/// p = 0.8, grayscale p = 0.2. No blur: SimCLR leaves it out for CIFAR. docs/augmentations.md
/// writes the same view as a `views:` block.
pub fn simclr_cifar_view(size: usize) -> Vec<Op> {
    vec![
        Op::RandomResizedCrop(RandomResizedCrop::new(size)),
        Op::HorizontalFlip(HorizontalFlip { p: 0.5 }),
        Op::ColorJitter(ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            p: 0.8,
        }),
        Op::Grayscale(Grayscale { p: 0.2 }),
    ]
}

/// One step of a view's pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    RandomResizedCrop(RandomResizedCrop),
    HorizontalFlip(HorizontalFlip),
    ColorJitter(ColorJitter),
    Grayscale(Grayscale),
    GaussianBlur(GaussianBlur),
    Cutout(Cutout),
    /// Images and dense vectors.
    GaussianNoise(GaussianNoise),
    /// Images and dense vectors.
    RandomMask(RandomMask),
    /// Start from the sample's paired view ([`Dataset::paired`]) instead of the sample; only
    /// as a view's first op.
    Paired,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::RandomResizedCrop(_) => "random_resized_crop",
            Op::HorizontalFlip(_) => "horizontal_flip",
            Op::ColorJitter(_) => "color_jitter",
            Op::Grayscale(_) => "grayscale",
            Op::GaussianBlur(_) => "gaussian_blur",
            Op::Cutout(_) => "cutout",
            Op::GaussianNoise(_) => "gaussian_noise",
            Op::RandomMask(_) => "random_mask",
            Op::Paired => "paired",
        }
    }

    /// Checks the settings that do not depend on the data (probabilities, ranges, odd
    /// kernels), so a pipeline can be checked before anything is read.
    pub fn check_settings(&self) -> Result<(), DataError> {
        let op = self.name();
        let invalid = |reason: String| Err(DataError::InvalidOp { op, reason });
        match self {
            Op::RandomResizedCrop(o) => {
                if o.size == 0 {
                    return invalid("size must be at least 1".into());
                }
                check_range(op, "scale", o.scale, 1.0)?;
                check_range(op, "ratio", o.ratio, f32::INFINITY)
            }
            Op::HorizontalFlip(o) => check_p(op, o.p),
            Op::ColorJitter(o) => {
                check_p(op, o.p)?;
                for (name, v) in [
                    ("brightness", o.brightness),
                    ("contrast", o.contrast),
                    ("saturation", o.saturation),
                ] {
                    if !(v.is_finite() && v >= 0.0) {
                        return invalid(format!("{name} = {v}, expected a value >= 0"));
                    }
                }
                if !(0.0..=0.5).contains(&o.hue) {
                    return invalid(format!(
                        "hue = {}, expected a value in [0, 0.5] (a fraction of the colour circle)",
                        o.hue
                    ));
                }
                Ok(())
            }
            Op::Grayscale(o) => check_p(op, o.p),
            Op::GaussianBlur(o) => {
                check_p(op, o.p)?;
                if o.kernel_size % 2 == 0 {
                    return invalid(format!("kernel_size {} must be odd", o.kernel_size));
                }
                check_range(op, "sigma", o.sigma, f32::INFINITY)
            }
            Op::Cutout(o) => {
                check_p(op, o.p)?;
                if o.size == 0 {
                    return invalid("size must be at least 1".into());
                }
                Ok(())
            }
            Op::GaussianNoise(o) => {
                if !(o.std.is_finite() && o.std >= 0.0) {
                    return invalid(format!("std = {}, expected a value >= 0", o.std));
                }
                Ok(())
            }
            Op::RandomMask(o) => check_p(op, o.p),
            Op::Paired => Ok(()),
        }
    }

    /// Checks the parameters against the shape this op receives and returns the shape it
    /// produces.
    pub fn output_shape(&self, input: SampleShape) -> Result<SampleShape, DataError> {
        self.check_settings()?;
        let op = self.name();
        let invalid = |reason: String| DataError::InvalidOp { op, reason };
        let image = || match input {
            SampleShape::Image {
                channels,
                height,
                width,
            } => Ok((channels, height, width)),
            SampleShape::Dense { .. } => Err(invalid(format!(
                "needs an image, but the data is a {input}"
            ))),
        };
        match self {
            Op::RandomResizedCrop(o) => {
                let (channels, h, w) = image()?;
                if o.size > h.min(w) {
                    return Err(invalid(format!(
                        "crop size {} is larger than the {h}x{w} image",
                        o.size
                    )));
                }
                Ok(SampleShape::Image {
                    channels,
                    height: o.size,
                    width: o.size,
                })
            }
            Op::HorizontalFlip(_) => {
                image()?;
                Ok(input)
            }
            Op::ColorJitter(o) => {
                let (channels, _, _) = image()?;
                if o.saturation > 0.0 && channels != 3 {
                    return Err(invalid(format!(
                        "saturation needs 3 channels, the image has {channels}"
                    )));
                }
                if o.hue > 0.0 && channels != 3 {
                    return Err(invalid(format!(
                        "hue needs 3 channels, the image has {channels}"
                    )));
                }
                if o.contrast > 0.0 && channels != 3 && channels != 1 {
                    return Err(invalid(format!(
                        "contrast needs 1 or 3 channels, the image has {channels}"
                    )));
                }
                Ok(input)
            }
            Op::Grayscale(_) => {
                let (channels, _, _) = image()?;
                if channels != 3 && channels != 1 {
                    return Err(invalid(format!(
                        "needs 1 or 3 channels, the image has {channels}"
                    )));
                }
                Ok(input)
            }
            Op::GaussianBlur(o) => {
                let (_, h, w) = image()?;
                // Reflect padding can only mirror an image that is wider than the padding.
                if o.kernel_size / 2 >= h.min(w) {
                    return Err(invalid(format!(
                        "kernel_size {} is too large for the {h}x{w} image (at most {})",
                        o.kernel_size,
                        2 * h.min(w) - 1
                    )));
                }
                Ok(input)
            }
            Op::Cutout(o) => {
                let (_, h, w) = image()?;
                if o.size > h.min(w) {
                    return Err(invalid(format!(
                        "size {} must be between 1 and the side of the {h}x{w} image",
                        o.size
                    )));
                }
                Ok(input)
            }
            Op::GaussianNoise(_) | Op::RandomMask(_) | Op::Paired => Ok(input),
        }
    }
}

fn check_p(op: &'static str, p: f32) -> Result<(), DataError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(DataError::InvalidOp {
            op,
            reason: format!("probability p = {p} is outside [0, 1]"),
        });
    }
    Ok(())
}

/// A `(lo, hi)` range with `0 < lo <= hi <= max`.
fn check_range(op: &'static str, name: &str, r: (f32, f32), max: f32) -> Result<(), DataError> {
    let (lo, hi) = r;
    if !(lo > 0.0 && lo <= hi && hi <= max && hi.is_finite()) {
        let bound = if max.is_finite() {
            format!(" <= {max}")
        } else {
            String::new()
        };
        return Err(DataError::InvalidOp {
            op,
            reason: format!("{name} = ({lo}, {hi}), expected 0 < lo <= hi{bound}"),
        });
    }
    Ok(())
}

/// The shape a sample of shape `input` has after `ops`, checking every op on the way.
pub fn output_shape(input: SampleShape, ops: &[Op]) -> Result<SampleShape, DataError> {
    if ops.iter().skip(1).any(|op| *op == Op::Paired) {
        return Err(DataError::InvalidOp {
            op: "paired",
            reason: "it replaces the sample, so it must be the first op of its view".into(),
        });
    }
    ops.iter()
        .try_fold(input, |shape, op| op.output_shape(shape))
}

/// Where a view starts (the sample, or its paired view) and the ops that follow.
fn view_source<'a>(
    dataset: &'a Dataset,
    ops: &'a [Op],
) -> Result<(&'a Features, &'a [Op]), DataError> {
    match ops.split_first() {
        Some((Op::Paired, rest)) => match &dataset.paired {
            Some(p) => Ok((p, rest)),
            None => Err(DataError::InvalidOp {
                op: "paired",
                reason: "the dataset has no paired views: load it with `view_columns`".into(),
            }),
        },
        _ => Ok((&dataset.features, ops)),
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream of one (seed, epoch, sample, view). Chaining (rather than XOR-ing the
/// four numbers together) keeps e.g. (epoch 1, sample 2) and (epoch 2, sample 1) apart.
pub fn sample_rng(seed: u64, epoch: u64, index: u64, view: u64) -> ChaCha8Rng {
    let mut h = splitmix64(seed);
    for x in [epoch, index, view] {
        h = splitmix64(h ^ x);
    }
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
        h = splitmix64(h.wrapping_add(i as u64));
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// For each view, the samples at `indices` after that view's ops, as one contiguous
/// `indices.len() x output_dim` batch with `normalisation` applied. Sample `indices[k]` of
/// view `v` uses [`sample_rng`]`(seed, epoch, indices[k], v)`.
pub fn make_views(
    dataset: &Dataset,
    indices: &[usize],
    ops_per_view: &[Vec<Op>],
    seed: u64,
    epoch: u64,
    normalisation: &Normalisation,
) -> Result<Vec<Vec<f32>>, DataError> {
    let mut views = Vec::new();
    make_views_into(
        dataset,
        indices,
        ops_per_view,
        seed,
        epoch,
        normalisation,
        &mut views,
    )?;
    Ok(views)
}

/// [`make_views`] writing into `views`, whose buffers are resized and reused: a training
/// loop that keeps them across steps skips allocating and page-faulting in a fresh batch
/// per view per step, which cost 20-40% of the total for 32x32 images at batch 256.
pub fn make_views_into(
    dataset: &Dataset,
    indices: &[usize],
    ops_per_view: &[Vec<Op>],
    seed: u64,
    epoch: u64,
    normalisation: &Normalisation,
    views: &mut Vec<Vec<f32>>,
) -> Result<(), DataError> {
    let n = dataset.len();
    if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
        return Err(DataError::InvalidArgument(format!(
            "make_views: sample index {bad} out of range for a dataset of {n} samples"
        )));
    }
    let input = dataset.sample_shape();
    // Everything is checked before any buffer is touched, so an error leaves `views` as it
    // was.
    let mut plans = Vec::with_capacity(ops_per_view.len());
    let mut sources = Vec::with_capacity(ops_per_view.len());
    for (v, ops) in ops_per_view.iter().enumerate() {
        sources.push(view_source(dataset, ops)?);
        let shape = output_shape(input, ops)?;
        if shape.numel() == 0 {
            return Err(DataError::InvalidArgument(format!(
                "make_views: view {v} produces empty samples ({shape})"
            )));
        }
        plans.push((shape.numel(), normalisation.prepare(shape)?));
    }
    views.resize_with(ops_per_view.len(), Vec::new);
    for (v, (((features, ops), (out_dim, norm)), batch)) in
        sources.iter().zip(&plans).zip(views.iter_mut()).enumerate()
    {
        // Every value is overwritten below, so only growth needs filling.
        batch.resize(indices.len() * out_dim, 0.0);
        batch
            .par_chunks_mut(*out_dim)
            .zip(indices.par_iter())
            .with_min_len(8)
            .for_each_init(Scratch::default, |scratch, (out, &i)| {
                let mut rng = sample_rng(seed, epoch, i as u64, v as u64);
                run_pipeline(features, i, ops, &mut rng, scratch, norm, out);
            });
    }
    Ok(())
}

/// One sample of one view, exactly as [`make_views`] computes it; `out` must hold the
/// [`output_shape`] of `ops`.
#[allow(clippy::too_many_arguments)]
pub fn augment_sample(
    dataset: &Dataset,
    index: usize,
    ops: &[Op],
    seed: u64,
    epoch: u64,
    view: u64,
    normalisation: &Normalisation,
    out: &mut [f32],
) -> Result<(), DataError> {
    if index >= dataset.len() {
        return Err(DataError::InvalidArgument(format!(
            "augment_sample: sample index {index} out of range for a dataset of {} samples",
            dataset.len()
        )));
    }
    let shape = output_shape(dataset.sample_shape(), ops)?;
    if out.len() != shape.numel() {
        return Err(DataError::InvalidArgument(format!(
            "augment_sample: output buffer holds {} values, the view produces {} ({shape})",
            out.len(),
            shape.numel()
        )));
    }
    let norm = normalisation.prepare(shape)?;
    let mut rng = sample_rng(seed, epoch, index as u64, view);
    let (features, ops) = view_source(dataset, ops)?;
    run_pipeline(
        features,
        index,
        ops,
        &mut rng,
        &mut Scratch::default(),
        &norm,
        out,
    );
    Ok(())
}

/// Per-worker buffers, reused across samples so the hot loop does not allocate once they
/// have grown to the largest image seen.
#[derive(Default)]
struct Scratch {
    cur: Vec<f32>,
    tmp: Vec<f32>,
    alt: Vec<f32>,
    taps_x: Taps,
    taps_y: Taps,
    kernel: Vec<f32>,
    row: Vec<f32>,
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    c: usize,
    h: usize,
    w: usize,
}

/// Callers have validated `ops` against the dataset (via [`output_shape`]) and `index`
/// against its length, so nothing here can fail.
fn run_pipeline(
    features: &Features,
    index: usize,
    ops: &[Op],
    rng: &mut ChaCha8Rng,
    s: &mut Scratch,
    norm: &Normaliser,
    out: &mut [f32],
) {
    let dim = features.dim();
    match features {
        Features::Images {
            data,
            height,
            width,
            channels,
        } => {
            let src = &data[index * dim..(index + 1) * dim];
            let mut d = Dims {
                c: *channels,
                h: *height,
                w: *width,
            };
            let rest = match ops.first() {
                None => {
                    norm.image_u8(src, out);
                    return;
                }
                // Cropping straight from the u8 pixels skips converting pixels that the crop
                // throws away.
                Some(Op::RandomResizedCrop(o)) => {
                    let crop = crop_box(o, d.h, d.w, rng);
                    resize(src, d, crop, o.size, INV_255, s);
                    std::mem::swap(&mut s.cur, &mut s.alt);
                    d.h = o.size;
                    d.w = o.size;
                    &ops[1..]
                }
                Some(_) => {
                    s.cur.clear();
                    s.cur.extend(src.iter().map(|&x| f32::from(x) * INV_255));
                    ops
                }
            };
            for op in rest {
                apply_image_op(op, &mut d, s, rng);
            }
            debug_assert!(norm.is_image());
            norm.image_f32(&s.cur, out);
        }
        Features::Dense { data, .. } => {
            norm.dense(&data[index * dim..(index + 1) * dim], out);
            for op in ops {
                match op {
                    Op::GaussianNoise(o) => add_noise(out, o.std, rng),
                    Op::RandomMask(o) => random_mask(out, o.p, rng),
                    // Image ops were rejected by `output_shape` for dense data.
                    _ => {}
                }
            }
        }
    }
}

fn apply_image_op(op: &Op, d: &mut Dims, s: &mut Scratch, rng: &mut ChaCha8Rng) {
    match op {
        Op::RandomResizedCrop(o) => {
            let crop = crop_box(o, d.h, d.w, rng);
            let src = std::mem::take(&mut s.cur);
            resize(&src, *d, crop, o.size, 1.0, s);
            s.cur = src;
            std::mem::swap(&mut s.cur, &mut s.alt);
            d.h = o.size;
            d.w = o.size;
        }
        Op::HorizontalFlip(o) => {
            if rng.random::<f32>() < o.p {
                for row in s.cur.chunks_exact_mut(d.w) {
                    row.reverse();
                }
            }
        }
        Op::ColorJitter(o) => color_jitter(o, *d, &mut s.cur, rng),
        Op::Grayscale(o) => {
            if rng.random::<f32>() < o.p && d.c == 3 {
                let plane = d.h * d.w;
                let (r, rest) = s.cur.split_at_mut(plane);
                let (g, b) = rest.split_at_mut(plane);
                for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
                    let y = luma(*r, *g, *b);
                    (*r, *g, *b) = (y, y, y);
                }
            }
        }
        Op::GaussianBlur(o) => gaussian_blur(o, *d, s, rng),
        Op::Cutout(o) => {
            if rng.random::<f32>() < o.p {
                let cy = rng.random_range(0..d.h);
                let cx = rng.random_range(0..d.w);
                let (y0, y1) = (
                    cy.saturating_sub(o.size / 2),
                    (cy + o.size - o.size / 2).min(d.h),
                );
                let (x0, x1) = (
                    cx.saturating_sub(o.size / 2),
                    (cx + o.size - o.size / 2).min(d.w),
                );
                for plane in s.cur.chunks_exact_mut(d.h * d.w) {
                    for row in plane.chunks_exact_mut(d.w).take(y1).skip(y0) {
                        row[x0..x1].fill(0.0);
                    }
                }
            }
        }
        Op::GaussianNoise(o) => add_noise(&mut s.cur, o.std, rng),
        Op::RandomMask(o) => random_mask(&mut s.cur, o.p, rng),
        // Consumed by `view_source` before the ops run.
        Op::Paired => {}
    }
}

fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// torchvision's `rgb_to_grayscale` on float tensors (0.2989, not ITU-R 601-2's 0.299, which
/// PIL's integer conversion uses), so grayscale, contrast and saturation match it.
fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.2989 * r + 0.587 * g + 0.114 * b
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct CropBox {
    top: usize,
    left: usize,
    h: usize,
    w: usize,
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a random area and aspect
/// ratio, then a centre crop clamped to the ratio range.
fn crop_box(o: &RandomResizedCrop, height: usize, width: usize, rng: &mut ChaCha8Rng) -> CropBox {
    let area = (height * width) as f64;
    let (ratio_lo, ratio_hi) = (f64::from(o.ratio.0), f64::from(o.ratio.1));
    let (log_lo, log_hi) = (ratio_lo.ln(), ratio_hi.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, f64::from(o.scale.0), f64::from(o.scale.1));
        let aspect = uniform(rng, log_lo, log_hi).exp();
        // Python's `round` rounds halves to even.
        let w = (target * aspect).sqrt().round_ties_even();
        let h = (target / aspect).sqrt().round_ties_even();
        if w >= 1.0 && w <= width as f64 && h >= 1.0 && h <= height as f64 {
            let (w, h) = (w as usize, h as usize);
            return CropBox {
                top: rng.random_range(0..=height - h),
                left: rng.random_range(0..=width - w),
                h,
                w,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio_lo {
        (width, (width as f64 / ratio_lo).round_ties_even() as usize)
    } else if in_ratio > ratio_hi {
        (
            (height as f64 * ratio_hi).round_ties_even() as usize,
            height,
        )
    } else {
        (width, height)
    };
    let (w, h) = (w.clamp(1, width), h.clamp(1, height));
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        h,
        w,
    }
}

/// Per-output-pixel input ranges and weights along one axis.
#[derive(Default)]
struct Taps {
    start: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<f32>,
    stride: usize,
}

impl Taps {
    /// Triangle-filter taps mapping `in_len` inputs onto `out_len`
    /// outputs (pixel centres aligned, as `align_corners=False`). The filter widens with the
    /// shrink factor, which is bilinear when enlarging and antialiased when shrinking (the
    /// PIL and torchvision `antialias=True` scheme).
    fn compute(&mut self, in_len: usize, out_len: usize) {
        let scale = in_len as f64 / out_len as f64;
        let filter_scale = scale.max(1.0);
        let inv_filter_scale = 1.0 / filter_scale;
        let support = filter_scale;
        // When enlarging, the support window [c - 0.5, c + 1.5) always covers exactly two
        // pixels, so two taps suffice (PIL reserves three); that saves a third of the work
        // of the common upscaling crop.
        let stride = if scale <= 1.0 {
            2
        } else {
            support.ceil() as usize * 2 + 1
        };
        self.stride = stride;
        self.start.clear();
        self.count.clear();
        self.weights.clear();
        self.weights.resize(out_len * stride, 0.0);
        for o in 0..out_len {
            let center = (o as f64 + 0.5) * scale;
            // Float-to-int casts truncate (and saturate negatives to 0), which equals floor
            // here and avoids a libm call on baseline x86-64.
            let lo = (center - support + 0.5) as usize;
            let hi = ((center + support + 0.5) as usize).min(in_len);
            let lo = lo.min(in_len - 1);
            let n = hi.saturating_sub(lo).clamp(1, stride);
            let ws = &mut self.weights[o * stride..o * stride + n];
            let mut total = 0.0f64;
            for (k, w) in ws.iter_mut().enumerate() {
                let x = ((lo + k) as f64 - center + 0.5) * inv_filter_scale;
                let v = (1.0 - x.abs()).max(0.0);
                *w = v as f32;
                total += v;
            }
            if total > 0.0 {
                let inv_total = 1.0 / total;
                for w in ws.iter_mut() {
                    *w = (f64::from(*w) * inv_total) as f32;
                }
            }
            self.start.push(lo);
            self.count.push(n);
        }
    }
}

/// Crops `crop` out of `src` (C x H x W) and resizes it to `size x size` into `s.alt`,
/// multiplying by `gain` (so u8 pixels land in [0, 1]). Rows first, then columns.
fn resize<T: Copy>(src: &[T], d: Dims, crop: CropBox, size: usize, gain: f32, s: &mut Scratch)
where
    f32: From<T>,
{
    s.taps_x.compute(crop.w, size);
    s.taps_y.compute(crop.h, size);
    let (tx, ty) = (&s.taps_x, &s.taps_y);

    // The row copy is padded with zeros so every output can read a full `stride` of taps
    // (the weights past a tap count are zero), which lets the common strides run as
    // fixed-length loops.
    s.row.resize(crop.w + tx.stride, 0.0);
    s.row[crop.w..].fill(0.0);
    // Every element of `tmp` and `alt` is assigned below, so they are only resized, not
    // cleared: zero-filling them was a tenth of the crop's cost.
    s.tmp.resize(d.c * crop.h * size, 0.0);
    for (c, mid_plane) in s.tmp.chunks_exact_mut(crop.h * size).enumerate() {
        for (y, mid_row) in mid_plane.chunks_exact_mut(size).enumerate() {
            let row = &src[(c * d.h + crop.top + y) * d.w + crop.left..][..crop.w];
            for (r, &p) in s.row.iter_mut().zip(row) {
                *r = f32::from(p);
            }
            match tx.stride {
                2 => taps_pass::<2>(&s.row, tx, mid_row),
                3 => taps_pass::<3>(&s.row, tx, mid_row),
                5 => taps_pass::<5>(&s.row, tx, mid_row),
                _ => {
                    for (ox, m) in mid_row.iter_mut().enumerate() {
                        let start = tx.start[ox];
                        let ws = &tx.weights[ox * tx.stride..][..tx.stride];
                        *m = ws
                            .iter()
                            .zip(&s.row[start..start + tx.stride])
                            .fold(0.0, |acc, (w, p)| acc + w * p);
                    }
                }
            }
        }
    }

    s.alt.resize(d.c * size * size, 0.0);
    for (out_plane, mid_plane) in s
        .alt
        .chunks_exact_mut(size * size)
        .zip(s.tmp.chunks_exact(crop.h * size))
    {
        for (oy, out_row) in out_plane.chunks_exact_mut(size).enumerate() {
            let (start, n) = (ty.start[oy], ty.count[oy]);
            for (k, &w) in ty.weights[oy * ty.stride..][..n].iter().enumerate() {
                let w = w * gain;
                let mid_row = &mid_plane[(start + k) * size..][..size];
                if k == 0 {
                    for (o, m) in out_row.iter_mut().zip(mid_row) {
                        *o = w * m;
                    }
                } else {
                    for (o, m) in out_row.iter_mut().zip(mid_row) {
                        *o += w * m;
                    }
                }
            }
        }
    }
}

fn taps_pass<const K: usize>(row: &[f32], taps: &Taps, out: &mut [f32]) {
    let (weights, _) = taps.weights.as_chunks::<K>();
    for ((o, &start), ws) in out.iter_mut().zip(&taps.start).zip(weights) {
        // Fixed-size windows let the compiler drop per-tap bounds checks and unroll.
        if let Some(px) = row
            .get(start..start + K)
            .and_then(|p| <&[f32; K]>::try_from(p).ok())
        {
            let mut acc = ws[0] * px[0];
            for k in 1..K {
                acc += ws[k] * px[k];
            }
            *o = acc;
        }
    }
}

fn jitter_factor(rng: &mut ChaCha8Rng, v: f32) -> Option<f32> {
    (v > 0.0).then(|| uniform(rng, f64::from((1.0 - v).max(0.0)), f64::from(1.0 + v)) as f32)
}

/// One ColorJitter draw: the order of the four adjustments (0 brightness, 1 contrast,
/// 2 saturation, 3 hue, as torchvision numbers them) and each enabled factor.
#[derive(Clone, Debug, PartialEq)]
struct JitterDraw {
    order: [u8; 4],
    brightness: Option<f32>,
    contrast: Option<f32>,
    saturation: Option<f32>,
    hue: Option<f32>,
}

/// `None` when the jitter is skipped (probability 1 - `p`).
fn jitter_draw(o: &ColorJitter, rng: &mut ChaCha8Rng) -> Option<JitterDraw> {
    if rng.random::<f32>() >= o.p {
        return None;
    }
    // torchvision permutes all four adjustments. Without hue the permutation of the other
    // three is drawn as before hue existed, so views made without hue keep their bits; the
    // order of the enabled adjustments is uniform either way.
    let mut order = [0u8, 1, 2, 3];
    if o.hue > 0.0 {
        order.shuffle(rng);
    } else {
        order[..3].shuffle(rng);
    }
    Some(JitterDraw {
        order,
        brightness: jitter_factor(rng, o.brightness),
        contrast: jitter_factor(rng, o.contrast),
        saturation: jitter_factor(rng, o.saturation),
        hue: (o.hue > 0.0).then(|| uniform(rng, -f64::from(o.hue), f64::from(o.hue)) as f32),
    })
}

fn color_jitter(o: &ColorJitter, d: Dims, img: &mut [f32], rng: &mut ChaCha8Rng) {
    if let Some(draw) = jitter_draw(o, rng) {
        apply_jitter(img, d, &draw);
    }
}

fn apply_jitter(img: &mut [f32], d: Dims, draw: &JitterDraw) {
    for step in draw.order {
        match (
            step,
            draw.brightness,
            draw.contrast,
            draw.saturation,
            draw.hue,
        ) {
            (0, Some(f), ..) => adjust_brightness(img, f),
            (1, _, Some(f), ..) => adjust_contrast(img, d, f),
            (2, _, _, Some(f), _) => adjust_saturation(img, d, f),
            (3, .., Some(f)) => adjust_hue(img, d, f),
            _ => {}
        }
    }
}

/// torchvision `adjust_brightness`: a blend with black.
fn adjust_brightness(img: &mut [f32], f: f32) {
    for x in img.iter_mut() {
        *x = (*x * f).clamp(0.0, 1.0);
    }
}

/// torchvision `adjust_contrast`: a blend with the mean of the grayscale image.
fn adjust_contrast(img: &mut [f32], d: Dims, f: f32) {
    let plane = d.h * d.w;
    let mean = if d.c == 3 {
        let (r, rest) = img.split_at(plane);
        let (g, b) = rest.split_at(plane);
        r.iter()
            .zip(g)
            .zip(b)
            .map(|((r, g), b)| luma(*r, *g, *b))
            .sum::<f32>()
            / plane as f32
    } else {
        img.iter().sum::<f32>() / img.len() as f32
    };
    let add = (1.0 - f) * mean;
    for x in img.iter_mut() {
        *x = (f * *x + add).clamp(0.0, 1.0);
    }
}

/// torchvision `adjust_saturation`: a blend with the grayscale image; RGB only.
fn adjust_saturation(img: &mut [f32], d: Dims, f: f32) {
    if d.c != 3 {
        return;
    }
    let plane = d.h * d.w;
    let (r, rest) = img.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let keep = 1.0 - f;
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let add = keep * luma(*r, *g, *b);
        *r = (f * *r + add).clamp(0.0, 1.0);
        *g = (f * *g + add).clamp(0.0, 1.0);
        *b = (f * *b + add).clamp(0.0, 1.0);
    }
}

/// torchvision `adjust_hue` on float tensors: RGB to HSV, the hue shifted by `f` (a fraction
/// of the circle, wrapped into [0, 1)), back to RGB; RGB only. The arithmetic follows
/// `_rgb2hsv` / `_hsv2rgb` step by step (f32, the same tie rules for which channel is the
/// maximum), so it matches them to rounding.
fn adjust_hue(img: &mut [f32], d: Dims, f: f32) {
    if d.c != 3 {
        return;
    }
    let plane = d.h * d.w;
    let (r, rest) = img.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (h, s, v) = rgb_to_hsv(*r, *g, *b);
        // torch's `%`: the remainder takes the divisor's sign.
        let mut h = (h + f) % 1.0;
        if h < 0.0 {
            h += 1.0;
        }
        (*r, *g, *b) = hsv_to_rgb(h, s, v);
    }
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let crd = if eqc { 1.0 } else { cr };
    let rc = (maxc - r) / crd;
    let gc = (maxc - g) / crd;
    let bc = (maxc - b) / crd;
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0) % 1.0, s, maxc)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Mirror index for reflect padding; valid while the overhang is shorter than `n`.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let r = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    r.clamp(0, n - 1) as usize
}

fn gaussian_blur(o: &GaussianBlur, d: Dims, s: &mut Scratch, rng: &mut ChaCha8Rng) {
    if rng.random::<f32>() >= o.p {
        return;
    }
    let sigma = uniform(rng, f64::from(o.sigma.0), f64::from(o.sigma.1)) as f32;
    let half = (o.kernel_size / 2) as isize;
    s.kernel.clear();
    s.kernel.extend((-half..=half).map(|i| {
        let x = i as f32 / sigma;
        (-0.5 * x * x).exp()
    }));
    let total: f32 = s.kernel.iter().sum();
    for k in &mut s.kernel {
        *k /= total;
    }

    s.tmp.resize(s.cur.len(), 0.0);
    for (row, out) in s.cur.chunks_exact(d.w).zip(s.tmp.chunks_exact_mut(d.w)) {
        for (x, o) in out.iter_mut().enumerate() {
            *o = s
                .kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * row[reflect(x as isize + k as isize - half, d.w)])
                .sum();
        }
    }
    for (out_plane, in_plane) in s
        .cur
        .chunks_exact_mut(d.h * d.w)
        .zip(s.tmp.chunks_exact(d.h * d.w))
    {
        for (y, out_row) in out_plane.chunks_exact_mut(d.w).enumerate() {
            out_row.fill(0.0);
            for (k, &w) in s.kernel.iter().enumerate() {
                let sy = reflect(y as isize + k as isize - half, d.h);
                for (o, v) in out_row.iter_mut().zip(&in_plane[sy * d.w..(sy + 1) * d.w]) {
                    *o += w * v;
                }
            }
        }
    }
}

/// Random words are drawn in blocks because a bulk ChaCha fill costs a fraction of
/// per-call generation; the block size keeps the buffer on the stack.
const RANDOM_BLOCK: usize = 256;

fn add_noise(x: &mut [f32], std: f32, rng: &mut ChaCha8Rng) {
    if std == 0.0 {
        return;
    }
    let table = ziggurat();
    let mut bits = [0u32; RANDOM_BLOCK];
    for chunk in x.chunks_mut(RANDOM_BLOCK) {
        let bits = &mut bits[..chunk.len()];
        rng.fill(&mut *bits);
        for (v, &b) in chunk.iter_mut().zip(bits.iter()) {
            *v += std * table.sample(b, rng) as f32;
        }
    }
}

fn random_mask(x: &mut [f32], p: f32, rng: &mut ChaCha8Rng) {
    if p == 0.0 {
        return;
    }
    // P(word < threshold) = threshold / 2^32 = p, with p = 1 masking everything.
    let threshold = (f64::from(p) * 4_294_967_296.0) as u64;
    let mut bits = [0u32; RANDOM_BLOCK];
    for chunk in x.chunks_mut(RANDOM_BLOCK) {
        let bits = &mut bits[..chunk.len()];
        rng.fill(&mut *bits);
        for (v, &b) in chunk.iter_mut().zip(bits.iter()) {
            if u64::from(b) < threshold {
                *v = 0.0;
            }
        }
    }
}

/// Marsaglia & Tsang's ziggurat for N(0, 1) (J. Stat. Softw. 5(8), 2000), with 256
/// layers. It is used instead of `rand_distr::StandardNormal` because noise is the most
/// expensive op of a typical view, and this variant needs one 32-bit word per draw ~99% of
/// the time where `StandardNormal` needs a 64-bit word and more arithmetic (about 2.5x
/// slower here). The word's low 8 bits pick the layer and the whole word, as a signed
/// integer, the position in it.
struct Ziggurat {
    k: [u32; ZIGGURAT_LAYERS],
    w: [f64; ZIGGURAT_LAYERS],
    f: [f64; ZIGGURAT_LAYERS],
}

const ZIGGURAT_LAYERS: usize = 256;
/// Start of the tail: the right edge of the base layer.
const ZIGGURAT_R: f64 = 3.654_152_885_361_009;
/// Area of each layer.
const ZIGGURAT_V: f64 = 4.928_673_233_99e-3;

fn ziggurat() -> &'static Ziggurat {
    static TABLE: std::sync::OnceLock<Ziggurat> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const LAST: usize = ZIGGURAT_LAYERS - 1;
        let m1 = 2_147_483_648.0f64;
        let v = ZIGGURAT_V;
        let mut dn = ZIGGURAT_R;
        let mut tn = dn;
        let q = v / (-0.5 * dn * dn).exp();
        let mut z = Ziggurat {
            k: [0; ZIGGURAT_LAYERS],
            w: [0.0; ZIGGURAT_LAYERS],
            f: [0.0; ZIGGURAT_LAYERS],
        };
        z.k[0] = ((dn / q) * m1) as u32;
        z.w[0] = q / m1;
        z.w[LAST] = dn / m1;
        z.f[0] = 1.0;
        z.f[LAST] = (-0.5 * dn * dn).exp();
        for i in (1..LAST).rev() {
            dn = (-2.0 * (v / dn + (-0.5 * dn * dn).exp()).ln()).sqrt();
            z.k[i + 1] = ((dn / tn) * m1) as u32;
            tn = dn;
            z.f[i] = (-0.5 * dn * dn).exp();
            z.w[i] = dn / m1;
        }
        z
    })
}

impl Ziggurat {
    /// One draw from a random word, taking more words from `rng` only when the word falls
    /// outside the rectangle of its layer.
    #[inline]
    fn sample(&self, bits: u32, rng: &mut ChaCha8Rng) -> f64 {
        let hz = bits as i32;
        let iz = bits as usize % ZIGGURAT_LAYERS;
        if hz.unsigned_abs() < self.k[iz] {
            return f64::from(hz) * self.w[iz];
        }
        self.sample_slow(hz, iz, rng)
    }

    #[cold]
    fn sample_slow(&self, mut hz: i32, mut iz: usize, rng: &mut ChaCha8Rng) -> f64 {
        // Uniform on (0, 1), never 0, so its logarithm is finite.
        let open01 = |rng: &mut ChaCha8Rng| (f64::from(rng.next_u32()) + 0.5) / 4_294_967_296.0;
        loop {
            if iz == 0 {
                loop {
                    let x = -open01(rng).ln() / ZIGGURAT_R;
                    let y = -open01(rng).ln();
                    if y + y >= x * x {
                        return if hz > 0 {
                            ZIGGURAT_R + x
                        } else {
                            -ZIGGURAT_R - x
                        };
                    }
                }
            }
            let x = f64::from(hz) * self.w[iz];
            if self.f[iz] + open01(rng) * (self.f[iz - 1] - self.f[iz]) < (-0.5 * x * x).exp() {
                return x;
            }
            let bits = rng.next_u32();
            hz = bits as i32;
            iz = bits as usize % ZIGGURAT_LAYERS;
            if hz.unsigned_abs() < self.k[iz] {
                return f64::from(hz) * self.w[iz];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_views_start_from_the_second_view_and_only_first() {
        let mut ds = dense(3, 2, 1.0);
        let views = [vec![], vec![Op::Paired]];
        let err = make_views(&ds, &[0, 1], &views, 1, 0, &Normalisation::None).unwrap_err();
        assert!(err.to_string().contains("view_columns"), "{err}");
        ds.paired = Some(Features::Dense {
            data: vec![5.0; 6],
            dim: 2,
        });
        let v = make_views(&ds, &[0, 2], &views, 1, 0, &Normalisation::None).unwrap();
        assert_eq!(v[0], vec![1.0; 4]);
        assert_eq!(v[1], vec![5.0; 4]);
        let noisy = [vec![
            Op::Paired,
            Op::GaussianNoise(GaussianNoise { std: 1.0 }),
        ]];
        let v = make_views(&ds, &[0], &noisy, 1, 0, &Normalisation::None).unwrap();
        assert!(v[0].iter().all(|&x| x != 5.0));
        let late = [vec![
            Op::GaussianNoise(GaussianNoise { std: 1.0 }),
            Op::Paired,
        ]];
        let err = make_views(&ds, &[0], &late, 1, 0, &Normalisation::None).unwrap_err();
        assert!(err.to_string().contains("first op"), "{err}");
    }

    fn images(n: usize, c: usize, h: usize, w: usize) -> Dataset {
        let data = (0..n * c * h * w)
            .map(|i| ((i * 2_654_435_761usize) >> 7) as u8)
            .collect();
        Dataset::new(
            Features::Images {
                data,
                height: h,
                width: w,
                channels: c,
            },
            vec![],
            None,
        )
        .unwrap()
    }

    fn dense(n: usize, dim: usize, value: f32) -> Dataset {
        Dataset::new(
            Features::Dense {
                data: vec![value; n * dim],
                dim,
            },
            vec![],
            None,
        )
        .unwrap()
    }

    fn simclr_ops(size: usize) -> Vec<Op> {
        vec![
            Op::RandomResizedCrop(RandomResizedCrop::new(size)),
            Op::HorizontalFlip(HorizontalFlip { p: 0.5 }),
            Op::ColorJitter(ColorJitter {
                hue: 0.1,
                p: 0.8,
                ..ColorJitter::new(0.4, 0.4, 0.4)
            }),
            Op::Grayscale(Grayscale { p: 0.2 }),
            Op::GaussianBlur(GaussianBlur {
                kernel_size: 3,
                sigma: (0.1, 2.0),
                p: 0.5,
            }),
            Op::Cutout(Cutout { size: 4, p: 0.5 }),
            Op::GaussianNoise(GaussianNoise { std: 0.05 }),
        ]
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
        v.iter()
            .map(|b| b.iter().map(|x| x.to_bits()).collect())
            .collect()
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let ds = images(200, 3, 16, 16);
        let views = vec![simclr_ops(12), simclr_ops(16)];
        let idx: Vec<usize> = (0..200).rev().collect();
        let norm = Normalisation::Standardise {
            mean: vec![0.5, 0.4, 0.3],
            std: vec![0.2, 0.25, 0.3],
        };
        let one = pool(1).install(|| make_views(&ds, &idx, &views, 7, 3, &norm).unwrap());
        let four = pool(4).install(|| make_views(&ds, &idx, &views, 7, 3, &norm).unwrap());
        assert_eq!(one[0].len(), 200 * 3 * 12 * 12);
        assert_eq!(one[1].len(), 200 * 3 * 16 * 16);
        assert_eq!(bits(&one), bits(&four));

        // A sample's view does not depend on the batch it is in.
        let single = make_views(&ds, &[5], &views, 7, 3, &norm).unwrap();
        let k = idx.iter().position(|&i| i == 5).unwrap();
        let d = 3 * 12 * 12;
        assert_eq!(single[0], one[0][k * d..(k + 1) * d]);
        let mut out = vec![0.0; d];
        augment_sample(&ds, 5, &views[0], 7, 3, 0, &norm, &mut out).unwrap();
        assert_eq!(out, single[0]);

        let dsd = dense(64, 50, 1.0);
        let ops = vec![vec![
            Op::GaussianNoise(GaussianNoise { std: 0.3 }),
            Op::RandomMask(RandomMask { p: 0.2 }),
        ]];
        let idx: Vec<usize> = (0..64).collect();
        let a =
            pool(1).install(|| make_views(&dsd, &idx, &ops, 1, 0, &Normalisation::None).unwrap());
        let b =
            pool(4).install(|| make_views(&dsd, &idx, &ops, 1, 0, &Normalisation::None).unwrap());
        assert_eq!(bits(&a), bits(&b));
    }

    #[test]
    fn epochs_seeds_and_views_differ() {
        let ds = images(8, 3, 16, 16);
        let views = vec![simclr_ops(16), simclr_ops(16)];
        let idx: Vec<usize> = (0..8).collect();
        let e0 = make_views(&ds, &idx, &views, 7, 0, &Normalisation::None).unwrap();
        let e1 = make_views(&ds, &idx, &views, 7, 1, &Normalisation::None).unwrap();
        let s1 = make_views(&ds, &idx, &views, 8, 0, &Normalisation::None).unwrap();
        assert_ne!(e0[0], e1[0]);
        assert_ne!(e0[0], s1[0]);
        assert_ne!(e0[0], e0[1]);
    }

    #[test]
    fn identities() {
        let ds = images(4, 3, 10, 10);
        let idx = [0, 1, 2, 3];
        let norm = Normalisation::None;
        let plain = make_views(&ds, &idx, &[vec![]], 1, 0, &norm).unwrap();
        assert_eq!(plain[0], ds.batch_f32(&idx, &norm).unwrap());

        let flip = Op::HorizontalFlip(HorizontalFlip { p: 1.0 });
        let crop = Op::RandomResizedCrop(RandomResizedCrop {
            size: 10,
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
        });
        let no_jitter = Op::ColorJitter(ColorJitter::new(0.0, 0.0, 0.0));
        let cases = vec![
            vec![flip.clone(), flip.clone()],
            vec![crop.clone()],
            vec![no_jitter.clone()],
            // The crop identity also holds on float input (crop after another op).
            vec![no_jitter, crop.clone(), crop],
            vec![Op::GaussianNoise(GaussianNoise { std: 0.0 })],
            vec![Op::RandomMask(RandomMask { p: 0.0 })],
            vec![Op::Cutout(Cutout { size: 3, p: 0.0 })],
        ];
        for ops in cases {
            let out = make_views(&ds, &idx, std::slice::from_ref(&ops), 3, 0, &norm).unwrap();
            assert_eq!(bits(&out), bits(&plain), "{ops:?}");
        }
        let once = make_views(&ds, &idx, &[vec![flip]], 3, 0, &norm).unwrap();
        assert_ne!(once[0], plain[0]);
        // Row 0 of channel 0 of sample 0 is mirrored.
        for x in 0..10 {
            assert_eq!(once[0][x], plain[0][9 - x]);
        }
    }

    #[test]
    fn crop_geometry() {
        // Constant images stay constant under any crop, enlarging or shrinking.
        let ds = Dataset::new(
            Features::Images {
                data: vec![200; 2 * 3 * 40 * 30],
                height: 40,
                width: 30,
                channels: 3,
            },
            vec![],
            None,
        )
        .unwrap();
        for size in [7, 30] {
            let ops = vec![vec![Op::RandomResizedCrop(RandomResizedCrop::new(size))]];
            let out = make_views(&ds, &[0, 1], &ops, 1, 0, &Normalisation::None).unwrap();
            assert_eq!(out[0].len(), 2 * 3 * size * size);
            for v in &out[0] {
                assert!((v - 200.0 / 255.0).abs() < 1e-5, "{v}");
            }
        }
        // Boxes respect the image bounds and the requested ranges, and the fallback is a
        // centred crop.
        let mut rng = sample_rng(0, 0, 0, 0);
        let o = RandomResizedCrop {
            size: 8,
            scale: (0.2, 0.5),
            ratio: (0.5, 2.0),
        };
        for _ in 0..1000 {
            let b = crop_box(&o, 40, 30, &mut rng);
            assert!(b.h >= 1 && b.w >= 1 && b.top + b.h <= 40 && b.left + b.w <= 30);
        }
        let wide = RandomResizedCrop {
            size: 4,
            scale: (1.0, 1.0),
            ratio: (3.0, 3.0),
        };
        assert_eq!(
            crop_box(&wide, 10, 10, &mut rng),
            CropBox {
                top: 3,
                left: 0,
                h: 3,
                w: 10
            }
        );
    }

    #[test]
    fn color_ops() {
        let ds = images(3, 3, 8, 8);
        let plain = ds.batch_f32(&[0, 1, 2], &Normalisation::None).unwrap();
        let gray = make_views(
            &ds,
            &[0, 1, 2],
            &[vec![Op::Grayscale(Grayscale { p: 1.0 })]],
            1,
            0,
            &Normalisation::None,
        )
        .unwrap();
        let plane = 64;
        for s in 0..3 {
            let b = s * 3 * plane;
            for i in 0..plane {
                let y = luma(plain[b + i], plain[b + plane + i], plain[b + 2 * plane + i]);
                for c in 0..3 {
                    assert_eq!(gray[0][b + c * plane + i], y);
                }
            }
        }
        let jitter = make_views(
            &ds,
            &[0, 1, 2],
            &[vec![Op::ColorJitter(ColorJitter::new(0.8, 0.8, 0.8))]],
            1,
            0,
            &Normalisation::None,
        )
        .unwrap();
        assert_ne!(jitter[0], plain);
        assert!(jitter[0].iter().all(|v| (0.0..=1.0).contains(v)));

        // A near-zero sigma blur is the identity; blurring keeps a constant image constant.
        let sharp = Op::GaussianBlur(GaussianBlur {
            kernel_size: 5,
            sigma: (1e-3, 1e-3),
            p: 1.0,
        });
        let out = make_views(&ds, &[0, 1, 2], &[vec![sharp]], 1, 0, &Normalisation::None).unwrap();
        assert_eq!(out[0], plain);
        let flat = Dataset::new(
            Features::Images {
                data: vec![90; 3 * 8 * 8],
                height: 8,
                width: 8,
                channels: 3,
            },
            vec![],
            None,
        )
        .unwrap();
        let blur = Op::GaussianBlur(GaussianBlur {
            kernel_size: 7,
            sigma: (2.0, 3.0),
            p: 1.0,
        });
        let out = make_views(&flat, &[0], &[vec![blur]], 1, 0, &Normalisation::None).unwrap();
        assert!(out[0].iter().all(|v| (v - 90.0 / 255.0).abs() < 1e-5));
        // Cutout zeroes at most size x size pixels per channel and at least one.
        let bright = Dataset::new(
            Features::Images {
                data: vec![255; 20 * 3 * 8 * 8],
                height: 8,
                width: 8,
                channels: 3,
            },
            vec![],
            None,
        )
        .unwrap();
        let idx: Vec<usize> = (0..20).collect();
        let cut = Op::Cutout(Cutout { size: 3, p: 1.0 });
        let out = make_views(&bright, &idx, &[vec![cut]], 1, 0, &Normalisation::None).unwrap();
        for sample in out[0].chunks(3 * 64) {
            let zeros = sample.iter().filter(|&&v| v == 0.0).count();
            assert!(zeros % 3 == 0 && (3..=27).contains(&zeros), "{zeros}");
        }
    }

    #[test]
    fn noise_and_mask_statistics() {
        let ds = dense(100, 1000, 0.0);
        let idx: Vec<usize> = (0..100).collect();
        let ops = vec![vec![Op::GaussianNoise(GaussianNoise { std: 0.5 })]];
        let out = make_views(&ds, &idx, &ops, 11, 0, &Normalisation::None).unwrap();
        let n = out[0].len() as f64;
        let mean = out[0].iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = out[0]
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());

        let ds = dense(100, 1000, 1.0);
        let ops = vec![vec![Op::RandomMask(RandomMask { p: 0.3 })]];
        let out = make_views(&ds, &idx, &ops, 11, 0, &Normalisation::None).unwrap();
        let zero = out[0].iter().filter(|&&v| v == 0.0).count() as f64 / n;
        assert!((zero - 0.3).abs() < 0.01, "masked fraction {zero}");
        assert!(out[0].iter().all(|&v| v == 0.0 || v == 1.0));

        // Image noise also works, on [0, 1] pixels before normalisation.
        let img = images(50, 1, 20, 20);
        let idx: Vec<usize> = (0..50).collect();
        let plain = img.batch_f32(&idx, &Normalisation::None).unwrap();
        let ops = vec![vec![Op::GaussianNoise(GaussianNoise { std: 0.1 })]];
        let out = make_views(&img, &idx, &ops, 2, 0, &Normalisation::None).unwrap();
        let diffs: Vec<f64> = out[0]
            .iter()
            .zip(&plain)
            .map(|(a, b)| f64::from(a - b))
            .collect();
        let sd = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
        assert!((sd - 0.1).abs() < 0.005, "std {sd}");
    }

    #[test]
    fn validation_errors() {
        let img = SampleShape::Image {
            channels: 3,
            height: 32,
            width: 32,
        };
        let err =
            output_shape(img, &[Op::RandomResizedCrop(RandomResizedCrop::new(40))]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("40") && msg.contains("32x32"), "{msg}");
        let ds = images(2, 3, 32, 32);
        let too_big = vec![vec![Op::RandomResizedCrop(RandomResizedCrop::new(33))]];
        assert!(make_views(&ds, &[0], &too_big, 0, 0, &Normalisation::None).is_err());

        let shape = output_shape(
            img,
            &[
                Op::RandomResizedCrop(RandomResizedCrop::new(24)),
                Op::HorizontalFlip(HorizontalFlip { p: 0.5 }),
            ],
        )
        .unwrap();
        assert_eq!(
            shape,
            SampleShape::Image {
                channels: 3,
                height: 24,
                width: 24
            }
        );
        // The second crop is checked against the first crop's output.
        assert!(output_shape(
            img,
            &[
                Op::RandomResizedCrop(RandomResizedCrop::new(24)),
                Op::RandomResizedCrop(RandomResizedCrop::new(28)),
            ]
        )
        .is_err());

        let bad = [
            Op::HorizontalFlip(HorizontalFlip { p: 1.5 }),
            Op::Grayscale(Grayscale { p: -0.1 }),
            Op::Cutout(Cutout {
                size: 4,
                p: f32::NAN,
            }),
            Op::RandomMask(RandomMask { p: 2.0 }),
            Op::GaussianNoise(GaussianNoise { std: -1.0 }),
            Op::ColorJitter(ColorJitter::new(-0.1, 0.0, 0.0)),
            Op::GaussianBlur(GaussianBlur {
                kernel_size: 4,
                sigma: (0.1, 2.0),
                p: 1.0,
            }),
            Op::GaussianBlur(GaussianBlur {
                kernel_size: 65,
                sigma: (0.1, 2.0),
                p: 1.0,
            }),
            Op::GaussianBlur(GaussianBlur {
                kernel_size: 3,
                sigma: (2.0, 1.0),
                p: 1.0,
            }),
            Op::RandomResizedCrop(RandomResizedCrop {
                size: 8,
                scale: (0.0, 1.0),
                ratio: (0.75, 1.33),
            }),
            Op::Cutout(Cutout { size: 33, p: 0.5 }),
        ];
        for op in bad {
            let err = output_shape(img, std::slice::from_ref(&op)).unwrap_err();
            assert!(
                matches!(&err, DataError::InvalidOp { op: name, .. } if *name == op.name()),
                "{err}"
            );
        }
        let gray1 = SampleShape::Image {
            channels: 1,
            height: 8,
            width: 8,
        };
        assert!(output_shape(gray1, &[Op::ColorJitter(ColorJitter::new(0.1, 0.1, 0.1))]).is_err());
        assert!(output_shape(gray1, &[Op::ColorJitter(ColorJitter::new(0.1, 0.1, 0.0))]).is_ok());

        let vec_shape = SampleShape::Dense { dim: 10 };
        let err =
            output_shape(vec_shape, &[Op::HorizontalFlip(HorizontalFlip { p: 0.5 })]).unwrap_err();
        assert!(err.to_string().contains("horizontal_flip"));
        assert!(output_shape(vec_shape, &[Op::RandomMask(RandomMask { p: 0.5 })]).is_ok());

        assert!(make_views(&ds, &[2], &[vec![]], 0, 0, &Normalisation::None).is_err());
        let wrong_norm = Normalisation::Standardise {
            mean: vec![0.0; 2],
            std: vec![1.0; 2],
        };
        assert!(make_views(&ds, &[0], &[vec![]], 0, 0, &wrong_norm).is_err());
    }

    #[test]
    fn ziggurat_matches_the_standard_normal() {
        let table = ziggurat();
        let mut rng = sample_rng(5, 0, 0, 0);
        let n = 2_000_000;
        let draws: Vec<f64> = (0..n)
            .map(|_| {
                let b = rng.next_u32();
                table.sample(b, &mut rng)
            })
            .collect();
        let nf = n as f64;
        let mean = draws.iter().sum::<f64>() / nf;
        let var = draws.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / nf;
        let kurt = draws.iter().map(|z| (z - mean).powi(4)).sum::<f64>() / nf / (var * var);
        assert!(mean.abs() < 0.003, "mean {mean}");
        assert!((var - 1.0).abs() < 0.005, "var {var}");
        assert!((kurt - 3.0).abs() < 0.03, "kurtosis {kurt}");
        // Two-sided tail masses of N(0, 1), including beyond the ziggurat's base layer
        // (3.654), which only the tail sampler produces.
        for (t, p) in [
            (0.1, 0.920_344),
            (0.5, 0.617_075),
            (1.0, 0.317_311),
            (1.5, 0.133_614),
            (2.0, 0.045_500),
            (2.5, 0.012_419),
            (3.0, 0.002_700),
            (3.8, 0.000_144_7),
        ] {
            let frac = draws.iter().filter(|z| z.abs() > t).count() as f64 / nf;
            let sd = (p * (1.0 - p) / nf).sqrt();
            assert!(
                (frac - p).abs() < 5.0 * sd,
                "P(|z| > {t}) = {frac}, expected {p}"
            );
        }
        let pos = draws.iter().filter(|&&z| z > 0.0).count() as f64 / nf;
        assert!((pos - 0.5).abs() < 0.002, "{pos}");
    }

    /// tests/fixtures/simclr_views.json, written by tests/fixtures/simclr_views.py with
    /// torchvision on float tensors.
    #[derive(serde::Deserialize)]
    struct TorchFixture {
        images: Vec<FixtureImage>,
        resized_crop: Vec<FixtureCrop>,
        color: Vec<FixtureColor>,
        jitter: Vec<FixtureJitter>,
        crop_stats: Vec<FixtureCropStats>,
    }
    #[derive(serde::Deserialize)]
    struct FixtureImage {
        c: usize,
        h: usize,
        w: usize,
        bytes: Vec<u8>,
    }
    #[derive(serde::Deserialize)]
    struct FixtureCrop {
        image: usize,
        top: usize,
        left: usize,
        h: usize,
        w: usize,
        size: usize,
        out: Vec<f32>,
    }
    #[derive(serde::Deserialize)]
    struct FixtureColor {
        image: usize,
        op: String,
        factor: f32,
        out: Vec<f32>,
    }
    #[derive(serde::Deserialize)]
    struct FixtureJitter {
        image: usize,
        order: [u8; 4],
        brightness: f32,
        contrast: f32,
        saturation: f32,
        hue: f32,
        out: Vec<f32>,
    }
    #[derive(serde::Deserialize)]
    struct FixtureCropStats {
        height: usize,
        width: usize,
        draws: usize,
        area: Vec<u64>,
        log_aspect: Vec<u64>,
        top: Vec<u64>,
    }

    fn torch_fixture() -> TorchFixture {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/simclr_views.json"
        ));
        serde_json::from_str(text).unwrap()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// The tolerance against torchvision: f32 rounding of the same formulas (the fixture is
    /// stored to 8 decimals).
    const TORCH_TOL: f32 = 1e-5;

    #[test]
    fn resized_crop_matches_torchvision() {
        let fx = torch_fixture();
        for case in &fx.resized_crop {
            let img = &fx.images[case.image];
            let d = Dims {
                c: img.c,
                h: img.h,
                w: img.w,
            };
            let crop = CropBox {
                top: case.top,
                left: case.left,
                h: case.h,
                w: case.w,
            };
            // From the bytes (a view's first op) and from floats (a crop after another op).
            let mut s = Scratch::default();
            resize(&img.bytes, d, crop, case.size, INV_255, &mut s);
            let from_bytes = s.alt.clone();
            let floats: Vec<f32> = img.bytes.iter().map(|&b| f32::from(b) * INV_255).collect();
            resize(&floats, d, crop, case.size, 1.0, &mut s);
            for out in [&from_bytes, &s.alt] {
                let err = max_abs_diff(out, &case.out);
                assert!(
                    err < TORCH_TOL,
                    "crop {crop:?} -> {0}x{0}: max |diff| {err}",
                    case.size
                );
            }
        }
    }

    #[test]
    fn color_ops_match_torchvision() {
        let fx = torch_fixture();
        assert!(fx.color.iter().any(|c| c.op == "hue"));
        for case in &fx.color {
            let img = &fx.images[case.image];
            let d = Dims {
                c: img.c,
                h: img.h,
                w: img.w,
            };
            let mut x: Vec<f32> = img.bytes.iter().map(|&b| f32::from(b) * INV_255).collect();
            match case.op.as_str() {
                "brightness" => adjust_brightness(&mut x, case.factor),
                "contrast" => adjust_contrast(&mut x, d, case.factor),
                "saturation" => adjust_saturation(&mut x, d, case.factor),
                "hue" => adjust_hue(&mut x, d, case.factor),
                "grayscale" => {
                    let mut s = Scratch {
                        cur: x,
                        ..Scratch::default()
                    };
                    let mut dims = d;
                    let mut rng = sample_rng(0, 0, 0, 0);
                    apply_image_op(
                        &Op::Grayscale(Grayscale { p: 1.0 }),
                        &mut dims,
                        &mut s,
                        &mut rng,
                    );
                    x = s.cur;
                }
                other => panic!("unknown op {other} in the fixture"),
            }
            let err = max_abs_diff(&x, &case.out);
            assert!(
                err < TORCH_TOL,
                "{} {}: max |diff| {err}",
                case.op,
                case.factor
            );
        }
        for case in &fx.jitter {
            let img = &fx.images[case.image];
            let d = Dims {
                c: img.c,
                h: img.h,
                w: img.w,
            };
            let mut x: Vec<f32> = img.bytes.iter().map(|&b| f32::from(b) * INV_255).collect();
            let draw = JitterDraw {
                order: case.order,
                brightness: Some(case.brightness),
                contrast: Some(case.contrast),
                saturation: Some(case.saturation),
                hue: Some(case.hue),
            };
            apply_jitter(&mut x, d, &draw);
            let err = max_abs_diff(&x, &case.out);
            assert!(err < TORCH_TOL, "jitter {:?}: max |diff| {err}", case.order);
        }
    }

    /// Bin counts of two samplers agree when each bin's share differs by less than five
    /// standard errors of the difference of two binomial proportions (plus 1e-4 for bins
    /// near 0).
    fn assert_same_histogram(
        name: &str,
        ours: &[u64],
        n_ours: usize,
        theirs: &[u64],
        n_theirs: usize,
    ) {
        for (b, (&a, &t)) in ours.iter().zip(theirs).enumerate() {
            let (pa, pt) = (a as f64 / n_ours as f64, t as f64 / n_theirs as f64);
            let p = (a + t) as f64 / (n_ours + n_theirs) as f64;
            let se = (p * (1.0 - p) * (1.0 / n_ours as f64 + 1.0 / n_theirs as f64)).sqrt();
            assert!(
                (pa - pt).abs() <= 5.0 * se + 1e-4,
                "{name} bin {b}: ours {pa:.4}, torchvision {pt:.4} (se {se:.4})"
            );
        }
    }

    #[test]
    fn crop_boxes_are_distributed_as_torchvision() {
        let fx = torch_fixture();
        let o = RandomResizedCrop::new(8);
        // The fixture's bin edges, in f64 as NumPy computed them (square boxes sit exactly
        // on the middle edge).
        let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
        for stats in &fx.crop_stats {
            let (height, width) = (stats.height, stats.width);
            let n = 100_000;
            let mut area = vec![0u64; stats.area.len()];
            let mut aspect = vec![0u64; stats.log_aspect.len()];
            let mut top = vec![0u64; stats.top.len()];
            let mut rng = sample_rng(42, 0, 0, 0);
            for _ in 0..n {
                let b = crop_box(&o, height, width, &mut rng);
                let a = (b.h * b.w) as f64 / (height * width) as f64;
                let bins = area.len();
                area[((a * bins as f64) as usize).min(bins - 1)] += 1;
                let r = ((b.w as f64 / b.h as f64).ln() - lo) / (hi - lo);
                let bins = aspect.len();
                aspect[((r * bins as f64).max(0.0) as usize).min(bins - 1)] += 1;
                let t = if height > b.h {
                    b.top as f64 / (height - b.h) as f64
                } else {
                    0.5
                };
                let bins = top.len();
                top[((t * bins as f64) as usize).min(bins - 1)] += 1;
            }
            let at = format!("{height}x{width}");
            assert_same_histogram(&format!("{at} area"), &area, n, &stats.area, stats.draws);
            assert_same_histogram(
                &format!("{at} log aspect"),
                &aspect,
                n,
                &stats.log_aspect,
                stats.draws,
            );
            assert_same_histogram(&format!("{at} top"), &top, n, &stats.top, stats.draws);
        }
    }

    #[test]
    fn simclr_view_random_parts_have_their_rates() {
        // Flip, jitter and grayscale each fire at their probability: counted on views of
        // one asymmetric colour image, 20000 streams.
        let n = 20_000usize;
        let se = |p: f64| (p * (1.0 - p) / n as f64).sqrt();
        let o = ColorJitter {
            hue: 0.1,
            p: 0.8,
            ..ColorJitter::new(0.4, 0.4, 0.4)
        };
        let mut applied = 0usize;
        let mut orders = std::collections::HashMap::new();
        let (mut hue_min, mut hue_max, mut hue_sum) = (f32::MAX, f32::MIN, 0.0f64);
        let (mut b_min, mut b_max) = (f32::MAX, f32::MIN);
        for i in 0..n {
            let mut rng = sample_rng(3, 0, i as u64, 0);
            if let Some(draw) = jitter_draw(&o, &mut rng) {
                applied += 1;
                *orders.entry(draw.order).or_insert(0usize) += 1;
                let (Some(h), Some(b)) = (draw.hue, draw.brightness) else {
                    panic!("every factor is enabled")
                };
                (hue_min, hue_max, hue_sum) =
                    (hue_min.min(h), hue_max.max(h), hue_sum + f64::from(h));
                (b_min, b_max) = (b_min.min(b), b_max.max(b));
            }
        }
        let rate = applied as f64 / n as f64;
        assert!((rate - 0.8).abs() < 5.0 * se(0.8), "jitter rate {rate}");
        // All 24 orders of the four adjustments, each about 1/24 of the draws.
        assert_eq!(orders.len(), 24);
        for (order, &k) in &orders {
            let p = k as f64 / applied as f64;
            let sd = (p * (1.0 - p) / applied as f64).sqrt();
            assert!((p - 1.0 / 24.0).abs() < 5.0 * sd, "{order:?}: {p}");
        }
        // The draws fill their ranges: the extremes lie within 0.001 of the ends.
        assert!((-0.1..-0.099).contains(&hue_min) && (0.099..=0.1).contains(&hue_max));
        assert!((hue_sum / applied as f64).abs() < 0.002);
        assert!((0.6..0.601).contains(&b_min) && (1.399..=1.4).contains(&b_max));

        let ds = images(1, 3, 8, 8);
        let plain = ds.batch_f32(&[0], &Normalisation::None).unwrap();
        let mut flips = 0usize;
        let mut grays = 0usize;
        let ops = [
            Op::HorizontalFlip(HorizontalFlip { p: 0.5 }),
            Op::Grayscale(Grayscale { p: 0.2 }),
        ];
        let mut out = vec![0.0; plain.len()];
        for i in 0..n as u64 {
            augment_sample(&ds, 0, &ops, i, 0, 0, &Normalisation::None, &mut out).unwrap();
            let plane = 64;
            let gray = out[..plane] == out[plane..2 * plane];
            grays += usize::from(gray);
            // Column 0 of row 0 (red, or luma) came from column 7 when flipped.
            let first = if gray {
                luma(plain[7], plain[plane + 7], plain[2 * plane + 7])
            } else {
                plain[7]
            };
            flips += usize::from(out[0] == first);
        }
        let (fr, gr) = (flips as f64 / n as f64, grays as f64 / n as f64);
        assert!((fr - 0.5).abs() < 5.0 * se(0.5), "flip rate {fr}");
        assert!((gr - 0.2).abs() < 5.0 * se(0.2), "grayscale rate {gr}");
    }

    #[test]
    fn hue_without_hue_keeps_old_streams_and_wraps() {
        // hue = 0 draws the same three-way order as before hue existed.
        let o = ColorJitter::new(0.4, 0.4, 0.4);
        let mut rng = sample_rng(9, 0, 0, 0);
        let draw = jitter_draw(&o, &mut rng).unwrap();
        assert_eq!(draw.order[3], 3);
        assert_eq!(draw.hue, None);
        // A full turn of hue is the identity, and half a turn twice is too.
        let d = Dims { c: 3, h: 2, w: 2 };
        let orig = vec![0.9, 0.1, 0.5, 0.3, 0.2, 0.8, 0.5, 0.3, 0.4, 0.1, 0.5, 0.3];
        let mut x = orig.clone();
        adjust_hue(&mut x, d, 0.5);
        assert!(max_abs_diff(&x, &orig) > 0.1);
        adjust_hue(&mut x, d, 0.5);
        assert!(max_abs_diff(&x, &orig) < 1e-6, "{x:?}");
        // Grey pixels have no hue.
        let mut g = vec![0.4; 12];
        adjust_hue(&mut g, d, 0.3);
        assert_eq!(g, vec![0.4; 12]);
    }

    #[test]
    fn simclr_view_is_the_recipe() {
        let ops = simclr_cifar_view(32);
        let img = SampleShape::Image {
            channels: 3,
            height: 32,
            width: 32,
        };
        assert_eq!(output_shape(img, &ops).unwrap(), img);
        assert_eq!(
            ops[0],
            Op::RandomResizedCrop(RandomResizedCrop {
                size: 32,
                scale: (0.08, 1.0),
                ratio: (0.75, 4.0 / 3.0)
            })
        );
        let Op::ColorJitter(j) = &ops[2] else {
            panic!("jitter third")
        };
        assert_eq!(
            (j.brightness, j.contrast, j.saturation, j.hue, j.p),
            (0.4, 0.4, 0.4, 0.1, 0.8)
        );
        let bad_hue = Op::ColorJitter(ColorJitter {
            hue: 0.6,
            ..ColorJitter::new(0.0, 0.0, 0.0)
        });
        assert!(bad_hue
            .check_settings()
            .unwrap_err()
            .to_string()
            .contains("hue"));
        let gray1 = SampleShape::Image {
            channels: 1,
            height: 8,
            width: 8,
        };
        let hue_only = Op::ColorJitter(ColorJitter {
            hue: 0.1,
            ..ColorJitter::new(0.0, 0.0, 0.0)
        });
        assert!(output_shape(gray1, &[hue_only]).is_err());
    }

    #[test]
    fn rng_streams_are_distinct() {
        let a: u64 = sample_rng(1, 1, 2, 0).random();
        let b: u64 = sample_rng(1, 2, 1, 0).random();
        let c: u64 = sample_rng(1, 1, 2, 0).random();
        assert_ne!(a, b);
        assert_eq!(a, c);
    }
}
