//! Pipeline configuration: YAML text in, a validated [`Pipeline`] out.
//!
//! The stages of loading are kept apart so each can point at the file: [`yaml`] keeps
//! positions, [`interp`] applies `--set` and `${...}`, [`load`] checks structure, stage kinds,
//! parameters (through each kind's typed struct), inputs and cycles, collecting every error
//! of a file in one pass. [`schema`] derives the editor-facing JSON Schema from the same types.

pub mod diagnostics;
pub mod interp;
pub mod load;
pub mod schema;
mod wiring;
pub mod yaml;

use std::path::PathBuf;

pub use diagnostics::{ConfigErrors, Diagnostic};
pub use load::{load, load_str};

/// What one instance of a stage occupies while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPU threads; counted against `--jobs`.
    pub cpus: usize,
    /// GPUs, counted against `--gpus`: whole devices that no other running instance holds, or
    /// a share of one device that only other shares may use too ([`crate::exec::local`]).
    pub gpus: Gpus,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources {
            cpus: 1,
            gpus: Gpus::NONE,
        }
    }
}

/// How much GPU an instance asks for (`resources: {gpus: ...}`): none, `n` whole devices of
/// its own, or a share of one device (`0.5`: two such instances may run on one GPU at once,
/// never beside an instance that holds it whole). Kept in thousandths of a device so that
/// shares add up exactly (`0.25` four times is one device, with no rounding drift).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Gpus {
    /// Thousandths of a device: 0, a share in `1..1000`, or a multiple of 1000.
    milli: u32,
}

impl Gpus {
    pub const NONE: Gpus = Gpus { milli: 0 };
    /// The unit of a share: one device is this many.
    pub const PER_DEVICE: u32 = 1000;

    /// `n` whole devices.
    pub fn whole(n: u32) -> Gpus {
        Gpus {
            milli: n.saturating_mul(Self::PER_DEVICE),
        }
    }

    /// The value of `resources.gpus` as written: a whole number of devices, or a share of one
    /// device in (0, 1) to a thousandth. The error says what is allowed instead.
    pub fn parse(value: f64) -> Result<Gpus, String> {
        if !value.is_finite() || value < 0.0 {
            return Err("`gpus` must be a whole number of GPUs (0, 1, 2, ...) or a share of one GPU below 1, like 0.5".into());
        }
        if value >= 1.0 {
            if value.fract() != 0.0 {
                return Err(format!(
                    "`gpus: {value}`: a share must be below 1 (like 0.5); more than one GPU is a whole number"
                ));
            }
            if value > f64::from(u32::MAX / Self::PER_DEVICE) {
                return Err(format!("`gpus: {value}` is more GPUs than any machine has"));
            }
            return Ok(Gpus::whole(value as u32));
        }
        let milli = value * f64::from(Self::PER_DEVICE);
        if value > 0.0 && (milli.round() < 1.0 || (milli - milli.round()).abs() > 1e-6) {
            return Err(format!(
                "`gpus: {value}`: a share of a GPU is given to a thousandth (like 0.5 or 0.125)"
            ));
        }
        Ok(Gpus {
            milli: milli.round() as u32,
        })
    }

    pub fn is_none(self) -> bool {
        self.milli == 0
    }

    /// How many device ids the instance is given: its whole devices, or the one device its
    /// share is on.
    pub fn devices(self) -> usize {
        if self.is_share() {
            1
        } else {
            (self.milli / Self::PER_DEVICE) as usize
        }
    }

    /// A share of one device (`0 < gpus < 1`), rather than whole devices.
    pub fn is_share(self) -> bool {
        self.milli > 0 && self.milli < Self::PER_DEVICE
    }

    /// What this asks of each of its devices, in thousandths: the share, or all of it.
    pub fn milli_per_device(self) -> u32 {
        if self.is_share() {
            self.milli
        } else {
            Self::PER_DEVICE
        }
    }

    /// The share as a fraction of one device (`Some(0.5)`), `None` for none or whole devices.
    pub fn share(self) -> Option<f64> {
        self.is_share()
            .then(|| f64::from(self.milli) / f64::from(Self::PER_DEVICE))
    }
}

impl std::fmt::Display for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.share() {
            Some(s) => write!(f, "{s}"),
            None => write!(f, "{}", self.devices()),
        }
    }
}

/// What a stage instance asks a cluster scheduler for beyond CPUs and GPUs; the local
/// executor ignores it. Values are passed to `sbatch` as written (Slurm's own formats), so a
/// Slurm user reads them as they would in a batch script.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterResources {
    /// `--mem`, e.g. `4G` or `500M` (a bare number is megabytes).
    pub memory: Option<String>,
    /// `--time`, e.g. `30` (minutes), `2:00:00`, `1-12:00:00`.
    pub time: Option<String>,
    /// `--partition`.
    pub partition: Option<String>,
    /// Further `sbatch` flags, e.g. `[--qos=high, --account=lab]`.
    pub sbatch: Vec<String>,
}

impl ClusterResources {
    /// These settings with `defaults` filling what is not set; extra flags of both apply,
    /// the defaults' first (so a stage's flag wins where sbatch takes the last one).
    pub fn or(&self, defaults: &ClusterResources) -> ClusterResources {
        ClusterResources {
            memory: self.memory.clone().or_else(|| defaults.memory.clone()),
            time: self.time.clone().or_else(|| defaults.time.clone()),
            partition: self
                .partition
                .clone()
                .or_else(|| defaults.partition.clone()),
            sbatch: defaults
                .sbatch
                .iter()
                .chain(&self.sbatch)
                .cloned()
                .collect(),
        }
    }
}

/// Where instances run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Threads on this machine.
    #[default]
    Local,
    /// Slurm job arrays, one per stage; this machine submits and follows them.
    Slurm,
}

