//! Weighted k-nearest-neighbour classifier of labels from embeddings, the kNN monitor of
//! contrastive learning (Wu et al. 2018, "Unsupervised feature learning via non-parametric
//! instance discrimination"; solo-learn's `WeightedKNNClassifier`), as an estimator.
//!
//! The embeddings are L2-normalised (each row divided by max(|u|, 1e-12), as PyTorch's
//! `F.normalize`), a seeded split fits (the fitted rows are the neighbour bank) and the
//! disjoint rest is scored ([`HeldOut`]). A scored row's k nearest bank rows by cosine
//! similarity s vote for their labels with weight exp(s / T); the class scores, divided by
//! their sum, are the classifier's probabilities q(z|u) and the largest is its prediction.
//! The weights are computed as exp((s - s_max) / T), which leaves the probabilities and the
//! vote unchanged and keeps a small T from overflowing. k larger than the bank uses the whole
//! bank (as solo-learn does); neighbours tied in similarity are taken lowest bank row first,
//! and tied votes go to the lowest class.
//!
//! The classifier is fixed by the bank before any scored row is seen, and each scored row's
//! prediction depends on that row alone, so it is scored exactly as the probe is
//! ([`crate::heldout::score`]): held-out accuracy, and Barber-Agakov with q mixed with a
//! uniform floor eps, I(U;Z) >= H(Z) - E[-log q_eps(Z|U)], with the same certificate
//! (empirical Bernstein on the floored losses, Clopper-Pearson on the correct count). The
//! point value uses the floored loss, because a vote gives probability 0 to every class none
//! of the k neighbours has, and one such row would make the unfloored loss infinite.
//!
//! Similarities are a blocked matrix product: the bank in panels of `LANES` rows stored
//! feature-major, a register tile of `TILE` queries x `LANES` bank rows accumulating one
//! feature at a time over a cache-resident run of panels (AVX2 when the CPU has it, never
//! FMA, so every machine computes the same bits), parallel over blocks of queries.

use rayon::prelude::*;

use super::certificate::Certificate;
use super::heldout::{class_counts, entropy, labels_of, score, HeldOut};
use super::{check_pair, Direction, Estimator, Matrix, MiError, MiEstimate};

/// The kNN classifier with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightedKnn {
    /// Neighbours that vote.
    pub k: usize,
    /// T in the weight exp(s / T).
    pub temperature: f64,
    /// Fraction of rows in the bank; the rest are scored.
    pub train_fraction: f64,
    /// Uniform floor eps of the certified loss (see the module doc).
    pub floor: f64,
    /// K, the number of label values (default: the largest label + 1).
    pub classes: Option<usize>,
    pub seed: u64,
}

impl Default for WeightedKnn {
    fn default() -> WeightedKnn {
        WeightedKnn {
            k: 200,
            temperature: 0.1,
            train_fraction: 0.8,
            floor: super::probe::DEFAULT_FLOOR,
            classes: None,
            seed: 0,
        }
    }
}

/// Everything a scored kNN classifier reports.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnResult {
    /// H(Z) - held-out cross-entropy of the floored vote, nats.
    pub mi_lower_bound: f64,
    pub entropy: f64,
    /// Mean held-out -log q_eps(z|u).
    pub cross_entropy: f64,
    pub accuracy: f64,
    /// The k used (at most the bank's size).
    pub k: usize,
    pub classes: usize,
    pub certificate: Certificate,
    pub held_out: HeldOut,
    /// The predicted class of each scored row, in the order of `held_out.test`.
    pub predictions: Vec<usize>,
    /// q(z|u) of each scored row (rows of K), in the same order.
    pub probabilities: Vec<f64>,
}

impl WeightedKnn {
    fn check(&self) -> Result<(), MiError> {
        if self.k == 0 {
            return Err(MiError::InvalidParameter {
                name: "k",
                reason: "must be at least 1".into(),
            });
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(MiError::InvalidParameter {
                name: "temperature",
                reason: format!("must be positive and finite, got {}", self.temperature),
            });
        }
        Ok(())
    }

