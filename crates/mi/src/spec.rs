//! Estimators as configured in a pipeline or on the command line, and one function that runs
//! any of them on a pair (with preprocessing and an interval) into a uniform result row.
//! Shared by the `estimate_mi` stage and `cbound mi`, so both behave identically.
//!
//! What differs between estimators lives with each kind in [`super::estimators`]; nothing
//! here names one. An [`EstimatorSpec`] is a registered kind with its settings, read from
//! `{name: ksg, k: 3}` by looking `name` up in the registry.

use std::fmt;
use std::time::Instant;

use schemars::JsonSchema;
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::bootstrap::{subsample_interval, SubsampleConfig};
use super::critic::CriticTrainer;
use super::estimators::{
    self, Configured, DynEstimator, EstimatorKind, Input, Inputs, Resampling, Sample, VisitKind,
};
use super::heldout::HeldOut;
use super::preprocess::{asinh, jitter, subsample_indices, DEFAULT_JITTER};
use super::{Direction, Matrix, MiError};
use cbound_core::params::ParamError;
use cbound_core::params::PathSeg;

/// `a=1,b=[2,3],c=4` split at the commas outside brackets: `a=1`, `b=[2,3]`, `c=4`.
fn split_top_level(text: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0i32;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth <= 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter()
}

/// One estimator with its settings, written `{name: ksg, k: 3}`.
pub struct EstimatorSpec(Box<dyn DynEstimator>);

impl EstimatorSpec {
    /// A kind with these settings.
    pub fn of<K: EstimatorKind>(params: K::Params) -> EstimatorSpec {
        EstimatorSpec(Box::new(Configured::<K> { params }))
    }

    /// Parses the command line's short form: `ksg`, `ksg:k=5`, `infonce:temperature=0.1,batch=128`,
    /// `infonce_critic:hidden=[64,64],steps=500` (lists in brackets).
    /// Settings are read as they are in a pipeline, and their rules checked, so a value
    /// `validate` would refuse is refused here too.
    pub fn parse_cli(text: &str) -> Result<EstimatorSpec, String> {
        let (name, rest) = text.split_once(':').unwrap_or((text, ""));
        let mut map = serde_json::Map::new();
        map.insert(
            "name".into(),
            serde_json::Value::String(name.trim().to_string()),
        );
        for kv in split_top_level(rest).filter(|s| !s.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("`{kv}` in `{text}` is not key=value"))?;
            let value = serde_json::from_str(v.trim())
                .unwrap_or_else(|_| serde_json::Value::String(v.trim().into()));
            map.insert(k.trim().to_string(), value);
        }
        let spec: EstimatorSpec = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| format!("estimator `{text}`: {e}"))?;
        match spec.check().first() {
            Some(problem) => Err(format!("estimator `{text}`: {problem}")),
            None => Ok(spec),
        }
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// What it reads from a pair, and so how each side is preprocessed.
    pub fn inputs(&self) -> Inputs {
        self.0.inputs()
    }

    /// What its value promises.
    pub fn direction(&self) -> Direction {
        self.0.direction()
    }

    /// Every rule of its kind the settings break, at paths relative to its mapping.
    pub fn check(&self) -> Vec<ParamError> {
        self.0.check()
    }

    /// The settings as JSON text, `{"name":"ksg","k":3,"algorithm":2}`: the `params` column.
    pub fn params_json(&self) -> String {
        self.0.params_json()
    }
}

impl Clone for EstimatorSpec {
    fn clone(&self) -> EstimatorSpec {
        EstimatorSpec(self.0.clone_box())
    }
}

/// Two specs are equal when they name the same kind with the same settings.
impl PartialEq for EstimatorSpec {
    fn eq(&self, other: &EstimatorSpec) -> bool {
        self.params_json() == other.params_json()
    }
}

impl fmt::Debug for EstimatorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EstimatorSpec({})", self.params_json())
    }
}

impl Serialize for EstimatorSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0
            .to_value()
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for EstimatorSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EstimatorSpec, D::Error> {
        d.deserialize_map(SpecVisitor)
    }
}

/// Reads `name`, then hands the rest of the same map to that kind's settings struct. The
/// map is not buffered (unlike an internally tagged enum), so an error in a setting keeps
/// its path (`estimators[0].algorithm`) for `validate`'s file:line:column.
struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = EstimatorSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an estimator mapping such as `{name: ksg, k: 3}`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EstimatorSpec, A::Error> {
        // Keys before `name` (rare: `{k: 3, name: ksg}`) are kept to be replayed.
        let mut before = Vec::new();
        let name = loop {
            match map.next_key::<String>()? {
                None => return Err(serde::de::Error::missing_field("name")),
                Some(key) if key == "name" => break map.next_value_seed(KindName)?,
                Some(key) => before.push((key, map.next_value::<serde_json::Value>()?)),
            }
        };
        let mut parse = ParseKind {
            name,
            rest: Some(Rest {
                before: before.into_iter(),
                pending: None,
                map,
                _de: std::marker::PhantomData,
            }),
            out: None,
        };
        estimators::each_kind(&mut parse);
        // KindName accepted only registered names, so some kind took the map.
        parse.out.unwrap_or_else(|| {
            Err(serde::de::Error::unknown_variant(
                parse.name,
                estimators::names(),
            ))
        })
    }
}

