//! `cbound report`: reads a run directory, draws every plot its data supports, and writes
//! them with `report.html` into one folder.
//!
//! A report is most wanted for runs that went wrong, so nothing here fails for missing
//! data: an absent stage kind, a failed instance or an unreadable table becomes a note in
//! the report. Only a directory that is not a run at all, or an output folder that cannot
//! be written, is an error.

use crate::tables::{bounds, mi_estimates, training_curve};
use std::path::{Path, PathBuf};

use super::figures::{self, Figure, Tables};
use super::html::{self, Plot};
use super::images;
use super::load::{ReportError, Run, Table};
use crate::artifact::write_atomic;
use cbound_engine::stage::Registry;
use cbound_engine::userkind::{UserKinds, SNAPSHOT_FILE};

/// What a report produced.
#[derive(Debug)]
pub struct Written {
    /// The run directory actually read (`latest` resolved when given a pipeline folder).
    pub run_dir: PathBuf,
    pub out_dir: PathBuf,
    /// Every file written, plots first, report.html last.
    pub files: Vec<PathBuf>,
    /// Plots not drawn and tables not read, with the reason.
    pub notes: Vec<String>,
}

/// Reads the tables the plots use from every finished instance that wrote one, whatever
/// its stage kind (a `command` may write `mi_estimates.parquet` too).
fn read_tables(run: &Run, kinds: &Registry, notes: &mut Vec<String>) -> Tables {
    let mut tables = Tables::default();
    for (n, inst) in run.instances.iter().enumerate() {
        let declared = kinds.get(&inst.kind).and_then(|k| k.writes());
        let written = |file: &str| match declared {
            Some(files) => files.contains(&file),
            None => inst.dir.join(file).is_file(),
        };
        let (file, into) = if written(training_curve::FILE) {
            (training_curve::FILE, &mut tables.curves)
        } else if written(mi_estimates::FILE) {
            (mi_estimates::FILE, &mut tables.estimates)
        } else if written(bounds::FILE) {
            (bounds::FILE, &mut tables.bounds)
        } else {
            continue;
        };
        if !inst.has_result() {
            notes.push(format!(
                "{} is {}: left out of the plots",
                inst.instance, inst.status
            ));
            continue;
        }
        let path = inst.dir.join(file);
        match Table::read(&path) {
            Ok(t) => into.push((n, t)),
            Err(e) => notes.push(format!("{}: left out of the plots: {e}", inst.instance)),
        }
    }
    tables
}

/// All figures the run supports, and a note for each one it does not.
pub fn figures(run: &Run, tables: &Tables) -> (Vec<Figure>, Vec<String>) {
    let mut figs = vec![];
    let mut notes = vec![];
    for f in [
        figures::training_curves(run, tables),
        figures::mi_and_bounds(run, tables),
        figures::bound_vs_accuracy(run),
        figures::estimate_vs_truth(run, tables),
    ] {
        match f {
            Ok(f) => figs.push(f),
            Err(n) => notes.push(n),
        }
    }
    let (ablations, ablation_notes) = figures::ablations(run, tables);
    figs.extend(ablations);
    notes.extend(ablation_notes);
    (figs, notes)
}

/// The run's kinds: the built-in ones and those declared in YAML that it recorded.
fn kinds_of(run: &Run, notes: &mut Vec<String>) -> Registry {
    UserKinds::read_snapshot(&run.dir.join(SNAPSHOT_FILE))
        .and_then(|k| k.registry(cbound_stages::builtin()))
        .unwrap_or_else(|e| {
            notes.push(format!("kinds declared in YAML left out: {e}"));
            cbound_stages::builtin()
        })
}

/// The figures a report of `run_dir` would draw, as data, and the notes on those it
/// would not: what tests (and other front ends) check without looking at pixels.
pub fn figures_of(run_dir: &Path) -> Result<(Vec<Figure>, Vec<String>), ReportError> {
    let run = Run::open(run_dir)?;
    let mut notes = vec![];
    let kinds = kinds_of(&run, &mut notes);
    let tables = read_tables(&run, &kinds, &mut notes);
    let (figs, more) = figures(&run, &tables);
    notes.extend(more);
    Ok((figs, notes))
}

