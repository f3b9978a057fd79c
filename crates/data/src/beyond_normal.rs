//! The task families of the "Beyond Normal" benchmark (Czyz et al., NeurIPS 2023; Python
//! package `benchmark-mi`, repository cbg-ethz/bmi), with their closed-form mutual information.
//!
//! A task is a base distribution of (X, Y) whose MI is known in closed form, followed by a
//! chain of transforms, each a diffeomorphism applied to X and to Y separately, which leaves
//! the MI unchanged:
//!
//! - bases: the multivariate normal tasks of [`GaussianTask`] (bivariate, dense, 2-pair =
//!   bmi's sparse task with two interacting pairs of strength s, correlation s^2 / (s^2 + 1)),
//!   the multivariate Student-t with identity dispersion (MI from the differential entropies of
//!   Arellano-Valle, Contreras-Reyes and Genton 2013, as bmi computes it), additive uniform
//!   noise (X ~ U(0, 1), Y = X + U(-e, e): MI = e - log 2e for e <= 1/2, 1 / 4e above) and the
//!   bimodal task (a bivariate normal mapped through Phi and then through the quantile functions
//!   of two Gaussian mixtures);
//! - transforms: the normal CDF, the half-cube x sqrt|x|, asinh, the "wiggly" maps, the
//!   spiral x -> exp(A ||x||^2 / d) x (A a plane rotation generator: (0, 1) for X, (1, 2) for
//!   Y) and the Swiss-roll embedding of a 1-d X in [0, 1] into the plane.
//!
//! Task ids and names are bmi's (`spiral-normal_cdf-multinormal-sparse-3-3-2-2.0`, "Spiral @
//! Normal CDF @ Multinormal 3 × 3 (2-pair)"), so [`BenchmarkTask::parse`] reads the ids of
//! bmi's task list and results line up with the paper's. [`V1_TASKS`] is bmi's v1 suite (40
//! tasks). The fixture tests/fixtures/bmi_v1_tasks.json, written by bmi itself, holds the true
//! MI of every v1 task and the image of fixed base points under each task's transforms; the
//! tests below check both against this module. Samples cannot match bmi's (JAX and SciPy
//! streams), so the samplers are checked by their statistics.

use std::f64::consts::PI;

use rand::Rng;
use rand_distr::{ChiSquared, Distribution, StandardNormal};
use thiserror::Error;

use crate::ground_truth::{GaussianTask, GroundTruthError};
use cbound_core::special::{digamma, ln_gamma, normal_cdf};
use cbound_core::{Matrix, MiError};

/// The 40 task ids of bmi's v1 benchmark (`bmi.benchmark.task_list.BENCHMARK_TASKS_LIST`), in
/// its order.
pub const V1_TASKS: [&str; 40] = [
    "1v1-normal-0.75",
    "normal_cdf-1v1-normal-0.75",
    "1v1-additive-0.1",
    "1v1-additive-0.75",
    "1v1-bimodal-0.75",
    "wiggly-1v1-normal-0.75",
    "half_cube-1v1-normal-0.75",
    "student-identity-1-1-1",
    "asinh-student-identity-1-1-1",
    "swissroll_x-normal_cdf-1v1-normal-0.75",
    "multinormal-dense-2-2-0.5",
    "multinormal-dense-3-3-0.5",
    "multinormal-dense-5-5-0.5",
    "multinormal-dense-25-25-0.5",
    "multinormal-dense-50-50-0.5",
    "multinormal-sparse-2-2-2-2.0",
    "multinormal-sparse-3-3-2-2.0",
    "multinormal-sparse-5-5-2-2.0",
    "multinormal-sparse-25-25-2-2.0",
    "student-identity-2-2-1",
    "student-identity-2-2-2",
    "student-identity-3-3-2",
    "student-identity-3-3-3",
    "student-identity-5-5-2",
    "student-identity-5-5-3",
    "normal_cdf-multinormal-sparse-3-3-2-2.0",
    "normal_cdf-multinormal-sparse-5-5-2-2.0",
    "normal_cdf-multinormal-sparse-25-25-2-2.0",
    "half_cube-multinormal-sparse-3-3-2-2.0",
    "half_cube-multinormal-sparse-5-5-2-2.0",
    "half_cube-multinormal-sparse-25-25-2-2.0",
    "spiral-multinormal-sparse-3-3-2-2.0",
    "spiral-multinormal-sparse-5-5-2-2.0",
    "spiral-multinormal-sparse-25-25-2-2.0",
    "spiral-normal_cdf-multinormal-sparse-3-3-2-2.0",
    "spiral-normal_cdf-multinormal-sparse-5-5-2-2.0",
    "spiral-normal_cdf-multinormal-sparse-25-25-2-2.0",
    "asinh-student-identity-2-2-1",
    "asinh-student-identity-3-3-2",
    "asinh-student-identity-5-5-2",
];

