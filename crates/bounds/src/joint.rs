//! Exact information quantities of small discrete joint distributions over (U, X, Y, Z).
//!
//! Discrete tables are where the bounds can be checked without any estimation error: every
//! term is a finite sum. They serve the unit tests of [`super::inequalities`], and the
//! `synthetic` stage's `discrete` task, which samples from such a table and reports the exact
//! terms, so `pipelines/verify-bounds.yaml` can reproduce the study's counterexamples.

use std::collections::BTreeMap;

use rand::Rng;

use super::error::BoundsError;
use super::terms::{Quantity, Term, Terms};

pub const U: usize = 0;
pub const X: usize = 1;
pub const Y: usize = 2;
pub const Z: usize = 3;

/// A joint pmf as a list of ([u, x, y, z], probability) cells.
#[derive(Debug, Clone)]
pub struct Joint {
    cells: Vec<([usize; 4], f64)>,
}

impl Joint {
    /// Normalises the weights, so tables can be written with unnormalised counts.
    pub fn new(cells: Vec<([usize; 4], f64)>) -> Self {
        Self::try_new(cells).expect("a joint table with positive total weight")
    }

    /// As [`Joint::new`], refusing negative, non-finite or all-zero weights.
    pub fn try_new(cells: Vec<([usize; 4], f64)>) -> Result<Self, BoundsError> {
        if cells.iter().any(|c| !c.1.is_finite() || c.1 < 0.0) {
            return Err(BoundsError::InvalidParameter {
                name: "joint",
                reason: "a joint table needs finite, non-negative weights".into(),
            });
        }
        let total: f64 = cells.iter().map(|c| c.1).sum();
        if total <= 0.0 {
            return Err(BoundsError::InvalidParameter {
                name: "joint",
                reason: "a joint table needs a positive total weight".into(),
            });
        }
        Ok(Joint {
            cells: cells.into_iter().map(|(k, p)| (k, p / total)).collect(),
        })
    }

    /// The cells ([u, x, y, z], probability), normalised.
    pub fn cells(&self) -> &[([usize; 4], f64)] {
        &self.cells
    }

    /// Draws `n` samples [u, x, y, z] by inverting the cumulative distribution.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<[usize; 4]> {
        let mut cdf = Vec::with_capacity(self.cells.len());
        let mut acc = 0.0;
        for (_, p) in &self.cells {
            acc += p;
            cdf.push(acc);
        }
        (0..n)
            .map(|_| {
                let r = rng.random::<f64>() * acc;
                let i = cdf.partition_point(|&c| c <= r).min(self.cells.len() - 1);
                self.cells[i].0
            })
            .collect()
    }

    /// Whether U is a function of X in this table (every x with mass maps to one u).
    pub fn u_is_function_of_x(&self) -> bool {
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        self.cells
            .iter()
            .filter(|c| c.1 > 0.0)
            .all(|([u, x, _, _], _)| *seen.entry(*x).or_insert(*u) == *u)
    }

    /// H of the marginal on `vars`, in nats.
    pub fn entropy(&self, vars: &[usize]) -> f64 {
        let mut marg: BTreeMap<Vec<usize>, f64> = BTreeMap::new();
        for (k, p) in &self.cells {
            *marg
                .entry(vars.iter().map(|&v| k[v]).collect())
                .or_insert(0.0) += p;
        }
        marg.values()
            .filter(|&&p| p > 0.0)
            .map(|&p| -p * p.ln())
            .sum()
    }

    /// I(A;B|C) in nats.
    pub fn cmi(&self, a: &[usize], b: &[usize], c: &[usize]) -> f64 {
        let join =
            |s: &[&[usize]]| -> Vec<usize> { s.iter().flat_map(|v| v.iter().copied()).collect() };
        self.entropy(&join(&[a, c])) + self.entropy(&join(&[b, c]))
            - self.entropy(&join(&[a, b, c]))
            - self.entropy(c)
    }

    /// The Bayes accuracy of predicting variable `to` from variable `from`:
    /// sum over a of max over b of p(a, b), the accuracy of the best classifier.
    pub fn bayes_accuracy(&self, from: usize, to: usize) -> f64 {
        let mut joint: BTreeMap<(usize, usize), f64> = BTreeMap::new();
        for (k, p) in &self.cells {
            *joint.entry((k[from], k[to])).or_insert(0.0) += p;
        }
        let mut best: BTreeMap<usize, f64> = BTreeMap::new();
        for ((a, _), p) in joint {
            let b = best.entry(a).or_insert(0.0);
            *b = b.max(p);
        }
        best.values().sum()
    }

    /// Every quantity, exact.
    pub fn terms(&self) -> Terms {
        let vals = [
            (Quantity::IUZ, self.cmi(&[U], &[Z], &[])),
            (Quantity::IUY, self.cmi(&[U], &[Y], &[])),
            (Quantity::IXY, self.cmi(&[X], &[Y], &[])),
            (Quantity::IXZ, self.cmi(&[X], &[Z], &[])),
            (Quantity::IYZ, self.cmi(&[Y], &[Z], &[])),
            (Quantity::IXYgivenZ, self.cmi(&[X], &[Y], &[Z])),
            (Quantity::IUYgivenXZ, self.cmi(&[U], &[Y], &[X, Z])),
            (Quantity::HZ, self.entropy(&[Z])),
            (
                Quantity::HZgivenXY,
                self.entropy(&[X, Y, Z]) - self.entropy(&[X, Y]),
            ),
        ];
        let mut t = Terms::new();
        for (q, v) in vals {
            // Entropies of a normalised table are finite, so Term::exact cannot refuse them;
            // clamp the -1e-17 that cancellation can leave in a zero information.
            if let Ok(term) = Term::exact(v.max(0.0), "exact") {
                t.insert(q, term);
            }
        }
        t
    }
}

