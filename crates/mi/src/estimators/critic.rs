//! `infonce_critic`, `nwj_critic`, `mine_critic`: a small MLP critic trained on a training
//! split of the pair and scored on the held-out rest ([`crate::critic`]). The training is done
//! by the [`crate::critic::CriticTrainer`] the caller passes in the [`Sample`]; without one
//! the run is an error saying so.

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample};
use crate::certificate::Certificate;
use crate::confidence::BoundedSample;
use crate::critic::{held_out_batches, split, CriticArch, CriticConfig, Objective};
use crate::{Direction, MiError};
use cbound_core::params::ParamError;

/// Settings of the trained-critic estimators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CriticParams {
    /// `separable`: T(x, y) = f(x) . g(y), one MLP per side; `concat`: T(x, y) = h([x, y]), one
    /// MLP on the concatenated pair (N^2 rows per batch: slower).
    pub critic: CriticArch,
    /// Hidden layer widths of each MLP (ReLU between layers); may be empty (linear critic).
    pub hidden: Vec<usize>,
    /// Output width of f and g (separable critic only).
    pub embedding: usize,
    /// Adam steps on training batches.
    pub steps: usize,
    /// N, pairs per batch in training and in held-out scoring: one positive and N - 1
    /// negatives per row; InfoNCE's cap is log N.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Share of the rows that train the critic; the rest score it (in disjoint batches of N).
    pub train_fraction: f64,
    /// c > 0: squash the critic's scores into (-c, c) with c tanh(T / c). Each held-out
    /// InfoNCE batch value then lies in [-2c, log N], so `infonce_critic` records a certificate
    /// and `bound` can certify it (empirical Bernstein); the bound is tighter for small c, the
    /// critic weaker (it can express at most 2c nats of contrast per pair). Unset: unbounded
    /// scores, no certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_bound: Option<f64>,
}

impl Default for CriticParams {
    fn default() -> CriticParams {
        CriticParams {
            critic: CriticArch::Separable,
            hidden: vec![64, 64],
            embedding: 32,
            steps: 1000,
            batch: 128,
            lr: 1e-3,
            train_fraction: 0.5,
            score_bound: None,
        }
    }
}

/// What distinguishes the three kinds: the objective and the words that go with it.
pub trait CriticObjective: Send + Sync + 'static {
    const OBJECTIVE: Objective;
    const NAME: &'static str;
    const SUMMARY: &'static str;
    const EXAMPLE: &'static str;
}

pub struct InfoNceObjective;
impl CriticObjective for InfoNceObjective {
    const OBJECTIVE: Objective = Objective::Infonce;
    const NAME: &'static str = "infonce_critic";
    const SUMMARY: &'static str = "InfoNCE with a trained MLP critic (separable or concatenated), scored on held-out batches: a lower bound in expectation, capped at log N.";
    const EXAMPLE: &'static str =
        "{name: infonce_critic, critic: separable, hidden: [32], steps: 200, batch: 64}";
}

pub struct NwjObjective;
impl CriticObjective for NwjObjective {
    const OBJECTIVE: Objective = Objective::Nwj;
    const NAME: &'static str = "nwj_critic";
    const SUMMARY: &'static str = "NWJ (f-divergence) bound with a trained MLP critic, scored on held-out batches: a lower bound in expectation, no cap, high variance.";
    const EXAMPLE: &'static str =
        "{name: nwj_critic, critic: separable, hidden: [32], steps: 200, batch: 64}";
}

pub struct MineObjective;
impl CriticObjective for MineObjective {
    const OBJECTIVE: Objective = Objective::Mine;
    const NAME: &'static str = "mine_critic";
    const SUMMARY: &'static str = "MINE: the Donsker-Varadhan objective with a trained MLP critic, scored on held-out batches: an estimate (biased upward by the log of a sample mean), no cap.";
    const EXAMPLE: &'static str =
        "{name: mine_critic, critic: concat, hidden: [32], steps: 200, batch: 32}";
}

/// Whether `name` is one of the trained-critic kinds (which need a [`crate::critic::CriticTrainer`] and,
/// through cbound-critic, ONNX Runtime).
pub fn is_critic(name: &str) -> bool {
    [
        InfoNceObjective::NAME,
        NwjObjective::NAME,
        MineObjective::NAME,
    ]
    .contains(&name)
}

/// One trained-critic kind per objective.
pub struct CriticKind<O>(PhantomData<O>);

pub type InfoNceCriticKind = CriticKind<InfoNceObjective>;
pub type NwjCriticKind = CriticKind<NwjObjective>;
pub type MineCriticKind = CriticKind<MineObjective>;

