//! Held-out evaluation shared by the classifiers that bound I(U;Z) from labels (`probe`,
//! `knn`): the seeded split of rows into those that fit the classifier and those that score
//! it, and the scoring of its class probabilities on the scored rows into the point value,
//! the accuracy and the certificate.
//!
//! The split is recorded ([`HeldOut`]), not only its sizes: `estimate_mi` writes every row's
//! side to `mi_estimates.splits.parquet`, so anyone auditing an estimate for leakage can check
//! that no scored row was fitted on. A classifier fixed by the fitted rows alone, scored on
//! rows it never saw, is what makes the held-out losses i.i.d. given the fit, which is all the
//! certificate's confidence bounds assume beyond i.i.d. rows.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::certificate::Certificate;
use super::confidence::BoundedSample;
use super::{Matrix, MiError};

/// Which rows fitted a classifier and which scored it: cut from a seeded shuffle
/// ([`HeldOut::random`]) or given by the data ([`HeldOut::given`], e.g. CIFAR's own train and
/// test images through `estimate_mi`'s `split`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldOut {
    /// Seed of the shuffle the split was cut from; `None` when the data gave the split.
    pub seed: Option<u64>,
    /// The share of rows that fit.
    pub train_fraction: f64,
    /// Rows that fitted the classifier, in the shuffled order (indices into the rows the
    /// estimator was given; `estimate_mi` maps them to the rows of the upstream table).
    pub train: Vec<usize>,
    /// Rows it was scored on, disjoint from `train`.
    pub test: Vec<usize>,
}