    /// Fits on the seeded split of `train_fraction` and scores the rest.
    pub fn fit(&self, u: &Matrix, z: &Matrix) -> Result<KnnResult, MiError> {
        let n = check_pair(u, z)?;
        self.fit_split(u, z, HeldOut::random(n, self.train_fraction, self.seed)?)
    }

    /// Fits on `held_out.train` and scores `held_out.test` (a split given by the data, or
    /// drawn elsewhere); the two must be disjoint.
    pub fn fit_split(
        &self,
        u: &Matrix,
        z: &Matrix,
        held_out: HeldOut,
    ) -> Result<KnnResult, MiError> {
        let n = check_pair(u, z)?;
        self.check()?;
        let labels = labels_of(z, "the kNN classifier")?;
        let (k_classes, counts) = class_counts(&labels, self.classes)?;
        held_out.check(n)?;
        let d = u.cols();
        let bank = normalised_rows(u, &held_out.train);
        let queries = normalised_rows(u, &held_out.test);
        let bank_labels: Vec<usize> = held_out.train.iter().map(|&i| labels[i]).collect();
        let y: Vec<usize> = held_out.test.iter().map(|&i| labels[i]).collect();
        let k = self.k.min(bank_labels.len());
        let probabilities = vote(
            &Bank::pack(&bank, d),
            &bank_labels,
            &queries,
            k,
            self.temperature,
            k_classes,
        );
        let scored = score(
            &probabilities,
            k_classes,
            k_classes,
            &y,
            self.floor,
            &counts,
        )?;
        let h = entropy(&counts);
        Ok(KnnResult {
            mi_lower_bound: h - scored.floored_cross_entropy,
            entropy: h,
            cross_entropy: scored.floored_cross_entropy,
            accuracy: scored.correct as f64 / y.len() as f64,
            k,
            classes: k_classes,
            certificate: scored.certificate,
            held_out,
            predictions: scored.predictions,
            probabilities,
        })
    }
}

/// The rows `rows` of `u`, each divided by max(its L2 norm, 1e-12), row-major.
fn normalised_rows(u: &Matrix, rows: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * u.cols());
    for &i in rows {
        let r = u.row(i);
        let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        out.extend(r.iter().map(|v| v / norm));
    }
    out
}

/// Bank rows per panel: one AVX2 register of f64.
const LANES: usize = 4;
/// Queries per register tile.
const TILE: usize = 8;
/// Queries per rayon task: their similarity rows (`QUERY_BLOCK` x bank) are held at once.
const QUERY_BLOCK: usize = 32;
/// Bytes of bank panels a query tile walks while they stay in a core's L2.
const TILE_BYTES: usize = 256 * 1024;

/// The bank in panels of `LANES` rows, feature-major: feature c of row p * LANES + l is
/// `data[(p * d + c) * LANES + l]`; lanes past the last row are 0.
struct Bank {
    d: usize,
    count: usize,
    data: Vec<f64>,
}

impl Bank {
    fn pack(rows: &[f64], d: usize) -> Bank {
        let count = rows.len() / d.max(1);
        let panels = count.div_ceil(LANES);
        let mut data = vec![0.0; panels * d * LANES];
        for (i, row) in rows.chunks_exact(d).enumerate() {
            let (p, l) = (i / LANES, i % LANES);
            for (c, &v) in row.iter().enumerate() {
                data[(p * d + c) * LANES + l] = v;
            }
        }
        Bank { d, count, data }
    }

    fn panels(&self) -> usize {
        self.count.div_ceil(LANES)
    }
}

