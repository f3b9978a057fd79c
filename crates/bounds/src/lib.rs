//! Information-theoretic bounds for contrastive learning: the source study's
//! inequalities reproduced as stated, their valid replacements, and the
//! conversion from information to Bayes accuracy.
//!
//! Everything is in nats. Each number carries its provenance ([`Term`]): its point value,
//! its direction and, where an estimator supplied one, a confidence bound. A bound is
//! certified only when the inequality is valid and every term enters through a confidence
//! bound pointing the right way; otherwise it is an estimate ([`Certification`]). The
//! study's claims are kept, labelled [`Status::AsStated`], because the tool must show where
//! they fail; they are never reported as valid. docs/bounds.md has the proofs and
//! counterexamples, docs/certification.md the confidence bounds.

pub mod accuracy;
pub mod error;
pub mod inequalities;
pub mod joint;
pub mod terms;

pub use accuracy::{
    bayes_accuracy_lower_bound, fano_accuracy_upper_bound, feder_merhav_error_upper, tightness_gap,
    TightnessGap,
};
pub use error::BoundsError;
pub use inequalities::{
    check_against_truth, check_against_truth_with_tolerance, check_value_against_truth,
    Assumptions, BoundRow, Certification, Evaluated, Side, Status, Violation,
};
pub use terms::{Direction, Quantity, Term, Terms};
