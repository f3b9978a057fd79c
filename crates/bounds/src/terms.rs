//! Information quantities with provenance: a value in nats plus what it
//! promises (lower bound, upper bound, estimate or exact) and where it came
//! from, collected in a [`Terms`] set keyed by [`Quantity`].
//!
//! Units are nats everywhere. Bits enter only through [`Term::from_bits`], so a
//! bits value cannot be stored as nats by accident.

use std::collections::BTreeMap;
use std::fmt;

use super::error::BoundsError;

pub use cbound_core::direction::Direction;

/// The information quantities the bounds combine. U = f(X) is the
/// representation, X and Y two views, Z the downstream label.
/// Written `i_uz`, `i_xy_given_z`, `h_z`, ... in pipelines.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
pub enum Quantity {
    /// I(U;Z)
    #[serde(rename = "i_uz")]
    IUZ,
    /// I(U;Y)
    #[serde(rename = "i_uy")]
    IUY,
    /// I(X;Y)
    #[serde(rename = "i_xy")]
    IXY,
    /// I(X;Z)
    #[serde(rename = "i_xz")]
    IXZ,
    /// I(Y;Z)
    #[serde(rename = "i_yz")]
    IYZ,
    /// I(X;Y|Z)
    #[serde(rename = "i_xy_given_z")]
    IXYgivenZ,
    /// I(U;Y|X,Z)
    #[serde(rename = "i_uy_given_xz")]
    IUYgivenXZ,
    /// H(Z)
    #[serde(rename = "h_z")]
    HZ,
    /// H(Z|X,Y)
    #[serde(rename = "h_z_given_xy")]
    HZgivenXY,
}

impl Quantity {
    /// Every quantity, in a stable order.
    pub const ALL: [Quantity; 9] = [
        Quantity::IUZ,
        Quantity::IUY,
        Quantity::IXY,
        Quantity::IXZ,
        Quantity::IYZ,
        Quantity::IXYgivenZ,
        Quantity::IUYgivenXZ,
        Quantity::HZ,
        Quantity::HZgivenXY,
    ];

    /// The name written in pipelines, e.g. "i_xy_given_z".
    pub fn name(self) -> &'static str {
        match self {
            Quantity::IUZ => "i_uz",
            Quantity::IUY => "i_uy",
            Quantity::IXY => "i_xy",
            Quantity::IXZ => "i_xz",
            Quantity::IYZ => "i_yz",
            Quantity::IXYgivenZ => "i_xy_given_z",
            Quantity::IUYgivenXZ => "i_uy_given_xz",
            Quantity::HZ => "h_z",
            Quantity::HZgivenXY => "h_z_given_xy",
        }
    }

    /// Whether a probe for this quantity predicts the label Z (so an exact H(Z) applies).
    pub fn predicts_z(self) -> bool {
        matches!(self, Quantity::IUZ | Quantity::IXZ | Quantity::IYZ)
    }

    /// Mathematical notation, e.g. "I(X;Y|Z)".
    pub fn symbol(self) -> &'static str {
        match self {
            Quantity::IUZ => "I(U;Z)",
            Quantity::IUY => "I(U;Y)",
            Quantity::IXY => "I(X;Y)",
            Quantity::IXZ => "I(X;Z)",
            Quantity::IYZ => "I(Y;Z)",
            Quantity::IXYgivenZ => "I(X;Y|Z)",
            Quantity::IUYgivenXZ => "I(U;Y|X,Z)",
            Quantity::HZ => "H(Z)",
            Quantity::HZgivenXY => "H(Z|X,Y)",
        }
    }

    /// Which cbound estimator provides this quantity, and in which direction;
    /// used in [`BoundsError::MissingTerm`] so the user knows what to add.
    pub fn suggestion(self) -> &'static str {
        match self {
            Quantity::IUZ => {
                "estimate_mi with the probe estimator on (U, label) (lower bound), or ksg (estimate)"
            }
            Quantity::IUY => "estimate_mi with infonce (lower bound) or ksg (estimate) on (U, Y)",
            Quantity::IXY => {
                "estimate_mi with infonce on (X, Y) (lower bound), or the known augmentation \
                 channel (upper bound)"
            }
            Quantity::IXZ => {
                "estimate_mi with the probe estimator on (X, label) (lower bound), or ksg (estimate)"
            }
            Quantity::IYZ => {
                "estimate_mi with the probe estimator on (Y, label) (lower bound), or ksg (estimate)"
            }
            Quantity::IXYgivenZ => {
                "estimate_mi with ksg_cmi and z = label, or the known augmentation channel"
            }
            Quantity::IUYgivenXZ => {
                "the exact value 0 when U = f(X) (a deterministic encoder), otherwise ksg_cmi on \
                 (U, Y) given (X, label)"
            }
            Quantity::HZ => {
                "the label entropy from class frequencies (the discrete estimator), or log K for \
                 balanced classes"
            }
            Quantity::HZgivenXY => {
                "the exact value 0 when the label is a function of the views, otherwise H(Z) \
                 minus a probe lower bound on I(X,Y;Z) (upper bound)"
            }
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// One information quantity's value in nats, with what it promises and where it came from.
///
/// `nats` is the point value an estimator measured. A lower- or upper-bound estimator's point
/// value holds only on average; `certified` is the value that holds with the bound stage's
/// confidence (a one-sided confidence bound in the direction of `kind`), and only it may enter
/// a certified bound. Exact values are their own certified value.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The point value in nats.
    pub nats: f64,
    /// What the value promises about the true quantity.
    pub kind: Direction,
    /// Provenance, e.g. "probe", "infonce", "ksg", "truth".
    pub source: String,
    /// The confidence bound in the direction of `kind`, when one exists.
    pub certified: Option<f64>,
}

