//! Every `--set` example in the command line's help, run as written against a shipped
//! pipeline: an example that fails is a bug in the help (as `stages.train.params.lr` once
//! was: the learning rate is under `optimizer`).

mod common;

use common::Project;

/// The `--set ...` examples in a help text: the backquoted text after each `--set `.
fn set_examples(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in help.split('`').skip(1).step_by(2) {
        if let Some(arg) = piece.strip_prefix("--set ") {
            out.push(arg.trim_matches('\'').to_string());
        }
    }
    out
}

#[test]
fn every_set_example_in_the_help_validates_against_the_ablation() {
    let p = Project::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    let pipeline = format!("{repo}/pipelines/ablation.yaml");
    for command in ["run", "plan", "validate", "dag"] {
        let help = p.cbound(&[command, "--help"]);
        assert_eq!(help.code, 0, "{}", help.all());
        let examples = set_examples(&help.stdout);
        if command != "validate" {
            assert!(examples.len() >= 4, "{command} --help: {examples:?}");
        }
        for example in examples {
            // `+vars.width=64` adds a variable nothing uses: refused as unused, which is
            // what the help promises `+` is for, so it is checked with a use of it.
            let mut args = vec![
                "validate".to_string(),
                pipeline.clone(),
                "--set".into(),
                example.clone(),
            ];
            if example.starts_with("+vars.") {
                args.extend([
                    "--set".into(),
                    "stages.train.params.batch_size=${width}".into(),
                ]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = p.cbound(&args);
            assert_eq!(
                run.code,
                0,
                "{command} --help example `--set {example}`:\n{}",
                run.all()
            );
        }
    }
}
