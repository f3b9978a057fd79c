//! Information-theoretic bounds for contrastive learning: the source study's
//! inequalities reproduced as stated, their valid replacements, and the
//! conversion from information to Bayes accuracy.
//!
//! Everything is in nats. Each number carries its provenance ([`Term`]) so a
//! bound can say whether it is certified (every input points the right way)
//! or only an estimate. The study's claims are kept, labelled
//! [`Status::AsStated`], because the tool must show where they fail; they are
//! never reported as valid. See `shared/reference/bounds.md` for the proofs
//! and counterexamples.

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
    check_against_truth, check_against_truth_with_tolerance, Assumptions, BoundRow, Side, Status,
    Violation,
};
pub use terms::{Direction, Quantity, Term, Terms};