impl HeldOut {
    /// The first `round(n * train_fraction)` rows of a seeded shuffle fit, the rest score.
    /// The probe has cut its split this way from the start, so its values are unchanged.
    pub fn random(n: usize, train_fraction: f64, seed: u64) -> Result<HeldOut, MiError> {
        if !(train_fraction > 0.0 && train_fraction < 1.0) {
            return Err(MiError::InvalidParameter {
                name: "train_fraction",
                reason: format!("must lie strictly between 0 and 1, got {train_fraction}"),
            });
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n_train = ((n as f64) * train_fraction).round() as usize;
        let test = order.split_off(n_train.min(n));
        Ok(HeldOut {
            seed: Some(seed),
            train_fraction,
            train: order,
            test,
        })
    }

    /// A split the data gives, over `n` rows: `train` fits, `test` scores. Refused unless
    /// both sides are non-empty, disjoint, free of repeats and inside `0..n` (rows in
    /// neither side are simply not used).
    pub fn given(n: usize, train: Vec<usize>, test: Vec<usize>) -> Result<HeldOut, MiError> {
        let total = train.len() + test.len();
        let h = HeldOut {
            seed: None,
            train_fraction: if total == 0 {
                0.0
            } else {
                train.len() as f64 / total as f64
            },
            train,
            test,
        };
        h.check(n)?;
        Ok(h)
    }

    /// Refuses a split that is not one over `n` rows: a row on both sides or twice on one, a
    /// row beyond `n`, or an empty side (nothing to fit, or nothing to score).
    pub fn check(&self, n: usize) -> Result<(), MiError> {
        let mut side = vec![0u8; n];
        for (rows, mark) in [(&self.train, 1u8), (&self.test, 2)] {
            for &i in rows {
                match side.get_mut(i) {
                    Some(s) if *s == 0 => *s = mark,
                    Some(_) => {
                        return Err(MiError::InvalidParameter {
                            name: "split",
                            reason: format!(
                                "row {i} is in the split twice (fitted and scored, or repeated)"
                            ),
                        })
                    }
                    None => {
                        return Err(MiError::InvalidParameter {
                            name: "split",
                            reason: format!("row {i} of the split is beyond the {n} rows"),
                        })
                    }
                }
            }
        }
        if self.train.is_empty() || self.test.is_empty() {
            return Err(MiError::InvalidParameter {
                name: "split",
                reason: format!(
                    "a held-out split needs rows on both sides, got {} to fit and {} to score",
                    self.train.len(),
                    self.test.len()
                ),
            });
        }
        Ok(())
    }

    /// The same split over a subsample: `rows[j]` is the row of this split's index space
    /// that the subsample's row `j` is, and the result indexes the subsample (rows of the
    /// split the subsample left out drop out). The inverse of [`HeldOut::remap`].
    pub fn restrict(&self, rows: &[usize]) -> Result<HeldOut, MiError> {
        let len = rows
            .iter()
            .chain(&self.train)
            .chain(&self.test)
            .max()
            .map_or(0, |m| m + 1);
        let mut side = vec![0u8; len];
        for (part, mark) in [(&self.train, 1u8), (&self.test, 2)] {
            for &i in part {
                side[i] = mark;
            }
        }
        let pick = |mark: u8| -> Vec<usize> {
            rows.iter()
                .enumerate()
                .filter(|&(_, &r)| side[r] == mark)
                .map(|(j, _)| j)
                .collect()
        };
        let mut h = HeldOut::given(rows.len(), pick(1), pick(2))?;
        h.seed = self.seed;
        Ok(h)
    }

    /// The same split with every row index `i` replaced by `rows[i]` (the rows of a subsample
    /// or snapshot in the table they were taken from).
    pub fn remap(&self, rows: &[usize]) -> Result<HeldOut, MiError> {
        let map = |side: &[usize]| -> Result<Vec<usize>, MiError> {
            side.iter()
                .map(|&i| {
                    rows.get(i)
                        .copied()
                        .ok_or_else(|| MiError::InvalidParameter {
                            name: "rows",
                            reason: format!(
                                "held-out row {i} is outside the {} rows it was drawn from",
                                rows.len()
                            ),
                        })
                })
                .collect()
        };
        Ok(HeldOut {
            seed: self.seed,
            train_fraction: self.train_fraction,
            train: map(&self.train)?,
            test: map(&self.test)?,
        })
    }
}

/// Labels as class indices: one column of non-negative integers.
pub(crate) fn labels_of(z: &Matrix, who: &str) -> Result<Vec<usize>, MiError> {
    if z.cols() != 1 {
        return Err(MiError::InvalidParameter {
            name: "labels",
            reason: format!("{who} needs one label column, got {}", z.cols()),
        });
    }
    z.iter_rows()
        .enumerate()
        .map(|(i, r)| {
            let v = r[0];
            if v >= 0.0 && v.fract() == 0.0 && v < 1e6 {
                Ok(v as usize)
            } else {
                Err(MiError::InvalidParameter {
                    name: "labels",
                    reason: format!(
                        "row {i}: label {v} is not a class index (a non-negative integer)"
                    ),
                })
            }
        })
        .collect()
}

/// K (declared, or the largest label + 1) and the count of each label over all rows; an
/// error for labels outside a declared K, or for one class only when K is not declared.
pub(crate) fn class_counts(
    labels: &[usize],
    classes: Option<usize>,
) -> Result<(usize, Vec<usize>), MiError> {
    let seen = labels.iter().copied().max().unwrap_or(0) + 1;
    let k = match classes {
        Some(c) if c < seen => {
            return Err(MiError::InvalidParameter {
                name: "classes",
                reason: format!(
                    "`classes: {c}` but a label is {}: labels must lie in 0..{c}",
                    seen - 1
                ),
            })
        }
        Some(c) => c,
        None => seen,
    };
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l] += 1;
    }
    // With K declared, one observed class is data, not an error: Z may be nearly constant,
    // and the certified bound then says (correctly) that little is known.
    if counts.iter().filter(|&&c| c > 0).count() < 2 && classes.is_none() {
        return Err(MiError::SingleClass {
            which: "labels",
            n: labels.len(),
        });
    }
    Ok((k, counts))
}

/// Plug-in entropy of the label counts, nats.
pub(crate) fn entropy(counts: &[usize]) -> f64 {
    let n: usize = counts.iter().sum();
    -counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let q = c as f64 / n as f64;
            q * q.ln()
        })
        .sum::<f64>()
}

/// A classifier's class probabilities scored on the held-out rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scored {
    /// Mean of -log q(z|u) (each probability clamped at 1e-300).
    pub cross_entropy: f64,
    /// Mean of -log q_eps(z|u), the classifier mixed with the uniform floor.
    pub floored_cross_entropy: f64,
    pub correct: usize,
    /// The predicted class of each held-out row (the most probable; ties to the lowest class,
    /// as NumPy's argmax).
    pub predictions: Vec<usize>,
    pub certificate: Certificate,
}

