//! Special functions the estimators and ground-truth tasks need: digamma, log Gamma, erf/erfc
//! and the standard normal CDF.
//!
//! Written here rather than taken from a crate to keep the dependency list to
//! the approved set; each is accurate to about 1e-13 or better over the
//! ranges the estimators use, which the tests check against reference values.

use std::f64::consts::PI;

/// Digamma function psi(x) = d/dx log Gamma(x).
///
/// Uses the reflection formula for x < 0.5, the recurrence psi(x) = psi(x+1) - 1/x
/// to shift x above 10, and the asymptotic series there (truncation error
/// below 1e-16 at x >= 10). Poles (0, -1, -2, ...) give NaN.
pub fn digamma(x: f64) -> f64 {
    if x.is_nan() || x == f64::NEG_INFINITY {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return f64::INFINITY;
    }
    if x <= 0.0 && x == x.floor() {
        return f64::NAN;
    }
    if x < 0.5 {
        // Reflection keeps the recurrence from having to climb far from negative x.
        return digamma(1.0 - x) - PI / (PI * x).tan();
    }
    let mut x = x;
    let mut acc = 0.0;
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    // Bernoulli-number coefficients B_2n / (2n), Horner form in 1/x^2.
    let series = inv2
        * (1.0 / 12.0
            - inv2
                * (1.0 / 120.0
                    - inv2
                        * (1.0 / 252.0
                            - inv2
                                * (1.0 / 240.0
                                    - inv2
                                        * (1.0 / 132.0
                                            - inv2 * (691.0 / 32760.0 - inv2 / 12.0))))));
    acc + x.ln() - 0.5 * inv - series
}

/// log Gamma(x) for x > 0 (Lanczos, g = 7, nine coefficients; relative error about 1e-15);
/// x < 0.5 through the reflection formula. Used by the Student-t ground truth.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        return (PI / (PI * x).sin()).abs().ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut acc = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        acc += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + acc.ln()
}

/// Error function erf(x).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let a = x.abs();
    let v = if a < CF_THRESHOLD {
        erf_series(a)
    } else {
        1.0 - erfc_cf(a)
    };
    v.copysign(x)
}

/// Complementary error function erfc(x) = 1 - erf(x), accurate in the tail.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < CF_THRESHOLD {
        1.0 - erf_series(x)
    } else {
        erfc_cf(x)
    }
}

/// Standard normal cumulative distribution function Phi(z).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

// Below this the all-positive-terms series is used; above it the continued
// fraction, which converges quickly there and keeps relative accuracy in the tail.
const CF_THRESHOLD: f64 = 2.5;

/// erf for 0 <= x < CF_THRESHOLD via
/// erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)).
/// Every term is positive, so there is no cancellation (unlike the Taylor series).
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term > 1e-17 * sum {
        term *= 2.0 * x2 / (2.0 * n + 3.0);
        sum += term;
        n += 1.0;
        if n > 500.0 {
            break;
        }
    }
    2.0 / PI.sqrt() * (-x2).exp() * sum
}

