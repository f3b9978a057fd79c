//! From information to accuracy: bounds on the Bayes accuracy of predicting a
//! K-class label Z from U, given bounds on I(U;Z) and the label entropy H(Z).
//!
//! A LOWER bound on I(U;Z) gives a lower bound on the best achievable accuracy
//! (Feder-Merhav); an UPPER bound on I(U;Z) gives an upper bound (Fano). Both
//! speak of the Bayes classifier on U, not of a trained probe, so the
//! measured probe accuracy is reported beside them ([`tightness_gap`]).
//! All entropies are in nats.

use super::error::BoundsError;

/// Slack for inputs that should be in range but carry rounding error.
const TOL: f64 = 1e-9;

fn finite(what: &'static str, v: f64) -> Result<f64, BoundsError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(BoundsError::NonFinite {
            what: what.to_string(),
            value: v,
        })
    }
}

fn check_k(k: usize) -> Result<f64, BoundsError> {
    if k < 2 {
        return Err(BoundsError::InvalidParameter {
            name: "k",
            reason: format!("need at least 2 classes, got {k}; with one class the error is 0"),
        });
    }
    Ok(k as f64)
}

/// Validates H(Z) against log K: a larger value usually means bits were passed as nats.
fn check_h_z(h_z: f64, kf: f64) -> Result<f64, BoundsError> {
    let h_z = finite("H(Z)", h_z)?;
    if h_z < -TOL || h_z > kf.ln() + TOL {
        return Err(BoundsError::InvalidParameter {
            name: "h_z",
            reason: format!(
                "H(Z) = {h_z} nats is outside [0, log K = {:.6}]; check that it is in nats and \
                 that K counts every class",
                kf.ln()
            ),
        });
    }
    Ok(h_z.clamp(0.0, kf.ln()))
}

/// Tight upper bound on the Bayes error Pe given H(Z|U) (nats) and K classes:
/// the piecewise-linear curve through (log j, 1 - 1/j), j = 1..K (Feder and
/// Merhav 1994). Values above log K are clamped, since Pe <= 1 - 1/K always.
pub fn feder_merhav_error_upper(h_z_given_u: f64, k: usize) -> Result<f64, BoundsError> {
    let kf = check_k(k)?;
    let h = finite("H(Z|U)", h_z_given_u)?;
    if h < -TOL {
        return Err(BoundsError::InvalidParameter {
            name: "h_z_given_u",
            reason: format!(
                "conditional entropy cannot be negative, got {h}; a lower bound on I(U;Z) larger \
                 than H(Z) points to mismatched units or H(Z) estimates"
            ),
        });
    }
    let h = h.clamp(0.0, kf.ln());
    // exp(log j) can round just below j; the segment to the left then
    // evaluates at its right end, which is the same point.
    let j = (h.exp().floor() as usize).clamp(1, k - 1);
    let (a, b) = ((j as f64).ln(), ((j + 1) as f64).ln());
    let (pa, pb) = (1.0 - 1.0 / j as f64, 1.0 - 1.0 / (j + 1) as f64);
    let t = ((h - a) / (b - a)).clamp(0.0, 1.0);
    Ok(pa + t * (pb - pa))
}

/// Lower bound on the Bayes accuracy, 1 - Pe_upper(H(Z) - I), from a LOWER
/// bound on I(U;Z). A negative lower bound is replaced by 0 (I >= 0 always).
pub fn bayes_accuracy_lower_bound(i_uz_lower: f64, h_z: f64, k: usize) -> Result<f64, BoundsError> {
    let kf = check_k(k)?;
    let h_z = check_h_z(h_z, kf)?;
    let i = finite("lower bound on I(U;Z)", i_uz_lower)?.max(0.0);
    Ok(1.0 - feder_merhav_error_upper(h_z - i, k)?)
}

/// Binary entropy in nats, with 0 log 0 = 0.
fn binary_entropy(p: f64) -> f64 {
    let term = |x: f64| if x > 0.0 { -x * x.ln() } else { 0.0 };
    term(p) + term(1.0 - p)
}

