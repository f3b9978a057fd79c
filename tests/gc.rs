//! `cbound gc` on the real binary: after two runs of a sweep whose second run changed one
//! stage, collecting with `--keep-runs 1` removes exactly the first run and the objects only
//! it reached; the kept run is still whole (a rerun is all cached), and what was removed is
//! recomputed, not lost silently.

mod common;

use common::Project;

const PIPELINE: &str = "name: g\nseed: 1\nstages:\n  data:\n    kind: synthetic\n    params: {task: bivariate, n: 200}\n    matrix: {rho: [0.2, 0.6]}\n  mi:\n    kind: estimate_mi\n    inputs: data\n    params:\n      pairs: [{name: xy, x: {columns: x0}, y: {columns: y0}}]\n      estimators: [{name: ksg, k: K}]\n";

fn objects(p: &Project) -> usize {
    std::fs::read_dir(p.path().join("outputs/g/.cbound/objects"))
        .unwrap()
        .count()
}

#[test]
fn gc_keeps_what_kept_runs_reach_and_frees_the_rest() {
    let p = Project::new();
    p.write("p.yaml", &PIPELINE.replace("K", "3"));
    let first = p.cbound(&["run", "p.yaml", "--progress", "none"]);
    assert_eq!(first.code, 0, "{}", first.all());
    let first_run = p.latest("g");
    p.write("p.yaml", &PIPELINE.replace("K", "5"));
    let second = p.cbound(&["run", "p.yaml", "--progress", "none"]);
    assert_eq!(second.code, 0, "{}", second.all());
    // 2 data instances shared, 2 + 2 estimate instances.
    assert_eq!(objects(&p), 6);

    // Every run kept: nothing to remove.
    let all = p.cbound(&["gc", "outputs/g"]);
    assert_eq!(all.code, 0, "{}", all.all());
    assert!(
        all.stdout.contains("removed 0 run(s), 0 object(s)"),
        "{}",
        all.all()
    );

    let dry = p.cbound(&["gc", "outputs/g", "--keep-runs", "1", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        dry.stdout.contains("would remove 1 run(s), 2 object(s)"),
        "{}",
        dry.all()
    );
    assert_eq!(objects(&p), 6, "a dry run removed something");

    // Through the pipeline file, as a user who does not know where outputs live would.
    let real = p.cbound(&["gc", "p.yaml", "--keep-runs", "1"]);
    assert_eq!(real.code, 0, "{}", real.all());
    assert!(
        real.stdout.contains("removed 1 run(s), 2 object(s)"),
        "{}",
        real.all()
    );
    assert_eq!(objects(&p), 4);
    assert!(!first_run.exists());

    // The kept run is whole: rerunning it computes nothing.
    let rerun = p.cbound(&["run", "p.yaml", "--progress", "none"]);
    assert_eq!(rerun.code, 0, "{}", rerun.all());
    assert!(rerun.stderr.contains("0 ran, 4 cached"), "{}", rerun.all());
    // The removed configuration is recomputed when asked for again.
    p.write("p.yaml", &PIPELINE.replace("K", "3"));
    let back = p.cbound(&["run", "p.yaml", "--progress", "none"]);
    assert!(back.stderr.contains("2 ran, 2 cached"), "{}", back.all());
}

#[test]
fn gc_refuses_what_is_not_an_output_directory() {
    let p = Project::new();
    let run = p.cbound(&["gc", "."]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("has no .cbound/"), "{}", run.all());
    let run = p.cbound(&["gc", "nothing-here"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("neither a pipeline file nor an output directory"),
        "{}",
        run.all()
    );
}