pub fn generate(run_dir: &Path, out: Option<&Path>) -> Result<Written, ReportError> {
    let run = Run::open(run_dir)?;
    let out_dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| run.dir.join("report"));
    std::fs::create_dir_all(&out_dir).map_err(|source| ReportError::Io {
        path: out_dir.clone(),
        source,
    })?;
    let mut notes = vec![];
    let kinds = kinds_of(&run, &mut notes);
    let tables = read_tables(&run, &kinds, &mut notes);
    let (figs, fig_notes) = figures(&run, &tables);
    notes.extend(fig_notes);
    let mut files = vec![];
    let mut plots = vec![];
    for fig in &figs {
        let svg = super::plots::svg(fig)?;
        let svg_path = out_dir.join(format!("{}.svg", fig.name));
        write_atomic(&svg_path, svg.as_bytes())?;
        let png_path = out_dir.join(format!("{}.png", fig.name));
        super::plots::png(fig, &png_path)?;
        files.push(png_path);
        files.push(svg_path);
        plots.push(Plot {
            name: fig.name.clone(),
            title: fig.title.clone(),
            caption: fig.caption.clone(),
            svg,
        });
    }
    let images = images::declared_images(&run, &kinds, &mut notes);
    let page = html::render(&run, &plots, &images, &notes, &tables.bounds);
    let html_path = out_dir.join("report.html");
    write_atomic(&html_path, page.as_bytes())?;
    files.push(html_path);
    Ok(Written {
        run_dir: run.dir,
        out_dir,
        files,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};

    use super::*;
    use crate::artifact::write_parquet;

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(cols).unwrap()
    }

    fn text(v: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    /// The lead's planned layout: estimates and bounds of encoder snapshots carry an `epoch`
    /// (null on the final rows). Such a run gets curves over epochs.
    #[test]
    fn tables_with_epochs_get_a_plot_over_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        write_parquet(
            &run.join("results.parquet"),
            &batch(vec![
                ("stage", text(&["estimate", "bound"])),
                ("instance", text(&["estimate", "bound"])),
                ("kind", text(&["estimate_mi", "bound"])),
                ("status", text(&["ok", "ok"])),
                (
                    "metric.probe_accuracy",
                    Arc::new(Float64Array::from(vec![None, Some(0.8)])),
                ),
                (
                    "metric.accuracy_lower_bound",
                    Arc::new(Float64Array::from(vec![None, Some(0.6)])),
                ),
            ]),
        )
        .unwrap();
        let est = run.join("estimate/estimate");
        std::fs::create_dir_all(&est).unwrap();
        write_parquet(
            &est.join("mi_estimates.parquet"),
            &batch(vec![
                (
                    "epoch",
                    Arc::new(Int64Array::from(vec![Some(0), Some(2), None])),
                ),
                ("pair", text(&["uy", "uy", "uy"])),
                ("estimator", text(&["infonce", "infonce", "infonce"])),
                ("nats", Arc::new(Float64Array::from(vec![0.3, 0.9, 1.0]))),
            ]),
        )
        .unwrap();
        let bound = run.join("bound/bound");
        std::fs::create_dir_all(&bound).unwrap();
        write_parquet(
            &bound.join("bounds.parquet"),
            &batch(vec![
                ("epoch", Arc::new(Int64Array::from(vec![0, 2]))),
                ("name", text(&["valid_general", "valid_general"])),
                ("status", text(&["valid", "valid"])),
                ("side", text(&["lower", "lower"])),
                ("lhs", text(&["I(U;Z)", "I(U;Z)"])),
                ("value_nats", Arc::new(Float64Array::from(vec![0.1, 0.5]))),
            ]),
        )
        .unwrap();
        let w = generate(run, None).unwrap();
        let names: Vec<String> = w
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"mi_bounds_epochs.svg".into()), "{names:?}");
        assert!(names.contains(&"bound_vs_accuracy.png".into()), "{names:?}");
        assert!(!names.contains(&"mi_bounds_final.svg".into()), "{names:?}");
        assert!(w.notes.iter().any(|n| n.contains("no train stage")));
        // The table shows the final row of each bound only.
        let html = std::fs::read_to_string(run.join("report/report.html")).unwrap();
        assert_eq!(html.matches("<td>valid_general</td>").count(), 1, "{html}");
    }
}
