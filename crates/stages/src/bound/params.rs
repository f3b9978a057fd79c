//! Parameters of the `bound` stage, and every check on them that needs no data: each term
//! from exactly one source, no direction forced onto a metric, a confidence level in (0, 1).
//! These run when the pipeline is loaded, so `cbound validate` reports them with
//! file:line:column.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use cbound_bounds::terms::{Direction, Quantity};

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Nats,
    Bits,
}

/// Where a quantity comes from: an estimate_mi row, an upstream metric, or a known value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTermSource {
    /// estimate_mi pair name.
    #[serde(default)]
    pub pair: Option<String>,
    /// estimate_mi estimator name (with `pair`).
    #[serde(default)]
    pub estimator: Option<String>,
    /// An upstream metric name (e.g. `true_i_xz` of a synthetic stage).
    #[serde(default)]
    pub metric: Option<String>,
    /// A known value in nats, exact by default (e.g. 0 for I(U;Y|X,Z) when U = f(X)).
    #[serde(default)]
    pub value: Option<f64>,
    /// What the number promises. On an estimate: its recorded kind by default, and only
    /// `estimate` may replace it (a direction cannot be forced onto a point estimator). On a
    /// metric: `exact` or `estimate` (default), since a metric carries no confidence bound.
    /// On a value: `exact` by default; `lower_bound`/`upper_bound` for a value you vouch for.
    #[serde(default)]
    pub kind: Option<Direction>,
    /// Unit of a `metric` or `value`: default nats, bits for metrics named `*_bits`.
    /// estimate_mi rows are read in nats. Terms in different units are refused.
    #[serde(default)]
    pub unit: Option<Unit>,
}

/// Where a quantity comes from, checked: exactly one source.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Estimate { pair: String, estimator: String },
    Metric(String),
    Value(f64),
}

/// A checked [`RawTermSource`].
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawTermSource")]
pub struct TermSource {
    pub source: Source,
    pub kind: Option<Direction>,
    pub unit: Option<Unit>,
}

/// Written as a [`RawTermSource`], so that is its schema.
impl JsonSchema for TermSource {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        RawTermSource::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RawTermSource::json_schema(generator)
    }
}

impl TryFrom<RawTermSource> for TermSource {
    type Error = String;

    fn try_from(r: RawTermSource) -> Result<TermSource, String> {
        let source = match (r.pair, r.estimator, r.metric, r.value) {
            (Some(pair), Some(estimator), None, None) => Source::Estimate { pair, estimator },
            (None, None, Some(m), None) => Source::Metric(m),
            (None, None, None, Some(v)) => Source::Value(v),
            (Some(_), None, None, None) => {
                return Err("`pair` needs `estimator`: which estimate of the pair".into())
            }
            (None, Some(_), None, None) => {
                return Err("`estimator` needs `pair`: which estimate_mi pair".into())
            }
            _ => {
                return Err(
                    "give exactly one source: `value`, `metric`, or `pair` + `estimator`".into(),
                )
            }
        };
        match (&source, r.kind) {
            (Source::Metric(m), Some(k @ (Direction::LowerBound | Direction::UpperBound))) => {
                return Err(format!(
                    "metric `{m}` cannot be a {}: a metric carries no confidence bound, so it \
                     cannot enter a certified bound; take the estimate through `pair` + \
                     `estimator`, or mark a known value `kind: exact`",
                    k.as_str()
                ))
            }
            (Source::Estimate { .. }, Some(Direction::Exact)) => {
                return Err(
                    "an estimate cannot be `exact`; drop `kind` to use its recorded direction"
                        .into(),
                )
            }
            (Source::Estimate { .. }, _) if r.unit == Some(Unit::Bits) => {
                return Err("estimate_mi rows are read in nats; drop `unit: bits`".into())
            }
            (Source::Value(v), _) if !v.is_finite() => {
                return Err(format!("`value` must be finite, got {v}"))
            }
            _ => {}
        }
        Ok(TermSource {
            source,
            kind: r.kind,
            unit: r.unit,
        })
    }
}

impl TermSource {
    pub fn unit(&self) -> Unit {
        match (&self.unit, &self.source) {
            (Some(u), _) => *u,
            (None, Source::Metric(m)) if m.ends_with("_bits") => Unit::Bits,
            _ => Unit::Nats,
        }
    }
}

/// An assumption: asserted in the pipeline, or read from an upstream metric (1 = holds), so a
/// sweep over synthetic tasks can carry each task's own facts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Assume {
    Given(bool),
    FromMetric {
        /// Upstream metric that is 1 when the assumption holds, 0 when not.
        metric: String,
    },
}

