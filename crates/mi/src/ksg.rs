//! Kraskov-Stoegbauer-Grassberger (2004) k-nearest-neighbour MI estimator, algorithms 1 and 2.
//!
//! Distances are max-norm in every space by default, or Euclidean inside X and
//! inside Y ([`KsgMetric`]); the joint distance is the larger of the two marginal ones. The
//! k-th neighbour is found in the joint (x, y) space and marginal neighbours are counted
//! inside the radius it defines. Neighbour search is exact (see the `knn` module), so the estimate
//! depends only on the data and `k`, never on the search strategy.
//!
//! - Algorithm 1: eps_i = distance to the k-th joint neighbour;
//!   n_x(i) = #{j != i : ||x_j - x_i|| < eps_i} (strict), likewise n_y;
//!   I = psi(k) + psi(N) - <psi(n_x + 1) + psi(n_y + 1)>.
//! - Algorithm 2: eps_x(i), eps_y(i) = largest x- and y-distance among the k
//!   joint neighbours; n_x(i) = #{j != i : ||x_j - x_i|| <= eps_x(i)};
//!   I = psi(k) - 1/k + psi(N) - <psi(n_x) + psi(n_y)>.
//!
//! The estimator is nearly unbiased for low MI in low dimension and
//! underestimates as MI and dimension grow; it is a point estimate, not a
//! bound. Standardise columns first (max-norm mixes coordinates); break ties
//! in discrete-valued data with `preprocess::jitter`, because duplicate points
//! give zero neighbour distances. Constant columns are allowed (they add 0 to
//! every max-norm distance), which matters for embeddings with dead units.

use super::error::MiError;
use super::knn::{count_within, k_nearest, max_dist, NeighbourSearch};
use super::matrix::Matrix;
use super::special::digamma;
use super::{check_pair, Direction, Estimator, MiEstimate};

/// Which KSG formula to use. Written `1` or `2` in pipelines and on the command line (the
/// numbering of Kraskov et al. 2004), so any other number is refused when it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KsgAlgorithm {
    /// Algorithm 1 (hyper-cube of the joint k-th neighbour distance).
    #[default]
    One,
    /// Algorithm 2 (hyper-rectangle of the marginal extents of the k neighbours).
    Two,
}

impl KsgAlgorithm {
    /// The paper's number of the algorithm.
    pub fn number(self) -> u8 {
        match self {
            KsgAlgorithm::One => 1,
            KsgAlgorithm::Two => 2,
        }
    }
}

impl serde::Serialize for KsgAlgorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

impl<'de> serde::Deserialize<'de> for KsgAlgorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Number;
        impl serde::de::Visitor<'_> for Number {
            type Value = KsgAlgorithm;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("1 or 2")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KsgAlgorithm, E> {
                match v {
                    1 => Ok(KsgAlgorithm::One),
                    2 => Ok(KsgAlgorithm::Two),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<KsgAlgorithm, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
        }
        d.deserialize_u64(Number)
    }
}

impl schemars::JsonSchema for KsgAlgorithm {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KsgAlgorithm".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "integer", "enum": [1, 2]})
    }
}

/// The norm inside each marginal space. The joint distance is the larger of the two
/// marginal distances either way. Written `max` or `euclidean`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KsgMetric {
    /// Max-norm (Chebyshev) in X and in Y: the KSG paper's choice, with fast indexes.
    #[default]
    Max,
    /// Euclidean in X and in Y (exact brute-force search, O(N^2 d)).
    Euclidean,
}

impl KsgMetric {
    pub fn name(self) -> &'static str {
        match self {
            KsgMetric::Max => "max-norm",
            KsgMetric::Euclidean => "Euclidean",
        }
    }
}