/// Upper bound on the Bayes accuracy from an UPPER bound on I(U;Z), by Fano:
/// H(Z|U) <= h(Pe) + Pe log(K-1), with H(Z|U) >= H(Z) - I_upper.
///
/// The right side, phi(Pe), increases from 0 to log K on [0, 1 - 1/K], so the
/// smallest Pe it allows is found by bisection on that branch. The returned
/// accuracy uses the lower end of the final bracket, which keeps it an upper
/// bound despite rounding.
pub fn fano_accuracy_upper_bound(i_uz_upper: f64, h_z: f64, k: usize) -> Result<f64, BoundsError> {
    let kf = check_k(k)?;
    let h_z = check_h_z(h_z, kf)?;
    let i = finite("upper bound on I(U;Z)", i_uz_upper)?;
    if i < -TOL {
        return Err(BoundsError::InvalidParameter {
            name: "i_uz_upper",
            reason: format!("an upper bound on mutual information cannot be negative, got {i}"),
        });
    }
    let h_min = h_z - i.max(0.0);
    if h_min <= 0.0 {
        return Ok(1.0);
    }
    let log_km1 = (kf - 1.0).ln();
    let phi = |pe: f64| binary_entropy(pe) + pe * log_km1;
    let pe_max = 1.0 - 1.0 / kf;
    if h_min >= phi(pe_max) {
        return Ok(1.0 / kf);
    }
    let (mut lo, mut hi) = (0.0_f64, pe_max);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if phi(mid) < h_min {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(1.0 - lo)
}

/// Measured probe accuracy beside the Bayes-accuracy bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TightnessGap {
    /// Measured (held-out) probe accuracy.
    pub measured: f64,
    /// Lower bound on the Bayes accuracy, if any.
    pub lower: Option<f64>,
    /// Upper bound on the Bayes accuracy, if any.
    pub upper: Option<f64>,
    /// measured - lower. May be negative: the probe can fall short of the
    /// Bayes classifier that the bound speaks of.
    pub above_lower: Option<f64>,
    /// upper - measured. Negative only through sampling noise or a bound
    /// built on a wrong upper bound of I(U;Z).
    pub below_upper: Option<f64>,
}

