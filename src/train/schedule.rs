//! Learning-rate schedule: linear warmup from 0, then cosine decay to a floor at `max_steps`.

/// Learning rate for optimizer step `step` (0-based).
pub fn lr_at(step: u64, warmup: u64, max_steps: u64, lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    if step >= max_steps || max_steps <= warmup {
        return min_lr;
    }
    let progress = (step - warmup) as f64 / (max_steps - warmup) as f64;
    min_lr + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (lr - min_lr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_then_cosine_reaches_the_floor() {
        let f = |s| lr_at(s, 10, 110, 1e-3, 1e-4);
        assert!((f(0) - 1e-4).abs() < 1e-12);
        assert!((f(4) - 5e-4).abs() < 1e-12);
        assert!((f(9) - 1e-3).abs() < 1e-12);
        assert!((f(10) - 1e-3).abs() < 1e-12); // top of the cosine
        assert!((f(60) - 5.5e-4).abs() < 1e-12); // half way: the mean of lr and floor
        assert!((f(110) - 1e-4).abs() < 1e-12);
        assert!((f(500) - 1e-4).abs() < 1e-12);
        for s in 10..110 {
            assert!(f(s + 1) <= f(s), "not decreasing at {s}");
        }
    }

    #[test]
    fn no_warmup_starts_at_the_peak() {
        assert_eq!(lr_at(0, 0, 100, 2e-3, 0.0), 2e-3);
    }
}
