//! Finding each term's value: an estimate_mi row (with its recorded direction and
//! certificate), an upstream metric, or a given value; and the upstream tables they come from.

use super::params::{Source, TermSource};
use cbound_bounds::terms::Quantity;
use cbound_bounds::terms::{Direction, Term};
use cbound_engine::artifact::read_parquet;
use cbound_engine::stage::{InputArtifact, StageContext, StageError};
use cbound_mi::certificate::{Certificate, CertifiedSide};
use cbound_tables::mi_estimates::{self, Record};

/// An input that wrote `mi_estimates.parquet`, with the table's rows.
pub type EstimateTable<'a> = (&'a InputArtifact, Vec<Record>);

/// Every input that wrote `mi_estimates.parquet`, with the table's rows, read once.
pub fn estimate_tables<'a>(ctx: &StageContext<'a>) -> Result<Vec<EstimateTable<'a>>, StageError> {
    let file = mi_estimates::FILE;
    let mut out = Vec::new();
    for input in ctx.inputs {
        if input.meta.outputs.iter().any(|o| o.name == file) {
            let path = input.dir.join(file);
            let mut rows = Vec::new();
            for batch in read_parquet(&path)? {
                rows.extend(
                    mi_estimates::records(&batch)
                        .map_err(|e| StageError::Input(format!("{}: {e}", path.display())))?,
                );
            }
            out.push((input, rows));
        }
    }
    Ok(out)
}

/// The encoder snapshots the upstream estimates cover (`epoch` column of mi_estimates), in
/// order; `[None]` when they carry no epochs.
pub fn snapshot_epochs(estimates: &[EstimateTable]) -> Vec<Option<i64>> {
    let epochs: std::collections::BTreeSet<i64> = estimates
        .iter()
        .flat_map(|(_, rows)| rows.iter().filter_map(|r| r.epoch))
        .collect();
    if epochs.is_empty() {
        vec![None]
    } else {
        epochs.into_iter().map(Some).collect()
    }
}

/// Which estimates to read: every row, or those of one encoder snapshot (`epoch` column).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    pub epoch: Option<i64>,
    /// Converts the source's unit to nats.
    pub scale: f64,
}

/// A term's point value and what may certify it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub term: Term,
    /// From an estimate whose estimator records one (probe, infonce, gaussian_channel).
    pub certificate: Option<Certificate>,
    /// The probe's held-out accuracy.
    pub accuracy: Option<f64>,
}

/// Resolves one term (or truth, with `force = Some(Exact)`) for one snapshot group.
pub fn resolve(
    ctx: &StageContext,
    estimates: &[EstimateTable],
    q: Quantity,
    src: &TermSource,
    force: Option<Direction>,
    group: Group,
) -> Result<Resolved, StageError> {
    let what = q.symbol();
    let kind = src.kind;
    match &src.source {
        Source::Value(v) => {
            let kind = force.or(kind).unwrap_or(Direction::Exact);
            let term = Term::new(v * group.scale, kind, "given")
                .map_err(|e| StageError::Params(e.to_string()))?;
            // A value the user vouches for holds as given, so it is its own certified value;
            // an `estimate` value certifies nothing.
            let term = if kind == Direction::Estimate {
                term
            } else {
                let v = term.nats;
                term.with_certified(v)
                    .map_err(|e| StageError::Params(e.to_string()))?
            };
            Ok(Resolved {
                term,
                certificate: None,
                accuracy: None,
            })
        }
        Source::Metric(metric) => {
            let found = ctx
                .inputs
                .iter()
                .find_map(|i| i.meta.metrics.get(metric).map(|v| (*v, &i.instance)));
            let (v, from) = found.ok_or_else(|| {
                StageError::Input(format!("{what}: no input reports metric `{metric}`"))
            })?;
            let kind = force.or(kind).unwrap_or(Direction::Estimate);
            let term = Term::new(v * group.scale, kind, format!("{metric} of {from}"))
                .map_err(|e| StageError::Input(e.to_string()))?;
            Ok(Resolved {
                term,
                certificate: None,
                accuracy: None,
            })
        }
        Source::Estimate { pair, estimator } => {
            from_estimates(estimates, what, pair, estimator, kind, force, group)
        }
    }
}

fn from_estimates(
    estimates: &[EstimateTable],
    what: &str,
    pair: &str,
    estimator: &str,
    kind: Option<Direction>,
    force: Option<Direction>,
    group: Group,
) -> Result<Resolved, StageError> {
    for (input, rows) in estimates {
        // A table without snapshots applies to every epoch group.
        let found = rows.iter().find(|r| {
            r.pair == pair
                && r.estimator == estimator
                && match (r.epoch, group.epoch) {
                    (Some(e), Some(want)) => e == want,
                    _ => true,
                }
        });
        if let Some(row) = found {
            let v = row.nats;
            if !v.is_finite() {
                return Err(StageError::Input(format!(
                    "{what}: `{pair}`/`{estimator}` in `{}` is NaN (the estimator could not \
                         run; see its error column)",
                    input.instance
                )));
            }
            let recorded = row
                .kind
                .as_deref()
                // A row without a recognised direction promises nothing, and no estimate
                // is exact.
                .and_then(Direction::parse)
                .filter(|d| *d != Direction::Exact)
                .unwrap_or(Direction::Estimate);
            let direction = match (force, kind) {
                (Some(f), _) => f,
                (None, None) => recorded,
                (None, Some(Direction::Estimate)) => Direction::Estimate,
                (None, Some(k)) if k == recorded => k,
                (None, Some(k)) => {
                    return Err(StageError::Params(format!(
                        "{what}: `kind: {}` on `{pair}`/`{estimator}`, which records `{}`: a \
                             direction cannot be forced onto an estimate (only `kind: estimate` \
                             may replace a recorded direction); use an estimator that bounds \
                             {what}: {}",
                        k.as_str(),
                        recorded.as_str(),
                        q_suggestion(what)
                    )))
                }
            };
            let accuracy = row.accuracy;
            let certificate = match &row.certificate {
                Some(c) => Some(
                    Certificate::from_json(c)
                        .map_err(|e| StageError::Input(format!("{what}: {e}")))?,
                ),
                None => None,
            }
            // A certificate counts only in the direction it certifies.
            .filter(|c| {
                matches!(
                    (c.side(), direction),
                    (CertifiedSide::Lower, Direction::LowerBound)
                        | (CertifiedSide::Upper, Direction::UpperBound)
                )
            });
            let term = Term::new(v, direction, format!("{estimator} ({pair})"))
                .map_err(|e| StageError::Input(e.to_string()))?;
            return Ok(Resolved {
                term,
                certificate,
                accuracy,
            });
        }
    }
    let at = group
        .epoch
        .map(|e| format!(" at epoch {e}"))
        .unwrap_or_default();
    Err(StageError::Input(format!(
        "{what}: no estimate_mi input has pair `{pair}` with estimator `{estimator}`{at}"
    )))
}

fn q_suggestion(symbol: &str) -> &'static str {
    cbound_bounds::terms::Quantity::ALL
        .iter()
        .find(|q| q.symbol() == symbol)
        .map(|q| q.suggestion())
        .unwrap_or("see `cbound stages estimate_mi`")
}
