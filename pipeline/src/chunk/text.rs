//! Prose chunking (txt, md, rst, configs, PDF pages, dataset rows): cut at the last paragraph
//! break (a blank line) that fits the budget, else at the last line end, else after the last
//! whitespace, else at the last character boundary. Never splits a UTF-8 character; the
//! chunks concatenate back to the input.

use super::{char_end, lone_cr_as_lf, pack_with, same_cuts, Cuts};

/// Cut `text` into chunks of at most `budget` bytes (a single character wider than the budget
/// is the only exception). Empty text gives no chunks; text within budget gives one. Lines
/// may end in LF, CRLF or a lone CR.
pub fn split(text: &str, budget: usize) -> Vec<&str> {
    // Text within budget is one chunk whatever its line ends: no copy to make.
    match (text.len() > budget.max(1))
        .then(|| lone_cr_as_lf(text))
        .flatten()
    {
        Some(lf) => same_cuts(text, &pack_with(&lf, &Prose, budget)),
        None => pack_with(text, &Prose, budget),
    }
}

/// The prose strategy: paragraph, line, whitespace, character.
struct Prose;

impl Cuts for Prose {
    fn end(&self, text: &str, start: usize, budget: usize) -> usize {
        best_end(text, start, budget)
    }
}

/// Whitespace that may sit on a blank line (`\r` included, for CRLF files).
fn is_blank_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c')
}

/// The end of a chunk that starts at `start` and may hold `budget` bytes, by the prose levels.
/// Also the fallback of the code chunker when no definition boundary fits.
pub(crate) fn best_end(text: &str, start: usize, budget: usize) -> usize {
    let bytes = text.as_bytes();
    let limit = start.saturating_add(budget).min(text.len());
    // One backward scan over the window. A newline at `i` allows a cut at `i + 1`; that cut is
    // a paragraph break when the line ending at the newline seen just before (further right)
    // holds only whitespace. '\n' is ASCII, so `i + 1` is always a character boundary.
    let mut line_cut = None;
    let mut newline_after: Option<usize> = None;
    let mut line_blank = true;
    for i in (start..limit).rev() {
        let b = bytes[i];
        if b == b'\n' {
            if let Some(j) = newline_after {
                if line_blank {
                    return j + 1;
                }
            }
            line_cut.get_or_insert(i + 1);
            newline_after = Some(i);
            line_blank = true;
        } else if !is_blank_byte(b) {
            line_blank = false;
        }
    }
    // The first line of the window counts only when the window starts a line: a chunk that
    // began mid-line has not seen the rest of that line.
    if let Some(j) = newline_after {
        if line_blank && (start == 0 || bytes[start - 1] == b'\n') {
            return j + 1;
        }
    }
    if let Some(cut) = line_cut {
        return cut;
    }
    let end = char_end(text, start, budget);
    text[start..end]
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map(|(at, c)| start + at + c.len_utf8())
        .unwrap_or(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunker invariant that holds for any input and budget >= 4.
    fn check(text: &str, budget: usize) -> Vec<&str> {
        let chunks = split(text, budget);
        assert_eq!(chunks.concat(), text, "lossless");
        for chunk in &chunks {
            assert!(!chunk.is_empty());
            assert!(chunk.len() <= budget.max(4), "{} > {budget}", chunk.len());
        }
        chunks
    }

    #[test]
    fn within_budget_is_one_chunk_and_empty_is_none() {
        assert_eq!(split("one short line\n", 100), vec!["one short line\n"]);
        assert!(split("", 10).is_empty());
    }

    #[test]
    fn cuts_at_the_last_paragraph_break_that_fits() {
        let text = "first para\nstill first\n\nsecond para\n\nthird para is here\n";
        let chunks = check(text, 40);
        assert_eq!(
            chunks,
            vec![
                "first para\nstill first\n\nsecond para\n\n",
                "third para is here\n"
            ]
        );
    }

    #[test]
    fn several_blank_lines_stay_with_the_paragraph_before() {
        let text = "alpha\n\n\n\nbeta gamma delta\n";
        let chunks = check(text, 12);
        assert_eq!(chunks, vec!["alpha\n\n\n\n", "beta gamma ", "delta\n"]);
    }

    #[test]
    fn blank_lines_with_spaces_and_crlf_are_paragraph_breaks() {
        let text = "one\r\n  \r\ntwo two two\r\nthree\r\n";
        let chunks = check(text, 14);
        assert_eq!(chunks[0], "one\r\n  \r\n");
    }

    #[test]
    fn falls_back_to_line_ends_without_a_blank_line() {
        let text = "line one\nline two\nline three\n";
        let chunks = check(text, 20);
        assert_eq!(chunks, vec!["line one\nline two\n", "line three\n"]);
    }

    #[test]
    fn falls_back_to_whitespace_in_a_long_line() {
        let text = "the quick brown fox jumps over the lazy dog";
        let chunks = check(text, 16);
        assert_eq!(
            chunks,
            vec!["the quick brown ", "fox jumps over ", "the lazy dog"]
        );
    }

    #[test]
    fn falls_back_to_char_boundaries_without_whitespace() {
        let text = "abcdefghij";
        assert_eq!(check(text, 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn never_splits_a_multibyte_character() {
        // 2-, 3- and 4-byte characters, no whitespace: every cut must fall between them.
        let text = "ñ€𝄞ñ€𝄞ñ€𝄞ñ€𝄞";
        for budget in 4..12 {
            for chunk in check(text, budget) {
                assert!(chunk.chars().count() >= 1);
            }
        }
        // Unicode whitespace (ideographic space) counts as whitespace.
        let cjk = "日本語\u{3000}テキスト";
        assert_eq!(check(cjk, 12), vec!["日本語\u{3000}", "テキスト"]);
    }

    #[test]
    fn a_character_wider_than_the_budget_is_its_own_chunk() {
        assert_eq!(split("a𝄞b", 2), vec!["a", "𝄞", "b"]);
    }

    #[test]
    fn mixed_text_of_every_budget_is_lossless() {
        let text = "# Title\n\nSome prose with ünïcödé, and a long line that goes on and on \
                    without a break.\n\n  indented\n\tand tabbed\n\n\n€€€€€€€€€€\n";
        for budget in 1..text.len() + 2 {
            let chunks = split(text, budget);
            assert_eq!(chunks.concat(), text);
        }
    }
}