impl Term {
    /// A term from a value in nats; rejects NaN and infinities so they cannot
    /// silently poison a bound.
    pub fn new(nats: f64, kind: Direction, source: impl Into<String>) -> Result<Self, BoundsError> {
        let source = source.into();
        if !nats.is_finite() {
            return Err(BoundsError::NonFinite {
                what: format!("term from `{source}`"),
                value: nats,
            });
        }
        let certified = (kind == Direction::Exact).then_some(nats);
        Ok(Term {
            nats,
            kind,
            source,
            certified,
        })
    }

    /// The term with a confidence bound `value` in the direction of its kind.
    pub fn with_certified(mut self, value: f64) -> Result<Self, BoundsError> {
        if !value.is_finite() {
            return Err(BoundsError::NonFinite {
                what: format!("certified value of `{}`", self.source),
                value,
            });
        }
        self.certified = Some(value);
        Ok(self)
    }

    /// A term from a value in bits (NPEET and many papers report bits).
    pub fn from_bits(
        bits: f64,
        kind: Direction,
        source: impl Into<String>,
    ) -> Result<Self, BoundsError> {
        Term::new(bits * std::f64::consts::LN_2, kind, source)
    }

    /// An exact value in nats (ground truth or zero by construction).
    pub fn exact(nats: f64, source: impl Into<String>) -> Result<Self, BoundsError> {
        Term::new(nats, Direction::Exact, source)
    }

    /// The value in bits, for display.
    pub fn bits(&self) -> f64 {
        self.nats / std::f64::consts::LN_2
    }
}

/// A set of terms, at most one per quantity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Terms {
    map: BTreeMap<Quantity, Term>,
}

impl Terms {
    /// An empty set.
    pub fn new() -> Self {
        Terms::default()
    }

    /// Stores `term` for `q`, returning the term it replaces.
    pub fn insert(&mut self, q: Quantity, term: Term) -> Option<Term> {
        self.map.insert(q, term)
    }

    /// Builder form of [`Terms::insert`].
    pub fn with(mut self, q: Quantity, term: Term) -> Self {
        self.map.insert(q, term);
        self
    }

    /// The term for `q`, or a [`BoundsError::MissingTerm`] naming `needed_by`
    /// and the estimator that provides `q`.
    pub fn get(&self, q: Quantity, needed_by: &str) -> Result<&Term, BoundsError> {
        self.map.get(&q).ok_or_else(|| BoundsError::MissingTerm {
            quantity: q,
            needed_by: needed_by.to_string(),
            suggestion: q.suggestion().to_string(),
        })
    }

    /// The term for `q` if present.
    pub fn find(&self, q: Quantity) -> Option<&Term> {
        self.map.get(&q)
    }

    /// All terms in [`Quantity`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Quantity, &Term)> {
        self.map.iter().map(|(q, t)| (*q, t))
    }

    /// Number of quantities present.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no quantity is present.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_convert_to_nats() {
        let t = Term::from_bits(1.0, Direction::Exact, "truth").unwrap();
        assert!((t.nats - std::f64::consts::LN_2).abs() < 1e-15);
        assert!((t.bits() - 1.0).abs() < 1e-15);
    }

    #[test]
    fn non_finite_rejected() {
        let e = Term::new(f64::NAN, Direction::Estimate, "ksg").unwrap_err();
        assert!(matches!(e, BoundsError::NonFinite { .. }));
        assert!(Term::from_bits(f64::INFINITY, Direction::Exact, "x").is_err());
    }

    #[test]
    fn missing_term_names_estimator() {
        let terms = Terms::new();
        let e = terms.get(Quantity::IXYgivenZ, "valid bound").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("I(X;Y|Z)"), "{msg}");
        assert!(msg.contains("ksg_cmi"), "{msg}");
        assert!(msg.contains("valid bound"), "{msg}");
        let e = terms.get(Quantity::IUZ, "b").unwrap_err().to_string();
        assert!(e.contains("probe estimator on (U, label)"), "{e}");
        let e = terms.get(Quantity::IUY, "b").unwrap_err().to_string();
        assert!(e.contains("infonce"), "{e}");
    }

    #[test]
    fn terms_insert_replace_iter() {
        let mut terms = Terms::new().with(Quantity::HZ, Term::exact(1.0, "truth").unwrap());
        let old = terms.insert(Quantity::HZ, Term::exact(2.0, "truth").unwrap());
        assert_eq!(old.map(|t| t.nats), Some(1.0));
        assert_eq!(terms.len(), 1);
        assert_eq!(terms.get(Quantity::HZ, "t").unwrap().nats, 2.0);
        assert!(terms.find(Quantity::IUZ).is_none());
        assert_eq!(Quantity::ALL.len(), 9);
        assert_eq!(format!("{}", Quantity::IUYgivenXZ), "I(U;Y|X,Z)");
    }

    #[test]
    fn direction_roles() {
        assert!(Direction::Exact.is_lower() && Direction::Exact.is_upper());
        assert!(Direction::LowerBound.is_lower() && !Direction::LowerBound.is_upper());
        assert!(!Direction::Estimate.is_lower() && !Direction::Estimate.is_upper());
    }
}