/// Scores `probs` (held-out rows x `stride`, the first `k` columns the class probabilities)
/// against the held-out labels `y`, with the floor eps of the certificate.
pub(crate) fn score(
    probs: &[f64],
    stride: usize,
    k: usize,
    y: &[usize],
    floor: f64,
    counts: &[usize],
) -> Result<Scored, MiError> {
    if !(floor > 0.0 && floor < 1.0) {
        return Err(MiError::InvalidParameter {
            name: "floor",
            reason: format!("must lie strictly between 0 and 1, got {floor}"),
        });
    }
    let mut ce = 0.0;
    let mut correct = 0usize;
    let mut floored = Vec::with_capacity(y.len());
    let mut predictions = Vec::with_capacity(y.len());
    let uniform = floor / k as f64;
    for (row, &label) in probs.chunks_exact(stride).zip(y) {
        let p = &row[..k];
        ce -= p[label].max(1e-300).ln();
        floored.push(-((1.0 - floor) * p[label] + uniform).ln());
        let mut best = 0;
        for (c, v) in p.iter().enumerate() {
            if *v > p[best] {
                best = c;
            }
        }
        correct += usize::from(best == label);
        predictions.push(best);
    }
    let n_test = y.len();
    let loss = BoundedSample::from_values(&floored, 0.0, (k as f64 / floor).ln())?;
    Ok(Scored {
        cross_entropy: ce / n_test as f64,
        floored_cross_entropy: loss.mean,
        correct,
        predictions,
        certificate: Certificate::Probe {
            loss,
            floor,
            classes: k,
            label_counts: counts.iter().map(|&c| c as u64).collect(),
            correct: correct as u64,
            n_test: n_test as u64,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_disjoint_cover_every_row_and_repeat() {
        for (n, f, seed) in [(10, 0.8, 1u64), (1001, 0.5, 2), (7, 0.3, 3)] {
            let a = HeldOut::random(n, f, seed).unwrap();
            assert_eq!(a, HeldOut::random(n, f, seed).unwrap());
            assert_eq!(a.train.len(), ((n as f64) * f).round() as usize);
            let mut all: Vec<usize> = a.train.iter().chain(&a.test).copied().collect();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..n).collect::<Vec<_>>(),
                "each row on exactly one side"
            );
            assert_ne!(a, HeldOut::random(n, f, seed + 1).unwrap());
        }
        let h = HeldOut::random(4, 0.5, 9).unwrap();
        let m = h.remap(&[10, 20, 30, 40]).unwrap();
        assert_eq!(
            m.train,
            h.train.iter().map(|i| (i + 1) * 10).collect::<Vec<_>>()
        );
        assert!(h.remap(&[1, 2]).is_err());
        assert!(HeldOut::random(4, 1.0, 0).is_err());
    }

    #[test]
    fn given_splits_are_checked_and_follow_a_subsample() {
        let h = HeldOut::given(6, vec![0, 2, 4], vec![1, 5]).unwrap();
        assert_eq!(h.seed, None);
        assert!((h.train_fraction - 0.6).abs() < 1e-12);
        // Overlap, repeats, out of range and an empty side are each refused.
        assert!(HeldOut::given(6, vec![0, 1], vec![1]).is_err());
        assert!(HeldOut::given(6, vec![0, 0], vec![1]).is_err());
        assert!(HeldOut::given(6, vec![0], vec![6]).is_err());
        assert!(HeldOut::given(6, vec![], vec![1]).is_err());
        assert!(HeldOut::given(6, vec![0], vec![]).is_err());
        // A subsample of rows [5, 0, 3, 2] keeps each row's side and drops row 3 (in neither).
        let sub = h.restrict(&[5, 0, 3, 2]).unwrap();
        assert_eq!((sub.train.clone(), sub.test.clone()), (vec![1, 3], vec![0]));
        // Mapped back through the subsample, it names the original rows.
        let back = sub.remap(&[5, 0, 3, 2]).unwrap();
        assert_eq!((back.train, back.test), (vec![0, 2], vec![5]));
        // A subsample with no scored row left is an error, not an empty score.
        assert!(h.restrict(&[0, 2]).is_err());
    }

    #[test]
    fn scoring_takes_the_lowest_class_on_ties() {
        let probs = [0.5, 0.5, 0.0, 0.2, 0.3, 0.5];
        let s = score(&probs, 3, 3, &[1, 2], 0.01, &[1, 1, 1]).unwrap();
        assert_eq!(s.predictions, vec![0, 2]);
        assert_eq!(s.correct, 1);
    }
}