/// erfc for x >= CF_THRESHOLD via the Laplace continued fraction
/// erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))),
/// evaluated with the modified Lentz algorithm.
fn erfc_cf(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..2000 {
        let a = n as f64 * 0.5;
        d = x + a * d;
        if d.abs() < TINY {
            d = TINY;
        }
        d = 1.0 / d;
        c = x + a / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (PI.sqrt() * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        let mut fact = 1.0f64;
        for n in 1..30 {
            // Gamma(n) = (n - 1)!
            assert!(
                (ln_gamma(n as f64) - fact.ln()).abs() < 1e-12 * fact.ln().max(1.0),
                "{n}"
            );
            fact *= n as f64;
        }
        // Gamma(1/2) = sqrt(pi), Gamma(3/2) = sqrt(pi)/2, Gamma(7/2) = 15 sqrt(pi)/8.
        assert!((ln_gamma(0.5) - 0.5 * PI.ln()).abs() < 1e-14);
        assert!((ln_gamma(1.5) - (0.5 * PI.ln() - 2f64.ln())).abs() < 1e-14);
        assert!((ln_gamma(3.5) - (15.0 * PI.sqrt() / 8.0).ln()).abs() < 1e-14);
        // scipy.special.gammaln(0.1) and gammaln(100.5).
        assert!((ln_gamma(0.1) - 2.252_712_651_734_206).abs() < 1e-13);
        assert!((ln_gamma(100.5) - 361.435_540_467_777_6).abs() < 1e-10);
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn digamma_known_values() {
        assert!((digamma(1.0) - (-0.577_215_664_901_532_9)).abs() < 1e-15);
        assert!((digamma(0.5) - (-1.963_510_026_021_423_5)).abs() < 1e-14);
        assert!((digamma(3.5) - 1.103_156_640_645_243).abs() < 1e-14);
        assert!((digamma(2.0) - 0.422_784_335_098_467_1).abs() < 1e-15);
        // psi(n) = -gamma + H_{n-1} for integers.
        let mut h = 0.0;
        for n in 1..=2000usize {
            if n > 1 {
                h += 1.0 / (n - 1) as f64;
            }
            let want = -EULER_GAMMA + h;
            assert!((digamma(n as f64) - want).abs() < 1e-13, "n = {n}");
        }
        // Reflection branch: psi(-0.5) = psi(0.5) + 2.
        assert!((digamma(-0.5) - (-1.963_510_026_021_423_5 + 2.0)).abs() < 1e-13);
        assert!(digamma(0.0).is_nan());
        assert!(digamma(-3.0).is_nan());
        // Large argument: psi(x) ~ ln x - 1/(2x).
        assert!((digamma(1e8) - (1e8f64.ln() - 0.5e-8)).abs() < 1e-15);
    }

    #[test]
    fn erf_known_values() {
        // Reference values from CPython's math.erf / math.erfc.
        let table = [
            (1e-5, 1.1283791670579e-05, 0.9999887162083294),
            (0.1, 0.1124629160182849, 0.8875370839817152),
            (0.5, 0.5204998778130465, 0.4795001221869535),
            (1.0, 0.8427007929497149, 0.15729920705028513),
            (1.5, 0.9661051464753108, 0.033894853524689274),
            (2.0, 0.9953222650189527, 0.004677734981047265),
            (2.4, 0.999311486103355, 0.0006885138966450789),
            (2.6, 0.9997639655834707, 0.00023603441652934908),
            (3.0, 0.9999779095030014, 2.2090496998585438e-05),
            (4.0, 0.9999999845827421, 1.541725790028002e-08),
            (5.0, 0.9999999999984626, 1.5374597944280351e-12),
            (6.0, 1.0, 2.1519736712498916e-17),
            (10.0, 1.0, 2.088487583762545e-45),
        ];
        for (x, e, c) in table {
            assert!((erf(x) - e).abs() < 1e-15, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + e).abs() < 1e-15);
            assert!(close(erfc(x), c, 1e-12), "erfc({x}) = {}", erfc(x));
            assert!((erfc(-x) - (2.0 - c)).abs() < 1e-15);
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erfc(0.0), 1.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-16);
        assert!((normal_cdf(1.96) - 0.975_002_104_851_779_5).abs() < 1e-12);
        assert!((normal_cdf(-1.0) - 0.158_655_253_931_457_05).abs() < 1e-12);
        assert!(close(normal_cdf(-8.0), 6.220_960_574_271_819e-16, 1e-10));
        assert_eq!(normal_cdf(40.0), 1.0);
        // Symmetry Phi(-z) = 1 - Phi(z).
        for i in 0..100 {
            let z = i as f64 * 0.07;
            assert!((normal_cdf(-z) + normal_cdf(z) - 1.0).abs() < 1e-15);
        }
    }
}
