//! Exact entropies of small discrete joint distributions over (U, X, Y, Z),
//! so the inequality tests compute their terms instead of trusting typed numbers.

use std::collections::BTreeMap;

use super::terms::{Quantity, Term, Terms};

pub const U: usize = 0;
pub const X: usize = 1;
pub const Y: usize = 2;
pub const Z: usize = 3;

/// A joint pmf as a list of ([u, x, y, z], probability) cells.
pub struct Joint {
    cells: Vec<([usize; 4], f64)>,
}

impl Joint {
    /// Normalises the weights so tests can pass unnormalised tables.
    pub fn new(cells: Vec<([usize; 4], f64)>) -> Self {
        let total: f64 = cells.iter().map(|c| c.1).sum();
        assert!(total > 0.0);
        Joint {
            cells: cells.into_iter().map(|(k, p)| (k, p / total)).collect(),
        }
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
            t.insert(q, Term::exact(v, "truth").unwrap());
        }
        t
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
#[derive(Clone, Copy, PartialEq, Eq)]
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