/// The value of `name`: one of the registered kinds (refused inside the value, so the
/// error points at it).
struct KindName;

impl<'de> DeserializeSeed<'de> for KindName {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        let name = String::deserialize(d)?;
        estimators::names()
            .iter()
            .find(|n| **n == name)
            .copied()
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, estimators::names()))
    }
}

/// Deserialises the settings of the kind called `name` from the rest of the map.
struct ParseKind<'de, A: MapAccess<'de>> {
    name: &'static str,
    rest: Option<Rest<'de, A>>,
    out: Option<Result<EstimatorSpec, A::Error>>,
}

impl<'de, A: MapAccess<'de>> VisitKind for ParseKind<'de, A> {
    fn visit<K: EstimatorKind>(&mut self) {
        if K::NAME != self.name {
            return;
        }
        if let Some(rest) = self.rest.take() {
            let de = serde::de::value::MapAccessDeserializer::new(rest);
            self.out = Some(K::Params::deserialize(de).map(EstimatorSpec::of::<K>));
        }
    }
}

/// The map after `name`: first the entries read before it, then the rest, unread.
struct Rest<'de, A: MapAccess<'de>> {
    before: std::vec::IntoIter<(String, serde_json::Value)>,
    pending: Option<serde_json::Value>,
    map: A,
    /// `'de` is only the map's.
    _de: std::marker::PhantomData<&'de ()>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Rest<'de, A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        match self.before.next() {
            Some((key, value)) => {
                self.pending = Some(value);
                seed.deserialize(serde::de::value::StringDeserializer::<A::Error>::new(key))
                    .map(Some)
            }
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        match self.pending.take() {
            Some(value) => seed.deserialize(value).map_err(serde::de::Error::custom),
            None => self.map.next_value_seed(seed),
        }
    }
}

/// A `oneOf` with one branch per registered kind: `name` (its constant) and its settings.
impl JsonSchema for EstimatorSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EstimatorSpec".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        struct Branches<'g> {
            generator: &'g mut schemars::SchemaGenerator,
            out: Vec<serde_json::Value>,
        }
        impl VisitKind for Branches<'_> {
            fn visit<K: EstimatorKind>(&mut self) {
                let settings = K::Params::json_schema(self.generator).to_value();
                let mut properties = serde_json::Map::new();
                properties.insert(
                    "name".into(),
                    serde_json::json!({"type": "string", "const": K::NAME}),
                );
                if let Some(p) = settings.get("properties").and_then(|p| p.as_object()) {
                    properties.extend(p.clone());
                }
                let mut required = vec![serde_json::Value::from("name")];
                if let Some(r) = settings.get("required").and_then(|r| r.as_array()) {
                    required.extend(r.iter().cloned());
                }
                self.out.push(serde_json::json!({
                    "description": K::SUMMARY,
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": false,
                }));
            }
        }
        let mut branches = Branches {
            generator,
            out: Vec::new(),
        };
        estimators::each_kind(&mut branches);
        schemars::json_schema!({
            "description": "One estimator with its settings, written `{name: ksg, k: 3}`.",
            "oneOf": branches.out,
        })
    }
}

/// Preprocessing applied to continuous inputs before estimating (to the sides whose
/// [`Input`] is preprocessed; labels, projections and channel values are left alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocess {
    /// Shift and scale every continuous column to mean 0, sd 1 (constant columns are only centred).
    pub standardise: bool,
    /// Add a tiny seeded jitter (1e-10 sd) before k-NN estimators, so ties break deterministically.
    pub jitter: bool,
    /// Apply asinh to continuous columns first (tames heavy tails).
    pub asinh: bool,
    /// Estimate on a seeded subsample of at most this many rows (at least 1).
    pub max_rows: Option<usize>,
}

impl Preprocess {
    /// Its rules, at paths relative to the `preprocess` mapping.
    pub fn check(&self) -> Vec<ParamError> {
        match self.max_rows {
            Some(0) => vec![ParamError::at(
                &["max_rows"],
                "max_rows must be at least 1 (leave it out to use every row)",
            )],
            _ => Vec::new(),
        }
    }
}

impl Default for Preprocess {
    fn default() -> Preprocess {
        Preprocess {
            standardise: true,
            jitter: true,
            asinh: false,
            max_rows: None,
        }
    }
}

/// A resampling interval: half-sampling (delete-d jackknife) spread of the estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntervalSpec {
    /// Number of subsamples.
    #[serde(default = "default_reps")]
    pub reps: usize,
    /// Central coverage.
    #[serde(default = "default_level")]
    pub level: f64,
}

impl IntervalSpec {
    /// Its rules, at paths relative to the `interval` mapping.
    pub fn check(&self) -> Vec<ParamError> {
        let mut out = Vec::new();
        if self.reps < 2 {
            out.push(ParamError::at(
                &["reps"],
                format!("reps must be at least 2 subsamples, got {}", self.reps),
            ));
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            out.push(ParamError::at(
                &["level"],
                format!(
                    "level (the central coverage) must lie strictly between 0 and 1, got {}",
                    self.level
                ),
            ));
        }
        out
    }
}

