//! cbound-stages: the built-in stage kinds, one module each, and [`builtin`], the registry
//! that lists them.
//!
//! Each kind implements the engine's [`cbound_engine::stage::Stage`] and sees only its
//! parameters and its context. No kind imports another: what two kinds share (the views
//! spec, the trained model's files, the tables) lives a layer down, in `cbound-data` and
//! `cbound-tables`; tests/architecture.rs keeps it so. Adding a kind is one file here plus
//! one line in [`builtin`] (docs/adding-a-stage.md).

pub mod augment;
pub mod bound;
pub mod command;
pub mod embed;
pub mod estimate_mi;
pub mod load;
pub mod synthetic;
pub mod train;

use cbound_engine::stage::Registry;

/// Every built-in kind, in the order `cbound stages` lists them.
pub fn builtin() -> Registry {
    Registry::new()
        .with::<synthetic::Synthetic>()
        .with::<command::Command>()
        .with::<estimate_mi::EstimateMi>()
        .with::<bound::Bound>()
        .with::<load::Load>()
        .with::<augment::Augment>()
        .with::<train::Train>()
        .with::<embed::Embed>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_examples_are_valid_yaml() {
        let registry = builtin();
        let mut kinds = registry.kinds();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), registry.kinds().len());
        for stage in registry.iter() {
            let parsed = cbound_engine::config::yaml::parse(stage.example());
            assert!(parsed.is_ok(), "example of {} is not YAML", stage.kind());
            let schema = stage.params_schema();
            assert_eq!(schema["type"], "object", "{}", stage.kind());
        }
    }

    #[test]
    fn every_example_validates_as_a_pipeline() {
        // Each example's inputs become stages whose outputs are unknown before running (a
        // `command`), so the example is checked on its own: parameters, rules, placeholders.
        let registry = builtin();
        for stage in registry.iter() {
            let (root, _) = cbound_engine::config::yaml::parse(stage.example()).unwrap();
            let inputs: Vec<String> = root
                .as_map()
                .and_then(|m| m.first())
                .and_then(|e| e.value.get("inputs"))
                .map(|e| match &e.value.kind {
                    cbound_engine::config::yaml::NodeKind::Seq(items) => items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect(),
                    _ => e.value.as_str().map(str::to_string).into_iter().collect(),
                })
                .unwrap_or_default();
            let mut text = String::from("stages:\n");
            for input in &inputs {
                text.push_str(&format!(
                    "  {input}: {{kind: command, params: {{argv: [\"true\"]}}}}\n"
                ));
            }
            for line in stage.example().lines() {
                text.push_str(&format!("  {line}\n"));
            }
            let loaded = cbound_engine::config::load_str(
                &text,
                std::path::Path::new("example.yaml"),
                &[],
                &registry,
            );
            assert!(
                loaded.is_ok(),
                "example of {}: {loaded:?}\n{text}",
                stage.kind()
            );
        }
    }

    use cbound_mi::estimators::{kinds, Input};
    use cbound_mi::spec::{estimate_with, EstimatorSpec, Preprocess, Tools};
    use cbound_mi::Matrix;
    use rand::{Rng, SeedableRng};

    /// Every kind's example, as a whole pipeline would carry it: an `estimate_mi` stage whose
    /// pair has a `z`, so a kind that needs one validates too.
    #[test]
    fn every_example_validates_in_a_pipeline() {
        let registry = builtin();
        for kind in kinds() {
            let text = format!(
                "stages:\n  data:\n    kind: synthetic\n    params: {{task: bivariate, rho: 0.5, n: 100}}\n  mi:\n    kind: estimate_mi\n    inputs: data\n    params:\n      pairs: [{{name: xy, x: {{columns: x0}}, y: {{columns: y0}}, z: {{columns: y0}}}}]\n      estimators: [{}]\n",
                kind.example
            );
            let loaded = cbound_engine::config::load_str(
                &text,
                std::path::Path::new("p.yaml"),
                &[],
                &registry,
            );
            assert!(
                loaded.is_ok(),
                "example of {} does not validate: {:?}\n{text}",
                kind.name,
                loaded.err()
            );
            let value = cbound_engine::config::yaml::parse(kind.example)
                .unwrap()
                .0
                .to_json();
            let spec: EstimatorSpec = serde_json::from_value(value).unwrap();
            assert_eq!(spec.name(), kind.name, "the example names another kind");
        }
    }

    /// Each kind's declared direction is the one its estimate reports, on data it can read.
    #[test]
    fn declared_directions_match_the_estimates() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 400;
        let labels: Vec<f64> = (0..n).map(|i| (i % 3) as f64).collect();
        let noise_std = 0.5;
        let clean: Vec<f64> = (0..n)
            .map(|i| labels[i] * 0.3 + rng.random_range(0.0..0.1))
            .collect();
        let noisy: Vec<f64> = clean
            .iter()
            .map(|c| {
                // Box-Muller: a standard normal for the channel's noise.
                let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                c + noise_std * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
            })
            .collect();
        let col = |v: &[f64]| Matrix::new(v.len(), 1, v.to_vec()).unwrap();
        let (x, y, z) = (col(&clean), col(&noisy), col(&labels));
        let critic = cbound_critic::OnnxCritic {
            search: cbound_onnx::runtime::LibrarySearch {
                project_root: Some(
                    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        for text in [
            "{name: ksg}",
            "{name: ksg_cmi}",
            "{name: histogram}",
            "{name: gaussian}",
            "{name: gaussian_channel, noise_std: 0.5}",
            "{name: gaussian_channel, noise_std: 0.5, feature_range: [0.0, 1.0]}",
        ]
        .into_iter()
        .map(String::from)
        .chain(kinds().into_iter().map(|k| k.example.to_string()))
        {
            let value = cbound_engine::config::yaml::parse(&text)
                .unwrap()
                .0
                .to_json();
            let spec: EstimatorSpec = serde_json::from_value(value).unwrap();
            // Label kinds read the labels on both sides; the probe predicts them from x.
            let (a, b) = match (spec.inputs().x, spec.inputs().y) {
                (Input::Labels, Input::Labels) => (&z, &z),
                (_, Input::Labels) => (&x, &z),
                _ => (&x, &y),
            };
            let row = match estimate_with(
                &spec,
                a,
                b,
                Some(&z),
                &Preprocess::default(),
                None,
                1,
                Tools {
                    critic: Some(&critic),
                    ..Tools::default()
                },
            ) {
                Ok(row) => row,
                Err(e) => panic!("{text}: {e}"),
            };
            assert_eq!(row.kind, spec.direction(), "{text}: {row:?}");
            assert!(row.nats.is_finite(), "{text}: {row:?}");
        }
    }
}
