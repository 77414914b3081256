//! The resource budget of one extraction: a deadline, a cap on every decompressed stream and
//! on all of them together, and a cap on Form XObject nesting.
//!
//! A PDF is untrusted input: a few kilobytes can inflate to gigabytes or draw a form inside
//! itself forever. Every loop that can run long asks the budget before going on, so a hostile
//! file ends in a [`PdfError`] instead of a hang or an out-of-memory kill.

use std::time::{Duration, Instant};

use super::PdfError;

/// Limits on the work and memory one `extract_pages` call may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfLimits {
    /// Wall-clock time allowed for the whole document, parsing included.
    pub deadline: Duration,
    /// Largest size one stream may decompress to.
    pub max_stream_bytes: usize,
    /// Largest size all decompressed streams of the document may add up to.
    pub max_total_bytes: usize,
    /// Deepest nesting of Form XObjects drawn inside one another.
    pub max_depth: usize,
}

impl Default for PdfLimits {
    /// Generous enough for a 3,000-page manual, small enough that a bomb fails in seconds.
    fn default() -> Self {
        PdfLimits {
            deadline: Duration::from_secs(60),
            max_stream_bytes: 64 << 20,
            max_total_bytes: 512 << 20,
            max_depth: 64,
        }
    }
}

/// What is left of the limits while one document is being read.
#[derive(Debug)]
pub(crate) struct Budget {
    deadline: Instant,
    pub(crate) max_stream_bytes: usize,
    max_total_bytes: usize,
    pub(crate) max_depth: usize,
    used_bytes: usize,
}

impl Budget {
    pub(crate) fn new(limits: &PdfLimits) -> Self {
        let now = Instant::now();
        Budget {
            // A deadline too far away to represent is no deadline at all.
            deadline: now
                .checked_add(limits.deadline)
                .unwrap_or(now + Duration::from_secs(1 << 40)),
            max_stream_bytes: limits.max_stream_bytes,
            max_total_bytes: limits.max_total_bytes,
            max_depth: limits.max_depth,
            used_bytes: 0,
        }
    }

    /// Fails once the deadline has passed.
    pub(crate) fn check_time(&self) -> Result<(), PdfError> {
        if Instant::now() > self.deadline {
            Err(PdfError::TimeLimit)
        } else {
            Ok(())
        }
    }

    /// The most bytes the next stream may decompress to: the per-stream cap or what is left
    /// of the total, whichever is smaller.
    pub(crate) fn stream_allowance(&self) -> usize {
        self.max_stream_bytes
            .min(self.max_total_bytes.saturating_sub(self.used_bytes))
    }

    /// Counts `n` more decompressed bytes against the total.
    pub(crate) fn charge(&mut self, n: usize) -> Result<(), PdfError> {
        self.used_bytes = self.used_bytes.saturating_add(n);
        if self.used_bytes > self.max_total_bytes {
            return Err(PdfError::SizeLimit(format!(
                "streams decompress to more than {} in total",
                human_bytes(self.max_total_bytes)
            )));
        }
        Ok(())
    }
}

/// `64 MiB`, `512 KiB`, `100 bytes`: sizes in messages, as a user would write them.
pub(crate) fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_deadline_expires_and_total_is_enforced() {
        let limits = PdfLimits {
            deadline: Duration::ZERO,
            max_stream_bytes: 100,
            max_total_bytes: 150,
            max_depth: 4,
        };
        let mut budget = Budget::new(&limits);
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(budget.check_time(), Err(PdfError::TimeLimit)));
        assert_eq!(budget.stream_allowance(), 100);
        budget.charge(100).unwrap();
        assert_eq!(budget.stream_allowance(), 50);
        assert!(matches!(budget.charge(51), Err(PdfError::SizeLimit(_))));
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 10), "3 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