fn default_reps() -> usize {
    50
}
fn default_level() -> f64 {
    0.95
}

/// One estimate, as a row of `mi_estimates.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimateRow {
    pub estimator: String,
    /// The estimator's settings, as JSON.
    pub params: String,
    pub n: usize,
    pub dim_x: usize,
    pub dim_y: usize,
    pub nats: f64,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub ci_level: Option<f64>,
    /// What the point value promises (never `exact`).
    pub kind: Direction,
    /// Held-out accuracy (probe, knn).
    pub accuracy: Option<f64>,
    /// The largest value the estimator can report (log N for InfoNCE).
    pub cap_nats: Option<f64>,
    pub seconds: f64,
    pub note: Option<String>,
    /// What a confidence bound on the quantity needs (probe, knn, infonce, gaussian_channel).
    pub certificate: Option<super::certificate::Certificate>,
    /// Which of the given rows fitted the classifier and which scored it (probe, knn):
    /// indices into the `x` passed to [`estimate_with`], through any `max_rows` subsample.
    /// Serialised as its sizes and seed (`cbound mi --json`); the rows go to a table.
    #[serde(serialize_with = "held_out_summary")]
    pub held_out: Option<super::heldout::HeldOut>,
}

fn held_out_summary<S: Serializer>(
    h: &Option<super::heldout::HeldOut>,
    s: S,
) -> Result<S::Ok, S::Error> {
    h.as_ref()
        .map(|h| {
            serde_json::json!({
                "seed": h.seed,
                "train_fraction": h.train_fraction,
                "n_train": h.train.len(),
                "n_test": h.test.len(),
            })
        })
        .serialize(s)
}

/// One side as its kind reads it (see [`Input`]).
/// The first column of `m` with heavy tails, described, if any: more than 0.1% of its
/// values (and at least 3) lie beyond 6 robust standard deviations (1.4826 MAD) of its
/// median. A Gaussian column has about 2e-9 of its mass there; a Student-t with 3 degrees of
/// freedom about 0.7%. Robust statistics, because the moments of such data are what is in
/// question.
fn heavy_tail(m: &Matrix) -> Option<String> {
    let n = m.rows();
    for j in 0..m.cols() {
        let mut v = m.column(j)?;
        v.sort_by(f64::total_cmp);
        let median = v[n / 2];
        let mut dev: Vec<f64> = v.iter().map(|a| (a - median).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let sd = 1.4826 * dev[n / 2];
        if sd == 0.0 {
            continue;
        }
        let far = dev.iter().filter(|&&d| d > 6.0 * sd).count();
        if far >= 3 && far as f64 > 0.001 * n as f64 {
            return Some(format!(
                "column {j}: {far} of {n} values beyond 6 robust sd of the median"
            ));
        }
    }
    None
}

/// The jitter seed of the y side, apart from the x side's.
const Y_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// An estimator that preprocesses what it is given first, as [`estimate`] preprocesses the
/// full sample: the interval's replicates then see their own standardisation.
struct PreparedEstimator<'a> {
    inner: &'a dyn crate::Estimator,
    inputs: Inputs,
    pre: &'a Preprocess,
    seed: u64,
}

impl crate::Estimator for PreparedEstimator<'_> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn direction(&self) -> Direction {
        self.inner.direction()
    }
    fn estimate(&self, x: &Matrix, y: &Matrix) -> Result<crate::MiEstimate, MiError> {
        let x = prepare(x.clone(), self.inputs.x, self.pre, self.seed)?;
        let y = prepare(y.clone(), self.inputs.y, self.pre, self.seed ^ Y_SEED)?;
        self.inner.estimate(&x, &y)
    }
}

fn prepare(m: Matrix, input: Input, pre: &Preprocess, seed: u64) -> Result<Matrix, MiError> {
    if !input.preprocessed() {
        return Ok(m);
    }
    let mut m = if pre.asinh { asinh(&m) } else { m };
    if pre.standardise {
        let means = m.column_means();
        let sds = m.column_stds();
        let cols = m.cols();
        for r in 0..m.rows() {
            for (j, v) in m.row_mut(r).iter_mut().enumerate().take(cols) {
                *v -= means[j];
                if sds[j] > 0.0 {
                    *v /= sds[j];
                }
            }
        }
    }
    if input.jittered() && pre.jitter {
        m = jitter(&m, DEFAULT_JITTER, seed)?;
    }
    Ok(m)
}

/// The first broken rule of the estimator, preprocessing or interval, as an error: callers
/// outside a pipeline (`cbound mi`, library users) get the checks `validate` makes.
fn check_settings(
    spec: &EstimatorSpec,
    pre: &Preprocess,
    interval: Option<&IntervalSpec>,
) -> Result<(), MiError> {
    let estimator = spec.check().into_iter();
    let pre = pre
        .check()
        .into_iter()
        .map(|e| e.under(PathSeg::Key("preprocess".into())));
    let interval = interval
        .map(IntervalSpec::check)
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.under(PathSeg::Key("interval".into())));
    match estimator.chain(pre).chain(interval).next() {
        Some(problem) => Err(MiError::Settings {
            estimator: spec.name(),
            problem: problem.to_string(),
        }),
        None => Ok(()),
    }
}

