//! The errors a command can end with, and the exit code each maps to.

use crate::artifact::store::StoreError;
use crate::artifact::ArtifactError;
use crate::config::ConfigErrors;
use crate::exec::slurm::SlurmError;
use cbound_engine::userkind::UserKindError;

/// Exit codes, stable for scripts: 0 success, 1 internal error, 2 bad configuration or
/// usage, 3 one or more stage instances failed, 4 environment problem (output directory,
/// lock), 130 interrupted.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const STAGE_FAILED: u8 = 3;
    pub const ENVIRONMENT: u8 = 4;
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    /// The kinds a run recorded (kinds.json) cannot be read back.
    #[error(transparent)]
    UserKind(#[from] UserKindError),
    #[error("{failed} instance(s) failed; see above, and {results} for every instance's status")]
    StagesFailed { failed: usize, results: String },
    #[error("interrupted; finished instances are kept, run the same command again to resume")]
    Interrupted,
    #[error("{0}")]
    Stale(String),
    /// Something outside cbound's control: network, disk, a missing installation.
    #[error("{0}")]
    Environment(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ConfigErrors> for Error {
    fn from(e: ConfigErrors) -> Error {
        Error::Config(e)
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) => exit::CONFIG,
            Error::Slurm(SlurmError::InstanceFailed { .. }) => exit::STAGE_FAILED,
            Error::Store(_)
            | Error::Artifact(_)
            | Error::Environment(_)
            | Error::Slurm(_)
            | Error::UserKind(_) => exit::ENVIRONMENT,
            Error::StagesFailed { .. } => exit::STAGE_FAILED,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Stale(_) | Error::Internal(_) => exit::INTERNAL,
        }
    }
}
