//! Entropy and mutual information of discrete labels: plug-in and Miller-Madow.
//!
//! For labels with empirical frequencies p, the plug-in entropy is
//! -sum p log p; it is biased low by about (m - 1) / (2N) for m observed
//! values, which the Miller-Madow correction adds back. MI is
//! H(A) + H(B) - H(A,B) with the same treatment of each term. Labels are any
//! hashable type; results are deterministic (no dependence on hash order).

use std::collections::HashMap;
use std::hash::Hash;

use super::error::MiError;
use super::histogram::entropy_of_codes;
use super::matrix::Matrix;
use super::{check_pair, Direction, Estimator, MiEstimate};

/// Small-sample bias correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Correction {
    /// Plug-in (maximum-likelihood) estimate.
    None,
    /// Miller-Madow: + (m - 1) / (2N) per entropy, m = number of observed values.
    #[default]
    MillerMadow,
}

/// Dense codes 0..m in order of first appearance, and m.
fn codes<L: Hash + Eq>(labels: &[L]) -> (Vec<u64>, usize) {
    let mut map: HashMap<&L, u64> = HashMap::new();
    let out = labels
        .iter()
        .map(|l| {
            let next = map.len() as u64;
            *map.entry(l).or_insert(next)
        })
        .collect();
    (out, map.len())
}

fn corrected(h: f64, occupied: usize, n: usize, correction: Correction) -> f64 {
    match correction {
        Correction::None => h,
        Correction::MillerMadow => h + (occupied as f64 - 1.0) / (2.0 * n as f64),
    }
}

/// Entropy H(A) in nats.
pub fn entropy<L: Hash + Eq>(labels: &[L], correction: Correction) -> Result<f64, MiError> {
    if labels.is_empty() {
        return Err(MiError::Empty {
            which: "labels",
            rows: 0,
            cols: 1,
        });
    }
    let (mut c, _) = codes(labels);
    let (h, m) = entropy_of_codes(&mut c);
    Ok(corrected(h, m, labels.len(), correction))
}

/// Mutual information I(A;B) in nats between two label sequences of equal length.
///
/// A variable with a single class has zero entropy, so its MI with anything
/// is 0; in practice that is almost always a data error (wrong column, an
/// over-filtered set), so it is reported as [`MiError::SingleClass`] rather
/// than returned as 0.
pub fn mutual_information<A: Hash + Eq, B: Hash + Eq>(
    a: &[A],
    b: &[B],
    correction: Correction,
) -> Result<f64, MiError> {
    if a.len() != b.len() {
        return Err(MiError::RowMismatch {
            a_name: "a",
            a_rows: a.len(),
            b_name: "b",
            b_rows: b.len(),
        });
    }
    let n = a.len();
    if n == 0 {
        return Err(MiError::Empty {
            which: "labels",
            rows: 0,
            cols: 1,
        });
    }
    let (mut ca, ka) = codes(a);
    let (mut cb, kb) = codes(b);
    if ka < 2 {
        return Err(MiError::SingleClass { which: "a", n });
    }
    if kb < 2 {
        return Err(MiError::SingleClass { which: "b", n });
    }
    let mut cab: Vec<u64> = ca
        .iter()
        .zip(&cb)
        .map(|(&x, &y)| x * kb as u64 + y)
        .collect();
    let (ha, ma) = entropy_of_codes(&mut ca);
    let (hb, mb) = entropy_of_codes(&mut cb);
    let (hab, mab) = entropy_of_codes(&mut cab);
    Ok(
        corrected(ha, ma, n, correction) + corrected(hb, mb, n, correction)
            - corrected(hab, mab, n, correction),
    )
}

/// MI between discrete-valued matrices: each row is one symbol (compared by exact value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscreteMi {
    /// Bias correction applied to each entropy.
    pub correction: Correction,
}

fn row_symbols(m: &Matrix) -> Vec<Vec<u64>> {
    // Bit patterns give exact equality; -0.0 and 0.0 are the same symbol.
    m.iter_rows()
        .map(|r| r.iter().map(|&v| (v + 0.0).to_bits()).collect())
        .collect()
}