impl Default for Assume {
    fn default() -> Self {
        Assume::Given(false)
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssumptionSpec {
    /// U = f(X) is a deterministic encoder (true for every trained encoder).
    #[serde(default)]
    pub u_is_function_of_x: Assume,
    /// X and Y are independent given Z (true for the conditionally independent mixture).
    #[serde(default)]
    pub x_indep_y_given_z: Assume,
}

fn default_tolerance() -> f64 {
    1e-3
}

pub fn default_confidence() -> f64 {
    0.95
}

fn confidence_level<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let c = f64::deserialize(d)?;
    if c > 0.0 && c < 1.0 {
        Ok(c)
    } else {
        Err(serde::de::Error::custom(format!(
            "`confidence` must lie strictly between 0 and 1 (e.g. 0.95), got {c}"
        )))
    }
}

/// A map keyed by quantity, read with its keys as strings first so that an error in a value
/// is located at that key (`terms.i_uz`): serde keeps no path through enum-typed keys.
fn by_quantity<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<Quantity, TermSource>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = BTreeMap<Quantity, TermSource>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping from quantity names to sources")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let quantity = Quantity::deserialize(
                    serde::de::value::StrDeserializer::<A::Error>::new(&key),
                )?;
                out.insert(quantity, map.next_value::<TermSource>()?);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Entries)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BoundParams {
    /// Quantity (`i_uz`, `i_uy`, `i_xy`, `i_xz`, `i_yz`, `i_xy_given_z`, `i_uy_given_xz`, `h_z`, `h_z_given_xy`) -> source.
    #[serde(deserialize_with = "by_quantity")]
    pub terms: BTreeMap<Quantity, TermSource>,
    /// Exact values of left-hand sides (synthetic data) to check every bound against.
    #[serde(default, deserialize_with = "by_quantity")]
    pub truth: BTreeMap<Quantity, TermSource>,
    /// The exact Bayes accuracy of predicting Z from U (synthetic data), to check the accuracy
    /// bounds against.
    #[serde(default)]
    pub truth_accuracy: Option<TermSource>,
    #[serde(default)]
    pub assumptions: AssumptionSpec,
    /// alpha, beta, gamma of the study's multi-view form.
    #[serde(default)]
    pub weights: Option<[f64; 3]>,
    /// Number of classes of Z, for the accuracy bounds; must equal the classes the probe saw.
    #[serde(default)]
    pub classes: Option<usize>,
    /// Probability that every certified value of the instance holds at once (each term and
    /// snapshot gets an equal share of 1 - confidence: a union bound).
    #[serde(default = "default_confidence", deserialize_with = "confidence_level")]
    pub confidence: f64,
    /// Slack in nats before a bound beyond the truth counts as a violation (Monte Carlo truth
    /// has error), and before two certified values count as contradicting.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<TermSource, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn one_source_per_term() {
        assert_eq!(
            parse(serde_json::json!({"pair": "uz", "estimator": "probe"}))
                .unwrap()
                .source,
            Source::Estimate {
                pair: "uz".into(),
                estimator: "probe".into()
            }
        );
        for bad in [
            serde_json::json!({"pair": "uz"}),
            serde_json::json!({"estimator": "probe"}),
            serde_json::json!({"value": 0.0, "metric": "m"}),
            serde_json::json!({"pair": "uz", "estimator": "probe", "value": 1.0}),
            serde_json::json!({}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_direction_forced_onto_a_metric_or_exactness_onto_an_estimate() {
        let e = parse(serde_json::json!({"metric": "uy.ksg", "kind": "lower_bound"})).unwrap_err();
        assert!(e.contains("no confidence bound"), "{e}");
        assert!(parse(serde_json::json!({"metric": "true_i_xz", "kind": "exact"})).is_ok());
        let e = parse(serde_json::json!({"pair": "uy", "estimator": "ksg", "kind": "exact"}))
            .unwrap_err();
        assert!(e.contains("cannot be `exact`"), "{e}");
        let e = parse(serde_json::json!({"pair": "uy", "estimator": "ksg", "unit": "bits"}))
            .unwrap_err();
        assert!(e.contains("nats"), "{e}");
    }

    #[test]
    fn confidence_must_be_a_probability() {
        let p = |c: f64| {
            serde_json::from_value::<BoundParams>(serde_json::json!({"terms": {}, "confidence": c}))
        };
        assert_eq!(p(0.9).unwrap().confidence, 0.9);
        for c in [0.0, 1.0, 1.5, -0.1] {
            let e = p(c).unwrap_err().to_string();
            assert!(e.contains("strictly between 0 and 1"), "{e}");
        }
        let d: BoundParams = serde_json::from_value(serde_json::json!({"terms": {}})).unwrap();
        assert_eq!(d.confidence, 0.95);
    }
}