/// The reference counterexamples to the study's inequalities (docs/bounds.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counterexample {
    /// U = X = Y = Z, one fair bit: the general bound claims 2 bits, I(U;Z) is 1 bit.
    GeneralAllEqual,
    /// X, Y independent fair bits, Z constant, U = Y: Theorem 1 claims 1 bit, I(U;Z) is 0.
    /// (U is not a function of X here.)
    Theorem1ZConstant,
    /// X, Y independent fair bits, Z = Y, U = X: Theorem 1 claims 1 bit, I(U;Z) is 0,
    /// with a deterministic encoder.
    Theorem1ZIsY,
}

impl Counterexample {
    pub fn joint(self) -> Joint {
        let mut cells = Vec::new();
        match self {
            Counterexample::GeneralAllEqual => {
                cells.push(([0, 0, 0, 0], 1.0));
                cells.push(([1, 1, 1, 1], 1.0));
            }
            Counterexample::Theorem1ZConstant => {
                for x in 0..2 {
                    for y in 0..2 {
                        cells.push(([y, x, y, 0], 1.0));
                    }
                }
            }
            Counterexample::Theorem1ZIsY => {
                for x in 0..2 {
                    for y in 0..2 {
                        cells.push(([x, x, y, y], 1.0));
                    }
                }
            }
        }
        Joint::new(cells)
    }
}

/// A seeded linear congruential generator (Knuth's MMIX constants): enough
/// for reproducible random tables without a rand dependency.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed)
    }

    pub fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_f64() * n as f64) as usize).min(n - 1)
    }

    /// A random weight, cubed so some cells are near zero and dependence is strong.
    pub fn weight(&mut self) -> f64 {
        let w = self.next_f64();
        w * w * w + 1e-6
    }
}

/// How U is produced from X in a random case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// U = f(X) for a random f.
    Deterministic,
    /// U drawn from a random p(u|x).
    Stochastic,
}