impl Estimator for DiscreteMi {
    fn name(&self) -> &'static str {
        match self.correction {
            Correction::None => "discrete",
            Correction::MillerMadow => "discrete-mm",
        }
    }

    fn direction(&self) -> Direction {
        Direction::Estimate
    }

    fn estimate(&self, x: &Matrix, y: &Matrix) -> Result<MiEstimate, MiError> {
        let n = check_pair(x, y)?;
        let sx = row_symbols(x);
        let sy = row_symbols(y);
        let nats = mutual_information(&sx, &sy, self.correction).map_err(|e| match e {
            MiError::SingleClass { which: "a", n } => MiError::SingleClass { which: "x", n },
            MiError::SingleClass { which: "b", n } => MiError::SingleClass { which: "y", n },
            other => other,
        })?;
        Ok(MiEstimate {
            nats,
            n,
            dims: (x.cols(), y.cols()),
            direction: Direction::Estimate,
            note: Some(format!(
                "discrete plug-in, correction {:?}",
                self.correction
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_values() {
        let fair: Vec<u8> = (0..1000).map(|i| (i % 2) as u8).collect();
        assert!((entropy(&fair, Correction::None).unwrap() - 2f64.ln()).abs() < 1e-12);
        assert!(
            (entropy(&fair, Correction::MillerMadow).unwrap() - 2f64.ln() - 1.0 / 2000.0).abs()
                < 1e-12
        );
        let one = vec!["a"; 10];
        assert_eq!(entropy(&one, Correction::None).unwrap(), 0.0);
        let four: Vec<i64> = (0..400).map(|i| i % 4).collect();
        assert!((entropy(&four, Correction::None).unwrap() - 4f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn mi_values() {
        let a: Vec<u32> = (0..1200).map(|i| i % 3).collect();
        // b = a: I = H(A) = ln 3.
        let i = mutual_information(&a, &a, Correction::None).unwrap();
        assert!((i - 3f64.ln()).abs() < 1e-12);
        // MM on b = a: ma = mb = mab = 3, correction (3-1)/(2N).
        let mm = mutual_information(&a, &a, Correction::MillerMadow).unwrap();
        assert!((mm - 3f64.ln() - 2.0 / 2400.0).abs() < 1e-12);
        // Independent by construction (a cycles mod 3, c cycles every 3 steps mod 2): exactly 0.
        let c: Vec<u32> = (0..1200).map(|i| (i / 3) % 2).collect();
        let z = mutual_information(&a, &c, Correction::None).unwrap();
        assert!(z.abs() < 1e-12, "{z}");
        // Mixed label types work.
        let s: Vec<String> = a.iter().map(|v| format!("class-{v}")).collect();
        assert!((mutual_information(&s, &a, Correction::None).unwrap() - 3f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn discrete_estimator_on_matrices() {
        let xs: Vec<f64> = (0..600).map(|i| (i % 3) as f64).collect();
        let x = Matrix::from_column(&xs);
        let e = DiscreteMi {
            correction: Correction::None,
        }
        .estimate(&x, &x)
        .unwrap();
        assert!((e.nats - 3f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn bad_inputs() {
        let a = [1, 2, 1, 2];
        let b = [1, 1, 1, 1];
        assert_eq!(
            mutual_information(&a, &b, Correction::None),
            Err(MiError::SingleClass { which: "b", n: 4 })
        );
        assert!(matches!(
            mutual_information(&a, &a[..3], Correction::None),
            Err(MiError::RowMismatch {
                a_rows: 4,
                b_rows: 3,
                ..
            })
        ));
        let empty: [u8; 0] = [];
        assert!(entropy(&empty, Correction::None).is_err());
        let x = Matrix::from_column(&[1.0, 2.0, 1.0]);
        let c = Matrix::from_column(&[5.0, 5.0, 5.0]);
        assert_eq!(
            DiscreteMi::default().estimate(&x, &c),
            Err(MiError::SingleClass { which: "y", n: 3 })
        );
    }
}
