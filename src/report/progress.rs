//! Progress display. On a terminal: one bar per stage (a sweep group), counting finished
//! instances, with the latest progress note of a running one. Elsewhere (CI, pipes, files):
//! one plain line per event. Failures are printed the moment they happen in both. Each line
//! names the instance's status as results.parquet does ([`InstanceStatus`]), failures in
//! capitals so they stand out. Each stage's bar carries an ETA from the rate at which its
//! instances have finished so far, and says `done` once all have.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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

/// One stage's count of settled instances and the rate of those it computed, for its ETA.
#[derive(Debug, Clone)]
struct StageClock {
    total: usize,
    /// Settled in any way (computed, cached, failed, cancelled, skipped).
    settled: usize,
    /// Computed here: the only ones whose time says anything about the rest.
    computed: usize,
    failed: usize,
    first_start: Option<Instant>,
    /// The latest thing a running instance said.
    note: String,
}

impl StageClock {
    fn new(total: usize) -> StageClock {
        StageClock {
            total,
            settled: 0,
            computed: 0,
            failed: 0,
            first_start: None,
            note: String::new(),
        }
    }

    fn started(&mut self, now: Instant) {
        self.first_start.get_or_insert(now);
    }

    fn is_done(&self) -> bool {
        self.settled >= self.total
    }

    /// Time left: the stage's wall-clock time per computed instance so far (which already
    /// counts the instances it runs in parallel) times the instances left. None before the
    /// first one finishes: a guess from nothing would mislead.
    fn eta(&self, now: Instant) -> Option<Duration> {
        let start = self.first_start?;
        if self.computed == 0 || self.is_done() {
            return None;
        }
        let left = (self.total - self.settled) as f64;
        let per = now.duration_since(start).as_secs_f64() / self.computed as f64;
        Some(Duration::from_secs_f64(per * left))
    }

    /// What the bar says after its count: `done` (with failures counted) once every
    /// instance settled, else the ETA and the latest note.
    fn message(&self, now: Instant) -> String {
        if self.is_done() {
            return match self.failed {
                0 => "done".into(),
                n => format!("done, {n} FAILED"),
            };
        }
        match self.eta(now) {
            Some(eta) if self.note.is_empty() => format!("eta {}", short_duration(eta)),
            Some(eta) => format!("eta {} | {}", short_duration(eta), self.note),
            None => self.note.clone(),
        }
    }
}

/// `42s`, `3m05s`, `2h07m`: short enough for a bar's message.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub struct BarReporter {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    clocks: HashMap<String, StageClock>,
}

impl BarReporter {
    pub fn new() -> BarReporter {
        BarReporter {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: HashMap::new(),
            clocks: HashMap::new(),
        }
    }

    /// Counts one settled instance of `stage` (`computed`: it ran here; `failed`: it failed)
    /// and redraws its bar.
    fn settle(&mut self, stage: &str, computed: bool, failed: bool) {
        let now = Instant::now();
        if let Some(clock) = self.clocks.get_mut(stage) {
            clock.settled += 1;
            clock.computed += usize::from(computed);
            clock.failed += usize::from(failed);
        }
        if let Some(bar) = self.bars.get(stage) {
            bar.inc(1);
        }
        self.redraw(stage, now);
    }