impl<O: CriticObjective> EstimatorKind for CriticKind<O> {
    type Params = CriticParams;
    const NAME: &'static str = O::NAME;
    const SUMMARY: &'static str = O::SUMMARY;
    const EXAMPLE: &'static str = O::EXAMPLE;

    fn inputs(_: &CriticParams) -> Inputs {
        Inputs {
            x: Input::Features,
            y: Input::Features,
            z: Conditioning::Unused,
        }
    }

    fn direction(_: &CriticParams) -> Direction {
        O::OBJECTIVE.direction()
    }

    fn check(p: &CriticParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        rules::at_least(
            &mut out,
            "batch",
            p.batch,
            2,
            " (one positive and at least one negative)",
        );
        rules::at_least(&mut out, "steps", p.steps, 1, "");
        rules::at_least(&mut out, "embedding", p.embedding, 1, "");
        rules::positive(&mut out, "lr", p.lr);
        rules::open_unit(&mut out, "train_fraction", p.train_fraction);
        if let Some(c) = p.score_bound {
            rules::positive(&mut out, "score_bound", c);
        }
        for (i, &w) in p.hidden.iter().enumerate() {
            if w == 0 {
                out.push(ParamError::at(
                    &["hidden"],
                    format!("hidden[{i}] is 0: every hidden layer needs at least one unit"),
                ));
            }
        }
        out
    }

    fn run(p: &CriticParams, s: &Sample) -> Result<Outcome, MiError> {
        run_critic(O::NAME, O::OBJECTIVE, p, s)
    }

    fn resampling(_: &CriticParams, _seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Unsupported(
            "a critic is trained per estimate; the note gives the spread of the held-out batch values",
        ))
    }
}

