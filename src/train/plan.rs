//! What a run will cost, said before it starts: tokens per step, the tokens planned and the
//! passes they make over the train split, with a warning for plans a user would not want; and,
//! once the first steps are timed, the measured speed and the time left (the ETA), repeated in
//! every step's log line so it shows without a terminal too.

use std::time::{Duration, Instant};

use super::config::{DeviceSpec, TrainConfig};

/// Passes over the train split past which a plan is warned about: a model memorises a corpus
/// it sees more than a few times, and its val loss climbs (the demo's sample: lowest after ~4).
pub const MANY_PASSES: f64 = 4.0;

/// Steps timed before the speed is first said (the first step is left out: warm-up), or
/// the time after which it is said anyway when steps are slow.
const TIMED_STEPS: u64 = 10;
const TIMED_FOR: Duration = Duration::from_secs(30);

/// A run's size in tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub tokens_per_step: u64,
    pub max_steps: u64,
    /// The step the run starts from (0 unless resumed).
    pub start_step: u64,
    pub train_tokens: u64,
}

impl Plan {
    pub fn new(cfg: &TrainConfig, start_step: u64, train_tokens: u64) -> Plan {
        Plan {
            tokens_per_step: (cfg.global_batch() * cfg.grad_accum * cfg.seq_len) as u64,
            max_steps: cfg.max_steps,
            start_step,
            train_tokens,
        }
    }

    /// Tokens the whole run trains on, resumed part included.
    pub fn tokens(&self) -> u64 {
        self.tokens_per_step.saturating_mul(self.max_steps)
    }

    /// Passes the whole run makes over the train split.
    pub fn passes(&self) -> f64 {
        self.tokens() as f64 / self.train_tokens.max(1) as f64
    }

    /// `plan: 200 steps x 512 tokens (batch 4 x accumulation 1 x seq 128) = 102400 tokens,
    /// 11.2 passes over the train split (9174 tokens)`
    pub fn line(&self, cfg: &TrainConfig) -> String {
        let from = match self.start_step {
            0 => String::new(),
            s => format!(", resumed at step {s}"),
        };
        let batch = match cfg.ranks {
            0 | 1 => cfg.batch_size.to_string(),
            n => format!("{} x {n} ranks", cfg.batch_size),
        };
        format!(
            "plan: {} steps x {} tokens (batch {batch} x accumulation {} x seq {}) = {} tokens, {:.1} passes over the train split ({} tokens){from}",
            self.max_steps,
            self.tokens_per_step,
            cfg.grad_accum,
            cfg.seq_len,
            self.tokens(),
            self.passes(),
            self.train_tokens
        )
    }

    /// Warnings about the plan: many passes over the data, a GPU profile on the CPU.
    pub fn warnings(&self, cfg: &TrainConfig) -> Vec<String> {
        let mut out = Vec::new();
        if self.passes() > MANY_PASSES {
            let steps = (MANY_PASSES * self.train_tokens as f64 / self.tokens_per_step as f64)
                .floor()
                .max(1.0);
            out.push(format!(
                "warning: that is {:.1} passes over the train split; past a few a model memorises its data and the val loss climbs: --max-steps {steps} makes {MANY_PASSES} passes, or ingest more data",
                self.passes()
            ));
        }
        if let (Some(vram), DeviceSpec::Cpu) = (&cfg.vram, cfg.device) {
            out.push(format!(
                "warning: --vram {vram} sizes a run for a GPU's memory, but this run is on the CPU, where the {} preset is slow (speed and ETA follow the first steps); on a CPU start with --model-size tiny, or use --device cuda in a CUDA build",
                cfg.model_size
            ));
        }
        out
    }
}

/// Times the steps of a run to give its speed and ETA.
pub struct Clock {
    /// When the first timed step began: the end of the run's first step, and its step/tokens.
    since: Option<(Instant, u64, u64)>,
    max_steps: u64,
    /// The speed has been said.
    reported: bool,
}

/// Speed over the timed steps and the time the remaining steps will take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    pub tokens_per_s: f64,
    pub left: Duration,
}

impl Clock {
    pub fn new(max_steps: u64) -> Clock {
        Clock {
            since: None,
            max_steps,
            reported: false,
        }
    }