    fn redraw(&self, stage: &str, now: Instant) {
        if let (Some(bar), Some(clock)) = (self.bars.get(stage), self.clocks.get(stage)) {
            if clock.is_done() {
                // Its last note is stale now; the bar stays, frozen, until the run ends.
                bar.finish_with_message(clock.message(now));
            } else {
                bar.set_message(clock.message(now));
            }
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
                    self.clocks
                        .insert(stage.to_string(), StageClock::new(count));
                }
            }
            RunEvent::Cached { stage, .. } => self.settle(stage, false, false),
            RunEvent::Started { stage, instance } => {
                let now = Instant::now();
                if let Some(clock) = self.clocks.get_mut(stage) {
                    clock.started(now);
                    clock.note = format!("running {instance}");
                }
                self.redraw(stage, now);
            }
            RunEvent::Progress {
                stage,
                instance,
                progress,
            } => {
                let now = Instant::now();
                if let Some(clock) = self.clocks.get_mut(stage) {
                    clock.note = format!(
                        "{instance}: {}/{} {}",
                        progress.done, progress.total, progress.message
                    );
                }
                self.redraw(stage, now);
            }
            RunEvent::Finished { stage, .. } => self.settle(stage, true, false),
            RunEvent::Failed {
                stage,
                instance,
                error,
            } => {
                let _ = self.multi.println(format!(
                    "{} {instance}: {error}",
                    word(InstanceStatus::Failed).trim_end()
                ));
                self.settle(stage, false, true);
            }
            RunEvent::Cancelled { stage, instance } => {
                let _ = self.multi.println(format!(
                    "{} {instance}",
                    word(InstanceStatus::Cancelled).trim_end()
                ));
                self.settle(stage, false, false);
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
                self.settle(stage, false, false);
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

/// Plain log lines on stderr, for anything that is not a terminal. A computed instance's
/// line ends with its stage's count and ETA (the same clock as the bars'), and a stage whose
/// instances have all settled gets a `done` line of its own.
pub struct LineReporter {
    done: usize,
    total: usize,
    start: Instant,
    last_progress: HashMap<String, Instant>,
    clocks: HashMap<String, StageClock>,
    /// Where lines go: stderr, or a test's buffer.
    sink: Box<dyn std::io::Write + Send>,
}

impl LineReporter {
    pub fn new() -> LineReporter {
        LineReporter::to(Box::new(std::io::stderr()))
    }

    /// Lines written to `sink` instead of stderr.
    pub fn to(sink: Box<dyn std::io::Write + Send>) -> LineReporter {
        LineReporter {
            done: 0,
            total: 0,
            start: Instant::now(),
            last_progress: HashMap::new(),
            clocks: HashMap::new(),
            sink,
        }
    }

    /// One line, written with one call: stderr is unbuffered, and `eprintln!` of a formatted
    /// line is a write per piece (fourteen system calls per instance of a cached sweep).
    fn line(&mut self, text: &str) {
        let line = format!(
            "[{:>7.1}s {}/{}] {text}\n",
            self.start.elapsed().as_secs_f64(),
            self.done,
            self.total
        );
        let _ = self.sink.write_all(line.as_bytes());
    }

    /// Counts one settled instance of `stage`, prints `text` with the stage's count and ETA
    /// (for a computed one, while the stage is not done), then the stage's `done` line once
    /// all of its instances have settled.
    fn settle(&mut self, stage: &str, computed: bool, failed: bool, text: &str) {
        let now = Instant::now();
        self.done += 1;
        let Some(clock) = self.clocks.get_mut(stage) else {
            self.line(text);
            return;
        };
        clock.settled += 1;
        clock.computed += usize::from(computed);
        clock.failed += usize::from(failed);
        let clock = clock.clone();
        match clock.eta(now) {
            Some(eta) if computed => self.line(&format!(
                "{text}; {stage} {}/{}, eta {}",
                clock.settled,
                clock.total,
                short_duration(eta)
            )),
            _ => self.line(text),
        }
        if clock.is_done() {
            self.line(&format!(
                "{:<7} {stage}: {} instance(s){}",
                "done",
                clock.total,
                match clock.failed {
                    0 => String::new(),
                    n => format!(", {n} FAILED"),
                }
            ));
        }
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
                for (stage, count) in stages {
                    self.clocks
                        .insert(stage.to_string(), StageClock::new(count));
                }
                self.line(&format!("running `{pipeline}` into {run_dir}"));
            }
            RunEvent::Cached { stage, instance } => {
                let text = format!("{} {instance}", word(InstanceStatus::Cached));
                self.settle(stage, false, false, &text);
            }
            RunEvent::Started { stage, instance } => {
                if let Some(clock) = self.clocks.get_mut(stage) {
                    clock.started(Instant::now());
                }
                self.line(&format!("start   {instance}"))
            }
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
                stage,
                instance,
                seconds,
            } => {
                let text = format!("{} {instance} ({seconds:.2}s)", word(InstanceStatus::Ok));
                self.settle(stage, true, false, &text);
            }
            RunEvent::Failed {
                stage,
                instance,
                error,
            } => {
                let text = format!("{} {instance}: {error}", word(InstanceStatus::Failed));
                self.settle(stage, false, true, &text);
            }
            RunEvent::Cancelled { stage, instance } => {
                let text = format!("{} {instance}", word(InstanceStatus::Cancelled));
                self.settle(stage, false, false, &text);
            }
            RunEvent::Skipped {
                stage,
                instance,
                reason,
            } => {
                let text = format!("{} {instance}: {reason}", word(InstanceStatus::Skipped));
                self.settle(stage, false, false, &text);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sink whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_carry_the_stage_eta_and_a_done_line() {
        let buf = Buffer::default();
        let mut r = LineReporter::to(Box::new(buf.clone()));
        r.event(RunEvent::Begin {
            pipeline: "p",
            run_dir: "out/p/1",
            stages: vec![("a", 3), ("b", 1)],
        });
        r.event(RunEvent::Cached {
            stage: "b",
            instance: "b",
        });
        for i in ["a[x=1]", "a[x=2]", "a[x=3]"] {
            r.event(RunEvent::Started {
                stage: "a",
                instance: i,
            });
            r.event(RunEvent::Finished {
                stage: "a",
                instance: i,
                seconds: 0.5,
            });
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Cached b settles its stage at once: its line, then b's done line (no ETA).
        assert!(lines[1].ends_with("cached  b"), "{text}");
        assert!(lines[2].ends_with("done    b: 1 instance(s)"), "{text}");
        // Computed instances of a stage not yet done say how far it is and how long is left.
        let first_ok = lines.iter().find(|l| l.contains("ok      a[x=1]")).unwrap();
        assert!(first_ok.contains("; a 1/3, eta "), "{text}");
        let last_ok = lines.iter().find(|l| l.contains("ok      a[x=3]")).unwrap();
        assert!(!last_ok.contains("eta"), "{text}");
        assert!(
            lines.last().unwrap().ends_with("done    a: 3 instance(s)"),
            "{text}"
        );
        assert!(lines.last().unwrap().contains(" 4/4]"), "{text}");
    }

    #[test]
    fn eta_is_the_rate_so_far_times_what_is_left() {
        let t0 = Instant::now();
        let mut c = StageClock::new(5);
        c.started(t0);
        c.note = "running a".into();
        // Nothing finished: no guess.
        assert_eq!(c.eta(t0 + Duration::from_secs(3)), None);
        assert_eq!(c.message(t0 + Duration::from_secs(3)), "running a");
        // One cached (no time) and two computed in 10 s: 5 s each, 2 left.
        c.settled = 3;
        c.computed = 2;
        let now = t0 + Duration::from_secs(10);
        assert_eq!(c.eta(now), Some(Duration::from_secs(10)));
        assert_eq!(c.message(now), "eta 10s | running a");
        c.settled = 5;
        c.failed = 1;
        assert_eq!(c.eta(now), None);
        assert_eq!(c.message(now), "done, 1 FAILED");
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(short_duration(Duration::from_secs_f64(41.6)), "42s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_duration(Duration::from_secs(7620)), "2h07m");
    }
}
