//! The inequalities relating I(U;Z) to view and label information: the
//! source study's claims reproduced as stated (they are false, see
//! docs/bounds.md), and the valid replacements.
//!
//! Each function turns [`Terms`] into a [`BoundRow`]: the right-hand side's point value,
//! its certified value (the same sum over the terms' confidence bounds, when the inequality
//! is valid, every term points the right way and every term has a confidence bound), and the
//! terms it used, so a report can trace a number back to its estimators.

use super::error::BoundsError;
use super::terms::{Quantity, Term, Terms};

/// Whether an inequality is proved or merely reproduced from the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The study's claim, reproduced to show where it fails; never valid.
    AsStated,
    /// Proved (under the assumptions named in its statement).
    Valid,
}

/// Which side of the left-hand side the value claims to lie on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// lhs >= value
    Lower,
    /// lhs <= value
    Upper,
}

/// Facts about the data that only the caller can vouch for; several valid
/// bounds need them and refuse to run without them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Assumptions {
    /// U is computed from X alone (a deterministic encoder, or X plus noise
    /// independent of everything else), so U - X - (Y,Z) is a Markov chain.
    /// True for cbound's `embed` stage.
    pub u_is_function_of_x: bool,
    /// X and Y are conditionally independent given Z.
    pub x_indep_y_given_z: bool,
}

/// One evaluated inequality.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundRow {
    /// Stable short name, e.g. "valid_general".
    pub name: &'static str,
    /// The inequality in words.
    pub statement: String,
    /// The quantity the inequality bounds.
    pub lhs: Quantity,
    /// Whether the value is a lower or an upper bound on `lhs`.
    pub side: Side,
    /// The right-hand side's value in nats, from the terms' point values.
    pub value: f64,
    /// Proved or the study's claim.
    pub status: Status,
    /// True only for a valid inequality whose added terms point toward the
    /// claimed side and subtracted terms away from it, each with a confidence bound (or
    /// exact); otherwise the value is an estimate of the bound.
    pub certified: bool,
    /// The right-hand side from the terms' confidence bounds: holds (jointly with the other
    /// certified values of the instance) with the bound stage's confidence. `Some` exactly
    /// when `certified`.
    pub certified_value: Option<f64>,
    /// The inputs, in the order they appear in the statement.
    pub terms_used: Vec<(Quantity, Term)>,
    /// Caveats for the report.
    pub note: String,
}

/// What a row establishes, in the words of `bounds.parquet`'s `certification` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Certification {
    /// A valid inequality whose certified value holds with the stated confidence and says
    /// something (a lower bound above zero).
    Certified,
    /// Certified, but at or below the trivial value (a lower bound on information <= 0): true
    /// and useless, so never shown as a result.
    Vacuous,
    /// A valid inequality evaluated on point values (some term is an estimate or has no
    /// confidence bound): an estimate of the bound, not a bound.
    Estimate,
    /// The study's inequality as stated: false in general, so not a bound.
    NotABound,
    /// The row could not be evaluated (a term is missing, an assumption is not asserted):
    /// no value at all, and the row's `error` says what it needs.
    NotComputed,
}

impl Certification {
    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Certification::Certified => "certified",
            Certification::Vacuous => "vacuous",
            Certification::Estimate => "estimate",
            Certification::NotABound => "not_a_bound",
            Certification::NotComputed => "not_computed",
        }
    }
}

impl BoundRow {
    /// What the row establishes.
    pub fn certification(&self) -> Certification {
        match (self.status, self.certified_value) {
            (Status::AsStated, _) => Certification::NotABound,
            (Status::Valid, None) => Certification::Estimate,
            (Status::Valid, Some(v)) if self.side == Side::Lower && v <= 0.0 => {
                Certification::Vacuous
            }
            (Status::Valid, Some(_)) => Certification::Certified,
        }
    }
}

/// A bound crossing the exact value of its left-hand side.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// How far the bound lies on the wrong side of the truth, in nats (> 0).
    pub margin: f64,
    /// The bound's value in nats.
    pub bound: f64,
    /// The exact left-hand side in nats.
    pub truth: f64,
}

/// Default slack for [`check_against_truth`]: exact discrete terms carry
/// rounding error of order 1e-15, so anything larger is a real violation.
pub const DEFAULT_TOLERANCE_NATS: f64 = 1e-9;