/// KSG estimator configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ksg {
    /// Number of neighbours (>= 1; 3 is the usual choice).
    pub k: usize,
    /// Algorithm 1 or 2.
    pub algorithm: KsgAlgorithm,
    /// Neighbour-search strategy for the max-norm (affects speed only).
    pub search: NeighbourSearch,
    /// The norm inside X and inside Y.
    pub metric: KsgMetric,
}

impl Default for Ksg {
    fn default() -> Self {
        Ksg {
            k: 3,
            algorithm: KsgAlgorithm::One,
            search: NeighbourSearch::Auto,
            metric: KsgMetric::Max,
        }
    }
}

impl Ksg {
    /// Algorithm 1 with `k` neighbours; `k` must be at least 1.
    pub fn new(k: usize) -> Result<Self, MiError> {
        check_k(k)?;
        Ok(Ksg {
            k,
            ..Ksg::default()
        })
    }

    /// Same configuration with another algorithm.
    pub fn with_algorithm(mut self, algorithm: KsgAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Same configuration with another marginal norm.
    pub fn with_metric(mut self, metric: KsgMetric) -> Self {
        self.metric = metric;
        self
    }

    /// Same configuration with another neighbour-search strategy.
    pub fn with_search(mut self, search: NeighbourSearch) -> Self {
        self.search = search;
        self
    }
}

pub(crate) fn check_k(k: usize) -> Result<(), MiError> {
    if k == 0 {
        return Err(MiError::InvalidParameter {
            name: "k",
            reason: "k must be at least 1".into(),
        });
    }
    Ok(())
}

pub(crate) fn check_enough(n: usize, k: usize, what: &str) -> Result<(), MiError> {
    if n < k + 1 {
        return Err(MiError::TooFewSamples {
            context: format!("{what} with k = {k}"),
            needed: k + 1,
            got: n,
        });
    }
    Ok(())
}

/// Result of the KSG core: the estimate and how many points had a zero neighbour radius.
pub(crate) struct KsgCore {
    pub nats: f64,
    pub zero_radius: usize,
}

/// The KSG estimate on validated-or-not inputs (validates itself).
pub(crate) fn ksg_core(
    x: &Matrix,
    y: &Matrix,
    k: usize,
    algorithm: KsgAlgorithm,
    search: NeighbourSearch,
    metric: KsgMetric,
) -> Result<KsgCore, MiError> {
    ksg_core_phases(x, y, k, algorithm, search, metric, &mut |_| {})
}

/// [`ksg_core`], calling `phase` with the name of each max-norm phase as it ends (the
/// benchmark's breakdown of where the time goes; a no-op otherwise).
fn ksg_core_phases(
    x: &Matrix,
    y: &Matrix,
    k: usize,
    algorithm: KsgAlgorithm,
    search: NeighbourSearch,
    metric: KsgMetric,
    phase: &mut dyn FnMut(&'static str),
) -> Result<KsgCore, MiError> {
    check_k(k)?;
    let n = check_pair(x, y)?;
    check_enough(n, k, "KSG")?;
    if metric == KsgMetric::Euclidean {
        return Ok(ksg_euclidean(x, y, k, algorithm));
    }
    let joint = x.hstack(y)?;
    phase("joint copy");
    let nb = k_nearest(&joint, k, search);
    phase("joint k-nearest");
    let kf = k as f64;
    let (sum, zero_radius) = match algorithm {
        KsgAlgorithm::One => {
            let eps: Vec<f64> = nb.chunks_exact(k).map(|c| c[k - 1].dist).collect();
            let nx = count_within(x, &eps, true, search);
            phase("x counts");
            let ny = count_within(y, &eps, true, search);
            phase("y counts");
            (
                counts_term(algorithm, &nx, &ny, k),
                eps.iter().filter(|&&e| e == 0.0).count(),
            )
        }
        KsgAlgorithm::Two => {
            let mut ex = vec![0.0; n];
            let mut ey = vec![0.0; n];
            for (i, c) in nb.chunks_exact(k).enumerate() {
                for nbr in c {
                    ex[i] = f64::max(ex[i], max_dist(x.row(i), x.row(nbr.index)));
                    ey[i] = f64::max(ey[i], max_dist(y.row(i), y.row(nbr.index)));
                }
            }
            phase("marginal extents");
            let nx = count_within(x, &ex, false, search);
            phase("x counts");
            let ny = count_within(y, &ey, false, search);
            phase("y counts");
            let zeros = nb.chunks_exact(k).filter(|c| c[k - 1].dist == 0.0).count();
            (counts_term(algorithm, &nx, &ny, k), zeros)
        }
    };
    let nats = digamma(kf) + digamma(n as f64) - sum / n as f64;
    Ok(KsgCore { nats, zero_radius })
}

/// Sum over points of the marginal-count terms: psi(n_x + 1) + psi(n_y + 1) for algorithm 1,
/// psi(n_x) + psi(n_y) plus 1/k per point for algorithm 2 (so that the estimate is
/// psi(k) + psi(N) - sum / N either way).
fn counts_term(algorithm: KsgAlgorithm, nx: &[usize], ny: &[usize], k: usize) -> f64 {
    let pairs = nx.iter().zip(ny);
    match algorithm {
        KsgAlgorithm::One => pairs
            .map(|(&a, &b)| digamma(a as f64 + 1.0) + digamma(b as f64 + 1.0))
            .sum(),
        KsgAlgorithm::Two => {
            let s: f64 = pairs
                .map(|(&a, &b)| digamma(a as f64) + digamma(b as f64))
                .sum();
            s + nx.len() as f64 / k as f64
        }
    }
}

/// [`ksg_core`] with Euclidean marginal norms (inputs already checked).
fn ksg_euclidean(x: &Matrix, y: &Matrix, k: usize, algorithm: KsgAlgorithm) -> KsgCore {
    use super::knn_euclid::{count_within, k_nearest};
    ksg_euclidean_with(x, y, k, algorithm, k_nearest, count_within)
}

type Nearest = fn(&Matrix, &Matrix, usize) -> Vec<Vec<(usize, f64, f64, f64)>>;
type Count = fn(&Matrix, &[f64], bool) -> Vec<usize>;

fn ksg_euclidean_with(
    x: &Matrix,
    y: &Matrix,
    k: usize,
    algorithm: KsgAlgorithm,
    nearest: Nearest,
    count: Count,
) -> KsgCore {
    let n = x.rows();
    let nb = nearest(x, y, k);
    let kf = k as f64;
    let zero_radius = nb.iter().filter(|c| c[k - 1].1 == 0.0).count();
    let (nx, ny) = match algorithm {
        KsgAlgorithm::One => {
            let eps: Vec<f64> = nb.iter().map(|c| c[k - 1].1).collect();
            (count(x, &eps, true), count(y, &eps, true))
        }
        KsgAlgorithm::Two => {
            let extent = |pick: fn(&(usize, f64, f64, f64)) -> f64| -> Vec<f64> {
                nb.iter()
                    .map(|c| c.iter().map(pick).fold(0.0, f64::max))
                    .collect()
            };
            let (ex, ey) = (extent(|t| t.2), extent(|t| t.3));
            (count(x, &ex, false), count(y, &ey, false))
        }
    };
    let sum = counts_term(algorithm, &nx, &ny, k);
    KsgCore {
        nats: digamma(kf) + digamma(n as f64) - sum / n as f64,
        zero_radius,
    }
}

impl Ksg {
    /// The Euclidean estimate through the direct scalar scans the tiled search replaced (the
    /// same bits). Kept to check and to time the tiled search against (`cargo run --release
    /// -p cbound-mi --example ksg_euclid_bench`); not for use.
    #[doc(hidden)]
    pub fn euclidean_scalar_reference(&self, x: &Matrix, y: &Matrix) -> Result<f64, MiError> {
        use super::knn_euclid::{count_within_scalar, k_nearest_scalar};
        check_k(self.k)?;
        let n = check_pair(x, y)?;
        check_enough(n, self.k, "KSG")?;
        let core = ksg_euclidean_with(
            x,
            y,
            self.k,
            self.algorithm,
            k_nearest_scalar,
            count_within_scalar,
        );
        Ok(core.nats)
    }
}

/// Seconds per named phase, in the order the phases ran.
#[doc(hidden)]
pub type PhaseTimes = Vec<(&'static str, f64)>;

impl Ksg {
    /// The estimate in nats and the seconds each max-norm phase took (joint copy, joint
    /// k-nearest search, marginal counts), for `ksg_maxnorm_bench`'s breakdown of where the
    /// time goes; not for use.
    #[doc(hidden)]
    pub fn phase_seconds(&self, x: &Matrix, y: &Matrix) -> Result<(f64, PhaseTimes), MiError> {
        let mut times = Vec::new();
        let mut last = std::time::Instant::now();
        let core = ksg_core_phases(
            x,
            y,
            self.k,
            self.algorithm,
            self.search,
            self.metric,
            &mut |name| {
                let now = std::time::Instant::now();
                times.push((name, (now - last).as_secs_f64()));
                last = now;
            },
        )?;
        Ok((core.nats, times))
    }
}

impl Estimator for Ksg {
    fn name(&self) -> &'static str {
        match self.algorithm {
            KsgAlgorithm::One => "ksg1",
            KsgAlgorithm::Two => "ksg2",
        }
    }

    fn direction(&self) -> Direction {
        Direction::Estimate
    }

    fn estimate(&self, x: &Matrix, y: &Matrix) -> Result<MiEstimate, MiError> {
        let core = ksg_core(x, y, self.k, self.algorithm, self.search, self.metric)?;
        let alg = match self.algorithm {
            KsgAlgorithm::One => 1,
            KsgAlgorithm::Two => 2,
        };
        let mut note = format!(
            "KSG algorithm {alg}, k = {}, {}",
            self.k,
            self.metric.name()
        );
        if core.zero_radius > 0 {
            note.push_str(&format!(
                "; {} points have a zero k-NN radius (duplicate points): jitter ties before estimating",
                core.zero_radius
            ));
        }
        Ok(MiEstimate {
            nats: core.nats,
            n: x.rows(),
            dims: (x.cols(), y.cols()),
            direction: Direction::Estimate,
            note: Some(note),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{bivariate, gaussian, split, uniform};
    use super::*;

    #[test]
    fn euclidean_equals_max_norm_with_one_dimensional_marginals() {
        // |a - b| = sqrt((a - b)^2) exactly, so every distance, count and estimate agrees.
        let (x, y) = bivariate(700, 0.6, 41);
        for algorithm in [KsgAlgorithm::One, KsgAlgorithm::Two] {
            let max = Ksg::new(3).unwrap().with_algorithm(algorithm);
            let euc = max.with_metric(KsgMetric::Euclidean);
            assert_eq!(
                max.estimate(&x, &y).unwrap().nats,
                euc.estimate(&x, &y).unwrap().nats
            );
        }
    }

    #[test]
    fn euclidean_marginals_track_a_dense_gaussian() {
        // Five pairs at correlation 0.5 (x_i with y_i): I = -5/2 log(0.75).
        let d = 10;
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            cov[i * d + i] = 1.0;
        }
        for i in 0..5 {
            cov[i * d + 5 + i] = 0.5;
            cov[(5 + i) * d + i] = 0.5;
        }
        let truth = -2.5 * 0.75f64.ln();
        let (x, y) = split(&gaussian(2000, &cov, 43), 5);
        for algorithm in [KsgAlgorithm::One, KsgAlgorithm::Two] {
            let max = Ksg::new(3).unwrap().with_algorithm(algorithm);
            let m = max.estimate(&x, &y).unwrap().nats;
            let e = max
                .with_metric(KsgMetric::Euclidean)
                .estimate(&x, &y)
                .unwrap();
            eprintln!("5x5 dense rho 0.5, n 2000, algorithm {}: truth {truth:.4}, max-norm {m:.4}, Euclidean {:.4}", algorithm.number(), e.nats);
            assert!(e.note.as_deref().is_some_and(|n| n.contains("Euclidean")));
            // Both fall below the truth in 10 joint dimensions; Euclidean balls less so.
            assert!(e.nats < truth && m < e.nats, "{m} {} {truth}", e.nats);
        }
    }

    /// For each i, every other point as (joint dist, index, x dist, y dist),
    /// sorted by (joint dist, index): a direct transcription of the definitions.
    fn naive_lists(x: &Matrix, y: &Matrix) -> Vec<Vec<(f64, usize, f64, f64)>> {
        let n = x.rows();
        let dist = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(u, v)| (u - v).abs())
                .fold(0.0, f64::max)
        };
        (0..n)
            .map(|i| {
                let mut all: Vec<(f64, usize, f64, f64)> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| {
                        let dx = dist(x.row(i), x.row(j));
                        let dy = dist(y.row(i), y.row(j));
                        (dx.max(dy), j, dx, dy)
                    })
                    .collect();
                all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
                all
            })
            .collect()
    }

    fn naive(lists: &[Vec<(f64, usize, f64, f64)>], k: usize, alg: KsgAlgorithm) -> f64 {
        let n = lists.len();
        let mut total = 0.0;
        for all in lists {
            match alg {
                KsgAlgorithm::One => {
                    let eps = all[k - 1].0;
                    let nx = all.iter().filter(|t| t.2 < eps).count();
                    let ny = all.iter().filter(|t| t.3 < eps).count();
                    total += digamma(nx as f64 + 1.0) + digamma(ny as f64 + 1.0);
                }
                KsgAlgorithm::Two => {
                    let ex = all[..k].iter().map(|t| t.2).fold(0.0, f64::max);
                    let ey = all[..k].iter().map(|t| t.3).fold(0.0, f64::max);
                    let nx = all.iter().filter(|t| t.2 <= ex).count();
                    let ny = all.iter().filter(|t| t.3 <= ey).count();
                    total += digamma(nx as f64) + digamma(ny as f64) + 1.0 / k as f64;
                }
            }
        }
        digamma(k as f64) + digamma(n as f64) - total / n as f64
    }

    fn datasets() -> Vec<(String, Matrix, Matrix)> {
        let mut out = Vec::new();
        // Low-dimensional (tree / sorted paths) and high-dimensional (brute
        // force, including marginals wider than one 32-coordinate panel).
        for (dx, dy, seed) in [(1, 1, 1u64), (2, 2, 2), (1, 3, 3), (5, 7, 4), (40, 3, 5)] {
            let u = uniform(200, dx + dy, seed);
            // Couple y to x so the MI is not trivially zero.
            let mut m = u.clone();
            for i in 0..m.rows() {
                let x0 = m.row(i)[0];
                m.row_mut(i)[dx] += 0.8 * x0;
            }
            let (x, y) = split(&m, dx);
            out.push((format!("uniform {dx}x{dy}"), x, y));
        }
        // Coarsely rounded values create many exact distance ties.
        let g = gaussian(200, &[1.0, 0.6, 0.2, 0.6, 1.0, 0.3, 0.2, 0.3, 1.0], 7);
        let r = g.map(|v| (v * 4.0).round() / 4.0);
        let (x, y) = split(&r, 1);
        out.push(("rounded 1x2 (ties)".into(), x, y));
        let (x, y) = split(&r, 2);
        out.push(("rounded 2x1 (ties)".into(), x, y));
        // Large offsets and heavy tails stress the fixed-point first stage
        // of the brute-force search (coarse quantisation, rounding slack).
        let h = uniform(200, 9, 8).map(|v| 1e6 + v + 0.3 / (v + 1e-3));
        let (x, y) = split(&h, 4);
        out.push(("offset heavy-tailed 4x5".into(), x, y));
        out
    }

    #[test]
    fn matches_naive_definition_all_paths() {
        for (name, x, y) in datasets() {
            let lists = naive_lists(&x, &y);
            for alg in [KsgAlgorithm::One, KsgAlgorithm::Two] {
                for k in [1, 3, 5] {
                    let want = naive(&lists, k, alg);
                    for search in [
                        NeighbourSearch::Auto,
                        NeighbourSearch::BruteForce,
                        NeighbourSearch::KdTree,
                    ] {
                        let est = Ksg {
                            k,
                            algorithm: alg,
                            search,
                            metric: KsgMetric::Max,
                        };
                        let got = est.estimate(&x, &y).unwrap().nats;
                        assert!(
                            (got - want).abs() < 1e-9,
                            "{name} {alg:?} k={k} {search:?}: got {got}, naive {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn independent_is_near_zero_and_dependent_is_positive() {
        let (x, y) = bivariate(2000, 0.0, 11);
        let z = Ksg::default().estimate(&x, &y).unwrap();
        assert!(z.nats.abs() < 0.03, "{}", z.nats);
        let (x, y) = bivariate(2000, 0.9, 12);
        let truth = -0.5 * (1.0f64 - 0.81).ln();
        for alg in [KsgAlgorithm::One, KsgAlgorithm::Two] {
            let e = Ksg::default().with_algorithm(alg).estimate(&x, &y).unwrap();
            assert!((e.nats - truth).abs() < 0.06, "{alg:?}: {}", e.nats);
            assert_eq!(e.direction, Direction::Estimate);
            assert_eq!(e.dims, (1, 1));
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let (x, y) = bivariate(3, 0.5, 1);
        // 3 samples, k = 3 needs 4.
        assert_eq!(
            Ksg::default().estimate(&x, &y),
            Err(MiError::TooFewSamples {
                context: "KSG with k = 3".into(),
                needed: 4,
                got: 3
            })
        );
        let msg = Ksg::default().estimate(&x, &y).unwrap_err().to_string();
        assert!(msg.contains('4') && msg.contains('3'), "{msg}");

        let (x, _) = bivariate(10, 0.5, 1);
        let (_, y) = bivariate(12, 0.5, 1);
        assert!(matches!(
            Ksg::default().estimate(&x, &y),
            Err(MiError::RowMismatch {
                a_rows: 10,
                b_rows: 12,
                ..
            })
        ));

        let (x, mut y) = bivariate(10, 0.5, 1);
        y.row_mut(7)[0] = f64::INFINITY;
        assert!(matches!(
            Ksg::default().estimate(&x, &y),
            Err(MiError::NonFinite {
                which: "y",
                row: 7,
                column: 0,
                ..
            })
        ));

        assert!(matches!(
            Ksg::new(0),
            Err(MiError::InvalidParameter { name: "k", .. })
        ));
        let (x, y) = bivariate(10, 0.5, 1);
        let bad = Ksg {
            k: 0,
            ..Ksg::default()
        };
        assert!(bad.estimate(&x, &y).is_err());
        let empty = Matrix::zeros(10, 0);
        assert!(matches!(
            Ksg::default().estimate(&empty, &y),
            Err(MiError::Empty { which: "x", .. })
        ));
    }

    #[test]
    fn duplicates_are_flagged() {
        let x = Matrix::from_column(&[0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
        let y = Matrix::from_column(&[0.0, 0.0, 0.0, 0.0, 1.0, 3.0, 2.0, 4.0]);
        let e = Ksg::default().estimate(&x, &y).unwrap();
        assert!(e.note.unwrap().contains("zero k-NN radius"));
    }
}