/// A random joint over X, Y, Z alphabets of size `n`, U from X with `nu`
/// values. With `ci`, p(x,y,z) = p(z) p(x|z) p(y|z).
pub fn random_joint(rng: &mut Lcg, n: usize, nu: usize, enc: Encoder, ci: bool) -> Joint {
    let table =
        |rng: &mut Lcg, len: usize| -> Vec<f64> { (0..len).map(|_| rng.weight()).collect() };
    let pxyz: Vec<f64> = if ci {
        let pz = table(rng, n);
        let px_z = table(rng, n * n);
        let py_z = table(rng, n * n);
        let norm = |v: &[f64], z: usize| -> f64 { v[z * n..(z + 1) * n].iter().sum() };
        let mut out = vec![0.0; n * n * n];
        for x in 0..n {
            for y in 0..n {
                for z in 0..n {
                    out[(x * n + y) * n + z] =
                        pz[z] * px_z[z * n + x] / norm(&px_z, z) * py_z[z * n + y] / norm(&py_z, z);
                }
            }
        }
        out
    } else {
        table(rng, n * n * n)
    };
    let f: Vec<usize> = (0..n).map(|_| rng.below(nu)).collect();
    let pu_x = table(rng, n * nu);
    let mut cells = Vec::new();
    for x in 0..n {
        let row: f64 = pu_x[x * nu..(x + 1) * nu].iter().sum();
        for y in 0..n {
            for z in 0..n {
                let p = pxyz[(x * n + y) * n + z];
                match enc {
                    Encoder::Deterministic => cells.push(([f[x], x, y, z], p)),
                    Encoder::Stochastic => {
                        for u in 0..nu {
                            cells.push(([u, x, y, z], p * pu_x[x * nu + u] / row));
                        }
                    }
                }
            }
        }
    }
    Joint::new(cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::f64::consts::LN_2;

    #[test]
    fn counterexample_terms_are_the_hand_computed_bits() {
        let t = Counterexample::GeneralAllEqual.joint().terms();
        let get = |q| t.find(q).map(|t: &Term| t.nats).unwrap();
        assert!((get(Quantity::IUZ) - LN_2).abs() < 1e-12);
        assert!(get(Quantity::IXYgivenZ).abs() < 1e-12);
        assert!(get(Quantity::HZgivenXY).abs() < 1e-12);
        let j = Counterexample::Theorem1ZIsY.joint();
        assert!(j.u_is_function_of_x());
        let t = j.terms();
        let get = |q| t.find(q).map(|t: &Term| t.nats).unwrap();
        assert!(get(Quantity::IUZ).abs() < 1e-12);
        assert!((get(Quantity::IYZ) - LN_2).abs() < 1e-12);
        assert!(!Counterexample::Theorem1ZConstant
            .joint()
            .u_is_function_of_x());
    }

    #[test]
    fn bayes_accuracy_of_the_counterexamples() {
        // U = Z: perfect; Z = Y independent of U = X: a coin flip.
        assert!((Counterexample::GeneralAllEqual.joint().bayes_accuracy(U, Z) - 1.0).abs() < 1e-12);
        assert!((Counterexample::Theorem1ZIsY.joint().bayes_accuracy(U, Z) - 0.5).abs() < 1e-12);
        let j = Joint::new(vec![
            ([0, 0, 0, 0], 3.0),
            ([0, 0, 0, 1], 1.0),
            ([1, 0, 0, 1], 2.0),
        ]);
        assert!((j.bayes_accuracy(U, Z) - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn samples_follow_the_table() {
        let j = Joint::new(vec![([0, 0, 0, 0], 3.0), ([1, 1, 1, 1], 1.0)]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let s = j.sample(40_000, &mut rng);
        let ones = s.iter().filter(|c| c[3] == 1).count() as f64 / 40_000.0;
        assert!((ones - 0.25).abs() < 0.01, "{ones}");
        assert!(s.iter().all(|c| c[0] == c[3]));
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(Joint::try_new(vec![([0, 0, 0, 0], -1.0)]).is_err());
        assert!(Joint::try_new(vec![([0, 0, 0, 0], 0.0)]).is_err());
        assert!(Joint::try_new(vec![([0, 0, 0, 0], f64::NAN)]).is_err());
    }
}
