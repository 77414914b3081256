//! Chunk: cut one extracted document into pieces of at most a byte budget.
//!
//! Two chunkers share one greedy packer: [`text::split`] for prose, configs and dataset rows
//! (cut at blank lines, then line ends, then whitespace, then characters) and [`code::split`]
//! for source code (cut between definitions found by tree-sitter, lines as a fallback).
//! Both are lossless: the chunks, concatenated, give back the input byte for byte, and no
//! chunk ever ends inside a UTF-8 character.

pub mod code;
mod lang;
mod syntax;
pub mod text;

#[cfg(test)]
mod line_ends;

/// Where the chunk that begins at some offset should end: the strategy of one chunker.
pub trait Cuts {
    /// The end of the chunk starting at `start`, which must hold more than `budget` bytes of
    /// `text` after it. Ideally in `start + 1 ..= start + budget`; a larger end means no
    /// allowed cut fits. An end that is not a character boundary after `start` is ignored and
    /// the packer cuts at the last character boundary within the budget instead.
    fn end(&self, text: &str, start: usize, budget: usize) -> usize;
}

/// Greedy packing driven by a [`Cuts`] strategy: each chunk runs from the previous end to the
/// end the strategy picks, until the rest of the text fits the budget. A budget of 0 is taken
/// as 1. Empty text gives no chunks.
pub fn pack_with<'a, C: Cuts + ?Sized>(text: &'a str, cuts: &C, budget: usize) -> Vec<&'a str> {
    let budget = budget.max(1);
    let mut chunks = Vec::with_capacity(text.len() / budget + 1);
    let mut start = 0;
    while start < text.len() {
        let end = if text.len() - start <= budget {
            text.len()
        } else {
            let end = cuts.end(text, start, budget);
            if end > start && end <= text.len() && text.is_char_boundary(end) {
                end
            } else {
                char_end(text, start, budget)
            }
        };
        chunks.push(&text[start..end]);
        start = end;
    }
    chunks
}

/// `text` with each lone CR (an old Mac line end) read as LF, or `None` when it has none.
///
/// The chunkers and tree-sitter's grammars know lines by LF, so a CR-only file would be cut
/// as one long line (and fail to parse). They run on this copy instead: it has the same
/// length, so the copy's cut points are the original's ([`same_cuts`]), and a CR file is cut
/// exactly where the same file with LF is.
fn lone_cr_as_lf(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let lone = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    if !(0..bytes.len()).any(lone) {
        return None;
    }
    let lf: Vec<u8> = (0..bytes.len())
        .map(|i| if lone(i) { b'\n' } else { bytes[i] })
        .collect();
    // Only ASCII CR bytes became ASCII LF bytes: still UTF-8.
    String::from_utf8(lf).ok()
}

/// The slices of `text` that have the lengths of `chunks` (cut from a copy of equal length).
fn same_cuts<'a>(text: &'a str, chunks: &[&str]) -> Vec<&'a str> {
    let mut start = 0;
    chunks
        .iter()
        .map(|c| {
            let piece = &text[start..start + c.len()];
            start += c.len();
            piece
        })
        .collect()
}

/// Sorted, distinct byte offsets strictly inside the text, all on character boundaries,
/// where a chunk may end; all of the same worth.
struct Offsets(Vec<usize>);

impl Cuts for Offsets {
    fn end(&self, text: &str, start: usize, budget: usize) -> usize {
        let limit = start.saturating_add(budget);
        // The last offset within the budget; when none fits the chunk runs on to the next
        // allowed offset (over budget, as the caller permitted), or to the end of the text.
        let after = &self.0[self.0.partition_point(|&at| at <= start)..];
        let fit = after.partition_point(|&at| at <= limit);
        match fit.checked_sub(1) {
            Some(last) => after[last],
            None => after.first().copied().unwrap_or(text.len()),
        }
    }
}

/// Greedy packing shared by both chunkers: given the byte offsets where a cut is allowed,
/// return consecutive slices covering all of `text`, each at most `budget` bytes where the
/// allowed cuts permit. A stretch with no allowed cut inside the budget runs on to the next
/// allowed cut, whatever its size. Offsets need not be sorted; those out of range or inside a
/// UTF-8 character are ignored.
pub fn pack<'a>(text: &'a str, cuts: &[usize], budget: usize) -> Vec<&'a str> {
    let mut clean: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&at| at > 0 && at < text.len() && text.is_char_boundary(at))
        .collect();
    clean.sort_unstable();
    clean.dedup();
    pack_with(text, &Offsets(clean), budget)
}

/// The last character boundary within `budget` bytes after `start`, or the end of the
/// character at `start` when that one alone is wider than the budget.
pub(crate) fn char_end(text: &str, start: usize, budget: usize) -> usize {
    let limit = start.saturating_add(budget).min(text.len());
    let mut end = limit;
    while end > start && !text.is_char_boundary(end) {
        end -= 1;
    }
    if end > start {
        return end;
    }
    let mut end = start + 1;
    while end < text.len() && !text.is_char_boundary(end) {
        end += 1;
    }
    end.min(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(chunks: &[&str]) -> Vec<usize> {
        chunks.iter().map(|c| c.len()).collect()
    }

    #[test]
    fn pack_takes_the_farthest_cut_within_budget() {
        let text = "aaaa bbbb cccc dddd";
        let chunks = pack(text, &[5, 10, 15], 10);
        assert_eq!(chunks, vec!["aaaa bbbb ", "cccc dddd"]);
    }

    #[test]
    fn pack_runs_over_budget_to_the_next_cut_when_none_fits() {
        let text = "0123456789abcdef";
        let chunks = pack(text, &[12], 4);
        assert_eq!(chunks, vec!["0123456789ab", "cdef"]);
        let no_cuts = pack(text, &[], 4);
        assert_eq!(no_cuts, vec![text]);
    }

    #[test]
    fn pack_ignores_offsets_inside_a_character_or_out_of_range() {
        let text = "ééééé";
        // Offset 3 is inside the second 'é'; 99 is past the end.
        let chunks = pack(text, &[3, 4, 99], 4);
        assert_eq!(chunks.concat(), text);
        assert_eq!(lengths(&chunks), vec![4, 6]);
    }

    #[test]
    fn pack_of_empty_text_is_empty_and_small_text_is_one_chunk() {
        assert!(pack("", &[], 8).is_empty());
        assert_eq!(pack("short", &[2], 8), vec!["short"]);
    }

    #[test]
    fn char_end_never_splits_a_character() {
        let text = "a€b";
        assert_eq!(char_end(text, 0, 2), 1);
        assert_eq!(char_end(text, 1, 2), 4);
        assert_eq!(char_end(text, 1, 3), 4);
    }

    #[test]
    fn zero_budget_gives_one_character_per_chunk() {
        let chunks = pack("añb", &[], 0);
        // No offsets at all: the whole text runs on as one piece.
        assert_eq!(chunks, vec!["añb"]);
        let chunks = text::split("añb", 0);
        assert_eq!(chunks, vec!["a", "ñ", "b"]);
    }
}