/// What an estimate may use beyond the two samples: the machinery of layers above this
/// crate, passed down explicitly (the trained-critic kinds need a [`CriticTrainer`]), and a
/// held-out split the data gives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tools<'a> {
    pub critic: Option<&'a dyn CriticTrainer>,
    /// Which of the given rows fit and which score, for the kinds that hold rows out (probe,
    /// knn, the trained critics) in place of their seeded `train_fraction` split; the other
    /// kinds use every row. Indices into the `x` given to [`estimate_with`]; a `max_rows`
    /// subsample keeps each kept row's side. Incompatible with an interval (its replicates
    /// resample rows, and a given split cannot follow them).
    pub split: Option<&'a HeldOut>,
}

/// Runs one estimator on (x, y[, z]) with no [`Tools`]: a trained-critic kind fails with an
/// error saying so (see [`estimate_with`]).
pub fn estimate(
    spec: &EstimatorSpec,
    x: &Matrix,
    y: &Matrix,
    z: Option<&Matrix>,
    pre: &Preprocess,
    interval: Option<&IntervalSpec>,
    seed: u64,
) -> Result<EstimateRow, MiError> {
    estimate_with(spec, x, y, z, pre, interval, seed, Tools::default())
}

/// Runs one estimator on (x, y[, z]), with the tools the caller provides.
#[allow(clippy::too_many_arguments)] // `estimate`'s arguments and the tools
pub fn estimate_with(
    spec: &EstimatorSpec,
    x: &Matrix,
    y: &Matrix,
    z: Option<&Matrix>,
    pre: &Preprocess,
    interval: Option<&IntervalSpec>,
    seed: u64,
    tools: Tools<'_>,
) -> Result<EstimateRow, MiError> {
    let start = Instant::now();
    check_settings(spec, pre, interval)?;
    for m in [Some(x), Some(y), z].into_iter().flatten() {
        m.check_finite(if std::ptr::eq(m, x) {
            "x"
        } else if std::ptr::eq(m, y) {
            "y"
        } else {
            "z"
        })?;
    }
    let rows = x.rows();
    if let Some(h) = tools.split {
        h.check(rows)?;
        if interval.is_some() {
            return Err(MiError::Settings {
                estimator: spec.name(),
                problem: "an interval cannot be combined with a split given by the data: its replicates resample rows, which the given split cannot follow (drop `interval`, or the split)".into(),
            });
        }
    }
    let (mut x, mut y, mut z) = (x.clone(), y.clone(), z.cloned());
    // The rows of the subsample, to say which of the given rows a held-out split used.
    let mut subsample = None;
    if let Some(limit) = pre.max_rows.filter(|&m| m < rows) {
        let idx = subsample_indices(rows, limit, seed)?;
        x = x.select_rows(&idx)?;
        y = y.select_rows(&idx)?;
        z = z.map(|m| m.select_rows(&idx)).transpose()?;
        subsample = Some(idx);
    }
    let inputs = spec.inputs();
    let tails: Vec<String> = [("x", &x, inputs.x), ("y", &y, inputs.y)]
        .into_iter()
        .filter(|(_, _, input)| input.preprocessed() && !pre.asinh)
        .filter_map(|(side, m, _)| heavy_tail(m).map(|t| format!("{side} {t}")))
        .collect();
    // Kept as read: each interval replicate is preprocessed on its own (below).
    let (x_raw, y_raw) = (x.clone(), y.clone());
    let x = prepare(x, inputs.x, pre, seed)?;
    let y = prepare(y, inputs.y, pre, seed ^ Y_SEED)?;
    let z = match (inputs.z, z) {
        (estimators::Conditioning::Required(_), None) => {
            return Err(MiError::InvalidParameter {
                name: "z",
                reason: format!("{} estimates I(X;Y|Z): give a `z`", spec.name()),
            })
        }
        (c, Some(z)) => match c.input() {
            Some(input) => Some(prepare(z, input, pre, seed ^ 0x51)?),
            None => None,
        },
        (_, None) => None,
    };
    // The given split over the rows actually estimated on.
    let split = match (tools.split, &subsample) {
        (Some(h), Some(idx)) => Some(h.restrict(idx)?),
        (h, _) => h.cloned(),
    };
    let outcome = spec.0.run(&Sample {
        x: &x,
        y: &y,
        z: z.as_ref(),
        seed,
        critic: tools.critic,
        split: split.as_ref(),
    })?;
    let mut row = EstimateRow {
        estimator: spec.name().to_string(),
        params: spec.params_json(),
        n: x.rows(),
        dim_x: x.cols(),
        dim_y: y.cols(),
        nats: outcome.nats,
        ci_low: None,
        ci_high: None,
        ci_level: None,
        kind: outcome.direction,
        accuracy: outcome.accuracy,
        cap_nats: outcome.cap_nats,
        seconds: 0.0,
        note: outcome.note,
        certificate: outcome.certificate,
        held_out: match (outcome.held_out, &subsample) {
            (Some(h), Some(idx)) => Some(h.remap(idx)?),
            (h, _) => h,
        },
    };
    if !tails.is_empty() {
        let advice = format!(
            "heavy tails ({}): asinh (preprocess: {{asinh: true}}, cbound mi --asinh) usually brings the estimate closer",
            tails.join("; ")
        );
        row.note = Some(match row.note.take() {
            Some(n) if !n.is_empty() => format!("{n}; {advice}"),
            _ => advice,
        });
    }
    if let Some(iv) = interval {
        match spec.0.resampling(seed)? {
            Resampling::Subsample(est) => {
                let cfg = SubsampleConfig {
                    reps: iv.reps,
                    level: iv.level,
                    seed,
                    ..SubsampleConfig::default()
                };
                // Each replicate is standardised (and asinh'd, and jittered) on its own
                // rows, as the full sample was: with the full sample's scaling reused, the
                // replicates vary less than independent samples would, and the interval is
                // too narrow (most on heavy tails).
                let per_replicate = PreparedEstimator {
                    inner: est.as_ref(),
                    inputs,
                    pre,
                    seed,
                };
                let i = subsample_interval(&per_replicate, &x_raw, &y_raw, &cfg)?;
                row.ci_low = Some(i.lo);
                row.ci_high = Some(i.hi);
                row.ci_level = Some(iv.level);
                let meaning = format!(
                    "{}% interval by subsampling: covers this estimator's expected value at this n, not the true MI",
                    iv.level * 100.0
                );
                row.note = Some(match row.note.take() {
                    Some(n) if !n.is_empty() => format!("{n}; {meaning}"),
                    _ => meaning,
                });
            }
            Resampling::Unsupported(why) => {
                row.note = Some(format!(
                    "{} (no interval: {why})",
                    row.note.unwrap_or_default()
                ));
            }
            Resampling::Silent => {}
        }
    }
    row.seconds = start.elapsed().as_secs_f64();
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimators::infonce::{InfoNceKind, InfoNceParams};
    use crate::estimators::ksg::{KsgKind, KsgParams};
    use crate::KsgAlgorithm;

    fn ksg(k: usize, algorithm: KsgAlgorithm) -> EstimatorSpec {
        EstimatorSpec::of::<KsgKind>(KsgParams {
            k,
            algorithm,
            ..KsgParams::default()
        })
    }

    #[test]
    fn cli_short_forms_parse() {
        assert_eq!(
            EstimatorSpec::parse_cli("ksg").unwrap(),
            ksg(3, KsgAlgorithm::Two)
        );
        assert_eq!(
            EstimatorSpec::parse_cli("ksg:k=5,algorithm=2").unwrap(),
            ksg(5, KsgAlgorithm::Two)
        );
        assert_eq!(
            EstimatorSpec::parse_cli("infonce:temperature=0.1").unwrap(),
            EstimatorSpec::of::<InfoNceKind>(InfoNceParams {
                temperature: 0.1,
                batch: 256
            })
        );
        let err = EstimatorSpec::parse_cli("ksg:kk=5").unwrap_err();
        assert!(err.contains("unknown field `kk`"), "{err}");
        let err = EstimatorSpec::parse_cli("nope").unwrap_err();
        assert!(err.contains("unknown variant `nope`"), "{err}");
        assert!(err.contains("`ksg`"), "{err}");
    }

    #[test]
    fn cli_short_forms_refuse_what_validate_refuses() {
        for (text, says) in [
            ("ksg:k=0", "`k`: k must be at least 1, got 0"),
            (
                "ksg:algorithm=3",
                "invalid value: integer `3`, expected 1 or 2",
            ),
            ("histogram:bins=0", "`bins`: bins must be at least 2"),
            (
                "infonce:temperature=-1",
                "`temperature`: temperature must be positive and finite, got -1",
            ),
            ("probe:train_fraction=1", "`train_fraction`"),
            ("gaussian_channel:noise_std=0", "`noise_std`"),
        ] {
            let err = EstimatorSpec::parse_cli(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.starts_with(&format!("estimator `{text}`")), "{err}");
        }
    }

    /// The `params` column is the JSON text the old tagged enum wrote: outputs and every
    /// row's `params` carry over unchanged.
    #[test]
    fn params_text_is_unchanged() {
        for (cli, json) in [
            // Algorithm 2 by default since the Beyond-Normal benchmark (estimate_mi v5).
            ("ksg", r#"{"name":"ksg","k":3,"algorithm":2}"#),
            (
                "ksg:k=5,algorithm=2",
                r#"{"name":"ksg","k":5,"algorithm":2}"#,
            ),
            ("ksg_cmi", r#"{"name":"ksg_cmi","k":3,"discrete_z":false}"#),
            (
                "histogram",
                r#"{"name":"histogram","bins":16,"miller_madow":true}"#,
            ),
            (
                "histogram:bins=8,miller_madow=false",
                r#"{"name":"histogram","bins":8,"miller_madow":false}"#,
            ),
            ("gaussian", r#"{"name":"gaussian"}"#),
            ("discrete", r#"{"name":"discrete","miller_madow":true}"#),
            (
                "infonce:temperature=0.5,batch=64",
                r#"{"name":"infonce","temperature":0.5,"batch":64}"#,
            ),
            (
                "gaussian_channel:noise_std=0.3",
                r#"{"name":"gaussian_channel","noise_std":0.3,"feature_range":null}"#,
            ),
            (
                "probe",
                r#"{"name":"probe","train_fraction":0.8,"steps":300,"l2":0.0001,"floor":0.01,"classes":null}"#,
            ),
            (
                "probe:classes=10,floor=0.05,l2=0,steps=10,train_fraction=0.5",
                r#"{"name":"probe","train_fraction":0.5,"steps":10,"l2":0.0,"floor":0.05,"classes":10}"#,
            ),
        ] {
            let spec = EstimatorSpec::parse_cli(cli).unwrap();
            assert_eq!(spec.params_json(), json, "{cli}");
            assert_eq!(serde_json::to_string(&spec).unwrap(), json, "{cli}");
            // And it reads back as the same spec.
            let back: EstimatorSpec = serde_json::from_str(json).unwrap();
            assert_eq!(back, spec, "{cli}");
        }
        let ranged: EstimatorSpec = serde_json::from_value(serde_json::json!(
            {"name": "gaussian_channel", "noise_std": 1.0, "feature_range": [-3.1, 2.6]}
        ))
        .unwrap();
        assert_eq!(
            ranged.params_json(),
            r#"{"name":"gaussian_channel","noise_std":1.0,"feature_range":[-3.1,2.6]}"#
        );
    }

    fn path_of(json: serde_json::Value) -> (String, String) {
        let err = serde_path_to_error::deserialize::<_, Vec<EstimatorSpec>>(&json).unwrap_err();
        (err.path().to_string(), err.into_inner().to_string())
    }

    #[test]
    fn errors_in_settings_keep_their_path() {
        let (path, msg) =
            path_of(serde_json::json!([{"name": "ksg"}, {"name": "ksg", "algorithm": 3}]));
        assert_eq!(path, "[1].algorithm");
        assert_eq!(msg, "invalid value: integer `3`, expected 1 or 2");
        let (path, msg) = path_of(serde_json::json!([{"name": "ksgg"}]));
        assert_eq!(path, "[0].name");
        assert!(
            msg.starts_with("unknown variant `ksgg`, expected one of `ksg`"),
            "{msg}"
        );
        let (_, msg) = path_of(serde_json::json!([{"k": 3}]));
        assert_eq!(msg, "missing field `name`");
        let (_, msg) = path_of(serde_json::json!([{"name": "infonce"}]));
        assert_eq!(msg, "missing field `temperature`");
        let (_, msg) = path_of(serde_json::json!(["ksg"]));
        assert!(msg.contains("an estimator mapping such as"), "{msg}");
        // `name` need not come first.
        let late: Vec<EstimatorSpec> =
            serde_json::from_value(serde_json::json!([{"k": 5, "name": "ksg"}])).unwrap();
        assert_eq!(late[0], ksg(5, KsgAlgorithm::Two));
        let (_, msg) = path_of(serde_json::json!([{"k": 5, "kk": 1, "name": "ksg"}]));
        assert!(msg.starts_with("unknown field `kk`"), "{msg}");
    }

    #[test]
    fn settings_rules_are_checked_before_running() {
        let x = Matrix::from_rows(&[[1.0], [2.0], [3.0], [4.0], [5.0]]).unwrap();
        let spec = ksg(0, KsgAlgorithm::One);
        let err = estimate(&spec, &x, &x, None, &Preprocess::default(), None, 0).unwrap_err();
        assert!(
            matches!(
                err,
                MiError::Settings {
                    estimator: "ksg",
                    ..
                }
            ),
            "{err}"
        );
        let bad_interval = IntervalSpec {
            reps: 1,
            level: 0.9,
        };
        let err = estimate(
            &ksg(1, KsgAlgorithm::One),
            &x,
            &x,
            None,
            &Preprocess::default(),
            Some(&bad_interval),
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`interval.reps`"), "{err}");
    }

    #[test]
    fn gaussian_pair_through_every_continuous_estimator() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        // A bivariate normal with correlation rho: I(X;Y) = -log(1 - rho^2) / 2.
        let rho: f64 = 0.75;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..2000 {
            let (a, b): (f64, f64) = (
                StandardNormal.sample(&mut rng),
                StandardNormal.sample(&mut rng),
            );
            xs.push(a);
            ys.push(rho * a + (1.0 - rho * rho).sqrt() * b);
        }
        let x = Matrix::new(xs.len(), 1, xs).unwrap();
        let y = Matrix::new(ys.len(), 1, ys).unwrap();
        let true_mi = -0.5 * (1.0 - rho * rho).ln();
        for spec in ["ksg", "ksg:algorithm=2", "gaussian", "histogram:bins=16"] {
            let spec = EstimatorSpec::parse_cli(spec).unwrap();
            let row = estimate(
                &spec,
                &x,
                &y,
                None,
                &Preprocess::default(),
                Some(&IntervalSpec {
                    reps: 10,
                    level: 0.9,
                }),
                1,
            )
            .unwrap();
            assert!((row.nats - true_mi).abs() < 0.08, "{row:?}");
            let (lo, hi) = (row.ci_low.unwrap(), row.ci_high.unwrap());
            assert!(lo <= row.nats && row.nats <= hi, "{row:?}");
            assert_eq!(row.kind, Direction::Estimate);
        }
    }

    #[test]
    fn nan_input_is_an_error_naming_the_side() {
        let x = Matrix::from_rows(&[[1.0], [f64::NAN], [3.0], [4.0], [5.0]]).unwrap();
        let y = Matrix::from_rows(&[[1.0], [2.0], [3.0], [4.0], [5.0]]).unwrap();
        let err = estimate(
            &EstimatorSpec::parse_cli("gaussian").unwrap(),
            &x,
            &y,
            None,
            &Preprocess::default(),
            None,
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains('x'), "{err}");
    }

    /// n rows of two pairs (x_i, y_i) at correlation 0.6, normal, or multivariate Student-t
    /// with `dof` degrees of freedom (one chi-square scale per row, shared by all four columns).
    fn two_pairs(n: usize, dof: Option<f64>, seed: u64) -> (Matrix, Matrix) {
        use rand::SeedableRng;
        use rand_distr::{ChiSquared, Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let chi = dof.map(|d| (d, ChiSquared::new(d).unwrap()));
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let scale = chi
                .as_ref()
                .map_or(1.0, |(d, c)| (c.sample(&mut rng) / d).sqrt());
            for _ in 0..2 {
                let (a, b): (f64, f64) = (
                    StandardNormal.sample(&mut rng),
                    StandardNormal.sample(&mut rng),
                );
                xs.push(a / scale);
                ys.push((0.6 * a + 0.8 * b) / scale);
            }
        }
        (
            Matrix::new(n, 2, xs).unwrap(),
            Matrix::new(n, 2, ys).unwrap(),
        )
    }

    /// P(X <= k) for X ~ Binomial(trials, p).
    fn binomial_cdf(k: usize, trials: usize, p: f64) -> f64 {
        if k >= trials {
            return 1.0;
        }
        crate::confidence::regularized_beta(1.0 - p, (trials - k) as f64, k as f64 + 1.0)
    }

    /// Coverage of the interval of what it claims to cover: the estimator's expected value
    /// at this n, taken as the mean of `draws` independent estimates on fresh samples (seeds
    /// apart from the interval's). Returns (covered, target).
    fn coverage(
        spec: &str,
        dof: Option<f64>,
        n: usize,
        iv: &IntervalSpec,
        seeds: u64,
        draws: u64,
    ) -> (usize, f64) {
        let spec = EstimatorSpec::parse_cli(spec).unwrap();
        let pre = Preprocess::default();
        let target = (0..draws)
            .map(|s| {
                let (x, y) = two_pairs(n, dof, 1_000_000 + s);
                estimate(&spec, &x, &y, None, &pre, None, s).unwrap().nats
            })
            .sum::<f64>()
            / draws as f64;
        let covered = (0..seeds)
            .filter(|&s| {
                let (x, y) = two_pairs(n, dof, s);
                let row = estimate(&spec, &x, &y, None, &pre, Some(iv), s).unwrap();
                row.ci_low.unwrap() <= target && target <= row.ci_high.unwrap()
            })
            .count();
        (covered, target)
    }

    /// Coverage of the subsampling interval over many seeds, of what it claims to cover (the
    /// estimator's expected value at this n), at 95%, on a Gaussian and a heavy-tailed 2x2 task
    /// (two pairs at correlation 0.6; multivariate Student-t with 3 degrees of freedom), with
    /// KSG and the Gaussian estimator. CI size: 30 seeds, n = 200, 20 replicates, the target
    /// from 120 estimates; each cell must cover in at least 26 of 30 (P(X <= 25) = 1.6% for
    /// Binomial(30, 0.95)). `CBOUND_COVERAGE=full` (the README's numbers): 200 seeds, n = 400,
    /// the default 50 replicates, the target from 1,000 estimates, and each cell inside the
    /// central 98% of Binomial(200, 0.95).
    #[test]
    fn interval_coverage_of_the_estimators_expected_value() {
        let full = std::env::var("CBOUND_COVERAGE").is_ok_and(|v| v == "full");
        let (seeds, n, reps, draws) = if full {
            (200u64, 400, 50, 1000u64)
        } else {
            (30, 200, 20, 120)
        };
        let level = 0.95;
        let iv = IntervalSpec { reps, level };
        let trials = seeds as usize;
        let mut failures = Vec::new();
        for (task, dof) in [("normal", None), ("Student-t 3 dof", Some(3.0))] {
            for spec in ["ksg", "gaussian"] {
                let (covered, target) = coverage(spec, dof, n, &iv, seeds, draws);
                let below = binomial_cdf(covered, trials, level);
                let above = 1.0 - binomial_cdf(covered.saturating_sub(1), trials, level);
                eprintln!(
                    "coverage: {task} 2x2, {spec}, n {n}, {reps} reps, 95%: {covered} of {trials} cover the mean {target:.4} of {draws} estimates (expected {:.1}; P(X <= {covered}) = {below:.3}, P(X >= {covered}) = {above:.3})",
                    level * trials as f64
                );
                let ok = if full {
                    below >= 0.01 && above >= 0.01
                } else {
                    covered >= 26
                };
                if !ok {
                    failures.push(format!("{task} {spec}: {covered} of {trials}"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn heavy_tails_are_noticed_and_asinh_suggested() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal, StudentT};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let t = StudentT::new(1.5).unwrap();
        let heavy: Vec<f64> = (0..2000).map(|_| t.sample(&mut rng)).collect();
        let normal: Vec<f64> = (0..2000).map(|_| StandardNormal.sample(&mut rng)).collect();
        let (h, g) = (Matrix::from_column(&heavy), Matrix::from_column(&normal));
        assert!(heavy_tail(&h).is_some());
        assert!(heavy_tail(&g).is_none());
        let spec = EstimatorSpec::parse_cli("ksg").unwrap();
        let row = estimate(&spec, &h, &g, None, &Preprocess::default(), None, 0).unwrap();
        assert!(
            row.note
                .as_deref()
                .is_some_and(|n| n.contains("heavy tails (x column 0")),
            "{row:?}"
        );
        // Asked for already: nothing to suggest.
        let pre = Preprocess {
            asinh: true,
            ..Preprocess::default()
        };
        let row = estimate(&spec, &h, &g, None, &pre, None, 0).unwrap();
        assert!(
            !row.note
                .as_deref()
                .unwrap_or_default()
                .contains("heavy tails"),
            "{row:?}"
        );
    }

    /// Labelled clusters: rows alternate between two classes in different directions (the
    /// kNN classifier compares cosines).
    fn two_clusters(n: usize) -> (Matrix, Matrix) {
        let x: Vec<f64> = (0..n)
            .flat_map(|i| {
                let (a, b) = ((i as f64 * 0.37).sin(), (i as f64 * 0.91).cos());
                if i % 2 == 0 {
                    [5.0 + a, b]
                } else {
                    [a, 5.0 + b]
                }
            })
            .collect();
        let z: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
        (Matrix::new(n, 2, x).unwrap(), Matrix::from_column(&z))
    }

    #[test]
    fn a_split_given_by_the_data_is_the_one_fitted_and_scored() {
        let (x, z) = two_clusters(60);
        // The first 40 rows fit, the last 20 score: not what any seeded shuffle would give.
        let given = HeldOut::given(60, (0..40).collect(), (40..60).collect()).unwrap();
        let tools = Tools {
            split: Some(&given),
            ..Tools::default()
        };
        let pre = Preprocess::default();
        for name in ["knn:k=5", "probe:steps=50"] {
            let spec = EstimatorSpec::parse_cli(name).unwrap();
            let row = estimate_with(&spec, &x, &z, None, &pre, None, 7, tools).unwrap();
            assert_eq!(row.held_out.as_ref(), Some(&given), "{name}");
            assert!(row.accuracy.unwrap() > 0.9, "{name}: {row:?}");
            // Without it, the estimator draws its own seeded split of every row.
            let own = estimate_with(&spec, &x, &z, None, &pre, None, 7, Tools::default())
                .unwrap()
                .held_out
                .unwrap();
            assert_eq!(own.seed, Some(7), "{name}");
            assert_ne!(own.train, given.train, "{name}");
            // With max_rows, each kept row keeps its side; the split names the given rows.
            let sub = Preprocess {
                max_rows: Some(30),
                ..Preprocess::default()
            };
            let h = estimate_with(&spec, &x, &z, None, &sub, None, 7, tools)
                .unwrap()
                .held_out
                .unwrap();
            assert_eq!(h.train.len() + h.test.len(), 30, "{name}");
            assert!(h.train.iter().all(|&r| r < 40), "{name}: {h:?}");
            assert!(h.test.iter().all(|&r| r >= 40), "{name}: {h:?}");
            // An interval's replicates cannot follow a given split: refused, not ignored.
            let iv = IntervalSpec {
                reps: 5,
                level: 0.9,
            };
            let err = estimate_with(&spec, &x, &z, None, &pre, Some(&iv), 7, tools).unwrap_err();
            assert!(err.to_string().contains("split given by the data"), "{err}");
        }
        // A split that does not fit the rows is refused.
        let wrong = HeldOut::given(100, vec![0], vec![80]).unwrap();
        let spec = EstimatorSpec::parse_cli("knn").unwrap();
        let tools = Tools {
            split: Some(&wrong),
            ..Tools::default()
        };
        assert!(estimate_with(&spec, &x, &z, None, &pre, None, 7, tools).is_err());
    }
}
