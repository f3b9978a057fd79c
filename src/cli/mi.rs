//! `cbound mi`: estimate mutual information between columns of any Parquet or CSV file,
//! outside a pipeline, with the same estimators and options as the `estimate_mi` stage.

use std::path::PathBuf;

use crate::config::yaml::PathSeg;
use crate::data::table::Table;
use crate::error::Error;
use crate::mi::spec::{estimate_with, EstimatorSpec, IntervalSpec, Preprocess, Tools};
use crate::mi::Matrix;
use cbound_tables::estimates::{estimates_table, PairEstimate};

#[derive(Debug, clap::Args)]
pub struct MiArgs {
    /// A .parquet or .csv file.
    pub file: PathBuf,
    /// Columns of X: names, globs (`x*`) or a list column, comma-separated.
    #[arg(long)]
    pub x: String,
    /// Columns of Y.
    #[arg(long)]
    pub y: String,
    /// Conditioning columns Z (for ksg_cmi).
    #[arg(long)]
    pub z: Option<String>,
    /// Read Y (and Z) from this file instead (rows must correspond).
    #[arg(long)]
    pub y_file: Option<PathBuf>,
    /// Estimators: `ksg`, `ksg:k=5,algorithm=2`, `ksg_cmi`, `histogram:bins=16`, `gaussian`,
    /// `discrete`, `infonce_cosine:temperature=0.1,batch=256` (the fixed cosine critic, for
    /// embeddings; `infonce` is its old name), trained critics `infonce_critic`, `nwj_critic`,
    /// `mine_critic` (e.g. `infonce_critic:critic=concat,hidden=[64,64],steps=2000`), `probe`,
    /// `knn:k=200,temperature=0.1` (the kNN monitor's classifier on embeddings; labels in Y)
    /// (all kinds and settings: `cbound estimators`). Repeatable.
    #[arg(long = "estimator", short = 'e', default_value = "ksg")]
    pub estimators: Vec<String>,
    /// Do not standardise continuous columns.
    #[arg(long)]
    pub no_standardise: bool,
    /// Do not add the tie-breaking jitter before k-NN estimators.
    #[arg(long)]
    pub no_jitter: bool,
    /// Apply asinh to continuous columns first.
    #[arg(long)]
    pub asinh: bool,
    /// Estimate on a seeded subsample of at most this many rows.
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Interval from this many half-samples (0: none): the estimate plus or minus a Student-t
    /// quantile times the half-samples' spread (delete-d jackknife). It covers the
    /// estimator's expected value at this sample size, not the true MI (a biased estimator's
    /// interval can miss the truth entirely); each replicate is preprocessed on its own rows.
    #[arg(long, default_value_t = 0)]
    pub interval_reps: usize,
    /// Interval coverage.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the estimates as Parquet (same columns as the stage's mi_estimates.parquet).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With a file of several encoder snapshots (an `embed` stage with `snapshots: true`,
    /// whose rows have an `epoch`), the snapshot to estimate on: required there, since
    /// pooling the rows of different encoders estimates nothing.
    #[arg(long)]
    pub epoch: Option<i64>,
}

fn matrix(table: &Table, spec: &str) -> Result<Matrix, Error> {
    let sel = table
        .select(spec)
        .map_err(|e| Error::Usage(e.to_string()))?;
    Matrix::new(sel.rows, sel.cols, sel.data).map_err(|e| Error::Internal(e.to_string()))
}