/// The distribution a task's transforms start from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Base {
    /// Jointly normal (X, Y), unit variances ([`GaussianTask`]).
    Normal(GaussianTask),
    /// Multivariate Student-t with `df` degrees of freedom, zero mean and identity dispersion
    /// over the dim_x + dim_y coordinates: X and Y are uncorrelated but dependent.
    Student {
        /// Dimension of X.
        dim_x: usize,
        /// Dimension of Y.
        dim_y: usize,
        /// Degrees of freedom, > 0.
        df: f64,
    },
    /// X ~ U(0, 1), Y = X + N with N ~ U(-epsilon, epsilon) independent of X.
    AdditiveUniform {
        /// Half-width of the noise, > 0.
        epsilon: f64,
    },
    /// A bivariate normal with correlation `rho`, each coordinate mapped through Phi and then
    /// through the quantile function of a two-component Gaussian mixture (X: 0.3 N(0, 1) +
    /// 0.7 N(5, 1); Y: 0.5 N(-1, 1) + 0.5 N(3, 1)), by bisection on [-10, 10] as bmi does.
    Bimodal {
        /// Correlation of the underlying normal.
        rho: f64,
    },
}

/// A per-variable diffeomorphism (the MI does not change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Phi, the standard normal CDF, on every coordinate (uniform marginals from normal ones).
    NormalCdf,
    /// x sqrt|x| on every coordinate (heavier tails).
    HalfCube,
    /// asinh on every coordinate (lighter tails).
    Asinh,
    /// bmi's "wiggly" maps: X coordinates x + 0.4 sin x + 0.2 sin(1.7x + 1) + 0.03 sin(3.3x -
    /// 2.5), Y coordinates y - 0.4 sin 0.4y + 0.17 sin(1.3y + 3.5) + 0.02 sin(4.3y - 2.5).
    Wiggly,
    /// v -> exp(A ||v||^2 / d) v, a rotation by the angle ||v||^2 / d in the plane of
    /// coordinates (0, 1) for X and (1, 2) for Y (needs dim_x >= 2, dim_y >= 3).
    Spiral,
    /// Embeds a 1-d X in [0, 1] as the Swiss roll (t cos t, t sin t) / 21, t = 1.5 pi (1 + 2x);
    /// Y unchanged. Must follow `normal_cdf`.
    SwissRoll,
}

impl Transform {
    /// bmi's id prefix (`spiral` in `spiral-multinormal-...`).
    pub fn id(&self) -> &'static str {
        match self {
            Transform::NormalCdf => "normal_cdf",
            Transform::HalfCube => "half_cube",
            Transform::Asinh => "asinh",
            Transform::Wiggly => "wiggly",
            Transform::Spiral => "spiral",
            Transform::SwissRoll => "swissroll_x",
        }
    }

    /// bmi's name prefix (`Spiral` in `Spiral @ Multinormal ...`).
    fn display(&self) -> &'static str {
        match self {
            Transform::NormalCdf => "Normal CDF",
            Transform::HalfCube => "Half-cube",
            Transform::Asinh => "Asinh",
            Transform::Wiggly => "Wiggly",
            Transform::Spiral => "Spiral",
            Transform::SwissRoll => "Swiss roll",
        }
    }

    const ALL: [Transform; 6] = [
        Transform::NormalCdf,
        Transform::HalfCube,
        Transform::Asinh,
        Transform::Wiggly,
        Transform::Spiral,
        Transform::SwissRoll,
    ];
}

