//! Clean: the stages a document passes between extraction and chunking, in this order:
//! secrets and personal data redacted, prose judged for quality, near-duplicate signatures
//! taken. Each stage is a module of plain functions over the text; this file runs them and
//! gathers what they found, which the writer counts and reports (see `ingest::tally`).
//!
//! Redaction happens before anything else sees the text, so the document's hash, its
//! near-duplicate signature and its tokens are all of the redacted text.

pub mod lang;
pub mod near_dup;
pub mod pii;
pub mod quality;
pub mod rules;
pub mod secrets;

use std::collections::BTreeMap;

use serde::Serialize;

pub use pii::Pii;
pub use quality::Filter;

use crate::extract::Kind;

/// Which stages run, and how (`ingest` flags; recorded in the manifest's settings).
#[derive(Clone, Debug, Serialize)]
pub struct CleanOptions {
    /// Redact credentials (`--keep-secrets` turns it off).
    pub secrets: bool,
    /// The kinds of personal data redacted (`--redact`).
    #[serde(serialize_with = "pii_names")]
    pub pii: Vec<Pii>,
    /// Drop near-duplicates (`--near-dup off` keeps them).
    pub near_dup: bool,
    /// How prose is judged (`--filter`).
    #[serde(serialize_with = "filter_name")]
    pub filter: Filter,
    /// Identify prose's natural language into the `lang` column.
    pub lang_id: bool,
    /// Keep only prose in these languages (`--lang en,de`); empty keeps every language.
    pub langs: Vec<String>,
}

impl Default for CleanOptions {
    /// Every stage on, as `mamba ingest` runs when not told otherwise.
    fn default() -> Self {
        CleanOptions {
            secrets: true,
            pii: Pii::DEFAULT.to_vec(),
            near_dup: true,
            filter: Filter::Default,
            lang_id: true,
            langs: Vec::new(),
        }
    }
}

impl CleanOptions {
    /// Every stage off: the text goes on as extracted.
    pub fn off() -> Self {
        CleanOptions {
            secrets: false,
            pii: Vec::new(),
            near_dup: false,
            filter: Filter::None,
            lang_id: false,
            langs: Vec::new(),
        }
    }
}

fn pii_names<S: serde::Serializer>(pii: &[Pii], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(pii.iter().map(|p| p.name()))
}

fn filter_name<S: serde::Serializer>(filter: &Filter, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(filter.name())
}

/// What the stages found in one document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    /// Replacements by rule (`secret:aws_access_key`, `pii:email`): counts, never values.
    pub redactions: BTreeMap<String, u32>,
    /// The rule that drops the document (`quality:symbol_ratio`), if one does.
    pub dropped: Option<String>,
    /// Near-duplicate band hashes (empty with `--near-dup off` or a very short text).
    pub bands: Vec<u64>,
    /// The natural language of prose, when identified (see [`lang`]).
    pub lang: Option<&'static str>,
}

/// Runs the stages `opts` asks for over one document's text, rewriting it in place.
pub fn clean(text: &mut String, kind: Kind, opts: &CleanOptions) -> Findings {
    let mut counts = rules::Counts::new();
    if opts.secrets {
        if let Some(out) = secrets::redact(text, &mut counts) {
            *text = out;
        }
    }
    if let Some(out) = pii::redact(&opts.pii, text, &mut counts) {
        *text = out;
    }
    let redactions = counts
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    let prose = matches!(kind, Kind::Text | Kind::Pdf | Kind::Dataset);
    let lang = (prose && opts.lang_id).then(|| lang::identify(text));
    let unwanted = lang.filter(|l| !opts.langs.is_empty() && !opts.langs.iter().any(|k| k == l));
    let dropped = match (prose, unwanted) {
        (true, Some(l)) => Some(format!("lang:{l}")),
        (true, None) => quality::judge(text, opts.filter).map(str::to_string),
        (false, _) => None,
    };
    let bands = match opts.near_dup && dropped.is_none() {
        true => near_dup::bands(text),
        false => Vec::new(),
    };
    Findings {
        redactions,
        dropped,
        bands,
        lang,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_run_in_order_and_report_counts_only() {
        let mut text = "mail ops@acme.io, key AKIAZ7Q2X4Y6W8V0U1T3 and more words here".to_string();
        let found = clean(&mut text, Kind::Code, &CleanOptions::default());
        assert_eq!(
            text,
            "mail <PII:email>, key <SECRET:aws_access_key> and more words here"
        );
        let names: Vec<_> = found.redactions.keys().map(String::as_str).collect();
        assert_eq!(names, ["pii:email", "secret:aws_access_key"]);
        assert_eq!(found.bands.len(), near_dup::BANDS);
        assert_eq!(found.dropped, None);
    }

    #[test]
    fn off_leaves_the_text_as_it_is() {
        let original = "key AKIAZ7Q2X4Y6W8V0U1T3 from ops@acme.io, #a #b #c";
        let mut text = original.to_string();
        let found = clean(&mut text, Kind::Text, &CleanOptions::off());
        assert_eq!(text, original);
        assert_eq!(found, Findings::default());
    }
}
