//! What a run prints, and only on rank 0: the notes and the plan before the first step, the
//! fixed-format line of every logged step (and the measured pace, once), the eval and save
//! lines, all above a progress bar on a terminal (plain lines without one).

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use super::config::TrainConfig;
use super::metrics::{EvalRecord, StepRecord};
use super::plan::{Pace, Plan};
use super::setup::Run;

/// The run's console: a progress bar (hidden without a terminal, or on ranks other than 0) and
/// the lines printed above it.
pub struct Console {
    bar: ProgressBar,
    root: bool,
}

impl Console {
    /// The console of `run`, with a progress bar if `bar` (and rank 0), after the notes on
    /// the store and the plan with its warnings.
    pub fn start(run: &Run, cfg: &TrainConfig, bar: bool) -> Console {
        let step = run.state.step;
        let console = Console {
            bar: progress_bar(bar && run.root, step, cfg.max_steps),
            root: run.root,
        };
        if run.eval.is_empty() {
            console.say(
                "note: the val split is empty or shorter than one window; no evaluation (ingest with a larger --val-fraction)",
            );
        }
        if let Some(part) = &run.part_of_store {
            console.say(&format!(
                "note: this store is part {part} of a partitioned ingest; `mamba ingest --merge` \
                 its parts to train on all of them"
            ));
        }
        if let Some(l) = &run.lora {
            console.say(&l.describe(run.model.config()));
            if let Some(note) = l.caveat(run.model.config()) {
                console.say(&note);
            }
        }
        let plan = Plan::new(cfg, step, run.train_tokens);
        for line in std::iter::once(plan.line(cfg)).chain(plan.warnings(cfg)) {
            console.say(&line);
        }
        console
    }

    /// Prints a line above the progress bar (or plainly when there is none).
    pub fn say(&self, line: &str) {
        if !self.root {
            return;
        }
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// A finished step: its log line every `log_every` steps and at every skipped step, the
    /// pace when it is first measured, and the bar.
    pub fn step(&self, rec: &StepRecord, cfg: &TrainConfig, first_pace: Option<Pace>) {
        if rec.step.is_multiple_of(cfg.log_every) || rec.skipped {
            self.say(&rec.line(cfg.max_steps));
        }
        if let Some(pace) = first_pace {
            self.say(&pace.line(cfg.max_steps - rec.step));
        }
        let num = |v: Option<f64>| v.unwrap_or(f64::NAN);
        self.bar.set_position(rec.step);
        let mem = match rec.mem_peak_bytes {
            Some(b) => format!(" mem {}", super::metrics::gib(b)),
            None => String::new(),
        };
        self.bar.set_message(format!(
            "loss {:.4} lr {:.1e} {:.0} tok/s{mem}",
            num(rec.loss),
            num(rec.lr),
            num(rec.tokens_per_s)
        ));
    }

    /// An eval: its loss and what it covered.
    pub fn eval(&self, rec: &EvalRecord, covers: &str) {
        self.say(&rec.line(covers));
    }

    pub fn saved(&self, dir: &Path) {
        self.say(&format!("saved {}", dir.display()));
    }

    /// Removes the bar at the end of the run.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn progress_bar(show: bool, pos: u64, len: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_position(pos);
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}");
    if let Ok(s) = style {
        bar.set_style(s);
    }
    bar
}
