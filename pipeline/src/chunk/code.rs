//! Code chunking: a source file over budget is parsed with tree-sitter and cut between
//! top-level definitions, opening only definitions that are themselves over budget (see
//! `syntax`). A file that does not parse cleanly, or in time, is cut by lines instead.
//!
//! Parsers are costly to create, so each worker thread keeps one and reuses it.

use std::cell::RefCell;
use std::ops::ControlFlow;

use tree_sitter::{ParseOptions, ParseState, Parser, Tree};

pub use super::lang::Lang;
use super::syntax::{self, Cut};
use super::{lone_cr_as_lf, pack_with, same_cuts, text, Cuts};

/// Files larger than this are cut by lines without parsing: tree-sitter's memory grows with
/// the file, and sources this large are generated data rather than code worth its structure.
pub const MAX_PARSE_BYTES: usize = 16 << 20;

/// Parse work allowed: one tree-sitter progress check (about 100 parser operations) per this
/// many bytes of input. Ordinary code takes one per ~100 bytes and deeply nested brackets one
/// per ~20, so this stops only runaway parses. Counting work rather than time keeps the
/// output the same on a busy machine.
const BYTES_PER_PARSE_CHECK: usize = 8;

/// Parse work allowed however small the input.
const MIN_PARSE_CHECKS: usize = 10_000;

/// The chunks of one source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeChunks<'a> {
    pub chunks: Vec<&'a str>,
    /// False when the file was cut by lines because it did not parse cleanly (syntax errors,
    /// too slow or too large to parse); true when it was cut by syntax or needed no cut.
    pub parsed: bool,
}

/// Cut a `lang` source file into chunks of at most `budget` bytes (see the module comment).
/// Lossless; a file within budget is one chunk; empty text gives no chunks. Lines may end in
/// LF, CRLF or a lone CR: a CR file is cut where the same file with LF would be.
pub fn split(text: &str, lang: Lang, budget: usize) -> CodeChunks<'_> {
    if text.len() > budget.max(1) {
        if let Some(lf) = lone_cr_as_lf(text) {
            let cut = split(&lf, lang, budget);
            return CodeChunks {
                chunks: same_cuts(text, &cut.chunks),
                parsed: cut.parsed,
            };
        }
    }
    if text.len() <= budget.max(1) {
        let chunks = if text.is_empty() { vec![] } else { vec![text] };
        return CodeChunks {
            chunks,
            parsed: true,
        };
    }
    match parse(text, lang) {
        Some(tree) if !tree.root_node().has_error() => {
            let cuts = syntax::cuts(&tree, text, budget);
            drop(tree);
            CodeChunks {
                chunks: pack_with(text, &Ranked(cuts), budget),
                parsed: true,
            }
        }
        _ => CodeChunks {
            chunks: text::split(text, budget),
            parsed: false,
        },
    }
}

/// Structural cuts first (best rank, then farthest); prose levels where none fits.
struct Ranked(Vec<Cut>);

impl Cuts for Ranked {
    fn end(&self, text: &str, start: usize, budget: usize) -> usize {
        let limit = start.saturating_add(budget);
        let lo = self.0.partition_point(|c| c.at <= start);
        let hi = self.0.partition_point(|c| c.at <= limit);
        // `min_by_key` keeps the first minimum; iterating backwards that is the farthest.
        match self.0[lo..hi.max(lo)].iter().rev().min_by_key(|c| c.rank) {
            Some(cut) => cut.at,
            None => text::best_end(text, start, budget),
        }
    }
}

thread_local! {
    /// This thread's parser and the language it is set to.
    static PARSER: RefCell<Option<(Parser, Lang)>> = const { RefCell::new(None) };
}

/// Parse with this thread's parser; `None` when the text is too large, the parse ran out of
/// its work allowance, or the grammar would not load.
fn parse(text: &str, lang: Lang) -> Option<Tree> {
    if text.len() > MAX_PARSE_BYTES {
        return None;
    }
    PARSER
        .try_with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if slot.as_ref().map(|(_, set)| *set) != Some(lang) {
                let mut parser = slot.take().map_or_else(Parser::new, |(p, _)| p);
                parser.set_language(&lang.grammar()).ok()?;
                *slot = Some((parser, lang));
            }
            let (parser, _) = slot.as_mut()?;
            parse_bounded(parser, text)
        })
        .ok()
        .flatten()
}

/// One parse with a work allowance proportional to the input.
fn parse_bounded(parser: &mut Parser, text: &str) -> Option<Tree> {
    parse_within(
        parser,
        text,
        MIN_PARSE_CHECKS + text.len() / BYTES_PER_PARSE_CHECK,
    )
}

/// One parse, cancelled after `allowance` progress checks or as soon as every parse path is
/// in error recovery: such a file is cut by lines anyway, and error recovery is the slow part
/// of parsing (junk input parses about ten times slower than code).
fn parse_within(parser: &mut Parser, text: &str, allowance: usize) -> Option<Tree> {
    let mut checks = 0usize;
    let mut progress = |state: &ParseState| {
        checks += 1;
        if checks > allowance || state.has_error() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let bytes = text.as_bytes();
    let options = ParseOptions::new().progress_callback(&mut progress);
    let tree = parser.parse_with_options(
        &mut |at, _| bytes.get(at..).unwrap_or_default(),
        None,
        Some(options),
    );
    if tree.is_none() {
        // A cancelled parse would otherwise resume on the next call.
        parser.reset();
    }
    tree
}

#[cfg(test)]
mod tests;