/// Class probabilities (queries x `classes`) of the weighted vote of each query's `k` most
/// similar bank rows.
fn vote(
    bank: &Bank,
    labels: &[usize],
    queries: &[f64],
    k: usize,
    temperature: f64,
    classes: usize,
) -> Vec<f64> {
    let d = bank.d;
    queries
        .par_chunks(QUERY_BLOCK * d)
        .flat_map_iter(|block| {
            let rows = block.len() / d;
            let mut sims = vec![0.0; rows * bank.count];
            similarities(bank, block, &mut sims);
            let mut out = vec![0.0; rows * classes];
            let mut scratch = Vec::with_capacity(bank.count);
            for (s, o) in sims
                .chunks_exact(bank.count)
                .zip(out.chunks_exact_mut(classes))
            {
                weighted_vote(s, labels, k, temperature, &mut scratch, o);
            }
            out
        })
        .collect()
}

/// The vote of one query with similarities `s` to the bank into `out` (K probabilities).
fn weighted_vote(
    s: &[f64],
    labels: &[usize],
    k: usize,
    temperature: f64,
    scratch: &mut Vec<f64>,
    out: &mut [f64],
) {
    // The k-th largest similarity, then every row above it and the lowest rows equal to it.
    scratch.clear();
    scratch.extend_from_slice(s);
    let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    let above = s.iter().filter(|v| v.total_cmp(&kth).is_gt()).count();
    let mut ties = k - above;
    let mut top = f64::NEG_INFINITY;
    let chosen = s
        .iter()
        .enumerate()
        .filter(|(_, v)| match v.total_cmp(&kth) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal if ties > 0 => {
                ties -= 1;
                true
            }
            _ => false,
        });
    let neighbours: Vec<(usize, f64)> = chosen.map(|(i, &v)| (i, v)).collect();
    for &(_, v) in &neighbours {
        top = top.max(v);
    }
    out.fill(0.0);
    let mut total = 0.0;
    for (i, v) in neighbours {
        let w = ((v - top) / temperature).exp();
        out[labels[i]] += w;
        total += w;
    }
    out.iter_mut().for_each(|o| *o /= total);
}

/// `out[q * count + j]` = query q . bank row j, for the row-major queries `q`.
fn similarities(bank: &Bank, q: &[f64], out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked on the line above), all this function needs.
        unsafe { similarities_avx2(bank, q, out) };
        return;
    }
    similarities_with::<TILE>(bank, q, out);
}

/// [`similarities`] compiled for AVX2 (4 f64 lanes). AVX2 only, never FMA: the products
/// and sums are rounded one by one as in the portable version, so both give the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn similarities_avx2(bank: &Bank, q: &[f64], out: &mut [f64]) {
    similarities_with::<TILE>(bank, q, out);
}

#[inline(always)]
fn similarities_with<const T: usize>(bank: &Bank, q: &[f64], out: &mut [f64]) {
    let d = bank.d;
    let rows = q.len() / d.max(1);
    // Each tile of T queries feature-major (rows past the last are 0), so the kernel reads
    // T contiguous values per feature.
    let tiles: Vec<Vec<[f64; T]>> = q
        .chunks(T * d)
        .map(|tile| {
            let mut pack = vec![[0.0f64; T]; d];
            for (t, row) in tile.chunks_exact(d).enumerate() {
                for (p, &v) in pack.iter_mut().zip(row) {
                    p[t] = v;
                }
            }
            pack
        })
        .collect();
    let run = (TILE_BYTES / (d.max(1) * LANES * 8)).max(1);
    let panels = bank.panels();
    let mut p0 = 0;
    while p0 < panels {
        let p1 = (p0 + run).min(panels);
        for (ti, pack) in tiles.iter().enumerate() {
            let r0 = ti * T;
            let valid = (rows - r0).min(T);
            for p in p0..p1 {
                let panel = &bank.data[p * d * LANES..(p + 1) * d * LANES];
                let mut acc = [[0.0f64; LANES]; T];
                for (xs, bv) in pack.iter().zip(panel.chunks_exact(LANES)) {
                    for (a, &x) in acc.iter_mut().zip(xs) {
                        for l in 0..LANES {
                            a[l] += bv[l] * x;
                        }
                    }
                }
                let lanes = (bank.count - p * LANES).min(LANES);
                for (t, a) in acc.iter().enumerate().take(valid) {
                    let o = (r0 + t) * bank.count + p * LANES;
                    out[o..o + lanes].copy_from_slice(&a[..lanes]);
                }
            }
        }
        p0 = p1;
    }
}