pub fn mi(args: MiArgs) -> Result<(), Error> {
    let specs = args
        .estimators
        .iter()
        .map(|s| EstimatorSpec::parse_cli(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Usage)?;
    let pre = Preprocess {
        standardise: !args.no_standardise,
        jitter: !args.no_jitter,
        asinh: args.asinh,
        max_rows: args.max_rows,
    };
    let interval = (args.interval_reps > 0).then_some(IntervalSpec {
        reps: args.interval_reps,
        level: args.level,
    });
    // The same rules `validate` applies to a pipeline's `preprocess` and `interval`, said in
    // terms of the flags, before any data is read.
    let flag_problems = pre
        .check()
        .into_iter()
        .chain(
            interval
                .as_ref()
                .map(IntervalSpec::check)
                .unwrap_or_default(),
        )
        .map(|e| {
            let key = match e.path.last() {
                Some(PathSeg::Key(k)) => k.as_str(),
                _ => "",
            };
            let flag = match key {
                "reps" => "--interval-reps",
                "level" => "--level",
                "max_rows" => "--max-rows",
                other => other,
            };
            format!("{flag}: {}", e.message)
        })
        .collect::<Vec<_>>();
    if !flag_problems.is_empty() {
        return Err(Error::Usage(flag_problems.join("; ")));
    }
    let table = Table::read(&args.file).map_err(|e| Error::Usage(e.to_string()))?;
    let other = match &args.y_file {
        Some(p) => Some(Table::read(p).map_err(|e| Error::Usage(e.to_string()))?),
        None => None,
    };
    let ytable = other.as_ref().unwrap_or(&table);
    let rows_x = snapshot_rows(&table, &args.file, args.epoch)?;
    let rows_y = match &args.y_file {
        Some(path) => snapshot_rows(ytable, path, args.epoch)?,
        None => rows_x.clone(),
    };
    let pick = |m: Matrix, rows: &Option<Vec<usize>>| match rows {
        Some(r) => m.select_rows(r).map_err(|e| Error::Internal(e.to_string())),
        None => Ok(m),
    };
    let x = pick(matrix(&table, &args.x)?, &rows_x)?;
    let y = pick(matrix(ytable, &args.y)?, &rows_y)?;
    let z = args
        .z
        .as_deref()
        .map(|z| matrix(ytable, z).and_then(|m| pick(m, &rows_y)))
        .transpose()?;
    for warning in input_warnings(&specs, &x, &y, &args.x, &args.y) {
        eprintln!("warning: {warning}");
    }
    let mut rows = Vec::new();
    // Trained-critic estimators fit their critic on ONNX Runtime, one thread, loaded only
    // when such an estimator runs.
    let critic = cbound_critic::OnnxCritic::default();
    let tools = Tools {
        critic: Some(&critic),
        ..Tools::default()
    };
    for spec in &specs {
        let result = estimate_with(
            spec,
            &x,
            &y,
            z.as_ref(),
            &pre,
            interval.as_ref(),
            args.seed,
            tools,
        )
        .map_err(|e| e.to_string());
        rows.push(PairEstimate {
            epoch: None,
            pair: "cli".to_string(),
            estimator: spec.name().to_string(),
            result,
        });
    }
    if !args.json {
        println!(
            "{:<16} {:>9} {:>9} {:>21} {:<12} {:>7} {:>9} {:>8}",
            "estimator", "nats", "bits", "interval (nats)", "kind", "n", "dims", "seconds"
        );
    }
    let mut failed = 0;
    for row in &rows {
        let name = &row.estimator;
        match &row.result {
            Ok(r) if args.json => println!("{}", serde_json::to_string(r).unwrap_or_default()),
            Ok(r) => {
                let ci = match (r.ci_low, r.ci_high) {
                    (Some(lo), Some(hi)) => format!("[{lo:.4}, {hi:.4}]"),
                    _ => "-".into(),
                };
                println!(
                    "{:<16} {:>9.4} {:>9.4} {:>21} {:<12} {:>7} {:>9} {:>8.3}",
                    r.estimator,
                    r.nats,
                    r.nats / std::f64::consts::LN_2,
                    ci,
                    r.kind.as_str(),
                    r.n,
                    format!("{}x{}", r.dim_x, r.dim_y),
                    r.seconds
                );
                if let Some(note) = &r.note {
                    println!("                 {note}");
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    println!("{}", serde_json::json!({"estimator": name, "error": e}));
                } else {
                    println!("{name:<16} {:>9} error: {e}", "NaN");
                }
            }
        }
    }
    if let Some(out) = &args.output {
        let batch = estimates_table(&rows).map_err(|e| Error::Internal(e.to_string()))?;
        crate::artifact::write_parquet(out, &batch)?;
    }
    // Partial success is success: the estimates that ran are printed (and written), and the
    // failing rows carry their error. Only when nothing could be estimated is it an error.
    if failed == rows.len() {
        Err(Error::Usage(format!(
            "{failed} estimator(s) could not run on this input (see above)"
        )))
    } else {
        if failed > 0 {
            eprintln!(
                "warning: {failed} of {} estimators could not run on this input (their rows carry the error)",
                rows.len()
            );
        }
        Ok(())
    }
}

/// The rows of one encoder snapshot, for a table with an `epoch` column holding more than
/// one epoch (None: use every row). Several epochs and no `--epoch` is an error listing
/// them; so is an `--epoch` the file does not have.
fn snapshot_rows(
    table: &Table,
    path: &std::path::Path,
    epoch: Option<i64>,
) -> Result<Option<Vec<usize>>, Error> {
    if !table.column_names().iter().any(|c| c == "epoch") {
        return match epoch {
            Some(e) => Err(Error::Usage(format!(
                "--epoch {e}: {} has no `epoch` column (it holds one encoder's rows)",
                path.display()
            ))),
            None => Ok(None),
        };
    }
    let column = table
        .select("epoch")
        .map_err(|e| Error::Usage(e.to_string()))?
        .data;
    let mut epochs: Vec<i64> = column.iter().map(|&v| v as i64).collect();
    epochs.sort_unstable();
    epochs.dedup();
    let listed = epochs
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match epoch {
        None if epochs.len() > 1 => Err(Error::Usage(format!(
            "{} holds the rows of {} encoder snapshots (epochs {listed}); choose one with --epoch E (pooling them estimates nothing)",
            path.display(),
            epochs.len()
        ))),
        None => Ok(None),
        Some(e) if !epochs.contains(&e) => Err(Error::Usage(format!(
            "--epoch {e}: {} has epochs {listed}",
            path.display()
        ))),
        Some(e) => Ok(Some(
            column
                .iter()
                .enumerate()
                .filter(|(_, &v)| v as i64 == e)
                .map(|(i, _)| i)
                .collect(),
        )),
    }
}

/// Inputs that make an estimate meaningless rather than impossible, said before estimating:
/// X and Y the same columns (I(X;X) is the entropy of X: infinite for continuous data, and a
/// k-NN estimate of it only measures the sample size), and label-reading estimators on
/// columns that are not labels (every distinct real value becomes its own class, so the
/// "MI" approaches log N).
fn input_warnings(
    specs: &[EstimatorSpec],
    x: &Matrix,
    y: &Matrix,
    x_cols: &str,
    y_cols: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if x.rows() == y.rows() && x.cols() == y.cols() && x.as_slice() == y.as_slice() {
        out.push(format!(
            "--x `{x_cols}` and --y `{y_cols}` hold the same values: I(X;X) is the entropy of X, infinite for continuous data; estimators report a number that grows with the sample size, not a mutual information"
        ));
    }
    let not_labels = |m: &Matrix| {
        let distinct: std::collections::HashSet<u64> =
            m.as_slice().iter().map(|v| v.to_bits()).collect();
        let fractional = m.as_slice().iter().any(|v| v.fract() != 0.0);
        fractional || distinct.len() * 2 > m.rows()
    };
    for spec in specs {
        let inputs = spec.inputs();
        for (side, input, m) in [("x", inputs.x, x), ("y", inputs.y, y)] {
            if input == cbound_mi::Input::Labels && not_labels(m) {
                out.push(format!(
                    "`{}` reads {side} as class labels, but {side} looks continuous (non-integer values, or more distinct values than half the rows): every distinct value becomes a class, so the estimate approaches log N; discretise {side} first or use a continuous estimator (ksg, gaussian)",
                    spec.name()
                ));
            }
        }
    }
    out
}
