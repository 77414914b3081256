//! Quality: cheap heuristics that drop boilerplate and junk prose, after the Gopher rules
//! (Rae et al. 2021, "Scaling Language Models", appendix A.1.1) with datatrove's thresholds.
//!
//! Only prose is judged (text, PDF, dataset rows); code and configs are exempt, since their
//! symbols, short lines and repeats are their nature. A document is judged only from
//! `MIN_WORDS` words on: a short note gives too little evidence, and `strict` alone drops it.
//!
//! `default`: mean word length within [3, 10] (words cut at punctuation); at most 0.1
//! symbols (`#`, `...`, `…`) per word; at most 30% of lines ending in an ellipsis; at most 90%
//! of lines bullets; at least 80% of words with a letter (of those with a letter or digit);
//! at most 30% of lines repeating an earlier line of three words or more.
//! `strict` adds: at least 50 words and at most 100,000; at least two English stop words
//! (the, be, to, of, and, that, have, with) - which also drops other languages.

use std::collections::HashSet;

/// How hard documents are judged (`--filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    None,
    Default,
    Strict,
}

impl Filter {
    pub fn name(self) -> &'static str {
        match self {
            Filter::None => "none",
            Filter::Default => "default",
            Filter::Strict => "strict",
        }
    }

    pub fn parse(name: &str) -> Option<Filter> {
        [Filter::None, Filter::Default, Filter::Strict]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// Words a document needs before `default` judges it.
const MIN_WORDS: usize = 50;
const MAX_WORDS: usize = 100_000;
const WORD_LENGTH: std::ops::RangeInclusive<f64> = 3.0..=10.0;
const MAX_SYMBOLS_PER_WORD: f64 = 0.1;
const MAX_ELLIPSIS_LINES: f64 = 0.3;
const MAX_BULLET_LINES: f64 = 0.9;
const MIN_ALPHA_WORDS: f64 = 0.8;
const MAX_REPEATED_LINES: f64 = 0.3;
/// Words a line needs to count as a repeat.
const REPEATED_LINE_WORDS: usize = 3;
const STOP_WORDS: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];
const MIN_STOP_WORDS: usize = 2;

/// The rule `text` breaks under `filter`, if any (its name, for the totals and the report).
pub fn judge(text: &str, filter: Filter) -> Option<&'static str> {
    if filter == Filter::None {
        return None;
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = words.len();
    if filter == Filter::Strict {
        if n < MIN_WORDS {
            return Some("quality:too_few_words");
        }
        if n > MAX_WORDS {
            return Some("quality:too_many_words");
        }
        let stop = words
            .iter()
            .filter(|w| STOP_WORDS.contains(&w.to_ascii_lowercase().as_str()))
            .take(MIN_STOP_WORDS)
            .count();
        if stop < MIN_STOP_WORDS {
            return Some("quality:no_stop_words");
        }
    }
    if n < MIN_WORDS {
        return None;
    }
    // Words as datatrove's tokenizer gives them, cut at punctuation: an ARN or a URL in a
    // code example is many words, not one of 80 letters.
    let (mut letters, mut pieces) = (0usize, 0usize);
    let cut = |c: char| !(c.is_alphanumeric() || c == '\'');
    for piece in text.split(cut).filter(|p| !p.is_empty()) {
        letters += piece.chars().count();
        pieces += 1;
    }
    let mean = letters as f64 / pieces.max(1) as f64;
    if !WORD_LENGTH.contains(&mean) {
        return Some("quality:mean_word_length");
    }
    let symbols =
        text.matches('#').count() + text.matches("...").count() + text.matches('…').count();
    if symbols as f64 / n as f64 > MAX_SYMBOLS_PER_WORD {
        return Some("quality:symbol_ratio");
    }
    // Punctuation alone (a table of contents' dot leaders) is no word either way.
    let real = words
        .iter()
        .filter(|w| w.chars().any(char::is_alphanumeric));
    let (alpha, real) = real.fold((0, 0), |(a, r), w| {
        (a + usize::from(w.chars().any(char::is_alphabetic)), r + 1)
    });
    if (alpha as f64) < MIN_ALPHA_WORDS * real as f64 {
        return Some("quality:non_alpha_words");
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let share = |count: usize| count as f64 / lines.len().max(1) as f64;
    let ellipsis = lines
        .iter()
        .filter(|l| l.ends_with("...") || l.ends_with('…'));
    if share(ellipsis.count()) > MAX_ELLIPSIS_LINES {
        return Some("quality:ellipsis_lines");
    }
    let bullet = |l: &&&str| l.starts_with(['•', '-', '*', '‣', '◦']);
    if share(lines.iter().filter(bullet).count()) > MAX_BULLET_LINES {
        return Some("quality:bullet_lines");
    }
    // Only lines of a few words count: `}` or `Output::` recur in any technical text.
    let mut seen = HashSet::new();
    let long = |l: &&&str| l.split_whitespace().nth(REPEATED_LINE_WORDS - 1).is_some();
    let repeated = lines
        .iter()
        .filter(long)
        .filter(|l| !seen.insert(**l))
        .count();
    if share(repeated) > MAX_REPEATED_LINES {
        return Some("quality:repeated_lines");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROSE: &str = "The selective state space model reads the sequence once and keeps a \
        state of fixed size. Its parameters depend on the input, so the model can choose what \
        to remember and what to forget. This makes it fast at inference time, and the scan is \
        computed in parallel during training with a hardware aware algorithm that avoids \
        materialising the expanded state in slow memory. We test it on language and audio.";

    #[test]
    fn good_prose_passes_at_every_level() {
        for filter in [Filter::None, Filter::Default, Filter::Strict] {
            assert_eq!(judge(PROSE, filter), None, "{filter:?}");
        }
    }

    #[test]
    fn each_default_rule_catches_its_junk() {
        let cases = [
            ("x ".repeat(60), "quality:mean_word_length"),
            (
                "incomprehensibilities ".repeat(60),
                "quality:mean_word_length",
            ),
            ("#tag #word #more #junk ".repeat(20), "quality:symbol_ratio"),
            (
                (0..30)
                    .map(|i| format!("line {i} of the page goes on and then it stops...\n"))
                    .collect(),
                "quality:ellipsis_lines",
            ),
            ("1234 5678 9012 word ".repeat(20), "quality:non_alpha_words"),
            (
                "Buy cheap pills now from our shop\n".repeat(10)
                    + &"Click here to read all the terms\n".repeat(10),
                "quality:repeated_lines",
            ),
            (
                (0..30)
                    .map(|i| {
                        format!(
                            "* the chapter on configuration options and their defaults, part {i}\n"
                        )
                    })
                    .collect::<String>(),
                "quality:bullet_lines",
            ),
        ];
        for (text, rule) in cases {
            assert_eq!(judge(&text, Filter::Default), Some(rule), "{text:.40}");
            assert_eq!(judge(&text, Filter::None), None);
        }
    }

    #[test]
    fn short_texts_are_only_judged_under_strict() {
        let note = "TODO: fix the build";
        assert_eq!(judge(note, Filter::Default), None);
        assert_eq!(judge(note, Filter::Strict), Some("quality:too_few_words"));
        let other = "Der Hund läuft schnell über die Wiese und bellt laut. ".repeat(10);
        assert_eq!(judge(&other, Filter::Default), None);
        assert_eq!(judge(&other, Filter::Strict), Some("quality:no_stop_words"));
    }
}
