//! Progress display. On a terminal: one bar per stage (a sweep group), counting finished
//! instances, with the latest progress note of a running one. Elsewhere (CI, pipes, files):
//! one plain line per event. Failures are printed the moment they happen in both. Each line
//! names the instance's status as results.parquet does ([`InstanceStatus`]), failures in
//! capitals so they stand out.

use std::collections::HashMap;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Reporter, RunEvent};
use crate::exec::outcome::InstanceStatus;

/// The word a line starts with for an instance that ended with `status`, padded so the
/// instance ids line up.
fn word(status: InstanceStatus) -> String {
    let name = match status {
        InstanceStatus::Failed => status.as_str().to_uppercase(),
        other => other.as_str().to_string(),
    };
    format!("{name:<7}")
}

pub struct BarReporter {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
}

impl BarReporter {
    pub fn new() -> BarReporter {
        BarReporter {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: HashMap::new(),
        }
    }
}

impl Default for BarReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for BarReporter {
    fn event(&mut self, event: RunEvent<'_>) {
        match event {
            RunEvent::Begin {
                pipeline,
                run_dir,
                stages,
            } => {
                let _ = self
                    .multi
                    .println(format!("cbound: running `{pipeline}` into {run_dir}"));
                let width = stages.iter().map(|(s, _)| s.len()).max().unwrap_or(8);
                let style = ProgressStyle::with_template(&format!(
                    "{{prefix:>{width}}} [{{bar:30.cyan/blue}}] {{pos}}/{{len}} {{elapsed:>4}} {{wide_msg}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                for (stage, count) in stages {
                    let bar = self.multi.add(ProgressBar::new(count as u64));
                    bar.set_style(style.clone());
                    bar.set_prefix(stage.to_string());
                    self.bars.insert(stage.to_string(), bar);
                }
            }
            RunEvent::Cached { stage, .. } => {
                if let Some(bar) = self.bars.get(stage) {
                    bar.inc(1);
                }
            }
            RunEvent::Started { stage, instance } => {
                if let Some(bar) = self.bars.get(stage) {
                    bar.set_message(format!("running {instance}"));
                }
            }
            RunEvent::Progress {
                stage,
                instance,
                progress,
            } => {
                if let Some(bar) = self.bars.get(stage) {
                    bar.set_message(format!(
                        "{instance}: {}/{} {}",
                        progress.done, progress.total, progress.message
                    ));
                }
            }
            RunEvent::Finished { stage, .. } => {
                if let Some(bar) = self.bars.get(stage) {
                    bar.inc(1);
                }
            }
            RunEvent::Failed {
                stage,
                instance,
                error,
            } => {
                let _ = self.multi.println(format!(
                    "{} {instance}: {error}",
                    word(InstanceStatus::Failed).trim_end()
                ));
                if let Some(bar) = self.bars.get(stage) {
                    bar.inc(1);
                }
            }
            RunEvent::Cancelled { stage, instance } => {
                let _ = self.multi.println(format!(
                    "{} {instance}",
                    word(InstanceStatus::Cancelled).trim_end()
                ));
                if let Some(bar) = self.bars.get(stage) {
                    bar.inc(1);
                }
            }
            RunEvent::Skipped {
                stage,
                instance,
                reason,
            } => {
                let _ = self.multi.println(format!(
                    "{} {instance}: {reason}",
                    word(InstanceStatus::Skipped).trim_end()
                ));
                if let Some(bar) = self.bars.get(stage) {
                    bar.inc(1);
                }
            }
            RunEvent::Stopping { reason } => {
                let _ = self.multi.println(format!("cbound: {reason}"));
            }
        }
    }

    fn finish(&mut self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// Plain log lines on stderr, for anything that is not a terminal.
pub struct LineReporter {
    done: usize,
    total: usize,
    start: Instant,
    last_progress: HashMap<String, Instant>,
}

impl LineReporter {
    pub fn new() -> LineReporter {
        LineReporter {
            done: 0,
            total: 0,
            start: Instant::now(),
            last_progress: HashMap::new(),
        }
    }

    fn line(&self, text: &str) {
        eprintln!(
            "[{:>7.1}s {}/{}] {text}",
            self.start.elapsed().as_secs_f64(),
            self.done,
            self.total
        );
    }
}

impl Default for LineReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for LineReporter {
    fn event(&mut self, event: RunEvent<'_>) {
        match event {
            RunEvent::Begin {
                pipeline,
                run_dir,
                stages,
            } => {
                self.total = stages.iter().map(|(_, n)| n).sum();
                self.line(&format!("running `{pipeline}` into {run_dir}"));
            }
            RunEvent::Cached { instance, .. } => {
                self.done += 1;
                self.line(&format!("{} {instance}", word(InstanceStatus::Cached)));
            }
            RunEvent::Started { instance, .. } => self.line(&format!("start   {instance}")),
            RunEvent::Progress {
                instance, progress, ..
            } => {
                // At most one progress line per instance every 5 s: logs stay readable.
                let now = Instant::now();
                let due = self
                    .last_progress
                    .get(instance)
                    .is_none_or(|t| now.duration_since(*t).as_secs_f64() >= 5.0);
                if due {
                    self.last_progress.insert(instance.to_string(), now);
                    self.line(&format!(
                        "        {instance}: {}/{} {}",
                        progress.done, progress.total, progress.message
                    ));
                }
            }
            RunEvent::Finished {
                instance, seconds, ..
            } => {
                self.done += 1;
                self.line(&format!(
                    "{} {instance} ({seconds:.2}s)",
                    word(InstanceStatus::Ok)
                ));
            }
            RunEvent::Failed {
                instance, error, ..
            } => {
                self.done += 1;
                self.line(&format!(
                    "{} {instance}: {error}",
                    word(InstanceStatus::Failed)
                ));
            }
            RunEvent::Cancelled { instance, .. } => {
                self.done += 1;
                self.line(&format!("{} {instance}", word(InstanceStatus::Cancelled)));
            }
            RunEvent::Skipped {
                instance, reason, ..
            } => {
                self.done += 1;
                self.line(&format!(
                    "{} {instance}: {reason}",
                    word(InstanceStatus::Skipped)
                ));
            }
            RunEvent::Stopping { reason } => self.line(reason),
        }
    }
}

/// Reports nothing (`--progress none`).
pub struct QuietReporter;

impl Reporter for QuietReporter {
    fn event(&mut self, event: RunEvent<'_>) {
        if let RunEvent::Failed {
            instance, error, ..
        } = event
        {
            eprintln!(
                "{} {instance}: {error}",
                word(InstanceStatus::Failed).trim_end()
            );
        }
    }
}