impl ExecutorKind {
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        }
    }
}

/// The pipeline's `executor:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutorDecl {
    /// Used unless `--executor` says otherwise.
    pub kind: ExecutorKind,
    /// At most this many tasks of one job array run at once (`--array=0-N%K`).
    pub max_parallel: Option<usize>,
    /// Cluster settings for every stage that does not set its own.
    pub defaults: ClusterResources,
    /// The `cbound` binary the cluster nodes run (default: this one, which must then be on
    /// a filesystem the nodes see).
    pub cbound: Option<PathBuf>,
}

/// One swept parameter of a stage: `matrix: {temperature: [0.1, 0.2]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixAxis {
    /// Dotted path into `params`.
    pub key: String,
    pub values: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageDecl {
    pub id: String,
    pub kind: String,
    pub description: Option<String>,
    pub inputs: Vec<String>,
    /// Run once over every instance of the inputs (a summary across a sweep) instead of once
    /// per upstream instance.
    pub gather: bool,
    /// Parameters after interpolation, before the matrix is applied.
    pub params: serde_json::Value,
    pub matrix: Vec<MatrixAxis>,
    /// `matrix_mode: one_at_a_time`: each axis varies alone, the others keep their `params`
    /// value (an ablation), instead of the cross product of all axes.
    pub one_at_a_time: bool,
    /// `repeat: N`: run every configuration N times, as replicates 0..N-1 with their own
    /// seeds (an extra sweep axis `replicate`, not a parameter). `None` when not given: a
    /// root stage then follows the pipeline's `repeat`.
    pub repeat: Option<usize>,
    /// Resources from the pipeline file; `None` means the stage kind's default.
    pub resources: Option<Resources>,
    /// Memory, time limit, partition and extra flags for a cluster scheduler.
    pub cluster: ClusterResources,
}

/// A pipeline that passed validation: every stage kind exists, every parameter
/// deserialises, every input names a stage, and the stage graph is acyclic.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    pub source: PathBuf,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub executor: ExecutorDecl,
    /// Top-level `repeat: N`: the whole pipeline N times. Every root stage (no inputs)
    /// without its own `repeat` runs as replicates 0..N-1 of one pipeline-wide axis, which
    /// downstream stages inherit and join on (replicate r only meets replicate r).
    pub repeat: Option<usize>,
    /// In file order.
    pub stages: Vec<StageDecl>,
}

/// The sweep label of a replicate, in instance ids and as `sweep.replicate` in results.
pub const REPLICATE: &str = "replicate";

/// How a stage is replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicates {
    /// Once per configuration (no `repeat`, or `repeat: 1`).
    Single,
    /// The stage's own `repeat: N`: an axis of this stage, crossed with everything else.
    Own(usize),
    /// The pipeline's `repeat: N` on a root stage: one axis shared by all such stages.
    Pipeline(usize),
}

impl Pipeline {
    pub fn stage(&self, id: &str) -> Option<&StageDecl> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// How the given stage is replicated: its own `repeat` if it has one, else the
    /// pipeline's `repeat` if it is a root stage (no inputs), else not at all (it inherits
    /// replicates from its inputs).
    pub fn replicates(&self, stage: &StageDecl) -> Replicates {
        match (stage.repeat, self.repeat) {
            (Some(n), _) if n > 1 => Replicates::Own(n),
            (Some(_), _) => Replicates::Single,
            (None, Some(n)) if n > 1 && stage.inputs.is_empty() => Replicates::Pipeline(n),
            _ => Replicates::Single,
        }
    }
}

/// Sets `value` at a dotted path inside a JSON object, creating objects on the way.
/// A numeric segment indexes into an existing list (`views.0.0.std`), so a sweep can reach
/// inside list-valued parameters.
pub fn set_dotted(target: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    let parts: Vec<&str> = key.split('.').collect();
    set_parts(target, &parts, value);
}

/// The value at a dotted key (`model.encoder.hidden`, `views.0.0.std`), if there is one.
pub fn get_dotted<'a>(target: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    key.split('.').try_fold(target, |node, part| match node {
        serde_json::Value::Array(items) => items.get(part.parse::<usize>().ok()?),
        serde_json::Value::Object(map) => map.get(part),
        _ => None,
    })
}

/// Checks that every numeric segment of a dotted key indexes an existing list element
/// (object keys may be created; list elements may not).
pub fn check_list_indices(target: &serde_json::Value, key: &str) -> Result<(), String> {
    let mut node = Some(target);
    let mut walked = String::new();
    for part in key.split('.') {
        node = match (node, part.parse::<usize>()) {
            (Some(serde_json::Value::Array(items)), Ok(i)) => match items.get(i) {
                Some(item) => Some(item),
                None => {
                    return Err(format!(
                        "`{walked}` has {} element(s), no element {i}",
                        items.len()
                    ));
                }
            },
            (Some(serde_json::Value::Object(map)), _) => map.get(part),
            _ => None,
        };
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(part);
    }
    Ok(())
}

fn set_parts(node: &mut serde_json::Value, parts: &[&str], value: serde_json::Value) {
    let Some((first, rest)) = parts.split_first() else {
        *node = value;
        return;
    };
    if let serde_json::Value::Array(items) = node {
        if let Some(item) = first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
            return set_parts(item, rest, value);
        }
    }
    if !node.is_object() {
        *node = serde_json::Value::Object(Default::default());
    }
    if let serde_json::Value::Object(map) = node {
        let child = map
            .entry(first.to_string())
            .or_insert(serde_json::Value::Null);
        set_parts(child, rest, value);
    }
}

/// How a matrix value appears in an instance id: numbers and strings bare, anything else as
/// compact JSON.
pub fn render_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
