//! `bounds.parquet` (written by `bound`, read by the report and by users): one row per
//! inequality, certified term and accuracy bound of each encoder snapshot. What `certified`,
//! `vacuous` and `inconsistent` mean is docs/certification.md.

use super::{Column, ColumnType, Table};

pub static EPOCH: Column = Column {
    name: "epoch",
    ty: ColumnType::Int64,
    nullable: true,
    always: false,
    doc: "training epoch of the encoder snapshot the estimates came from",
};
pub static NAME: Column = Column {
    name: "name",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "inequality (or `term`, `accuracy_*`, `consistency`)",
};
pub static STATEMENT: Column = Column {
    name: "statement",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "the inequality in words",
};
pub static STATUS: Column = Column {
    name: "status",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "valid, as_stated (the study's claim; not a bound), or inconsistent (two certified values contradict each other or a trivial range)",
};
pub static CERTIFICATION: Column = Column {
    name: "certification",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "certified (holds with the stated confidence), vacuous (holds, but at or below the trivial value), estimate (some term has no confidence bound), not_a_bound (as stated), inconsistent, not_computed (a term or an assumption is missing: see `error`)",
};
pub static SIDE: Column = Column {
    name: "side",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "lower or upper bound on the left-hand side",
};
pub static LHS: Column = Column {
    name: "lhs",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "the bounded quantity",
};
pub static VALUE_NATS: Column = Column {
    name: "value_nats",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "the bound from the terms' point values, nats (an accuracy for accuracy rows)",
};
pub static CERTIFIED_NATS: Column = Column {
    name: "certified_nats",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "the bound from the terms' confidence bounds: holds, with every other certified value of the instance, with probability >= confidence",
};
pub static CONFIDENCE: Column = Column {
    name: "confidence",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "the joint confidence level of the instance's certified values",
};
pub static CERTIFIED: Column = Column {
    name: "certified",
    ty: ColumnType::Boolean,
    nullable: true,
    always: true,
    doc: "certification = certified: valid, every term a confidence bound pointing the right way, not vacuous, not inconsistent",
};
pub static TERMS: Column = Column {
    name: "terms",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "terms used, with point value, direction, source, certified value and how it was certified (JSON)",
};
pub static TRUTH_NATS: Column = Column {
    name: "truth_nats",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "exact value of the left-hand side, when known",
};
pub static VIOLATED: Column = Column {
    name: "violated",
    ty: ColumnType::Boolean,
    nullable: true,
    always: true,
    doc: "the point value contradicts the truth (beyond the tolerance)",
};
pub static MARGIN_NATS: Column = Column {
    name: "margin_nats",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "by how much the point value contradicts the truth",
};
pub static CERTIFIED_VIOLATED: Column = Column {
    name: "certified_violated",
    ty: ColumnType::Boolean,
    nullable: true,
    always: true,
    doc: "the certified value contradicts the truth (beyond the tolerance): a failure of the confidence statement",
};
pub static CERTIFIED_MARGIN_NATS: Column = Column {
    name: "certified_margin_nats",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "by how much the certified value contradicts the truth",
};
pub static ERROR: Column = Column {
    name: "error",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "why the row could not be computed (missing term and which estimator provides it), or what contradicts",
};

/// The file name of [`TABLE`].
pub const FILE: &str = "bounds.parquet";

pub static TABLE: Table = Table {
    name: "bounds",
    file: FILE,
    row: "one inequality, certified term or accuracy bound of one encoder snapshot",
    columns: &[
        &EPOCH,
        &NAME,
        &STATEMENT,
        &STATUS,
        &CERTIFICATION,
        &SIDE,
        &LHS,
        &VALUE_NATS,
        &CERTIFIED_NATS,
        &CONFIDENCE,
        &CERTIFIED,
        &TERMS,
        &TRUTH_NATS,
        &VIOLATED,
        &MARGIN_NATS,
        &CERTIFIED_VIOLATED,
        &CERTIFIED_MARGIN_NATS,
        &ERROR,
    ],
};