/// The tightness gap: how far the measured probe accuracy lies from each bound.
pub fn tightness_gap(
    measured: f64,
    lower: Option<f64>,
    upper: Option<f64>,
) -> Result<TightnessGap, BoundsError> {
    let unit = |name: &'static str, v: f64| -> Result<f64, BoundsError> {
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(BoundsError::InvalidParameter {
                name,
                reason: format!("an accuracy must lie in [0, 1], got {v}"),
            })
        }
    };
    let measured = unit("measured", measured)?;
    let lower = lower.map(|v| unit("lower", v)).transpose()?;
    let upper = upper.map(|v| unit("upper", v)).transpose()?;
    Ok(TightnessGap {
        measured,
        lower,
        upper,
        above_lower: lower.map(|l| measured - l),
        below_upper: upper.map(|u| u - measured),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::LN_2;

    #[test]
    fn feder_merhav_at_knots() {
        for k in 2..=12usize {
            for j in 1..=k {
                let pe = feder_merhav_error_upper((j as f64).ln(), k).unwrap();
                assert!(
                    (pe - (1.0 - 1.0 / j as f64)).abs() < 1e-12,
                    "k={k} j={j} pe={pe}"
                );
            }
            assert_eq!(feder_merhav_error_upper(0.0, k).unwrap(), 0.0);
            let top = feder_merhav_error_upper((k as f64).ln(), k).unwrap();
            assert!((top - (1.0 - 1.0 / k as f64)).abs() < 1e-12);
            // Beyond log K the error cannot exceed chance.
            let over = feder_merhav_error_upper((k as f64).ln() + 1.0, k).unwrap();
            assert!((over - (1.0 - 1.0 / k as f64)).abs() < 1e-12);
        }
    }

    #[test]
    fn feder_merhav_is_hellman_raviv_below_one_bit() {
        for i in 0..=100 {
            let h_bits = i as f64 / 100.0;
            for k in [2usize, 3, 10] {
                let pe = feder_merhav_error_upper(h_bits * LN_2, k).unwrap();
                assert!(
                    (pe - h_bits / 2.0).abs() < 1e-12,
                    "h={h_bits} k={k} pe={pe}"
                );
            }
        }
    }

    #[test]
    fn feder_merhav_below_exponential_form_and_monotone() {
        let k = 7;
        let mut prev = 0.0;
        for i in 0..=500 {
            let h = (k as f64).ln() * i as f64 / 500.0;
            let pe = feder_merhav_error_upper(h, k).unwrap();
            assert!(pe <= 1.0 - (-h).exp() + 1e-12);
            assert!(pe >= prev - 1e-15);
            prev = pe;
        }
    }

    #[test]
    fn feder_merhav_rejects_bad_input() {
        assert!(matches!(
            feder_merhav_error_upper(0.1, 1),
            Err(BoundsError::InvalidParameter { name: "k", .. })
        ));
        assert!(feder_merhav_error_upper(-0.5, 3).is_err());
        assert!(matches!(
            feder_merhav_error_upper(f64::NAN, 3),
            Err(BoundsError::NonFinite { .. })
        ));
    }

    #[test]
    fn bayes_lower_examples() {
        let k = 4;
        let hz = (k as f64).ln();
        // I = H(Z): Z is determined by U.
        assert!((bayes_accuracy_lower_bound(hz, hz, k).unwrap() - 1.0).abs() < 1e-12);
        // I = 0 with uniform Z: chance.
        assert!((bayes_accuracy_lower_bound(0.0, hz, k).unwrap() - 0.25).abs() < 1e-12);
        // Negative lower bounds are as good as 0.
        assert_eq!(
            bayes_accuracy_lower_bound(-0.3, hz, k).unwrap(),
            bayes_accuracy_lower_bound(0.0, hz, k).unwrap()
        );
        // H(Z) in bits passed as nats for K=2 (above log 2) is caught.
        let e = bayes_accuracy_lower_bound(0.0, 1.0, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats"), "{e}");
        // A lower bound above H(Z) is inconsistent.
        assert!(bayes_accuracy_lower_bound(hz + 0.1, hz, k).is_err());
    }

    #[test]
    fn fano_examples() {
        for k in 2..=10usize {
            let hz = (k as f64).ln();
            assert_eq!(fano_accuracy_upper_bound(hz, hz, k).unwrap(), 1.0);
            let chance = fano_accuracy_upper_bound(0.0, hz, k).unwrap();
            assert!((chance - 1.0 / k as f64).abs() < 1e-9, "k={k} {chance}");
        }
        // Binary, H(Z|U) = h(0.1): Fano gives Pe >= 0.1.
        let acc = fano_accuracy_upper_bound(LN_2 - binary_entropy(0.1), LN_2, 2).unwrap();
        assert!((acc - 0.9).abs() < 1e-9, "{acc}");
        assert!(fano_accuracy_upper_bound(-1.0, LN_2, 2).is_err());
    }

    #[test]
    fn fano_upper_dominates_feder_merhav_lower() {
        for k in 2..=10usize {
            let hz = (k as f64).ln();
            for i in 0..=200 {
                let info = hz * i as f64 / 200.0;
                let up = fano_accuracy_upper_bound(info, hz, k).unwrap();
                let lo = bayes_accuracy_lower_bound(info, hz, k).unwrap();
                assert!(up >= lo - 1e-12, "k={k} I={info} up={up} lo={lo}");
                assert!((0.0..=1.0).contains(&up) && (0.0..=1.0).contains(&lo));
            }
        }
    }

    #[test]
    fn gap_signs() {
        let g = tightness_gap(0.8, Some(0.7), Some(0.95)).unwrap();
        assert!((g.above_lower.unwrap() - 0.1).abs() < 1e-12);
        assert!((g.below_upper.unwrap() - 0.15).abs() < 1e-12);
        let g = tightness_gap(0.5, None, None).unwrap();
        assert!(g.above_lower.is_none() && g.below_upper.is_none());
        assert!(tightness_gap(1.2, None, None).is_err());
        assert!(tightness_gap(0.5, Some(f64::NAN), None).is_err());
    }
}
