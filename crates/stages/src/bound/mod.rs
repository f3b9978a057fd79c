//! `bound`: the information bounds on downstream performance, computed from upstream
//! estimates, certified at a stated confidence, and (on synthetic data) checked against the
//! exact values.
//!
//! Each quantity is taken from an `estimate_mi` row (`{pair, estimator}`: its point value, its
//! direction and its certificate), an upstream metric (`{metric}`, e.g. a synthetic stage's
//! `true_i_xz`) or a given value. Every inequality of [`cbound_bounds`] becomes a row of
//! `bounds.parquet` with two values: the point value (the terms' point values) and, for a
//! valid inequality whose terms all point the right way, the certified value, built from each
//! term's one-sided confidence bound. The instance's `confidence` (default 0.95) is split
//! evenly over every certified term of every snapshot and the accuracy bound (a union bound),
//! so all certified values of one instance hold together with at least that probability.
//! A certified lower bound at or below zero is `vacuous`; certified values that contradict
//! each other or a trivial range make the instance `inconsistent`, and then no accuracy bound
//! is derived. docs/certification.md states the assumptions.

mod params;
mod resolve;
mod table;

use std::collections::BTreeMap;
use std::f64::consts::LN_2;

pub use params::{Assume, AssumptionSpec, BoundParams, RawTermSource, Source, TermSource, Unit};
use resolve::{estimate_tables, resolve, snapshot_epochs, Group, Resolved};
use table::{BoundsTable, Row};

use cbound_bounds::accuracy::{bayes_accuracy_lower_bound, fano_accuracy_upper_bound};
use cbound_bounds::inequalities::{
    check_value_against_truth, evaluate_all, Assumptions, BoundRow, Certification, Side, Status,
};
use cbound_bounds::terms::{Direction, Quantity, Term, Terms};
use cbound_engine::config::yaml::PathSeg;
use cbound_engine::stage::{
    Need, ParamError, Stage, StageContext, StageError, StageOutput, Upstream, Wanted,
};
use cbound_mi::certificate::Certificate;

/// Refuses terms in different units: a bits value subtracted from a nats value is a silent
/// factor-of-0.69 error, exactly the mistake the study's code makes easy.
fn common_unit<'a>(
    sources: impl Iterator<Item = (Quantity, &'a TermSource)>,
) -> Result<Unit, StageError> {
    let (mut nats, mut bits) = (vec![], vec![]);
    for (q, src) in sources {
        let name = q.symbol();
        match src.unit() {
            Unit::Nats => nats.push(name),
            Unit::Bits => bits.push(name),
        }
    }
    match (nats.is_empty(), bits.is_empty()) {
        (_, true) => Ok(Unit::Nats),
        (true, false) => Ok(Unit::Bits),
        (false, false) => Err(StageError::Params(format!(
            "terms mix units: {} in nats, {} in bits; give every term in one unit \
             (estimate_mi rows are nats; set `unit:` on metrics and values)",
            nats.join(", "),
            bits.join(", ")
        ))),
    }
}

/// An assumption's truth. One asserted in the pipeline must not contradict an upstream
/// metric of the same name (a synthetic task that knows it does not hold): that would
/// certify bounds on a premise the data refute.
fn assumption(ctx: &StageContext, a: &Assume, name: &str) -> Result<bool, StageError> {
    let reported = ctx
        .inputs
        .iter()
        .find_map(|i| i.meta.metrics.get(name).map(|v| (*v, &i.instance)));
    match a {
        Assume::Given(true) => match reported {
            Some((v, from)) if v != 1.0 => Err(StageError::Params(format!(
                "assumptions.{name}: true contradicts metric `{name}` = {v} reported by \
                 `{from}`: the data say the assumption does not hold; drop the assertion, or \
                 take it from the metric ({{metric: {name}}})"
            ))),
            _ => Ok(true),
        },
        Assume::Given(false) => Ok(false),
        Assume::FromMetric { metric } => {
            let v = ctx
                .inputs
                .iter()
                .find_map(|i| i.meta.metrics.get(metric).copied())
                .ok_or_else(|| {
                    StageError::Input(format!(
                        "assumption `{name}`: no input reports metric `{metric}`"
                    ))
                })?;
            Ok(v == 1.0)
        }
    }
}