struct Spec {
    name: &'static str,
    statement: String,
    lhs: Quantity,
    side: Side,
    status: Status,
    note: String,
}

/// Evaluates `sum coef * term` and certifies it. For a lower bound, added
/// terms (coef > 0) must be lower bounds and subtracted ones upper bounds;
/// an upper bound mirrors that. Zero weights drop out, so they cannot spoil
/// certification.
fn combine(spec: Spec, parts: &[(f64, Quantity)], terms: &Terms) -> Result<BoundRow, BoundsError> {
    let mut value = 0.0;
    let mut certified_sum = Some(0.0);
    let mut directions_ok = true;
    let mut used = Vec::with_capacity(parts.len());
    for &(coef, q) in parts {
        let t = terms.get(q, spec.name)?;
        value += coef * t.nats;
        let toward_lower = (coef > 0.0) == (spec.side == Side::Lower);
        if coef != 0.0 {
            directions_ok &= if toward_lower {
                t.kind.is_lower()
            } else {
                t.kind.is_upper()
            };
            certified_sum = certified_sum.zip(t.certified).map(|(s, c)| s + coef * c);
        }
        used.push((q, t.clone()));
    }
    // A false inequality certifies nothing, whatever its inputs promise; a valid one only
    // when every term points the right way with a confidence bound.
    let certified_value = certified_sum.filter(|_| spec.status == Status::Valid && directions_ok);
    let certified = certified_value.is_some();
    Ok(BoundRow {
        name: spec.name,
        statement: spec.statement,
        lhs: spec.lhs,
        side: spec.side,
        value,
        status: spec.status,
        certified,
        certified_value,
        terms_used: used,
        note: spec.note,
    })
}

fn require(
    asserted: bool,
    bound: &'static str,
    assumption: &'static str,
    flag: &'static str,
) -> Result<(), BoundsError> {
    if asserted {
        Ok(())
    } else {
        Err(BoundsError::AssumptionNotAsserted {
            bound,
            assumption,
            flag,
        })
    }
}

/// The study's general bound, as stated:
/// I(U;Z) >= I(U;Y) - I(X;Y|Z) + I(Y;Z) - H(Z|X,Y). False (U=X=Y=Z one fair bit).
pub fn study_general(terms: &Terms) -> Result<BoundRow, BoundsError> {
    combine(
        Spec {
            name: "study_general",
            statement: "I(U;Z) >= I(U;Y) - I(X;Y|Z) + I(Y;Z) - H(Z|X,Y) (study, as stated)".into(),
            lhs: Quantity::IUZ,
            side: Side::Lower,
            status: Status::AsStated,
            note: "false: U=X=Y=Z one fair bit gives 1 bit >= 2 bits".into(),
        },
        &[
            (1.0, Quantity::IUY),
            (-1.0, Quantity::IXYgivenZ),
            (1.0, Quantity::IYZ),
            (-1.0, Quantity::HZgivenXY),
        ],
        terms,
    )
}

/// The study's Theorem 1, as stated (premise X indep. Y given Z):
/// I(U;Z) >= I(U;Y) - I(X;Z) + I(Y;Z). False even under its premise.
pub fn study_theorem1(terms: &Terms) -> Result<BoundRow, BoundsError> {
    combine(
        Spec {
            name: "study_theorem1",
            statement: "I(U;Z) >= I(U;Y) - I(X;Z) + I(Y;Z) (study Theorem 1, as stated)".into(),
            lhs: Quantity::IUZ,
            side: Side::Lower,
            status: Status::AsStated,
            note: "false: X indep. Y, Z = Y, U = X satisfies the premise and gives 0 >= 1 bit"
                .into(),
        },
        &[
            (1.0, Quantity::IUY),
            (-1.0, Quantity::IXZ),
            (1.0, Quantity::IYZ),
        ],
        terms,
    )
}

