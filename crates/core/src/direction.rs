//! What a number promises about the true value it stands for: the one vocabulary shared by
//! estimators (`mi`), bounds (`bounds`), the `bound` stage's parameters, and the `kind`
//! column of `mi_estimates.parquet`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a value promises about the true quantity. Written `lower_bound`, `upper_bound`,
/// `estimate` or `exact` in pipelines and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// At most the true value (a probe, InfoNCE on held-out data), in expectation or with a
    /// stated confidence.
    LowerBound,
    /// At least the true value (a known channel, maximum entropy).
    UpperBound,
    /// A point estimate with no guaranteed direction (KSG, histogram).
    Estimate,
    /// The true value (a known synthetic distribution, or 0 by construction).
    Exact,
}

impl Direction {
    pub const ALL: [Direction; 4] = [
        Direction::LowerBound,
        Direction::UpperBound,
        Direction::Estimate,
        Direction::Exact,
    ];

    /// The name written in pipelines and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::LowerBound => "lower_bound",
            Direction::UpperBound => "upper_bound",
            Direction::Estimate => "estimate",
            Direction::Exact => "exact",
        }
    }

    /// The direction a table recorded; `None` for a name that is none of them.
    pub fn parse(name: &str) -> Option<Direction> {
        Direction::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Whether the value may stand where a lower bound is required.
    pub fn is_lower(self) -> bool {
        matches!(self, Direction::LowerBound | Direction::Exact)
    }

    /// Whether the value may stand where an upper bound is required.
    pub fn is_upper(self) -> bool {
        matches!(self, Direction::UpperBound | Direction::Exact)
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for d in Direction::ALL {
            assert_eq!(Direction::parse(d.as_str()), Some(d));
            assert_eq!(
                serde_json::to_value(d).unwrap(),
                serde_json::Value::String(d.as_str().into())
            );
        }
        assert_eq!(Direction::parse("lower"), None);
    }
}