pub struct Bound;

impl Stage for Bound {
    type Params = BoundParams;
    const KIND: &'static str = "bound";
    // 4: the `kind` of each term in the `terms` JSON is written `lower_bound`, not `LowerBound`.
    // 6: an accuracy bound at or below chance (or an upper one at or above 1) is vacuous.
    const VERSION: u32 = 6;
    const SUMMARY: &'static str =
        "Information bounds on downstream performance: the study's inequalities as stated, the valid ones with point and certified values at a stated confidence, violations against truth, accuracy bounds (bounds.parquet).";
    const EXAMPLE: &'static str = r#"bound:
  kind: bound
  inputs: [estimate, mixture]
  params:
    confidence: 0.95
    terms:
      i_uz: {pair: uz, estimator: probe}
      i_uy: {pair: uy, estimator: infonce}
      i_xy_given_z: {metric: true_i_xy_given_z, kind: exact}
    truth: {i_uz: {metric: true_i_xz}}
    assumptions: {u_is_function_of_x: true}
    classes: 4
"#;
    const WRITES: Option<&'static [&'static str]> = Some(&[cbound_tables::bounds::FILE]);

    fn needs(p: &BoundParams) -> Vec<Need> {
        // Terms taken from estimate_mi rows need an estimate_mi stage among the inputs.
        let sources = p.terms.iter().chain(&p.truth);
        let first = sources
            .filter(|(_, s)| matches!(s.source, Source::Estimate { .. }))
            .map(|(q, _)| q)
            .next();
        first
            .map(|q| Need {
                from: Upstream::Any,
                wanted: Wanted::File(cbound_tables::mi_estimates::FILE.into()),
                at: vec![PathSeg::Key("terms".into()), PathSeg::Key(q.name().into())],
            })
            .into_iter()
            .collect()
    }

    fn check(p: &BoundParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        let sources = p.terms.iter().chain(&p.truth).map(|(q, s)| (*q, s));
        if let Err(StageError::Params(message)) = common_unit(sources) {
            out.push(ParamError::at(&["terms"], message));
        }
        if !(p.tolerance.is_finite() && p.tolerance >= 0.0) {
            out.push(ParamError::at(
                &["tolerance"],
                format!(
                    "tolerance must be finite and >= 0 nats, got {}",
                    p.tolerance
                ),
            ));
        }
        if let Some(k) = p.classes.filter(|&k| k < 2) {
            out.push(ParamError::at(
                &["classes"],
                format!("a label needs at least 2 classes, got {k}"),
            ));
        }
        for (i, w) in p.weights.iter().flatten().enumerate() {
            if !(w.is_finite() && *w >= 0.0) {
                out.push(ParamError::at(
                    &["weights", &i.to_string()],
                    format!("a weight must be finite and >= 0, got {w}"),
                ));
            }
        }
        out
    }

    fn run(p: &BoundParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        let unit = common_unit(
            p.terms
                .iter()
                .chain(p.truth.iter())
                .map(|(q, src)| (*q, src)),
        )?;
        let scale = if unit == Unit::Bits { LN_2 } else { 1.0 };
        let assumptions = Assumptions {
            u_is_function_of_x: assumption(
                ctx,
                &p.assumptions.u_is_function_of_x,
                "u_is_function_of_x",
            )?,
            x_indep_y_given_z: assumption(
                ctx,
                &p.assumptions.x_indep_y_given_z,
                "x_indep_y_given_z",
            )?,
        };
        // Read once: every snapshot group and every term looks values up in them.
        let estimates = estimate_tables(ctx)?;
        let epochs = snapshot_epochs(&estimates);
        let mut groups = Vec::with_capacity(epochs.len());
        for epoch in &epochs {
            let group = Group {
                epoch: *epoch,
                scale,
            };
            let mut terms = Vec::new();
            for (q, src) in &p.terms {
                terms.push((*q, resolve(ctx, &estimates, *q, src, None, group)?));
            }
            let mut truth = Terms::new();
            for (q, src) in &p.truth {
                let r = resolve(ctx, &estimates, *q, src, Some(Direction::Exact), group)?;
                truth.insert(*q, r.term);
            }
            groups.push((group, terms, truth));
        }
        let truth_accuracy = match &p.truth_accuracy {
            Some(src) => {
                let group = Group {
                    epoch: None,
                    scale: 1.0,
                };
                let r = resolve(ctx, &estimates, Quantity::IUZ, src, None, group)?;
                Some(r.term.nats)
            }
            None => None,
        };
        // The union bound: one share of 1 - confidence per certified term and snapshot, and
        // one for the probe's accuracy when accuracy bounds are asked for.
        let accuracy_share = p.classes.is_some()
            && groups.last().is_some_and(|(_, terms, _)| {
                terms
                    .iter()
                    .any(|(q, r)| *q == Quantity::IUZ && probe_certificate(r).is_some())
            });
        let shares: usize = groups
            .iter()
            .map(|(_, terms, _)| {
                terms
                    .iter()
                    .filter(|(_, r)| r.certificate.is_some())
                    .count()
            })
            .sum::<usize>()
            + usize::from(accuracy_share);
        let delta = (1.0 - p.confidence) / shares.max(1) as f64;

        let mut table = BoundsTable::default();
        let mut out = StageOutput::default();
        let mut tally = Tally::default();
        let last = groups.len().saturating_sub(1);
        for (gi, (group, terms, truth)) in groups.iter().enumerate() {
            let ev = Evaluation {
                p,
                delta,
                assumptions: &assumptions,
                truth,
                epoch: group.epoch,
            };
            ev.group(
                terms,
                gi == last,
                truth_accuracy,
                &mut table,
                &mut out,
                &mut tally,
            )?;
        }
        let with_epoch = epochs.iter().any(|e| e.is_some());
        ctx.write_result_table(cbound_tables::bounds::TABLE.name, &table.batch(with_epoch)?)?;
        for (name, v) in [
            ("violations", tally.violations),
            ("violations_valid", tally.valid_violations),
            ("certified_violations", tally.certified_violations),
            ("inconsistencies", tally.inconsistencies),
            ("vacuous", tally.vacuous),
            ("certified_terms", shares),
        ] {
            out.metrics.insert(name.into(), v as f64);
        }
        out.metrics.insert("confidence".into(), p.confidence);
        out.metrics.insert("delta_per_term".into(), delta);
        Ok(out)
    }
}