    /// Records that `step` finished with `tokens` seen; the pace once a step is timed.
    pub fn tick(&mut self, step: u64, tokens: u64) -> Option<Pace> {
        let &mut Some((t0, s0, k0)) = &mut self.since else {
            self.since = Some((Instant::now(), step, tokens));
            return None;
        };
        let secs = t0.elapsed().as_secs_f64();
        let steps = step.saturating_sub(s0);
        if steps == 0 || secs <= 0.0 {
            return None;
        }
        let left = secs / steps as f64 * self.max_steps.saturating_sub(step) as f64;
        Some(Pace {
            tokens_per_s: tokens.saturating_sub(k0) as f64 / secs,
            left: Duration::try_from_secs_f64(left).unwrap_or(Duration::MAX),
        })
    }

    /// Whether the speed is to be said after `step`: once, after [`TIMED_STEPS`] timed steps
    /// or [`TIMED_FOR`], whichever comes first.
    pub fn first_report(&mut self, step: u64) -> bool {
        let due = self.since.is_some_and(|(t0, s0, _)| {
            step > s0 && (step >= s0 + TIMED_STEPS || t0.elapsed() >= TIMED_FOR)
        });
        let first = due && !self.reported;
        self.reported |= due;
        first
    }
}

impl Pace {
    /// `speed: 440 tokens/s over the first steps; the remaining 19996 steps take about 8d 3h`
    pub fn line(&self, steps_left: u64) -> String {
        format!(
            "speed: {:.0} tokens/s over the first steps; the remaining {steps_left} steps take about {}",
            self.tokens_per_s,
            human(self.left)
        )
    }
}

/// A duration as people say it: `45s`, `12m 05s`, `3h 20m`, `8d 3h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TrainConfig {
        TrainConfig {
            model_size: "small".parse().unwrap(),
            seq_len: 1024,
            batch_size: 8,
            grad_accum: 2,
            max_steps: 20_000,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn the_plan_counts_tokens_and_passes() {
        let c = cfg();
        let plan = Plan::new(&c, 0, 9174);
        assert_eq!(plan.tokens_per_step, 16_384);
        assert_eq!(plan.tokens(), 327_680_000);
        assert!((plan.passes() - 327_680_000.0 / 9174.0).abs() < 1e-6);
        assert_eq!(
            plan.line(&c),
            "plan: 20000 steps x 16384 tokens (batch 8 x accumulation 2 x seq 1024) = 327680000 tokens, 35718.3 passes over the train split (9174 tokens)"
        );
        assert!(Plan::new(&c, 500, 9174)
            .line(&c)
            .ends_with(", resumed at step 500"));
    }

    #[test]
    fn many_passes_and_a_gpu_profile_on_the_cpu_are_warned_about() {
        let mut c = cfg();
        let w = Plan::new(&c, 0, 9174).warnings(&c);
        assert_eq!(w.len(), 1, "{w:?}");
        // 4 passes of 9174 tokens at 16384 a step: 2 steps.
        assert!(w[0].starts_with("warning: that is 35718.3 passes"), "{w:?}");
        assert!(w[0].contains("--max-steps 2 makes 4 passes"), "{w:?}");
        c.vram = Some("12gb".into());
        let w = Plan::new(&c, 0, 9174).warnings(&c);
        assert!(w[1].starts_with("warning: --vram 12gb sizes a run for a GPU's memory, but this run is on the CPU, where the small preset is slow"), "{w:?}");
        // A plan of fewer passes, on a GPU: nothing to say.
        c.device = DeviceSpec::Cuda(None);
        c.max_steps = 2;
        assert!(Plan::new(&c, 0, 9174 * 10).warnings(&c).is_empty());
    }

    #[test]
    fn the_clock_times_steps_after_the_first() {
        let mut clock = Clock::new(10);
        assert_eq!(clock.tick(1, 100), None);
        assert!(!clock.first_report(1));
        std::thread::sleep(Duration::from_millis(20));
        let pace = clock.tick(2, 200).unwrap();
        // One step of ~20 ms timed, eight left: ~160 ms.
        assert!(pace.tokens_per_s > 0.0 && pace.tokens_per_s <= 100.0 / 0.02);
        assert!(pace.left >= Duration::from_millis(160) && pace.left < Duration::from_secs(5));
        assert!(!clock.first_report(2));
        assert!(clock.first_report(1 + TIMED_STEPS));
        assert!(!clock.first_report(2 + TIMED_STEPS), "said once");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        let d = Duration::from_secs;
        assert_eq!(human(d(45)), "45s");
        assert_eq!(human(d(725)), "12m 05s");
        assert_eq!(human(d(12_000)), "3h 20m");
        assert_eq!(human(d(8 * 86400 + 3 * 3600 + 59)), "8d 3h");
    }
}
