//! Dynamic loss scaling for fp16 (Micikevicius et al. 2018, "Mixed precision training", §3.2):
//! the loss is multiplied by a large scale so small gradients survive fp16, gradients are
//! divided by it before the update; a step whose gradients overflow is skipped and the scale
//! halved, and after a run of good steps the scale doubles again.

use serde::{Deserialize, Serialize};

/// Starting scale, 2^16 as in torch.cuda.amp.GradScaler.
pub const INITIAL_SCALE: f64 = 65536.0;
/// Good steps before the scale doubles.
pub const GROWTH_INTERVAL: u64 = 2000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    pub good_steps: u64,
}

impl LossScaler {
    /// A scaler at `scale`, `good_steps` into its growth interval (resumed runs restore both).
    pub fn new(scale: f64, good_steps: u64) -> Self {
        LossScaler { scale, good_steps }
    }

    /// Records a step's outcome; returns whether its update may be applied.
    pub fn update(&mut self, grads_finite: bool) -> bool {
        if !grads_finite {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_and_skips_growth_doubles() {
        let mut s = LossScaler::new(1024.0, 0);
        assert!(!s.update(false));
        assert_eq!(s.scale, 512.0);
        for _ in 0..GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 512.0);
        assert!(s.update(true));
        assert_eq!(s.scale, 1024.0);
        let mut low = LossScaler::new(1.0, 0);
        low.update(false);
        assert_eq!(low.scale, 1.0, "the scale never drops below 1");
    }
}