/// A task that cannot be built or sampled.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BenchmarkTaskError {
    /// A task id this module does not read.
    #[error("unknown Beyond-Normal task id `{id}`: {why}")]
    UnknownId {
        /// The id given.
        id: String,
        /// What was expected.
        why: String,
    },
    /// A parameter out of its range.
    #[error("{task}: {what}")]
    Parameter {
        /// Task family.
        task: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A transform that cannot apply where it is.
    #[error("transform `{transform}`: {why}")]
    Transform {
        /// The transform's id.
        transform: &'static str,
        /// Why not.
        why: String,
    },
    /// The Gaussian base is invalid.
    #[error(transparent)]
    Gaussian(#[from] GroundTruthError),
    /// A matrix construction error (not expected; shapes are computed here).
    #[error(transparent)]
    Matrix(#[from] MiError),
}

/// A Beyond-Normal task: a base distribution and the transforms applied to it, innermost
/// first.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkTask {
    /// The base distribution.
    pub base: Base,
    /// The transforms, in the order they are applied.
    pub transforms: Vec<Transform>,
}

/// Python's `str(float)` for the values bmi puts in ids: `2.0`, `0.75`.
fn py_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// A number as bmi's names print an int-valued float or an int (`dof=1`).
fn py_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Differential entropy of a k-dimensional Student-t with identity dispersion and `df`
/// degrees of freedom (Arellano-Valle et al. 2013, eq. 7; bmi's `_differential_entropy`).
pub fn student_entropy(k: usize, df: f64) -> f64 {
    let k = k as f64;
    let half = 0.5 * (df + k);
    -ln_gamma(half)
        + ln_gamma(0.5 * df)
        + 0.5 * k * (df * PI).ln()
        + half * (digamma(half) - digamma(0.5 * df))
}

/// MI of the Student-t task beyond that of a normal with the same dispersion: h(X) + h(Y) -
/// h(X, Y) of the entropies above (the whole MI for identity dispersion).
pub fn student_mi_correction(dim_x: usize, dim_y: usize, df: f64) -> f64 {
    student_entropy(dim_x, df) + student_entropy(dim_y, df) - student_entropy(dim_x + dim_y, df)
}

/// I(X; X + U(-e, e)) for X ~ U(0, 1).
pub fn additive_uniform_mi(epsilon: f64) -> f64 {
    if epsilon > 0.5 {
        0.25 / epsilon
    } else {
        epsilon - (2.0 * epsilon).ln()
    }
}

fn wiggly_x(x: f64) -> f64 {
    x + 0.4 * x.sin() + 0.2 * (1.7 * x + 1.0).sin() + 0.03 * (3.3 * x - 2.5).sin()
}

fn wiggly_y(y: f64) -> f64 {
    y - 0.4 * (0.4 * y).sin() + 0.17 * (1.3 * y + 3.5).sin() + 0.02 * (4.3 * y - 2.5).sin()
}

/// bmi's `invert_mono`: bisection for f(x) = u on [lo, hi] to width 1e-12.
fn invert_increasing(f: impl Fn(f64) -> f64, u: f64, lo: f64, hi: f64) -> f64 {
    let (mut x0, mut x1) = (lo, hi);
    loop {
        let xm = 0.5 * (x0 + x1);
        if !((x1 - x0).abs() > 1e-12 && x1 > xm && xm > x0) {
            return 0.5 * (x0 + x1);
        }
        if f(xm) < u {
            x0 = xm;
        } else {
            x1 = xm;
        }
    }
}

fn bimodal_x(u: f64) -> f64 {
    invert_increasing(
        |x| 0.3 * normal_cdf(x) + 0.7 * normal_cdf(x - 5.0),
        u,
        -10.0,
        10.0,
    )
}

fn bimodal_y(u: f64) -> f64 {
    invert_increasing(
        |x| 0.5 * normal_cdf(x + 1.0) + 0.5 * normal_cdf(x - 3.0),
        u,
        -10.0,
        10.0,
    )
}

/// Rotates row `v` by the angle ||v||^2 * speed in the plane (i, j): exp(theta A) v with
/// A[i][j] = -1, A[j][i] = 1.
fn spiral_row(v: &mut [f64], i: usize, j: usize, speed: f64) {
    let theta = speed * v.iter().map(|a| a * a).sum::<f64>();
    let (s, c) = theta.sin_cos();
    let (a, b) = (v[i], v[j]);
    v[i] = c * a - s * b;
    v[j] = s * a + c * b;
}

fn parse_f64(s: &str, id: &str, what: &str) -> Result<f64, BenchmarkTaskError> {
    s.parse::<f64>().map_err(|_| BenchmarkTaskError::UnknownId {
        id: id.to_string(),
        why: format!("{what} `{s}` is not a number"),
    })
}

fn parse_usize(s: &str, id: &str, what: &str) -> Result<usize, BenchmarkTaskError> {
    s.parse::<usize>()
        .map_err(|_| BenchmarkTaskError::UnknownId {
            id: id.to_string(),
            why: format!("{what} `{s}` is not a dimension"),
        })
}

const BASE_FORMS: &str = "a base `1v1-normal-RHO`, `1v1-additive-EPS`, `1v1-bimodal-RHO`, \
    `multinormal-dense-D-D-RHO`, `multinormal-sparse-D-D-2-STRENGTH` or `student-identity-DX-DY-DF`, \
    after any prefixes `normal_cdf-`, `half_cube-`, `asinh-`, `wiggly-`, `spiral-`, `swissroll_x-`";

impl BenchmarkTask {
    /// A task without transforms.
    pub fn new(base: Base) -> BenchmarkTask {
        BenchmarkTask {
            base,
            transforms: Vec::new(),
        }
    }

    /// Reads a bmi task id (`asinh-student-identity-2-2-1`), checking the task.
    pub fn parse(id: &str) -> Result<BenchmarkTask, BenchmarkTaskError> {
        let unknown = |why: String| BenchmarkTaskError::UnknownId {
            id: id.to_string(),
            why,
        };
        let mut rest = id;
        let mut outer_first = Vec::new();
        'prefixes: loop {
            for t in Transform::ALL {
                if let Some(r) = rest.strip_prefix(t.id()).and_then(|r| r.strip_prefix('-')) {
                    outer_first.push(t);
                    rest = r;
                    continue 'prefixes;
                }
            }
            break;
        }
        let parts: Vec<&str> = rest.split('-').collect();
        let base = match parts.as_slice() {
            ["1v1", "normal", rho] => Base::Normal(GaussianTask::Bivariate {
                rho: parse_f64(rho, id, "correlation")?,
            }),
            ["1v1", "additive", eps] => Base::AdditiveUniform {
                epsilon: parse_f64(eps, id, "noise")?,
            },
            ["1v1", "bimodal", rho] => Base::Bimodal {
                rho: parse_f64(rho, id, "correlation")?,
            },
            ["multinormal", "dense", dx, dy, rho] => {
                let (dx, dy) = (parse_usize(dx, id, "dim_x")?, parse_usize(dy, id, "dim_y")?);
                if dx != dy {
                    return Err(unknown(format!(
                        "dense tasks need dim_x = dim_y here, got {dx} and {dy}"
                    )));
                }
                Base::Normal(GaussianTask::Dense {
                    dim: dx,
                    rho: parse_f64(rho, id, "correlation")?,
                })
            }
            ["multinormal", "sparse", dx, dy, k, strength] => {
                let (dx, dy) = (parse_usize(dx, id, "dim_x")?, parse_usize(dy, id, "dim_y")?);
                let k = parse_usize(k, id, "interacting pairs")?;
                if dx != dy || k != 2 {
                    return Err(unknown(format!(
                        "sparse tasks need dim_x = dim_y and 2 interacting pairs (the 2-pair \
                         family), got {dx}, {dy} and {k}"
                    )));
                }
                let s = parse_f64(strength, id, "strength")?;
                if !(s.is_finite() && s > 0.0) {
                    return Err(unknown(format!("strength must be > 0, got {s}")));
                }
                Base::Normal(GaussianTask::TwoPair {
                    dim: dx,
                    rho: s * s / (s * s + 1.0),
                })
            }
            ["student", "identity", dx, dy, df] => Base::Student {
                dim_x: parse_usize(dx, id, "dim_x")?,
                dim_y: parse_usize(dy, id, "dim_y")?,
                df: parse_f64(df, id, "degrees of freedom")?,
            },
            _ => return Err(unknown(format!("expected {BASE_FORMS}"))),
        };
        outer_first.reverse();
        let task = BenchmarkTask {
            base,
            transforms: outer_first,
        };
        task.validate()?;
        Ok(task)
    }

    /// bmi's id of the base distribution.
    fn base_id(&self) -> String {
        match self.base {
            Base::Normal(GaussianTask::Bivariate { rho }) => {
                format!("1v1-normal-{}", py_float(rho))
            }
            Base::Normal(GaussianTask::Dense { dim, rho }) => {
                format!("multinormal-dense-{dim}-{dim}-{}", py_float(rho))
            }
            Base::Normal(GaussianTask::TwoPair { dim, rho }) => {
                // strength s with s^2 / (s^2 + 1) = rho.
                let s = (rho / (1.0 - rho)).sqrt();
                let s = if (s - s.round()).abs() < 1e-9 {
                    s.round()
                } else {
                    s
                };
                format!("multinormal-sparse-{dim}-{dim}-2-{}", py_float(s))
            }
            Base::Normal(GaussianTask::Staircase { pairs, mi }) => {
                format!("staircase-{pairs}-{}", py_float(mi))
            }
            Base::Student { dim_x, dim_y, df } => {
                format!("student-identity-{dim_x}-{dim_y}-{}", py_number(df))
            }
            Base::AdditiveUniform { epsilon } => format!("1v1-additive-{}", py_float(epsilon)),
            Base::Bimodal { rho } => format!("1v1-bimodal-{}", py_float(rho)),
        }
    }

    /// bmi's task id (`spiral-normal_cdf-multinormal-sparse-3-3-2-2.0`).
    pub fn id(&self) -> String {
        let mut s = self.base_id();
        for t in &self.transforms {
            s = format!("{}-{s}", t.id());
        }
        s
    }

    /// bmi's task name (`Spiral @ Normal CDF @ Multinormal 3 × 3 (2-pair)`).
    pub fn name(&self) -> String {
        let mut s = match self.base {
            Base::Normal(GaussianTask::Bivariate { .. }) => "Bivariate normal 1 × 1".to_string(),
            Base::Normal(GaussianTask::Dense { dim, .. }) => {
                format!("Multinormal {dim} × {dim} (dense)")
            }
            Base::Normal(GaussianTask::TwoPair { dim, .. }) => {
                format!("Multinormal {dim} × {dim} (2-pair)")
            }
            Base::Normal(GaussianTask::Staircase { pairs, .. }) => {
                format!("Multinormal {pairs} × {pairs} (staircase)")
            }
            Base::Student { dim_x, dim_y, df } => {
                format!("Student-t {dim_x} × {dim_y} (dof={})", py_number(df))
            }
            Base::AdditiveUniform { epsilon } => {
                format!("Uniform 1 × 1 (additive noise={})", py_float(epsilon))
            }
            Base::Bimodal { .. } => "Bimodal 1 × 1".to_string(),
        };
        for t in &self.transforms {
            s = match t {
                // bmi names the embedded task by its new dimensions.
                Transform::SwissRoll => {
                    let (dx, dy) = self.dims();
                    format!("Swiss roll {dx} × {dy}")
                }
                t => format!("{} @ {s}", t.display()),
            };
        }
        s
    }

    /// Dimensions of the base distribution.
    fn base_dims(&self) -> (usize, usize) {
        match self.base {
            Base::Normal(t) => t.dims(),
            Base::Student { dim_x, dim_y, .. } => (dim_x, dim_y),
            Base::AdditiveUniform { .. } | Base::Bimodal { .. } => (1, 1),
        }
    }

    /// Dimensions of (X, Y) after the transforms.
    pub fn dims(&self) -> (usize, usize) {
        let (mut dx, dy) = self.base_dims();
        for t in &self.transforms {
            if *t == Transform::SwissRoll {
                dx += 1;
            }
        }
        (dx, dy)
    }

    /// Checks the base's parameters and that each transform can apply where it is.
    pub fn validate(&self) -> Result<(), BenchmarkTaskError> {
        match self.base {
            Base::Normal(t) => t.validate()?,
            Base::Bimodal { rho } => GaussianTask::Bivariate { rho }.validate()?,
            Base::Student { dim_x, dim_y, df } => {
                if dim_x == 0 || dim_y == 0 {
                    return Err(BenchmarkTaskError::Parameter {
                        task: "student",
                        what: format!("dimensions must be at least 1, got {dim_x} and {dim_y}"),
                    });
                }
                if !(df.is_finite() && df > 0.0) {
                    return Err(BenchmarkTaskError::Parameter {
                        task: "student",
                        what: format!("degrees of freedom must be finite and > 0, got {df}"),
                    });
                }
            }
            Base::AdditiveUniform { epsilon } => {
                if !(epsilon.is_finite() && epsilon > 0.0) {
                    return Err(BenchmarkTaskError::Parameter {
                        task: "additive_noise",
                        what: format!("noise half-width must be finite and > 0, got {epsilon}"),
                    });
                }
            }
        }
        let (mut dx, dy) = self.base_dims();
        for (i, t) in self.transforms.iter().enumerate() {
            let why = match t {
                Transform::Spiral if dx < 2 || dy < 3 => Some(format!(
                    "needs dim_x >= 2 and dim_y >= 3 (a rotation of X in the plane (0, 1), of Y \
                     in (1, 2)), got {dx} and {dy}"
                )),
                Transform::SwissRoll if dx != 1 => {
                    Some(format!("needs a 1-dimensional X, got {dx}"))
                }
                Transform::SwissRoll
                    if i == 0 || self.transforms[i - 1] != Transform::NormalCdf =>
                {
                    Some("must follow `normal_cdf` (it embeds X in [0, 1])".to_string())
                }
                _ => None,
            };
            if let Some(why) = why {
                return Err(BenchmarkTaskError::Transform {
                    transform: t.id(),
                    why,
                });
            }
            if *t == Transform::SwissRoll {
                dx += 1;
            }
        }
        Ok(())
    }

    /// True MI in nats (the base's; the transforms keep it).
    pub fn true_mi(&self) -> Result<f64, BenchmarkTaskError> {
        self.validate()?;
        Ok(match self.base {
            Base::Normal(t) => t.try_true_mi()?,
            Base::Bimodal { rho } => GaussianTask::Bivariate { rho }.try_true_mi()?,
            Base::Student { dim_x, dim_y, df } => student_mi_correction(dim_x, dim_y, df),
            Base::AdditiveUniform { epsilon } => additive_uniform_mi(epsilon),
        })
    }

    /// `n` draws of the base distribution, row-major (n x dim_x, n x dim_y).
    fn sample_base<R: Rng + ?Sized>(
        &self,
        n: usize,
        rng: &mut R,
    ) -> Result<(Vec<f64>, Vec<f64>), BenchmarkTaskError> {
        Ok(match self.base {
            Base::Normal(t) => {
                let (x, y) = t.sample(n, rng, false)?;
                (x.into_vec(), y.into_vec())
            }
            Base::Bimodal { rho } => {
                let (x, y) = GaussianTask::Bivariate { rho }.sample(n, rng, false)?;
                (
                    x.as_slice()
                        .iter()
                        .map(|&v| bimodal_x(normal_cdf(v)))
                        .collect(),
                    y.as_slice()
                        .iter()
                        .map(|&v| bimodal_y(normal_cdf(v)))
                        .collect(),
                )
            }
            Base::Student { dim_x, dim_y, df } => {
                let chi = ChiSquared::new(df).map_err(|e| BenchmarkTaskError::Parameter {
                    task: "student",
                    what: format!("degrees of freedom {df}: {e}"),
                })?;
                let mut xs = Vec::with_capacity(n * dim_x);
                let mut ys = Vec::with_capacity(n * dim_y);
                for _ in 0..n {
                    let z: Vec<f64> = (0..dim_x + dim_y)
                        .map(|_| StandardNormal.sample(rng))
                        .collect();
                    // u > 0 almost surely; a draw that rounds to 0 would give infinities.
                    let mut u: f64 = chi.sample(rng);
                    while u <= 0.0 {
                        u = chi.sample(rng);
                    }
                    let scale = (df / u).sqrt();
                    xs.extend(z[..dim_x].iter().map(|v| v * scale));
                    ys.extend(z[dim_x..].iter().map(|v| v * scale));
                }
                (xs, ys)
            }
            Base::AdditiveUniform { epsilon } => {
                let mut xs = Vec::with_capacity(n);
                let mut ys = Vec::with_capacity(n);
                for _ in 0..n {
                    let x: f64 = rng.random::<f64>();
                    let noise = epsilon * (2.0 * rng.random::<f64>() - 1.0);
                    xs.push(x);
                    ys.push(x + noise);
                }
                (xs, ys)
            }
        })
    }

    /// Applies the transforms to base points (row-major, `dx` / `dy` columns); returns the
    /// transformed points and their column counts.
    pub fn apply_transforms(
        &self,
        mut x: Vec<f64>,
        mut y: Vec<f64>,
    ) -> Result<(Vec<f64>, usize, Vec<f64>, usize), BenchmarkTaskError> {
        self.validate()?;
        let (mut dx, dy) = self.base_dims();
        for t in &self.transforms {
            match t {
                Transform::NormalCdf => {
                    x.iter_mut().for_each(|v| *v = normal_cdf(*v));
                    y.iter_mut().for_each(|v| *v = normal_cdf(*v));
                }
                Transform::HalfCube => {
                    x.iter_mut().for_each(|v| *v *= v.abs().sqrt());
                    y.iter_mut().for_each(|v| *v *= v.abs().sqrt());
                }
                Transform::Asinh => {
                    x.iter_mut().for_each(|v| *v = v.asinh());
                    y.iter_mut().for_each(|v| *v = v.asinh());
                }
                Transform::Wiggly => {
                    x.iter_mut().for_each(|v| *v = wiggly_x(*v));
                    y.iter_mut().for_each(|v| *v = wiggly_y(*v));
                }
                Transform::Spiral => {
                    let (sx, sy) = (1.0 / dx as f64, 1.0 / dy as f64);
                    x.chunks_mut(dx).for_each(|r| spiral_row(r, 0, 1, sx));
                    y.chunks_mut(dy).for_each(|r| spiral_row(r, 1, 2, sy));
                }
                Transform::SwissRoll => {
                    x = x
                        .iter()
                        .flat_map(|&v| {
                            let t = 1.5 * PI * (1.0 + 2.0 * v);
                            [t * t.cos() / 21.0, t * t.sin() / 21.0]
                        })
                        .collect();
                    dx = 2;
                }
            }
        }
        Ok((x, dx, y, dy))
    }

    /// `n` samples as (X, Y) matrices: base draws, then the transforms.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        rng: &mut R,
    ) -> Result<(Matrix, Matrix), BenchmarkTaskError> {
        if n == 0 {
            return Err(GroundTruthError::EmptySample.into());
        }
        self.validate()?;
        let (x, y) = self.sample_base(n, rng)?;
        let (x, dx, y, dy) = self.apply_transforms(x, y)?;
        Ok((Matrix::new(n, dx, x)?, Matrix::new(n, dy, y)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use serde_json::Value;

    fn fixture() -> Vec<Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/bmi_v1_tasks.json"
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        let v: Value = serde_json::from_str(&text).expect("fixture json");
        v["tasks"].as_array().expect("tasks").clone()
    }

    fn rows(v: &Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|a| a.as_f64().unwrap()))
            .collect()
    }

    #[test]
    fn v1_ids_names_dims_and_true_mi_match_bmi() {
        let tasks = fixture();
        assert_eq!(tasks.len(), V1_TASKS.len());
        for (t, id) in tasks.iter().zip(V1_TASKS) {
            assert_eq!(t["id"], id);
            let task = BenchmarkTask::parse(id).unwrap();
            assert_eq!(task.id(), id);
            assert_eq!(task.name(), t["name"].as_str().unwrap(), "{id}");
            let dims = (
                t["dim_x"].as_u64().unwrap() as usize,
                t["dim_y"].as_u64().unwrap() as usize,
            );
            assert_eq!(task.dims(), dims, "{id}");
            let want = t["mi"].as_f64().unwrap();
            let got = task.true_mi().unwrap();
            // bmi's Gaussian MI comes from float32-free numpy log-dets; 1e-12 relative.
            assert!(
                (got - want).abs() < 1e-12 * want.max(1.0),
                "{id}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn v1_transforms_match_bmi_point_by_point() {
        for t in fixture() {
            let id = t["id"].as_str().unwrap();
            let task = BenchmarkTask::parse(id).unwrap();
            let (bx, by) = (rows(&t["base_x"]), rows(&t["base_y"]));
            let (want_x, want_y) = (rows(&t["x"]), rows(&t["y"]));
            let (x, y) = match task.base {
                // The bimodal base's quantile maps are part of its sampler: apply them here.
                Base::Bimodal { .. } => (
                    bx.iter().map(|&v| bimodal_x(normal_cdf(v))).collect(),
                    by.iter().map(|&v| bimodal_y(normal_cdf(v))).collect(),
                ),
                _ => (bx, by),
            };
            let (x, _, y, _) = task.apply_transforms(x, y).unwrap();
            assert_eq!(x.len(), want_x.len(), "{id}");
            for (a, b) in x.iter().chain(&y).zip(want_x.iter().chain(&want_y)) {
                // bmi's bisection stops at a width of 1e-12; everything else is float64 exact.
                assert!((a - b).abs() < 1e-9 * b.abs().max(1.0), "{id}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn closed_forms() {
        // Student-t 1x1, dof 1 (bivariate Cauchy): bmi 0.22417142752923613.
        assert!((student_mi_correction(1, 1, 1.0) - 0.224_171_427_529_236_13).abs() < 1e-13);
        // dof -> infinity: the Student-t with identity dispersion tends to independent normals.
        assert!(student_mi_correction(3, 3, 1e6).abs() < 1e-5);
        assert!((additive_uniform_mi(0.75) - 1.0 / 3.0).abs() < 1e-15);
        assert!((additive_uniform_mi(0.1) - (0.1 - 0.2f64.ln())).abs() < 1e-15);
        // Continuous at e = 1/2: 1/2 - log 1 = 1/2 = 1 / (4 * 1/2).
        assert!((additive_uniform_mi(0.5) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn bad_ids_and_parameters_are_errors() {
        for id in [
            "",
            "1v1-normal",
            "1v1-normal-x",
            "multinormal-dense-2-3-0.5",
            "multinormal-sparse-3-3-1-2.0",
            "student-identity-2-2",
            "wiggly-",
        ] {
            assert!(
                matches!(
                    BenchmarkTask::parse(id),
                    Err(BenchmarkTaskError::UnknownId { .. })
                ),
                "{id}"
            );
        }
        assert!(matches!(
            BenchmarkTask::parse("1v1-normal-1.5"),
            Err(BenchmarkTaskError::Gaussian(_))
        ));
        assert!(matches!(
            BenchmarkTask::parse("student-identity-2-2-0"),
            Err(BenchmarkTaskError::Parameter { .. })
        ));
        assert!(matches!(
            BenchmarkTask::parse("1v1-additive--1"),
            Err(BenchmarkTaskError::Parameter { .. }) | Err(BenchmarkTaskError::UnknownId { .. })
        ));
        // A spiral needs room to turn; the Swiss roll needs uniform 1-d input.
        assert!(matches!(
            BenchmarkTask::parse("spiral-multinormal-sparse-2-2-2-2.0"),
            Err(BenchmarkTaskError::Transform {
                transform: "spiral",
                ..
            })
        ));
        assert!(matches!(
            BenchmarkTask::parse("swissroll_x-1v1-normal-0.75"),
            Err(BenchmarkTaskError::Transform {
                transform: "swissroll_x",
                ..
            })
        ));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(BenchmarkTask::parse("1v1-normal-0.5")
            .unwrap()
            .sample(0, &mut rng)
            .is_err());
    }

    fn draw(id: &str, n: usize, seed: u64) -> (Matrix, Matrix) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        BenchmarkTask::parse(id)
            .unwrap()
            .sample(n, &mut rng)
            .unwrap()
    }

    #[test]
    fn student_samples_have_the_t_covariance() {
        // dof 5: Cov = df / (df - 2) I = 5/3 I. Fourth moments exist (dof > 4), so the
        // covariance entries have finite variance; 200k rows, tolerance several sd.
        let task = BenchmarkTask::new(Base::Student {
            dim_x: 2,
            dim_y: 2,
            df: 5.0,
        });
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (x, y) = task.sample(200_000, &mut rng).unwrap();
        let s = cbound_core::linalg::sample_covariance(&x.hstack(&y).unwrap());
        for i in 0..4 {
            for j in 0..4 {
                let want = if i == j { 5.0 / 3.0 } else { 0.0 };
                assert!(
                    (s[i * 4 + j] - want).abs() < 0.05,
                    "({i},{j}) {}",
                    s[i * 4 + j]
                );
            }
        }
        // Uncorrelated but dependent: the squared norms of X and Y are correlated (both scale
        // with 1/u), which is where the MI is.
        let nx: Vec<f64> = x
            .iter_rows()
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        let ny: Vec<f64> = y
            .iter_rows()
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        let (lx, ly): (Vec<f64>, Vec<f64>) =
            nx.iter().zip(&ny).map(|(a, b)| (a.ln(), b.ln())).unzip();
        let m = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (mx, my) = (m(&lx), m(&ly));
        let cov = lx
            .iter()
            .zip(&ly)
            .map(|(a, b)| (a - mx) * (b - my))
            .sum::<f64>();
        assert!(cov > 0.0);
    }

    #[test]
    fn student_mi_agrees_with_ksg_at_large_n() {
        use cbound_mi::{Estimator, Ksg};
        // Student-t 2x2, dof 2: 0.1931 nats. KSG on the asinh'd samples (same MI) at 20k rows
        // is close: its bias at 4 joint dimensions and this MI is a few hundredths.
        let (x, y) = draw("asinh-student-identity-2-2-2", 20_000, 5);
        let truth = BenchmarkTask::parse("student-identity-2-2-2")
            .unwrap()
            .true_mi()
            .unwrap();
        let e = Ksg::default()
            .estimate(&x.standardized().unwrap(), &y.standardized().unwrap())
            .unwrap();
        assert!((e.nats - truth).abs() < 0.05, "KSG {} vs {truth}", e.nats);
    }

    #[test]
    fn gaussian_based_samples_keep_the_base_covariance_and_transforms_their_shape() {
        // 2-pair 3x3 from bmi's strength 2: correlation 0.8 on (x0, y0), (x1, y1).
        let (x, y) = draw("multinormal-sparse-3-3-2-2.0", 100_000, 3);
        let s = cbound_core::linalg::sample_covariance(&x.hstack(&y).unwrap());
        let target = GaussianTask::TwoPair { dim: 3, rho: 0.8 }.covariance();
        for (a, b) in s.iter().zip(&target) {
            assert!((a - b).abs() < 0.02, "{a} vs {b}");
        }
        // normal_cdf: uniform marginals.
        let (x, _) = draw("normal_cdf-multinormal-sparse-3-3-2-2.0", 50_000, 4);
        assert!(x.as_slice().iter().all(|&v| v > 0.0 && v < 1.0));
        for m in x.column_means() {
            assert!((m - 0.5).abs() < 0.01);
        }
        // The spiral is a rotation: it keeps every row's norm.
        let (a, _) = draw("multinormal-sparse-5-5-2-2.0", 1000, 6);
        let (b, _) = draw("spiral-multinormal-sparse-5-5-2-2.0", 1000, 6);
        for (ra, rb) in a.iter_rows().zip(b.iter_rows()) {
            let (na, nb): (f64, f64) = (
                ra.iter().map(|v| v * v).sum(),
                rb.iter().map(|v| v * v).sum(),
            );
            assert!((na - nb).abs() < 1e-9 * na.max(1.0));
        }
        // Swiss roll: X becomes 2-d on the roll, radius t / 21 in [1.5 pi, 4.5 pi] / 21.
        let (x, y) = draw("swissroll_x-normal_cdf-1v1-normal-0.75", 2000, 7);
        assert_eq!((x.cols(), y.cols()), (2, 1));
        for r in x.iter_rows() {
            let rad = (r[0] * r[0] + r[1] * r[1]).sqrt() * 21.0;
            assert!((1.5 * PI - 1e-9..=4.5 * PI + 1e-9).contains(&rad), "{rad}");
        }
        // Bimodal X: 30% of the mass near 0, 70% near 5.
        let (x, _) = draw("1v1-bimodal-0.75", 50_000, 8);
        let high = x.as_slice().iter().filter(|&&v| v > 2.5).count() as f64 / 50_000.0;
        assert!((high - 0.7).abs() < 0.01, "{high}");
        // Additive noise: Y - X uniform on [-e, e].
        let (x, y) = draw("1v1-additive-0.1", 20_000, 9);
        let d: Vec<f64> = x
            .as_slice()
            .iter()
            .zip(y.as_slice())
            .map(|(a, b)| b - a)
            .collect();
        assert!(d.iter().all(|v| v.abs() <= 0.1));
        let var = d.iter().map(|v| v * v).sum::<f64>() / d.len() as f64;
        assert!((var - 0.01 / 3.0).abs() < 1e-4, "{var}");
    }

    #[test]
    fn every_v1_task_samples_with_its_dimensions() {
        for (s, id) in V1_TASKS.iter().enumerate() {
            let task = BenchmarkTask::parse(id).unwrap();
            let (x, y) = draw(id, 50, s as u64);
            assert_eq!((x.cols(), y.cols()), task.dims(), "{id}");
            assert!(
                x.as_slice()
                    .iter()
                    .chain(y.as_slice())
                    .all(|v| v.is_finite()),
                "{id}"
            );
        }
    }
}