/// The study's multi-view weighted form, as stated:
/// I(U;Z) >= alpha I(U;Y) - beta I(X;Z) + gamma I(Y;Z). Weights must be finite and >= 0.
pub fn study_multiview(
    terms: &Terms,
    alpha: f64,
    beta: f64,
    gamma: f64,
) -> Result<BoundRow, BoundsError> {
    for (name, w) in [("alpha", alpha), ("beta", beta), ("gamma", gamma)] {
        if !w.is_finite() || w < 0.0 {
            return Err(BoundsError::InvalidParameter {
                name,
                reason: format!("weight must be finite and >= 0 as in the study, got {w}"),
            });
        }
    }
    combine(
        Spec {
            name: "study_multiview",
            statement: format!(
                "I(U;Z) >= {alpha} I(U;Y) - {beta} I(X;Z) + {gamma} I(Y;Z) (study multi-view, as stated)"
            ),
            lhs: Quantity::IUZ,
            side: Side::Lower,
            status: Status::AsStated,
            note: "not a bound: built on the false general bound".into(),
        },
        &[
            (alpha, Quantity::IUY),
            (-beta, Quantity::IXZ),
            (gamma, Quantity::IYZ),
        ],
        terms,
    )
}

/// Always valid: I(U;Z) >= I(U;Y) - I(X;Y|Z) - I(U;Y|X,Z).
pub fn valid_general(terms: &Terms) -> Result<BoundRow, BoundsError> {
    combine(
        Spec {
            name: "valid_general",
            statement: "I(U;Z) >= I(U;Y) - I(X;Y|Z) - I(U;Y|X,Z)".into(),
            lhs: Quantity::IUZ,
            side: Side::Lower,
            status: Status::Valid,
            note: "holds for any joint distribution".into(),
        },
        &[
            (1.0, Quantity::IUY),
            (-1.0, Quantity::IXYgivenZ),
            (-1.0, Quantity::IUYgivenXZ),
        ],
        terms,
    )
}

/// Valid when U is a function of X (I(U;Y|X,Z) = 0): I(U;Z) >= I(U;Y) - I(X;Y|Z).
pub fn valid_deterministic(terms: &Terms, a: &Assumptions) -> Result<BoundRow, BoundsError> {
    const NAME: &str = "valid_deterministic";
    require(
        a.u_is_function_of_x,
        NAME,
        "U is computed from X alone",
        "u_is_function_of_x",
    )?;
    combine(
        Spec {
            name: NAME,
            statement: "I(U;Z) >= I(U;Y) - I(X;Y|Z), for U = f(X)".into(),
            lhs: Quantity::IUZ,
            side: Side::Lower,
            status: Status::Valid,
            note: "I(U;Y|X,Z) = 0 because U is a function of X".into(),
        },
        &[(1.0, Quantity::IUY), (-1.0, Quantity::IXYgivenZ)],
        terms,
    )
}

/// Valid when U is a function of X and X indep. Y given Z: I(U;Z) >= I(U;Y).
pub fn valid_conditional_independence(
    terms: &Terms,
    a: &Assumptions,
) -> Result<BoundRow, BoundsError> {
    const NAME: &str = "valid_conditional_independence";
    require(
        a.u_is_function_of_x,
        NAME,
        "U is computed from X alone",
        "u_is_function_of_x",
    )?;
    require(
        a.x_indep_y_given_z,
        NAME,
        "X and Y are conditionally independent given Z",
        "x_indep_y_given_z",
    )?;
    combine(
        Spec {
            name: NAME,
            statement: "I(U;Z) >= I(U;Y), for U = f(X) and X indep. Y given Z".into(),
            lhs: Quantity::IUZ,
            side: Side::Lower,
            status: Status::Valid,
            note:
                "certified only as far as the caller's conditional-independence assertion is true"
                    .into(),
        },
        &[(1.0, Quantity::IUY)],
        terms,
    )
}

/// Data processing, valid when U is a function of X: I(U;Z) <= I(X;Z).
pub fn data_processing_uz(terms: &Terms, a: &Assumptions) -> Result<BoundRow, BoundsError> {
    data_processing(
        "data_processing_uz",
        "I(U;Z) <= I(X;Z), for U = f(X)",
        Quantity::IUZ,
        Quantity::IXZ,
        terms,
        a,
    )
}

/// Data processing, valid when U is a function of X: I(U;Y) <= I(X;Y).
pub fn data_processing_uy(terms: &Terms, a: &Assumptions) -> Result<BoundRow, BoundsError> {
    data_processing(
        "data_processing_uy",
        "I(U;Y) <= I(X;Y), for U = f(X)",
        Quantity::IUY,
        Quantity::IXY,
        terms,
        a,
    )
}