fn run_critic(
    name: &'static str,
    objective: Objective,
    p: &CriticParams,
    s: &Sample,
) -> Result<Outcome, MiError> {
    let n = crate::check_pair(s.x, s.y)?;
    let trainer = s
        .critic
        .ok_or(MiError::NoCriticTrainer { estimator: name })?;
    // A split the data gives replaces the seeded one (and is reported, for the audit table).
    let (train, held_out) = match s.split {
        Some(h) => (h.train.clone(), h.test.clone()),
        None => split(n, p.train_fraction, s.seed),
    };
    let source = match s.split {
        Some(_) => "the split given by the data".to_string(),
        None => format!("train_fraction {}", p.train_fraction),
    };
    for (part, rows) in [
        ("training split", train.len()),
        ("held-out split", held_out.len()),
    ] {
        if rows < p.batch {
            return Err(MiError::TooFewSamples {
                context: format!("{name}'s {part} ({source}) with batch N = {}", p.batch),
                needed: p.batch,
                got: rows,
            });
        }
    }
    let cfg = CriticConfig {
        objective,
        arch: p.critic,
        hidden: p.hidden.clone(),
        embedding: p.embedding,
        steps: p.steps,
        batch: p.batch,
        lr: p.lr,
        score_bound: p.score_bound,
        seed: s.seed,
    };
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| MiError::Critic {
        estimator: name,
        detail: e.to_string(),
    };
    let mut critic = trainer
        .train(&cfg, &s.x.select_rows(&train)?, &s.y.select_rows(&train)?)
        .map_err(failed)?;
    let mut values = Vec::new();
    for idx in held_out_batches(&held_out, p.batch, s.seed) {
        let mut scores = critic
            .scores(&s.x.select_rows(&idx)?, &s.y.select_rows(&idx)?)
            .map_err(failed)?;
        if let Some(c) = p.score_bound {
            // The certificate's range rests on this: check it rather than trust the trainer.
            let limit = c * (1.0 + 1e-6);
            if let Some(v) = scores.as_slice().iter().find(|v| v.abs() > limit) {
                return Err(MiError::Critic {
                    estimator: name,
                    detail: format!(
                        "the trainer returned a score {v} outside score_bound (-{c}, {c})"
                    ),
                });
            }
            // f32 rounding of c tanh(T / c) may land a hair beyond c: clamp, so every batch
            // value lies in the certificate's range exactly.
            scores = scores.map(|v| v.clamp(-c, c));
        }
        let v = objective.value(&scores).map_err(|e| MiError::Critic {
            estimator: name,
            detail: format!(
                "held-out scores: {e} (the critic diverged: lower `lr` or use fewer `steps`)"
            ),
        })?;
        values.push(v);
    }
    let k = values.len() as f64;
    let nats = values.iter().sum::<f64>() / k;
    let sd = if values.len() > 1 {
        (values.iter().map(|v| (v - nats).powi(2)).sum::<f64>() / (k - 1.0)).sqrt()
    } else {
        f64::NAN
    };
    let cap = objective.cap(p.batch);
    let promise = match objective {
        Objective::Infonce => format!(
            "a lower bound in expectation, capped at log N = {:.4}",
            cap.unwrap_or(f64::NAN)
        ),
        Objective::Nwj => "a lower bound in expectation, no cap".to_string(),
        Objective::Mine => {
            "an estimate: the log of a sample mean biases it upward; no cap".to_string()
        }
    };
    let certificate = match (objective, p.score_bound, cap) {
        (Objective::Infonce, Some(c), Some(log_n)) if values.len() >= 2 => {
            Some(Certificate::Infonce {
                batches: BoundedSample::from_values(&values, -2.0 * c, log_n)?,
                batch: p.batch,
                temperature: 1.0 / c,
            })
        }
        _ => None,
    };
    let certified = match (&certificate, p.score_bound) {
        (Some(_), Some(c)) => format!(
            "certificate: {} batch values in [-2c, log N], scores bounded by c = {c}",
            values.len()
        ),
        (None, Some(_)) if objective == Objective::Infonce => {
            "no certificate (fewer than 2 held-out batches)".to_string()
        }
        (None, Some(_)) => format!("no certificate ({} has none yet)", objective.name()),
        _ => "no certificate (unbounded critic: set score_bound for one)".to_string(),
    };
    let arch = match p.critic {
        CriticArch::Separable => "separable f(x).g(y)",
        CriticArch::Concat => "concatenated h([x, y])",
    };
    Ok(Outcome {
        nats,
        direction: objective.direction(),
        note: Some(format!(
            "{} with a {arch} MLP critic (hidden {:?}) trained {} steps on {} rows; mean of {} held-out batches of N = {} (batch sd {sd:.4}): {promise}; {}; {certified}",
            objective.name(),
            p.hidden,
            p.steps,
            train.len(),
            values.len(),
            p.batch,
            critic.summary()
        )),
        accuracy: None,
        cap_nats: cap,
        certificate,
        held_out: s.split.cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::critic::{CriticTrainer, TrainedCritic};
    use crate::spec::{estimate, estimate_with, EstimatorSpec, Preprocess, Tools};
    use crate::Matrix;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    /// The true log density ratio of a standard bivariate normal with correlation rho (plus a
    /// shift): what a perfectly trained critic converges to. Lets the split and the scoring be
    /// checked against closed forms without any training.
    #[derive(Debug)]
    struct Oracle {
        rho: f64,
        shift: f64,
    }

    impl CriticTrainer for Oracle {
        fn train(
            &self,
            cfg: &CriticConfig,
            x: &Matrix,
            y: &Matrix,
        ) -> Result<Box<dyn TrainedCritic>, BoxError> {
            assert_eq!(x.rows(), y.rows());
            assert!(cfg.batch <= x.rows());
            Ok(Box::new(OracleCritic {
                rho: self.rho,
                shift: self.shift,
            }))
        }
    }

    struct OracleCritic {
        rho: f64,
        shift: f64,
    }

    impl TrainedCritic for OracleCritic {
        fn scores(&mut self, x: &Matrix, y: &Matrix) -> Result<Matrix, BoxError> {
            let (n, r) = (x.rows(), self.rho);
            let mut out = Vec::with_capacity(n * n);
            for i in 0..n {
                for j in 0..n {
                    let (a, b) = (x.row(i)[0], y.row(j)[0]);
                    let q = (a * a - 2.0 * r * a * b + b * b) / (1.0 - r * r);
                    out.push(
                        -0.5 * (1.0 - r * r).ln() - 0.5 * q + 0.5 * (a * a + b * b) + self.shift,
                    );
                }
            }
            Ok(Matrix::new(n, n, out)?)
        }
        fn summary(&self) -> String {
            "oracle critic".into()
        }
    }

    fn gaussian_pair(n: usize, rho: f64, seed: u64) -> (Matrix, Matrix) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let a: f64 = StandardNormal.sample(&mut rng);
            let e: f64 = StandardNormal.sample(&mut rng);
            x.push(a);
            y.push(rho * a + (1.0 - rho * rho).sqrt() * e);
        }
        (Matrix::from_column(&x), Matrix::from_column(&y))
    }

    fn spec(name: &str, batch: usize) -> EstimatorSpec {
        EstimatorSpec::parse_cli(&format!("{name}:batch={batch}")).unwrap()
    }

    #[test]
    fn without_a_trainer_the_error_says_where_to_run_it() {
        let (x, y) = gaussian_pair(200, 0.5, 1);
        let err = estimate(
            &spec("infonce_critic", 32),
            &x,
            &y,
            None,
            &Preprocess::default(),
            None,
            0,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("infonce_critic trains a neural critic"),
            "{text}"
        );
        assert!(text.contains("cbound mi"), "{text}");
    }

    #[test]
    fn too_few_rows_for_a_held_out_batch_is_an_error() {
        let (x, y) = gaussian_pair(100, 0.5, 1);
        let oracle = Oracle {
            rho: 0.5,
            shift: 0.0,
        };
        let tools = Tools {
            critic: Some(&oracle),
            ..Tools::default()
        };
        let err = estimate_with(
            &spec("nwj_critic", 64),
            &x,
            &y,
            None,
            &Preprocess::default(),
            None,
            0,
            tools,
        )
        .unwrap_err();
        assert!(err.to_string().contains("batch N = 64"), "{err}");
    }

    /// With the true density ratio as critic: InfoNCE near the truth at large N and far below it
    /// (and below log N) at small N,
    /// NWJ (critic 1 + log ratio, its optimum) and DV (any shift) on it within noise.
    #[test]
    fn an_oracle_critic_gives_the_closed_form_answers() {
        let rho: f64 = 0.8;
        let truth = -0.5 * (1.0 - rho * rho).ln();
        let (x, y) = gaussian_pair(8192, rho, 7);
        let pre = Preprocess {
            standardise: false,
            ..Preprocess::default()
        };
        let run = |name: &str, batch: usize, shift: f64| {
            let oracle = Oracle { rho, shift };
            estimate_with(
                &spec(name, batch),
                &x,
                &y,
                None,
                &pre,
                None,
                3,
                Tools {
                    critic: Some(&oracle),
                    ..Tools::default()
                },
            )
            .unwrap()
        };
        let nce = run("infonce_critic", 256, 0.0);
        assert_eq!(nce.kind, Direction::LowerBound);
        assert_eq!(nce.cap_nats, Some(256f64.ln()));
        // Below the truth in expectation: with N = 256 the gap is far below the noise of 16
        // held-out batches, so only "near" is checked here.
        assert!((nce.nats - truth).abs() < 0.05, "{} vs {truth}", nce.nats);
        let small = run("infonce_critic", 4, 0.0);
        assert!(
            small.nats <= 4f64.ln() && small.nats < truth - 0.1,
            "{}",
            small.nats
        );
        let nwj = run("nwj_critic", 128, 1.0);
        assert_eq!(nwj.kind, Direction::LowerBound);
        assert!((nwj.nats - truth).abs() < 0.05, "{} vs {truth}", nwj.nats);
        let dv = run("mine_critic", 128, 5.0);
        assert_eq!(dv.kind, Direction::Estimate);
        assert_eq!(dv.cap_nats, None);
        assert!((dv.nats - truth).abs() < 0.05, "{} vs {truth}", dv.nats);
        assert!(dv
            .note
            .as_deref()
            .unwrap_or("")
            .contains("held-out batches"));
    }

    /// `score_bound` is the certificate's premise, so scores beyond it are an error, not a
    /// certificate.
    #[test]
    fn scores_beyond_the_bound_are_refused() {
        let (x, y) = gaussian_pair(400, 0.9, 2);
        let oracle = Oracle {
            rho: 0.9,
            shift: 0.0,
        };
        let spec = EstimatorSpec::parse_cli("infonce_critic:batch=32,score_bound=0.5").unwrap();
        let tools = Tools {
            critic: Some(&oracle),
            ..Tools::default()
        };
        let err =
            estimate_with(&spec, &x, &y, None, &Preprocess::default(), None, 0, tools).unwrap_err();
        assert!(err.to_string().contains("outside score_bound"), "{err}");
    }

    #[test]
    fn settings_are_checked_and_written_in_order() {
        assert_eq!(
            spec("infonce_critic", 64).params_json(),
            r#"{"name":"infonce_critic","critic":"separable","hidden":[64,64],"embedding":32,"steps":1000,"batch":64,"lr":0.001,"train_fraction":0.5}"#
        );
        for (text, says) in [
            ("nwj_critic:batch=1", "`batch`"),
            ("mine_critic:train_fraction=1", "`train_fraction`"),
            ("infonce_critic:lr=0", "`lr`"),
            ("infonce_critic:score_bound=-1", "`score_bound`"),
            ("infonce_critic:hidden=[8,0]", "hidden[1] is 0"),
            ("infonce_critic:critic=deep", "unknown variant `deep`"),
        ] {
            let err = EstimatorSpec::parse_cli(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
