//! Tests of the code chunker: exact cut points per language, attachment of comments and
//! attributes, oversized definitions, fallbacks, robustness, and the sample corpus.

use super::*;

/// Split and check what must hold for any input: lossless, no empty chunk.
fn run(text: &str, lang: Lang, budget: usize) -> CodeChunks<'_> {
    let out = split(text, lang, budget);
    assert_eq!(out.chunks.concat(), text, "lossless");
    assert!(out.chunks.iter().all(|c| !c.is_empty()), "no empty chunk");
    out
}

/// Split a source that parses cleanly and return the first line of every chunk.
fn firsts(text: &str, lang: Lang, budget: usize) -> Vec<&str> {
    let out = run(text, lang, budget);
    assert!(out.parsed, "{lang:?} sample should parse");
    out.chunks
        .iter()
        .map(|c| c.lines().next().unwrap_or_default())
        .collect()
}

#[test]
fn small_file_is_one_chunk_and_empty_file_none() {
    let text = "def f():\n    return 1\n";
    let out = run(text, Lang::Python, 100);
    assert_eq!(out.chunks, vec![text]);
    assert!(out.parsed);
    assert!(run("", Lang::Rust, 10).chunks.is_empty());
}
