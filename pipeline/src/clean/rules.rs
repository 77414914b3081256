//! Shared bookkeeping of the redaction stages: a rule is a pattern, the capture group that
//! holds what is replaced, and an optional check of the match; applying rules rewrites the
//! text and counts each replacement by rule name. The secret itself never leaves here.
//!
//! Patterns write word boundaries as `(?-u:\b)`: a Unicode `\b` keeps the regex crate off
//! its DFA on any text with a non-ASCII byte, which made the stage several times slower.

use std::collections::BTreeMap;

use regex::Regex;

/// Replacements made in one document, by placeholder name (`secret:aws_access_key`).
pub type Counts = BTreeMap<&'static str, u32>;

/// Decides whether a match is really what the rule looks for: the value that would be
/// replaced, and the text around it (for checks that look at the neighbours).
pub type Check = fn(value: &str, text: &str, start: usize, end: usize) -> bool;

pub struct Rule {
    /// The key in the counts and the report, e.g. `secret:github_token`.
    pub key: &'static str,
    /// What replaces the value, e.g. `<SECRET:github_token>`.
    pub placeholder: &'static str,
    pub regex: Regex,
    /// Only the first participating capture group is replaced (the password, not `password=`);
    /// with no groups, the whole match.
    pub check: Option<Check>,
}

impl Rule {
    /// A rule from a pattern known at compile time (a bad one is a bug, caught by the tests).
    pub fn new(
        key: &'static str,
        placeholder: &'static str,
        pattern: &str,
        check: Option<Check>,
    ) -> Rule {
        let regex = Regex::new(pattern).unwrap_or_else(|e| panic!("rule {key}: {e}"));
        Rule {
            key,
            placeholder,
            regex,
            check,
        }
    }
}

/// Applies `rules` in order, each to the previous one's output; `None` when nothing matched
/// (the text is kept as it is, without a copy).
pub fn apply(rules: &[Rule], text: &str, counts: &mut Counts) -> Option<String> {
    let mut current: Option<String> = None;
    for rule in rules {
        let input = current.as_deref().unwrap_or(text);
        if let Some(out) = apply_one(rule, input, counts) {
            current = Some(out);
        }
    }
    current
}

fn apply_one(rule: &Rule, text: &str, counts: &mut Counts) -> Option<String> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    for caps in rule.regex.captures_iter(text) {
        let Some(m) = caps.iter().skip(1).flatten().next().or_else(|| caps.get(0)) else {
            continue;
        };
        if rule
            .check
            .is_some_and(|check| !check(m.as_str(), text, m.start(), m.end()))
        {
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..m.start()]);
        out.push_str(rule.placeholder);
        copied = m.end();
        *counts.entry(rule.key).or_default() += 1;
    }
    let mut out = out?;
    out.push_str(&text[copied..]);
    Some(out)
}

/// Shannon entropy of `s` in bits per character: random keys score high (base64 about 5 to
/// 6, hex near 4), words and identifiers lower.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len().max(1) as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_group_is_replaced_and_counted() {
        let rules = [Rule::new("k", "<X>", r"key=(\w+)", None)];
        let mut counts = Counts::new();
        let out = apply(&rules, "a key=abc b key=def", &mut counts).unwrap();
        assert_eq!(out, "a key=<X> b key=<X>");
        assert_eq!(counts["k"], 2);
        assert!(apply(&rules, "nothing here", &mut counts).is_none());
    }

    #[test]
    fn entropy_ranks_random_strings_above_words() {
        assert!(entropy("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") > 4.0);
        assert!(entropy("aaaaaaaaaaaaaaaa") < 0.1);
    }
}
