//! Tables that join: every row of the result tables (training_curve, mi_estimates, bounds)
//! and of results.parquet carries `config_id` and the sweep values of its lineage, so the
//! bound rows of a replicated sweep join the train rows in DuckDB on `config_id` with one
//! row per configuration, as a user would write it.

mod common;

use common::Project;

#[test]
fn bound_rows_join_train_rows_on_config_id_one_row_per_configuration() {
    let p = Project::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    let pipeline = format!("{repo}/pipelines/quickstart.yaml");
    let run = p.cbound(&[
        "run",
        &pipeline,
        "--progress",
        "none",
        "--set",
        "stages.mixture.params.n=1600",
        "--set",
        "stages.test_mixture.params.n=2000",
        "--set",
        "stages.mixture.params.mc_samples=20000",
        "--set",
        "stages.test_mixture.params.mc_samples=20000",
        "--set",
        "stages.train.params.epochs=2",
        "--set",
        "stages.train.repeat=2",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("quickstart");
    let sql = format!(
        r#"
        with t as (select config_id, min(loss) as best_loss, count(distinct "sweep.replicate") as reps
                   from read_parquet('{d}/train/*/training_curve.parquet') group by config_id),
             b as (select config_id, max(certified_nats) as certified
                   from read_parquet('{d}/bound/*/bounds.parquet') where name = 'valid_conditional_independence'
                   group by config_id),
             r as (select count(distinct config_id) as configs
                   from read_parquet('{d}/results.parquet') where stage = 'train')
        select (select count(*) from t join b using (config_id)),
               (select min(reps) from t), (select configs from r),
               (select count(*) from read_parquet('{d}/bound/*/bounds.parquet') where config_id is null)
        "#,
        d = dir.display()
    );
    let out = common::py(
        "import duckdb, sys; print(*duckdb.sql(sys.argv[1]).fetchall()[0])",
        &[&sql],
    );
    // Two configurations (encoder output 8 and 32), two replicates each.
    assert_eq!(
        out.trim(),
        "2 2 2 0",
        "joined rows, replicates per configuration, configurations in results, rows without an id"
    );
}