impl Estimator for WeightedKnn {
    fn name(&self) -> &'static str {
        "knn"
    }

    fn direction(&self) -> Direction {
        Direction::LowerBound
    }

    fn estimate(&self, x: &Matrix, y: &Matrix) -> Result<MiEstimate, MiError> {
        let r = self.fit(x, y)?;
        Ok(MiEstimate {
            nats: r.mi_lower_bound,
            n: x.rows(),
            dims: (x.cols(), 1),
            direction: Direction::LowerBound,
            note: Some(note(&r)),
        })
    }
}

/// The row's note: what the number is and what it was measured on.
pub(crate) fn note(r: &KnnResult) -> String {
    format!(
        "H(Z) {:.4} - held-out cross-entropy of the floored vote {:.4}; held-out accuracy {:.4} on {} rows, bank of {} (k = {})",
        r.entropy,
        r.cross_entropy,
        r.accuracy,
        r.held_out.test.len(),
        r.held_out.train.len(),
        r.k
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    /// Rows around K well-separated unit directions (or, with `spread` large, noise).
    fn clusters(n: usize, d: usize, classes: usize, spread: f64, seed: u64) -> (Matrix, Matrix) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut u = Vec::with_capacity(n * d);
        let mut z = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes;
            for j in 0..d {
                let e: f64 = StandardNormal.sample(&mut rng);
                u.push(if j == c { 1.0 } else { 0.0 } + spread * e);
            }
            z.push(c as f64);
        }
        (Matrix::new(n, d, u).unwrap(), Matrix::new(n, 1, z).unwrap())
    }

    /// The scalar reference: every similarity by a plain dot product, a full sort.
    fn vote_scalar(u: &Matrix, z: &Matrix, knn: &WeightedKnn) -> Vec<usize> {
        let n = u.rows();
        let h = HeldOut::random(n, knn.train_fraction, knn.seed).unwrap();
        let bank = normalised_rows(u, &h.train);
        let queries = normalised_rows(u, &h.test);
        let d = u.cols();
        let k_classes = 1 + z.iter_rows().map(|r| r[0] as usize).max().unwrap();
        queries
            .chunks_exact(d)
            .map(|q| {
                let mut s: Vec<(usize, f64)> = bank
                    .chunks_exact(d)
                    .enumerate()
                    .map(|(i, b)| (i, b.iter().zip(q).map(|(a, b)| a * b).sum()))
                    .collect();
                s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let k = knn.k.min(s.len());
                let mut votes = vec![0.0; k_classes];
                for &(i, v) in &s[..k] {
                    votes[z.row(h.train[i])[0] as usize] += ((v - s[0].1) / knn.temperature).exp();
                }
                let mut best = 0;
                for c in 0..k_classes {
                    if votes[c] > votes[best] {
                        best = c;
                    }
                }
                best
            })
            .collect()
    }

    /// tests/fixtures/knn_reference.json, written by tests/fixtures/knn_reference.py (NumPy).
    #[derive(serde::Deserialize)]
    struct Reference {
        cases: Vec<Case>,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        x: Vec<Vec<f64>>,
        z: Vec<usize>,
        train: Vec<usize>,
        test: Vec<usize>,
        k: usize,
        k_used: usize,
        temperature: f64,
        floor: f64,
        classes: usize,
        predictions: Vec<usize>,
        probabilities: Vec<Vec<f64>>,
        accuracy: f64,
        cross_entropy: f64,
        entropy: f64,
        nats: f64,
    }

    #[test]
    fn numpy_reference_predictions_and_accuracy_match_exactly() {
        let text = include_str!("../../../tests/fixtures/knn_reference.json");
        let reference: Reference = serde_json::from_str(text).unwrap();
        assert_eq!(reference.cases.len(), 6);
        for c in &reference.cases {
            let u = Matrix::from_rows(&c.x).unwrap();
            let z = Matrix::from_column(&c.z.iter().map(|&v| v as f64).collect::<Vec<_>>());
            let knn = WeightedKnn {
                k: c.k,
                temperature: c.temperature,
                floor: c.floor,
                classes: Some(c.classes),
                ..WeightedKnn::default()
            };
            let split = HeldOut {
                seed: None,
                train_fraction: c.train.len() as f64 / c.x.len() as f64,
                train: c.train.clone(),
                test: c.test.clone(),
            };
            let r = knn.fit_split(&u, &z, split).unwrap();
            assert_eq!(r.predictions, c.predictions, "{}", c.name);
            assert_eq!(r.accuracy, c.accuracy, "{}", c.name);
            assert_eq!(r.k, c.k_used, "{}", c.name);
            for (got, want) in r
                .probabilities
                .chunks_exact(c.classes)
                .zip(&c.probabilities)
            {
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() < 1e-9, "{}: {g} vs {w}", c.name);
                }
            }
            assert!(
                (r.cross_entropy - c.cross_entropy).abs() < 1e-9,
                "{}",
                c.name
            );
            assert!((r.entropy - c.entropy).abs() < 1e-12, "{}", c.name);
            assert!((r.mi_lower_bound - c.nats).abs() < 1e-9, "{}", c.name);
        }
    }

    #[test]
    fn a_split_that_overlaps_is_refused() {
        let (u, z) = clusters(10, 2, 2, 0.1, 1);
        let split = |train: Vec<usize>, test: Vec<usize>| HeldOut {
            seed: None,
            train_fraction: 0.5,
            train,
            test,
        };
        let knn = WeightedKnn::default();
        assert!(knn
            .fit_split(&u, &z, split(vec![0, 1, 2], vec![2, 3]))
            .is_err());
        assert!(knn.fit_split(&u, &z, split(vec![0, 1], vec![10])).is_err());
        assert!(knn
            .fit_split(&u, &z, split(vec![0, 1, 4, 5], vec![2, 3]))
            .is_ok());
    }

    /// Random labels: a classifier can only guess, so the held-out accuracy is 1/K up to
    /// binomial noise, over several seeds; and the certified accuracy lower bound, which must
    /// hold at 95% whatever the data, stays below 1/K.
    #[test]
    fn random_labels_give_chance_accuracy() {
        let (n, classes) = (2000, 4usize);
        let mut total = 0.0;
        for seed in 0..5u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
            let u: Vec<f64> = (0..n * 8)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            let z: Vec<f64> = (0..n)
                .map(|i| ((i * 7 + seed as usize) % classes) as f64)
                .collect();
            let (u, z) = (Matrix::new(n, 8, u).unwrap(), Matrix::from_column(&z));
            let r = WeightedKnn {
                seed,
                ..WeightedKnn::default()
            }
            .fit(&u, &z)
            .unwrap();
            // 400 scored rows: sd sqrt(0.25 * 0.75 / 400) = 0.022; 4 sd.
            assert!(
                (r.accuracy - 0.25).abs() < 0.087,
                "seed {seed}: {}",
                note(&r)
            );
            let lower = r.certificate.accuracy_lower(0.05).unwrap().unwrap();
            assert!(lower < 0.25, "seed {seed}: certified {lower}");
            assert!(r.mi_lower_bound < 0.05, "seed {seed}: {}", note(&r));
            total += r.accuracy;
        }
        // The mean of 5 seeds: sd 0.0097; 4 sd.
        assert!((total / 5.0 - 0.25).abs() < 0.039, "{}", total / 5.0);
    }

    #[test]
    fn blocked_similarities_are_the_plain_dot_products() {
        // Bank sizes and widths on and off the panel and tile sizes.
        for (nb, nq, d) in [(37, 13, 5), (8, 8, 1), (300, 65, 33), (5, 1, 130)] {
            let mut rng = ChaCha8Rng::seed_from_u64(nb as u64);
            let mut draw = |n: usize| -> Vec<f64> {
                (0..n * d)
                    .map(|_| StandardNormal.sample(&mut rng))
                    .collect()
            };
            let (b, q) = (draw(nb), draw(nq));
            let bank = Bank::pack(&b, d);
            let mut out = vec![f64::NAN; nq * nb];
            similarities(&bank, &q, &mut out);
            for i in 0..nq {
                for j in 0..nb {
                    let want: f64 = (0..d).map(|c| b[j * d + c] * q[i * d + c]).sum();
                    assert!(
                        (out[i * nb + j] - want).abs() <= 1e-12 * (1.0 + want.abs()),
                        "nb {nb} nq {nq} d {d}: ({i}, {j}) {} vs {want}",
                        out[i * nb + j]
                    );
                }
            }
        }
    }

    #[test]
    fn the_vote_is_the_scalar_references() {
        for (k, t, seed) in [(5, 0.1, 1u64), (200, 0.07, 2), (1, 0.5, 3), (1000, 1.0, 4)] {
            let (u, z) = clusters(400, 6, 4, 0.8, seed);
            let knn = WeightedKnn {
                k,
                temperature: t,
                seed,
                ..WeightedKnn::default()
            };
            let r = knn.fit(&u, &z).unwrap();
            assert_eq!(r.predictions, vote_scalar(&u, &z, &knn), "k {k} t {t}");
            assert_eq!(r.k, k.min(320));
            for row in r.probabilities.chunks_exact(4) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn separated_clusters_are_classified_and_the_bound_approaches_h_z() {
        let (u, z) = clusters(1000, 8, 5, 0.05, 7);
        let r = WeightedKnn::default().fit(&u, &z).unwrap();
        assert_eq!(r.accuracy, 1.0, "{}", note(&r));
        assert!((r.entropy - 5f64.ln()).abs() < 1e-12);
        // Every neighbour agrees, so each loss is -log(1 - eps + eps / K).
        assert!(r.mi_lower_bound > 5f64.ln() - 0.011, "{}", note(&r));
    }

    #[test]
    fn a_tiny_temperature_does_not_overflow() {
        let (u, z) = clusters(300, 4, 3, 0.5, 8);
        let r = WeightedKnn {
            temperature: 1e-6,
            ..WeightedKnn::default()
        }
        .fit(&u, &z)
        .unwrap();
        assert!(r.probabilities.iter().all(|p| p.is_finite()));
        // The vote is then the nearest neighbour's.
        let one = WeightedKnn {
            k: 1,
            ..WeightedKnn::default()
        }
        .fit(&u, &z)
        .unwrap();
        assert_eq!(r.predictions, one.predictions);
    }

    #[test]
    fn bad_settings_and_labels_are_errors() {
        let (u, z) = clusters(20, 3, 2, 0.1, 9);
        for bad in [
            WeightedKnn {
                k: 0,
                ..WeightedKnn::default()
            },
            WeightedKnn {
                temperature: 0.0,
                ..WeightedKnn::default()
            },
            WeightedKnn {
                train_fraction: 1.0,
                ..WeightedKnn::default()
            },
        ] {
            assert!(bad.fit(&u, &z).is_err(), "{bad:?}");
        }
        let frac = Matrix::from_column(&[0.5; 20]);
        assert!(WeightedKnn::default().fit(&u, &frac).is_err());
    }
}