fn probe_certificate(r: &Resolved) -> Option<&Certificate> {
    r.certificate
        .as_ref()
        .filter(|c| matches!(c, Certificate::Probe { .. }))
}

/// Counts over all snapshot groups.
#[derive(Default)]
struct Tally {
    violations: usize,
    valid_violations: usize,
    certified_violations: usize,
    inconsistencies: usize,
    vacuous: usize,
}

/// A certified value on one quantity, for the consistency checks.
struct Claim {
    lhs: String,
    side: Side,
    value: f64,
    from: String,
}

/// Everything one snapshot group is evaluated with.
struct Evaluation<'a> {
    p: &'a BoundParams,
    delta: f64,
    assumptions: &'a Assumptions,
    truth: &'a Terms,
    epoch: Option<i64>,
}

const ACCURACY: &str = "Bayes accuracy of Z from U";

impl Evaluation<'_> {
    fn row(&self) -> Row {
        Row {
            epoch: self.epoch,
            confidence: Some(self.p.confidence),
            ..Row::default()
        }
    }

    /// Point and certified checks of one value against the truth, into `row`. A term's point
    /// value may fall on the wrong side of the truth by sampling noise, so only inequality
    /// rows (`count_point`) add to the point-value violation counts.
    fn check_truth(
        &self,
        row: &mut Row,
        lhs: Quantity,
        side: Side,
        count_point: bool,
        tally: &mut Tally,
    ) {
        if self.p.truth.is_empty() || self.truth.find(lhs).is_none() {
            return;
        }
        row.truth = self.truth.find(lhs).map(|t| t.nats);
        let check = |v: f64| {
            check_value_against_truth(lhs, side, v, self.truth, self.p.tolerance)
                .ok()
                .map(|v| v.map(|v| v.margin))
        };
        if let Some(v) = row.value.and_then(check) {
            row.violated = Some(v.is_some());
            row.margin = v;
            if v.is_some() && count_point {
                tally.violations += 1;
                if row.status.as_deref() == Some("valid") {
                    tally.valid_violations += 1;
                }
            }
        }
        if let Some(v) = row.certified_value.and_then(check) {
            row.certified_violated = Some(v.is_some());
            row.certified_margin = v;
            tally.certified_violations += usize::from(v.is_some());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn group(
        &self,
        resolved: &[(Quantity, Resolved)],
        last: bool,
        truth_accuracy: Option<f64>,
        table: &mut BoundsTable,
        out: &mut StageOutput,
        tally: &mut Tally,
    ) -> Result<(), StageError> {
        let p = self.p;
        // H(Z) where the data fix it: only an exact h_z term, never a point estimate.
        let exact_hz = resolved
            .iter()
            .find(|(q, r)| *q == Quantity::HZ && r.term.kind == Direction::Exact)
            .map(|(_, r)| r.term.nats);
        let mut terms = Terms::new();
        let mut how: BTreeMap<Quantity, String> = BTreeMap::new();
        let mut claims: Vec<Claim> = Vec::new();
        let mut term_rows = Vec::new();
        for (q, r) in resolved {
            let mut term = r.term.clone();
            if let Some(cert) = &r.certificate {
                let hz = if q.predicts_z() { exact_hz } else { None };
                let mut row = self.row();
                row.name = Some("term".into());
                row.status = Some("valid".into());
                row.lhs = Some(q.symbol().into());
                let side = if term.kind == Direction::UpperBound {
                    Side::Upper
                } else {
                    Side::Lower
                };
                row.side = Some(side_name(side).into());
                row.value = Some(term.nats);
                match cert.bound(self.delta, hz) {
                    Ok(c) => {
                        term = term
                            .with_certified(c.nats)
                            .map_err(|e| StageError::Input(e.to_string()))?;
                        row.certified_value = Some(c.nats);
                        row.statement = Some(format!(
                            "{} {} {:.4} from {}: {}; assumes {}",
                            q.symbol(),
                            if side == Side::Lower { ">=" } else { "<=" },
                            c.nats,
                            term.source,
                            c.how,
                            cert.assumptions()
                        ));
                        how.insert(*q, c.how);
                    }
                    Err(e) => {
                        row.error = Some(format!("no confidence bound: {e}"));
                        how.insert(*q, format!("no confidence bound: {e}"));
                    }
                }
                row.certification = Some(
                    match row.certified_value {
                        None => Certification::Estimate,
                        Some(v) if side == Side::Lower && v <= 0.0 => Certification::Vacuous,
                        Some(_) => Certification::Certified,
                    }
                    .name()
                    .into(),
                );
                if let Some(v) = row.certified_value {
                    claims.push(Claim {
                        lhs: q.symbol().into(),
                        side,
                        value: v,
                        from: term.source.clone(),
                    });
                }
                self.check_truth(&mut row, *q, side, false, tally);
                term_rows.push(row);
            } else if let Some(v) = term.certified {
                // An exact value bounds its quantity from both sides; a value the user vouches
                // for as a bound, from its side.
                let sides: &[Side] = match term.kind {
                    Direction::Exact => &[Side::Lower, Side::Upper],
                    Direction::LowerBound => &[Side::Lower],
                    Direction::UpperBound => &[Side::Upper],
                    Direction::Estimate => &[],
                };
                for side in sides {
                    claims.push(Claim {
                        lhs: q.symbol().into(),
                        side: *side,
                        value: v,
                        from: term.source.clone(),
                    });
                }
            }
            terms.insert(*q, term);
        }
        // An upper bound on H(Z) (log K always is one) and a lower bound on it.
        let h_upper = exact_hz.or(p.classes.map(|k| (k as f64).ln()));
        let rows = evaluate_all(
            &terms,
            self.assumptions,
            p.weights.map(|w| (w[0], w[1], w[2])),
        );
        let mut ok_rows = Vec::new();
        for row in rows {
            let mut r = self.row();
            // Known whether or not the row could be evaluated: a row without them would be
            // dropped by every `groupby('name')`.
            r.name = Some(row.name.into());
            r.status = Some(
                if row.status == Status::Valid {
                    "valid"
                } else {
                    "as_stated"
                }
                .into(),
            );
            match row.result {
                Ok(b) => {
                    let mut cert = b.certification();
                    // An upper bound on I(U;Z) at or above H(Z) says nothing.
                    if let (Some(v), Some(h), Side::Upper, Quantity::IUZ) =
                        (b.certified_value, h_upper, b.side, b.lhs)
                    {
                        if cert == Certification::Certified && v >= h {
                            cert = Certification::Vacuous;
                        }
                    }
                    r.name = Some(b.name.into());
                    r.statement = Some(b.statement.clone());
                    r.status = Some(
                        if b.status == Status::Valid {
                            "valid"
                        } else {
                            "as_stated"
                        }
                        .into(),
                    );
                    r.certification = Some(cert.name().into());
                    r.side = Some(side_name(b.side).into());
                    r.lhs = Some(b.lhs.symbol().into());
                    r.value = Some(b.value);
                    r.certified_value = b.certified_value;
                    r.terms_json = Some(terms_json(&b, &how));
                    self.check_truth(&mut r, b.lhs, b.side, true, tally);
                    if let Some(v) = b.certified_value {
                        claims.push(Claim {
                            lhs: b.lhs.symbol().into(),
                            side: b.side,
                            value: v,
                            from: b.name.into(),
                        });
                    }
                    if last {
                        out.metrics.insert(format!("bound.{}", b.name), b.value);
                        if let Some(v) = b.certified_value {
                            out.metrics.insert(format!("bound.{}.certified", b.name), v);
                        }
                    }
                    tally.vacuous += usize::from(cert == Certification::Vacuous);
                    ok_rows.push(b);
                }
                Err(e) => {
                    r.certification = Some(Certification::NotComputed.name().into());
                    r.error = Some(e.to_string());
                }
            }
            table.rows.push(r);
        }
        tally.vacuous += term_rows
            .iter()
            .filter(|r| r.certification.as_deref() == Some("vacuous"))
            .count();
        table.rows.extend(term_rows);

        // Contradictions among certified values, and certified values beyond trivial ranges.
        let mut clashes = contradictions(&claims, p.tolerance);
        if let Some(h) = h_upper {
            for c in claims
                .iter()
                .filter(|c| c.side == Side::Lower && c.lhs.ends_with(";Z)"))
            {
                if c.value > h + p.tolerance {
                    clashes.push(format!(
                        "{} >= {:.4} from {} exceeds H(Z) <= {h:.4}{}: no variable carries more \
                         information about Z than Z's entropy; check `classes`, units and that \
                         the estimate was scored on held-out rows",
                        c.lhs,
                        c.value,
                        c.from,
                        if exact_hz.is_some() { "" } else { " (log K)" }
                    ));
                }
            }
        }
        for c in claims
            .iter()
            .filter(|c| c.side == Side::Upper && c.value < -p.tolerance)
        {
            clashes.push(format!(
                "{} <= {:.4} from {}: an upper bound on information below zero",
                c.lhs, c.value, c.from
            ));
        }

        if last {
            let iuz = resolved.iter().find(|(q, _)| *q == Quantity::IUZ);
            if let Some((_, r)) = iuz {
                if let Some(a) = r.accuracy {
                    out.metrics.insert("probe_accuracy".into(), a);
                }
            }
            let best = |side: Side, certified: bool| -> Option<f64> {
                let rows = ok_rows.iter().filter(|b| {
                    b.status == Status::Valid && b.lhs == Quantity::IUZ && b.side == side
                });
                let term = terms.find(Quantity::IUZ);
                // The point values of the same rows that certify, so the two can be compared.
                let from_rows: Vec<f64> = rows
                    .filter_map(|b| {
                        b.certified_value
                            .map(|c| if certified { c } else { b.value })
                    })
                    .collect();
                let from_term = term.and_then(|t| {
                    let right_way = match side {
                        Side::Lower => t.kind.is_lower(),
                        Side::Upper => t.kind.is_upper(),
                    };
                    right_way.then_some(if certified { t.certified } else { Some(t.nats) })?
                });
                let all = from_rows.into_iter().chain(from_term);
                match side {
                    Side::Lower => all.reduce(f64::max),
                    Side::Upper => all.reduce(f64::min),
                }
            };
            let (lower, upper) = (best(Side::Lower, true), best(Side::Upper, true));
            let (lower_point, upper_point) = (best(Side::Lower, false), best(Side::Upper, false));
            let mut accuracy = Accuracy::default();
            if let Some(k) = p.classes {
                accuracy = self.accuracy(
                    k,
                    iuz.map(|(_, r)| r),
                    exact_hz,
                    [lower, upper, lower_point, upper_point],
                )?;
                if let (Some(lo), Some(up)) = (accuracy.lower_certified(), accuracy.fano) {
                    if lo > up + 1e-9 {
                        clashes.push(format!(
                            "the certified accuracy lower bound {lo:.4} exceeds the certified \
                             upper bound {up:.4}"
                        ));
                    }
                }
                for mut r in accuracy.rows(self) {
                    tally.vacuous += usize::from(r.certification.as_deref() == Some("vacuous"));
                    if let Some(t) = truth_accuracy {
                        r.truth = Some(t);
                        let wrong = |v: f64| match r.side.as_deref() {
                            Some("lower") => (v > t + 1e-9).then_some(v - t),
                            _ => (v < t - 1e-9).then_some(t - v),
                        };
                        if let Some(v) = r.value {
                            r.violated = Some(wrong(v).is_some());
                            r.margin = wrong(v);
                        }
                        if let Some(v) = r.certified_value {
                            r.certified_violated = Some(wrong(v).is_some());
                            r.certified_margin = wrong(v);
                            tally.certified_violations += usize::from(wrong(v).is_some());
                        }
                    }
                    table.rows.push(r);
                }
            }
            // Contradictory certified values mean an assumption failed: nothing derived from
            // them is reported as a result.
            if clashes.is_empty() {
                if let Some(v) = lower.filter(|v| *v > 0.0) {
                    out.metrics.insert("iuz_lower_nats".into(), v);
                }
                if let Some(v) = lower_point {
                    out.metrics.insert("iuz_lower_point_nats".into(), v);
                }
                if let Some(v) = upper {
                    out.metrics.insert("iuz_upper_nats".into(), v);
                }
                accuracy.metrics(out);
            }
        }
        for clash in clashes {
            let mut r = self.row();
            r.name = Some("consistency".into());
            r.statement = Some(clash.clone());
            r.status = Some("inconsistent".into());
            r.certification = Some("inconsistent".into());
            r.error = Some(clash);
            table.rows.push(r);
            tally.inconsistencies += 1;
        }
        Ok(())
    }

    /// The accuracy bounds of the final snapshot (`[lower, upper, lower_point, upper_point]`
    /// are the best bounds on I(U;Z), certified and point).
    fn accuracy(
        &self,
        k: usize,
        iuz: Option<&Resolved>,
        exact_hz: Option<f64>,
        [lower, upper, lower_point, upper_point]: [Option<f64>; 4],
    ) -> Result<Accuracy, StageError> {
        let err = |e: cbound_bounds::BoundsError| StageError::Input(e.to_string());
        let probe = iuz.and_then(probe_certificate);
        if let Some(seen) = probe.and_then(|c| c.classes()) {
            if seen != k {
                return Err(StageError::Params(format!(
                    "`classes: {k}` but the probe of I(U;Z) predicts {seen} label values: the \
                     accuracy bounds would speak of a {k}-class problem that is not the data's; \
                     set `classes: {seen}` (or give the probe `classes` when a rare class is \
                     missing from the sample)"
                )));
            }
        }
        let h_upper = exact_hz.unwrap_or((k as f64).ln());
        // A lower bound on H(Z) for Fano: exact, or from the probe's label counts (inside the
        // probe's own share of the union bound).
        let h_lower = match (exact_hz, probe) {
            (Some(h), _) => Some(h),
            (None, Some(c)) => c
                .probe_parts(self.delta, None)
                .ok()
                .flatten()
                .map(|p| p.entropy_lower),
            (None, None) => None,
        };
        let mut a = Accuracy {
            k,
            ..Accuracy::default()
        };
        let fm = |i: f64| -> Result<f64, StageError> {
            bayes_accuracy_lower_bound(i.max(0.0).min(h_upper), h_upper, k).map_err(err)
        };
        if let Some(i) = lower {
            a.feder_merhav = Some(fm(i)?);
        }
        if let Some(i) = lower_point {
            a.feder_merhav_point = Some(fm(i)?);
        }
        if let Some(c) = probe {
            a.clopper_pearson = c
                .accuracy_lower(self.delta)
                .map_err(|e| StageError::Input(e.to_string()))?;
            a.measured = iuz.and_then(|r| r.accuracy);
        }
        match h_lower {
            Some(h) => {
                let h = h.clamp(0.0, (k as f64).ln());
                let fano = |i: f64| fano_accuracy_upper_bound(i.max(0.0).min(h), h, k).map_err(err);
                if let Some(i) = upper {
                    a.fano = Some(fano(i)?);
                }
                if let Some(i) = upper_point {
                    a.fano_point = Some(fano(i)?);
                }
            }
            None if upper.is_some() => {
                a.fano_withheld = Some(
                    "Fano needs a lower bound on H(Z): give `h_z` exactly, or a probe of I(U;Z) \
                     whose label counts bound it"
                        .into(),
                );
            }
            None => {}
        }
        Ok(a)
    }
}

/// The Bayes-accuracy bounds of the final snapshot, certified and point.
#[derive(Default)]
struct Accuracy {
    k: usize,
    feder_merhav: Option<f64>,
    feder_merhav_point: Option<f64>,
    clopper_pearson: Option<f64>,
    measured: Option<f64>,
    fano: Option<f64>,
    fano_point: Option<f64>,
    fano_withheld: Option<String>,
}

impl Accuracy {
    fn lower_certified(&self) -> Option<f64> {
        self.feder_merhav
            .into_iter()
            .chain(self.clopper_pearson)
            .reduce(f64::max)
    }

    /// Chance, 1/K: the Bayes accuracy is at least the largest class probability, which is
    /// at least 1/K whatever the priors. A lower bound at or below it says nothing.
    fn chance(&self) -> f64 {
        1.0 / self.k.max(1) as f64
    }

    /// Whether a certified accuracy bound on `side` is trivial: a lower bound at or below
    /// chance, or an upper bound at or above 1. True, and never reported as a result.
    fn is_vacuous(&self, side: &str, certified: f64) -> bool {
        match side {
            "lower" => certified <= self.chance() + 1e-12,
            _ => certified >= 1.0 - 1e-12,
        }
    }

    /// A certified value that is not vacuous: what the metrics report.
    fn result(&self, side: &str, certified: Option<f64>) -> Option<f64> {
        certified.filter(|v| !self.is_vacuous(side, *v))
    }

    fn rows(&self, ev: &Evaluation) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut push = |name: &str, statement: String, side: &str, point, certified, error| {
            let mut r = ev.row();
            r.name = Some(name.into());
            r.statement = Some(statement);
            r.status = Some("valid".into());
            r.side = Some(side.into());
            r.lhs = Some(ACCURACY.into());
            r.value = point;
            r.certified_value = certified;
            r.certification = Some(
                match certified {
                    Some(v) if self.is_vacuous(side, v) => "vacuous",
                    Some(_) => "certified",
                    None => "estimate",
                }
                .into(),
            );
            r.error = error;
            rows.push(r);
        };
        if self.feder_merhav.is_some() || self.feder_merhav_point.is_some() {
            push(
                "accuracy_feder_merhav",
                format!("accuracy >= 1 - Pe_max(H(Z) - I(U;Z)) over {} classes (Feder-Merhav), from the best lower bound on I(U;Z)", self.k),
                "lower",
                self.feder_merhav_point,
                self.feder_merhav,
                None,
            );
        }
        if self.clopper_pearson.is_some() {
            push(
                "accuracy_clopper_pearson",
                "accuracy >= the probe's held-out accuracy, Clopper-Pearson lower bound (the Bayes classifier is at least as accurate as the probe)".into(),
                "lower",
                self.measured,
                self.clopper_pearson,
                None,
            );
        }
        if self.fano.is_some() || self.fano_point.is_some() || self.fano_withheld.is_some() {
            push(
                "accuracy_fano",
                format!("H(Z|U) <= h(Pe) + Pe log(K - 1) with K = {} (Fano), from the best upper bound on I(U;Z) and a lower bound on H(Z)", self.k),
                "upper",
                self.fano_point,
                self.fano,
                self.fano_withheld.clone(),
            );
        }
        rows
    }

    fn metrics(&self, out: &mut StageOutput) {
        let mut put = |name: &str, v: Option<f64>| {
            if let Some(v) = v {
                out.metrics.insert(name.into(), v);
            }
        };
        // Vacuous certified bounds (at or below chance, at or above 1) are no result.
        put(
            "accuracy_lower_bound",
            self.result("lower", self.lower_certified()),
        );
        put(
            "accuracy_lower_bound_feder_merhav",
            self.result("lower", self.feder_merhav),
        );
        put(
            "accuracy_lower_bound_clopper_pearson",
            self.result("lower", self.clopper_pearson),
        );
        put("accuracy_lower_bound_point", self.feder_merhav_point);
        put("accuracy_upper_bound", self.result("upper", self.fano));
        put("accuracy_upper_bound_point", self.fano_point);
    }
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Lower => "lower",
        Side::Upper => "upper",
    }
}

