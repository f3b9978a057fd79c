//! Trained variational critics: what the `infonce_critic`, `nwj_critic` and `mine_critic`
//! kinds share apart from the training itself.
//!
//! A critic T(x, y) is a small MLP, either separable, T(x, y) = f(x) . g(y), or concatenated,
//! T(x, y) = h([x, y]). It is fit on a training split of the rows and scored on the held-out
//! rest, in disjoint batches of N pairs: each batch gives an N x N score matrix
//! S[i][j] = T(x_i, y_j) whose diagonal holds the N joint pairs and whose N (N - 1)
//! off-diagonal entries stand in for the product of the marginals. The value is the mean of
//! the per-batch values of the objective ([`Objective::value`]):
//!
//! * InfoNCE (van den Oord et al. 2018): `log N + mean_i (S_ii - logsumexp_j S_ij)`. For a
//!   critic fixed before the batch is drawn (fit on other rows) its expectation is at most
//!   I(X;Y), and every batch value is at most log N, so the estimate is a lower bound in
//!   expectation, capped at log N.
//! * NWJ (Nguyen, Wainwright, Jordan 2010): `mean_i S_ii - e^-1 mean_{i != j} exp(S_ij)`: each
//!   term is an unbiased sample mean, so the expectation is the NWJ bound of the fitted critic,
//!   at most I(X;Y). No cap, but a high variance when the critic is large.
//! * MINE / Donsker-Varadhan (Belghazi et al. 2018): `mean_i S_ii - log mean_{i != j} exp(S_ij)`.
//!   The log of a sample mean is biased upward by Jensen's inequality, so the value is an
//!   estimate, not a bound; no cap.
//!
//! Training is behind [`CriticTrainer`], passed in by the caller (`cbound mi` and the
//! `estimate_mi` stage pass cbound-critic's ONNX implementation): this crate knows no neural
//! network library. The split, the order of training batches and the scoring are here, so
//! every trainer sees the same rows in the same order for a seed.

use std::fmt::Debug;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Direction, Matrix, MiError};

/// Which variational bound the critic maximises and is scored by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    Infonce,
    Nwj,
    /// The Donsker-Varadhan objective (MINE without its moving-average gradient correction).
    Mine,
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Infonce => "InfoNCE",
            Objective::Nwj => "NWJ",
            Objective::Mine => "MINE (Donsker-Varadhan)",
        }
    }

    /// InfoNCE and NWJ on held-out batches are lower bounds in expectation; DV is biased.
    pub fn direction(self) -> Direction {
        match self {
            Objective::Infonce | Objective::Nwj => Direction::LowerBound,
            Objective::Mine => Direction::Estimate,
        }
    }

    /// The largest value a batch of N pairs can give: log N for InfoNCE, none for the others.
    pub fn cap(self, batch: usize) -> Option<f64> {
        match self {
            Objective::Infonce => Some((batch as f64).ln()),
            Objective::Nwj | Objective::Mine => None,
        }
    }

    /// The objective on one batch's score matrix (square, N >= 2, joint pairs on the
    /// diagonal).
    pub fn value(self, scores: &Matrix) -> Result<f64, MiError> {
        let n = scores.rows();
        if scores.cols() != n || n < 2 {
            return Err(MiError::InvalidParameter {
                name: "scores",
                reason: format!(
                    "a critic's score matrix must be N x N with N >= 2, got {n} x {}",
                    scores.cols()
                ),
            });
        }
        scores.check_finite("critic scores")?;
        let nf = n as f64;
        let diag = (0..n).map(|i| scores.row(i)[i]).sum::<f64>() / nf;
        Ok(match self {
            Objective::Infonce => {
                let lse = (0..n).map(|i| log_sum_exp(scores.row(i))).sum::<f64>() / nf;
                nf.ln() + diag - lse
            }
            Objective::Nwj => {
                let off = off_diagonal(scores);
                let mean_exp = off.iter().map(|s| (s - 1.0).exp()).sum::<f64>() / off.len() as f64;
                diag - mean_exp
            }
            Objective::Mine => {
                let off = off_diagonal(scores);
                diag - (log_sum_exp(&off) - (off.len() as f64).ln())
            }
        })
    }
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + v.iter().map(|s| (s - max).exp()).sum::<f64>().ln()
}

fn off_diagonal(s: &Matrix) -> Vec<f64> {
    let n = s.rows();
    (0..n)
        .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
        .map(|(i, j)| s.row(i)[j])
        .collect()
}

/// The critic's form; `separable` or `concat` in pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CriticArch {
    /// T(x, y) = f(x) . g(y) with one MLP per side (cheap: N x N scores from 2N forward rows).
    #[default]
    Separable,
    /// T(x, y) = h([x, y]) with one MLP on the concatenated pair (more flexible; N^2 forward
    /// rows per batch).
    Concat,
}

/// Everything a trainer needs to fit one critic.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticConfig {
    pub objective: Objective,
    pub arch: CriticArch,
    /// Hidden widths of each MLP (ReLU between layers).
    pub hidden: Vec<usize>,
    /// Output width of f and g (separable only).
    pub embedding: usize,
    /// Adam steps.
    pub steps: usize,
    /// N, pairs per training batch.
    pub batch: usize,
    pub lr: f64,
    /// Squash every score into (-c, c) with `c tanh(T / c)`, in training and scoring (what
    /// makes a held-out InfoNCE batch value bounded, and so certifiable).
    pub score_bound: Option<f64>,
    /// Initialisation and batch order.
    pub seed: u64,
}

