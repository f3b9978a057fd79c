//! What a user sees of a run: live progress (bars on a terminal, log lines elsewhere) as a
//! consumer of [`RunEvent`]s, the tables a run leaves behind, and `cbound report`'s plots and
//! HTML page drawn from them afterwards.

pub mod diff;
pub mod figures;
pub mod generate;
pub mod html;
pub mod images;
pub mod load;
pub mod plots;
pub mod progress;
pub mod results;
pub mod show;

pub use cbound_engine::events::{Reporter, RunEvent};