/// `lhs <= rhs` because U = f(X) can carry no more about anything than X does.
fn data_processing(
    name: &'static str,
    statement: &str,
    lhs: Quantity,
    rhs: Quantity,
    terms: &Terms,
    a: &Assumptions,
) -> Result<BoundRow, BoundsError> {
    require(
        a.u_is_function_of_x,
        name,
        "U is computed from X alone",
        "u_is_function_of_x",
    )?;
    combine(
        Spec {
            name,
            statement: statement.into(),
            lhs,
            side: Side::Upper,
            status: Status::Valid,
            note: "data-processing inequality".into(),
        },
        &[(1.0, rhs)],
        terms,
    )
}

/// One inequality's evaluation: its name and validity, known whether or not it could be
/// evaluated, so a table row for a bound that could not be computed still says which bound
/// it is.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub name: &'static str,
    pub status: Status,
    pub result: Result<BoundRow, BoundsError>,
}

/// Every inequality, each with its own result so one missing term or
/// unasserted assumption does not hide the others. The multi-view form is
/// included only when weights are given.
pub fn evaluate_all(
    terms: &Terms,
    a: &Assumptions,
    multiview_weights: Option<(f64, f64, f64)>,
) -> Vec<Evaluated> {
    let named = |name, status, result| Evaluated {
        name,
        status,
        result,
    };
    let mut rows = vec![
        named("study_general", Status::AsStated, study_general(terms)),
        named("study_theorem1", Status::AsStated, study_theorem1(terms)),
    ];
    if let Some((alpha, beta, gamma)) = multiview_weights {
        rows.push(named(
            "study_multiview",
            Status::AsStated,
            study_multiview(terms, alpha, beta, gamma),
        ));
    }
    rows.push(named("valid_general", Status::Valid, valid_general(terms)));
    rows.push(named(
        "valid_deterministic",
        Status::Valid,
        valid_deterministic(terms, a),
    ));
    rows.push(named(
        "valid_conditional_independence",
        Status::Valid,
        valid_conditional_independence(terms, a),
    ));
    rows.push(named(
        "data_processing_uz",
        Status::Valid,
        data_processing_uz(terms, a),
    ));
    rows.push(named(
        "data_processing_uy",
        Status::Valid,
        data_processing_uy(terms, a),
    ));
    rows
}

/// Compares a bound with the exact value of its left-hand side, with
/// [`DEFAULT_TOLERANCE_NATS`] of slack. `Ok(None)` means no violation; a missing
/// or non-exact truth is an error rather than a silent pass.
pub fn check_against_truth(
    row: &BoundRow,
    truth: &Terms,
) -> Result<Option<Violation>, BoundsError> {
    check_against_truth_with_tolerance(row, truth, DEFAULT_TOLERANCE_NATS)
}

/// [`check_against_truth`] with an explicit slack in nats.
pub fn check_against_truth_with_tolerance(
    row: &BoundRow,
    truth: &Terms,
    tolerance_nats: f64,
) -> Result<Option<Violation>, BoundsError> {
    check_value_against_truth(row.lhs, row.side, row.value, truth, tolerance_nats)
}

