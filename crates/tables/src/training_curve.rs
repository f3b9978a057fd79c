//! `training_curve.parquet` (written by `train`, read by the report): one row per epoch.
//! Its wall-clock side, `training_curve.timing.parquet`, is kept apart so that a resumed or
//! re-run training with the same result keeps downstream cache keys.

use super::{Column, ColumnType, Table};

pub static EPOCH: Column = Column {
    name: "epoch",
    ty: ColumnType::UInt64,
    nullable: false,
    always: true,
    doc: "epochs completed (1 = after the first), as in encoder snapshots",
};
pub static LOSS: Column = Column {
    name: "loss",
    ty: ColumnType::Float64,
    nullable: false,
    always: true,
    doc: "mean training loss over the epoch's batches",
};
pub static HELDOUT_LOSS: Column = Column {
    name: "heldout_loss",
    ty: ColumnType::Float64,
    nullable: false,
    always: true,
    doc: "mean loss on held-out batches (no update)",
};
pub static HELDOUT_INFONCE: Column = Column {
    name: "heldout_infonce",
    ty: ColumnType::Float64,
    nullable: false,
    always: true,
    doc: "log N - held-out loss, nats: lower bound on I(X;Y) in expectation, capped at log N",
};
pub static N: Column = Column {
    name: "n",
    ty: ColumnType::UInt64,
    nullable: false,
    always: true,
    doc: "N, pairs per batch",
};
pub static LR: Column = Column {
    name: "lr",
    ty: ColumnType::Float64,
    nullable: false,
    always: true,
    doc: "learning rate at the epoch's last step",
};
pub static SKIPPED_STEPS: Column = Column {
    name: "skipped_steps",
    ty: ColumnType::UInt64,
    nullable: false,
    always: false,
    doc: "fp16_mixed only: steps of the epoch whose loss-scaled gradients were not finite, so that no parameter changed (the loss scale halved)",
};
pub static LOSS_SCALE: Column = Column {
    name: "loss_scale",
    ty: ColumnType::Float64,
    nullable: false,
    always: false,
    doc: "fp16_mixed only: the dynamic loss scale after the epoch's last step",
};

/// The file name of [`TABLE`].
pub const FILE: &str = "training_curve.parquet";

pub static TABLE: Table = Table {
    name: "training_curve",
    file: FILE,
    row: "the state after one epoch",
    columns: &[
        &EPOCH,
        &LOSS,
        &HELDOUT_LOSS,
        &HELDOUT_INFONCE,
        &N,
        &LR,
        &SKIPPED_STEPS,
        &LOSS_SCALE,
    ],
};

pub static TIMING_EPOCH: Column = Column {
    name: "epoch",
    ty: ColumnType::UInt64,
    nullable: false,
    always: true,
    doc: "epochs completed (1 = after the first)",
};
pub static TIMING_SAMPLES_PER_S: Column = Column {
    name: "samples_per_s",
    ty: ColumnType::Float64,
    nullable: false,
    always: true,
    doc: "training samples per second",
};
pub static TIMING_SECONDS: Column = Column {
    name: "seconds",
    ty: ColumnType::Float64,
    nullable: false,
    always: true,
    doc: "wall time of the epoch",
};

/// The file name of [`TIMING_TABLE`].
pub const TIMING_FILE: &str = "training_curve.timing.parquet";

pub static TIMING_TABLE: Table = Table {
    name: "training_curve.timing",
    file: TIMING_FILE,
    row: "the wall time of one epoch",
    columns: &[&TIMING_EPOCH, &TIMING_SAMPLES_PER_S, &TIMING_SECONDS],
};