fn terms_json(b: &BoundRow, how: &BTreeMap<Quantity, String>) -> String {
    let used: serde_json::Map<String, serde_json::Value> = b
        .terms_used
        .iter()
        .map(|(q, t): &(Quantity, Term)| {
            (
                q.symbol().to_string(),
                serde_json::json!({
                    "nats": t.nats,
                    "kind": t.kind.as_str(),
                    "source": t.source,
                    "certified": t.certified,
                    "how": how.get(q),
                }),
            )
        })
        .collect();
    serde_json::Value::Object(used).to_string()
}

/// Certified lower values above certified upper values on the same quantity.
fn contradictions(claims: &[Claim], tolerance: f64) -> Vec<String> {
    let mut out = Vec::new();
    for lo in claims.iter().filter(|c| c.side == Side::Lower) {
        for up in claims
            .iter()
            .filter(|c| c.side == Side::Upper && c.lhs == lo.lhs)
        {
            if lo.value > up.value + tolerance {
                out.push(format!(
                    "{} >= {:.4} from {} contradicts {} <= {:.4} from {}: an estimator's or an \
                     assumption's promise failed (e.g. a critic or probe scored on its own \
                     training rows, or an assumption that does not hold); nothing here is \
                     certified until it is resolved",
                    lo.lhs, lo.value, lo.from, up.lhs, up.value, up.from
                ));
            }
        }
    }
    out
}
