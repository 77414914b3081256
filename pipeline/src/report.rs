//! `report.jsonl`: one line per input that was skipped, failed, or ingested with a repair,
//! a redaction or dropped rows. A line names rules and counts, never a redacted value.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Skipped,
    Failed,
    Repaired,
    /// Ingested with secrets or personal data replaced (the reason counts them by rule).
    Redacted,
    /// Rows of a dataset dropped as near-duplicates or by a filter (the file goes on).
    Dropped,
}

#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub source: &'a str,
    pub status: Status,
    pub reason: &'a str,
}

/// Collects report lines in input order.
#[derive(Default)]
pub struct Report {
    text: String,
}

impl Report {
    pub fn add(&mut self, source: &str, status: Status, reason: &str) {
        let entry = Entry {
            source,
            status,
            reason,
        };
        // Serialising a struct of strings cannot fail.
        if let Ok(line) = serde_json::to_string(&entry) {
            self.text.push_str(&line);
            self.text.push('\n');
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }
}