/// Compares a bound `value` on `lhs` (lower or upper, as `side`) with the exact value in
/// `truth`, with `tolerance_nats` of slack: used for point values and certified values alike.
pub fn check_value_against_truth(
    lhs: Quantity,
    side: Side,
    value: f64,
    truth: &Terms,
    tolerance_nats: f64,
) -> Result<Option<Violation>, BoundsError> {
    if !tolerance_nats.is_finite() || tolerance_nats < 0.0 {
        return Err(BoundsError::InvalidParameter {
            name: "tolerance_nats",
            reason: format!("must be finite and >= 0, got {tolerance_nats}"),
        });
    }
    let t = truth.get(lhs, "check_against_truth")?;
    if t.kind != super::terms::Direction::Exact {
        return Err(BoundsError::TruthNotExact {
            quantity: lhs,
            kind: t.kind,
            origin: t.source.clone(),
        });
    }
    let margin = match side {
        Side::Lower => value - t.nats,
        Side::Upper => t.nats - value,
    };
    Ok((margin > tolerance_nats).then_some(Violation {
        margin,
        bound: value,
        truth: t.nats,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::joint::{random_joint, Counterexample, Encoder, Joint, Lcg};
    use super::super::terms::Direction;
    use super::*;
    use std::f64::consts::LN_2;

    const FUNC: Assumptions = Assumptions {
        u_is_function_of_x: true,
        x_indep_y_given_z: false,
    };
    const FUNC_CI: Assumptions = Assumptions {
        u_is_function_of_x: true,
        x_indep_y_given_z: true,
    };

    fn violated(row: &BoundRow, truth: &Terms) -> Option<Violation> {
        check_against_truth(row, truth).unwrap()
    }

    fn valid_rows(t: &Terms, a: &Assumptions) -> Vec<BoundRow> {
        let mut rows = vec![valid_general(t).unwrap()];
        if a.u_is_function_of_x {
            rows.push(valid_deterministic(t, a).unwrap());
            rows.push(data_processing_uz(t, a).unwrap());
            rows.push(data_processing_uy(t, a).unwrap());
        }
        if a.u_is_function_of_x && a.x_indep_y_given_z {
            rows.push(valid_conditional_independence(t, a).unwrap());
        }
        rows
    }

    fn all_equal() -> Joint {
        Counterexample::GeneralAllEqual.joint()
    }

    fn z_constant_u_is_y() -> Joint {
        Counterexample::Theorem1ZConstant.joint()
    }

    fn z_is_y_u_is_x() -> Joint {
        Counterexample::Theorem1ZIsY.joint()
    }

    #[test]
    fn counterexample_a_general_bound_fails() {
        let t = all_equal().terms();
        let row = study_general(&t).unwrap();
        assert!((row.value - 2.0 * LN_2).abs() < 1e-12);
        let v = violated(&row, &t).expect("study general bound must fail on (a)");
        assert!((v.truth - LN_2).abs() < 1e-12);
        assert!((v.margin - LN_2).abs() < 1e-12);
        assert_eq!(row.status, Status::AsStated);
        assert!(!row.certified, "a false inequality is never certified");
        for r in valid_rows(&t, &FUNC_CI) {
            assert!(violated(&r, &t).is_none(), "{} on (a)", r.name);
        }
    }

    #[test]
    fn counterexample_b_theorem1_fails() {
        let t = z_constant_u_is_y().terms();
        let row = study_theorem1(&t).unwrap();
        assert!((row.value - LN_2).abs() < 1e-12);
        let v = violated(&row, &t).expect("Theorem 1 must fail on (b)");
        assert!(v.truth.abs() < 1e-12 && (v.margin - LN_2).abs() < 1e-12);
        // U = Y is not a function of X: only the always-valid bound applies, and holds.
        for r in valid_rows(&t, &Assumptions::default()) {
            assert!(violated(&r, &t).is_none(), "{} on (b)", r.name);
        }
        // Asserting a false assumption breaks the bounds that rely on it,
        // which is why they refuse to run without the assertion.
        let wrong = valid_deterministic(&t, &FUNC).unwrap();
        assert!(violated(&wrong, &t).is_some());
    }

    #[test]
    fn counterexample_c_both_study_bounds_fail() {
        let t = z_is_y_u_is_x().terms();
        for row in [study_theorem1(&t).unwrap(), study_general(&t).unwrap()] {
            let v = violated(&row, &t).expect("study bound must fail on (c)");
            assert!((v.margin - LN_2).abs() < 1e-12, "{}", row.name);
        }
        // X indep. Y given Z and U = f(X) both hold here.
        for r in valid_rows(&t, &FUNC_CI) {
            assert!(violated(&r, &t).is_none(), "{} on (c)", r.name);
        }
    }

    #[test]
    fn multiview_reduces_to_theorem1_at_unit_weights() {
        let t = z_is_y_u_is_x().terms();
        let mv = study_multiview(&t, 1.0, 1.0, 1.0).unwrap();
        let th = study_theorem1(&t).unwrap();
        assert!((mv.value - th.value).abs() < 1e-15);
        assert_eq!(mv.status, Status::AsStated);
        let e = study_multiview(&t, -1.0, 1.0, 1.0).unwrap_err();
        assert!(matches!(
            e,
            BoundsError::InvalidParameter { name: "alpha", .. }
        ));
        assert!(study_multiview(&t, 1.0, f64::NAN, 1.0).is_err());
    }

    #[test]
    fn random_cases_valid_bounds_never_violated() {
        let mut rng = Lcg::new(0x5eed);
        let (mut general_bad, mut theorem1_bad, mut cases) = (0, 0, 0);
        for i in 0..200 {
            let n = 2 + i % 2;
            let nu = 2 + (i / 2) % 2;
            let ci = i % 4 >= 2;
            let j = random_joint(&mut rng, n, nu, Encoder::Deterministic, ci);
            let t = j.terms();
            let a = Assumptions {
                u_is_function_of_x: true,
                x_indep_y_given_z: ci,
            };
            if ci {
                assert!(t.get(Quantity::IXYgivenZ, "t").unwrap().nats.abs() < 1e-12);
            }
            for r in valid_rows(&t, &a) {
                assert!(violated(&r, &t).is_none(), "case {i}: {} violated", r.name);
                assert!(r.certified, "exact inputs certify a valid bound");
                assert_eq!(r.certified_value, Some(r.value));
                let c = r.certification();
                assert!(
                    c == Certification::Certified || c == Certification::Vacuous,
                    "{c:?}"
                );
                if c == Certification::Vacuous {
                    assert!(r.side == Side::Lower && r.value <= 0.0);
                }
            }
            general_bad += usize::from(violated(&study_general(&t).unwrap(), &t).is_some());
            theorem1_bad += usize::from(violated(&study_theorem1(&t).unwrap(), &t).is_some());
            cases += 1;
        }
        // Stochastic encoders: the always-valid bound and data processing still hold.
        for i in 0..100 {
            let j = random_joint(&mut rng, 2 + i % 2, 2, Encoder::Stochastic, false);
            let t = j.terms();
            for r in valid_rows(&t, &FUNC) {
                assert!(violated(&r, &t).is_none(), "stochastic {i}: {}", r.name);
            }
        }
        eprintln!("study violations over {cases} random cases: general {general_bad}, theorem 1 {theorem1_bad}");
        assert!(
            general_bad > 0 && theorem1_bad > 0,
            "{general_bad} {theorem1_bad}"
        );
    }

    /// A term whose confidence bound equals its value (as if certified at any level).
    fn term(nats: f64, kind: Direction) -> Term {
        Term::new(nats, kind, "test")
            .unwrap()
            .with_certified(nats)
            .unwrap()
    }

    #[test]
    fn certification_follows_directions() {
        let base = Terms::new()
            .with(Quantity::IUY, term(1.0, Direction::LowerBound))
            .with(Quantity::IXYgivenZ, term(0.2, Direction::UpperBound))
            .with(Quantity::IUYgivenXZ, term(0.0, Direction::Exact));
        let r = valid_general(&base).unwrap();
        assert!(r.certified);
        assert!((r.value - 0.8).abs() < 1e-15);
        assert_eq!(r.terms_used.len(), 3);
        assert_eq!(r.terms_used[1].0, Quantity::IXYgivenZ);
        // A KSG estimate in the subtracted place is not a certificate.
        let est = base
            .clone()
            .with(Quantity::IXYgivenZ, term(0.2, Direction::Estimate));
        assert!(!valid_general(&est).unwrap().certified);
        // A lower bound where an upper bound is needed is not either.
        let wrong = base
            .clone()
            .with(Quantity::IXYgivenZ, term(0.2, Direction::LowerBound));
        assert!(!valid_general(&wrong).unwrap().certified);
        // Upper bounds mirror: I(X;Z) must be an upper bound.
        let up = Terms::new().with(Quantity::IXZ, term(0.5, Direction::UpperBound));
        assert!(data_processing_uz(&up, &FUNC).unwrap().certified);
        let lo = Terms::new().with(Quantity::IXZ, term(0.5, Direction::LowerBound));
        let r = data_processing_uz(&lo, &FUNC).unwrap();
        assert!(!r.certified);
        assert_eq!(r.side, Side::Upper);
        // Zero weights drop out of certification.
        let mv = Terms::new()
            .with(Quantity::IUY, term(1.0, Direction::LowerBound))
            .with(Quantity::IXZ, term(0.1, Direction::Estimate))
            .with(Quantity::IYZ, term(0.3, Direction::LowerBound));
        let r = study_multiview(&mv, 1.0, 0.0, 1.0).unwrap();
        assert!(!r.certified, "as-stated rows are never certified");
        assert_eq!(r.certification(), Certification::NotABound);
        // A lower bound by direction alone, without a confidence bound, certifies nothing:
        // its point value is below the truth only on average.
        let point_only = base.clone().with(
            Quantity::IUY,
            Term::new(1.0, Direction::LowerBound, "probe").unwrap(),
        );
        let r = valid_general(&point_only).unwrap();
        assert!(!r.certified && r.certified_value.is_none());
        assert_eq!(r.certification(), Certification::Estimate);
        // Certified values combine like point values, each in its own direction.
        let both = base
            .clone()
            .with(
                Quantity::IUY,
                term(1.0, Direction::LowerBound)
                    .with_certified(0.7)
                    .unwrap(),
            )
            .with(
                Quantity::IXYgivenZ,
                term(0.2, Direction::UpperBound)
                    .with_certified(0.4)
                    .unwrap(),
            );
        let r = valid_general(&both).unwrap();
        assert!((r.value - 0.8).abs() < 1e-15);
        assert!((r.certified_value.unwrap() - 0.3).abs() < 1e-15);
        assert_eq!(r.certification(), Certification::Certified);
        let vac = both.clone().with(
            Quantity::IXYgivenZ,
            term(0.2, Direction::UpperBound)
                .with_certified(0.9)
                .unwrap(),
        );
        assert_eq!(
            valid_general(&vac).unwrap().certification(),
            Certification::Vacuous
        );
    }

    #[test]
    fn assumptions_are_required() {
        let t = all_equal().terms();
        let none = Assumptions::default();
        for e in [
            valid_deterministic(&t, &none).unwrap_err(),
            valid_conditional_independence(&t, &none).unwrap_err(),
            valid_conditional_independence(&t, &FUNC).unwrap_err(),
            data_processing_uz(&t, &none).unwrap_err(),
            data_processing_uy(&t, &none).unwrap_err(),
        ] {
            assert!(
                matches!(e, BoundsError::AssumptionNotAsserted { .. }),
                "{e}"
            );
        }
        let msg = valid_conditional_independence(&t, &FUNC)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("x_indep_y_given_z"), "{msg}");
    }

    #[test]
    fn missing_terms_and_bad_truth() {
        let t = Terms::new().with(Quantity::IUY, term(1.0, Direction::LowerBound));
        let e = valid_general(&t).unwrap_err();
        match &e {
            BoundsError::MissingTerm {
                quantity,
                needed_by,
                suggestion,
            } => {
                assert_eq!(*quantity, Quantity::IXYgivenZ);
                assert_eq!(needed_by, "valid_general");
                assert!(suggestion.contains("ksg_cmi"));
            }
            other => panic!("{other}"),
        }
        let all = evaluate_all(&t, &FUNC_CI, Some((1.0, 1.0, 1.0)));
        assert_eq!(all.len(), 8);
        // Only the conditional-independence form needs nothing but I(U;Y).
        let ok_names: Vec<_> = all
            .iter()
            .filter_map(|e| e.result.as_ref().ok())
            .map(|r| r.name)
            .collect();
        assert_eq!(ok_names, ["valid_conditional_independence"]);
        // A row that could not be evaluated still knows its name and validity, and an
        // evaluated one agrees with them.
        for e in &all {
            if let Ok(r) = &e.result {
                assert_eq!((r.name, r.status), (e.name, e.status));
            }
        }
        assert_eq!(all[0].name, "study_general");
        assert_eq!(all[0].status, Status::AsStated);
        let ok = evaluate_all(&all_equal().terms(), &FUNC_CI, None);
        assert_eq!(ok.len(), 7);
        assert!(ok
            .iter()
            .all(|e| e.result.as_ref().is_ok_and(|r| r.name == e.name)));

        let row = valid_conditional_independence(&t, &FUNC_CI).unwrap();
        let est_truth = Terms::new().with(Quantity::IUZ, term(1.0, Direction::Estimate));
        assert!(matches!(
            check_against_truth(&row, &est_truth),
            Err(BoundsError::TruthNotExact { .. })
        ));
        assert!(matches!(
            check_against_truth(&row, &Terms::new()),
            Err(BoundsError::MissingTerm { .. })
        ));
        let truth = Terms::new().with(Quantity::IUZ, term(0.9999, Direction::Exact));
        assert!(check_against_truth(&row, &truth).unwrap().is_some());
        assert!(check_against_truth_with_tolerance(&row, &truth, 1e-3)
            .unwrap()
            .is_none());
        assert!(check_against_truth_with_tolerance(&row, &truth, -1.0).is_err());
    }
}