/// Fits critics. Implemented outside this crate (cbound-critic, on ONNX Runtime); the caller
/// of [`crate::spec::estimate_with`] passes one.
pub trait CriticTrainer: Send + Sync + Debug {
    /// Fits a critic on the pairs (x_i, y_i), taking [`training_batches`] in order.
    fn train(
        &self,
        cfg: &CriticConfig,
        x: &Matrix,
        y: &Matrix,
    ) -> Result<Box<dyn TrainedCritic>, Box<dyn std::error::Error + Send + Sync>>;
}

/// A fitted critic.
pub trait TrainedCritic {
    /// The N x N scores S[i][j] = T(x_i, y_j) of N rows of x and of y.
    fn scores(
        &mut self,
        x: &Matrix,
        y: &Matrix,
    ) -> Result<Matrix, Box<dyn std::error::Error + Send + Sync>>;

    /// How training went, for the row's note (e.g. the first and last losses).
    fn summary(&self) -> String;
}

/// A seeded split of `n` rows into training and held-out indices: the first
/// `round(train_fraction * n)` of a shuffle train.
pub fn split(n: usize, train_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c417_1c00_0001));
    let n_train = ((train_fraction * n as f64).round() as usize).min(n);
    let held_out = order.split_off(n_train);
    (order, held_out)
}

/// The rows of each training step: `steps` batches of `batch` distinct rows of `0..n`, taken
/// from successive seeded shuffles (epochs), so every row is used once before any twice.
pub fn training_batches(n: usize, batch: usize, steps: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xba7c_4e50_0000_0002);
    let mut out = Vec::with_capacity(steps);
    let mut order: Vec<usize> = (0..n).collect();
    if batch == 0 || batch > n {
        return out;
    }
    while out.len() < steps {
        order.shuffle(&mut rng);
        for chunk in order.chunks_exact(batch) {
            if out.len() == steps {
                break;
            }
            out.push(chunk.to_vec());
        }
    }
    out
}

/// The held-out rows in disjoint batches of `batch` (a seeded shuffle; the remainder is left
/// out so every batch has the same N).
pub fn held_out_batches(held_out: &[usize], batch: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order = held_out.to_vec();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x4e1d_0000_0000_0003));
    if batch == 0 {
        return Vec::new();
    }
    order.chunks_exact(batch).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Score matrices and the three objectives' values computed by NumPy
    /// (tests/fixtures/critic_objectives.json, written by scripts/critic_fixtures.py).
    #[test]
    fn objectives_match_the_numpy_fixture() {
        let text = include_str!("../../../tests/fixtures/critic_objectives.json");
        let fixture: serde_json::Value = serde_json::from_str(text).expect("fixture parses");
        let cases = fixture["cases"].as_array().expect("cases");
        assert!(cases.len() >= 3);
        for case in cases {
            let rows: Vec<Vec<f64>> = serde_json::from_value(case["scores"].clone()).unwrap();
            let s = Matrix::from_rows(&rows).unwrap();
            for (objective, key) in [
                (Objective::Infonce, "infonce"),
                (Objective::Nwj, "nwj"),
                (Objective::Mine, "dv"),
            ] {
                let want = case[key].as_f64().unwrap();
                let got = objective.value(&s).unwrap();
                assert!(
                    (got - want).abs() < 1e-12 * want.abs().max(1.0),
                    "{key} on {}: {got} vs NumPy {want}",
                    case["name"]
                );
            }
        }
    }

    #[test]
    fn infonce_never_exceeds_log_n_and_constant_critics_give_zero() {
        let n = 8;
        // A perfect critic: huge on the diagonal.
        let sharp = Matrix::new(
            n,
            n,
            (0..n * n)
                .map(|k| if k / n == k % n { 50.0 } else { 0.0 })
                .collect(),
        )
        .unwrap();
        let v = Objective::Infonce.value(&sharp).unwrap();
        let cap = Objective::Infonce.cap(n).unwrap();
        assert!(v <= cap && v > cap - 1e-9, "{v} vs {cap}");
        let flat = Matrix::new(n, n, vec![0.3; n * n]).unwrap();
        assert!(Objective::Infonce.value(&flat).unwrap().abs() < 1e-12);
        assert!(Objective::Mine.value(&flat).unwrap().abs() < 1e-12);
        // NWJ's optimum for independent data is T = 1: value 0.
        let one = Matrix::new(n, n, vec![1.0; n * n]).unwrap();
        assert!(Objective::Nwj.value(&one).unwrap().abs() < 1e-12);
        assert!(Objective::Nwj.value(&flat).unwrap() < 0.0);
    }

    #[test]
    fn bad_score_matrices_are_errors() {
        let rect = Matrix::new(2, 3, vec![0.0; 6]).unwrap();
        assert!(Objective::Infonce.value(&rect).is_err());
        let nan = Matrix::new(2, 2, vec![0.0, f64::NAN, 0.0, 0.0]).unwrap();
        assert!(Objective::Nwj.value(&nan).is_err());
    }

    #[test]
    fn splits_and_batches_are_seeded_and_disjoint() {
        let (train, test) = split(100, 0.6, 3);
        assert_eq!((train.len(), test.len()), (60, 40));
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(split(100, 0.6, 3), (train, test.clone()));
        assert_ne!(split(100, 0.6, 4).0, split(100, 0.6, 3).0);
        let batches = training_batches(10, 4, 7, 1);
        assert_eq!(batches.len(), 7);
        assert!(batches.iter().all(|b| b.len() == 4));
        let held = held_out_batches(&test, 16, 2);
        assert_eq!(held.len(), 2);
        assert!(training_batches(3, 4, 5, 0).is_empty());
    }
}
