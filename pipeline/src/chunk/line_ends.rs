//! Cut points do not depend on how lines end. The sample corpus's source files (every language
//! the code chunker knows) with lines ending in a lone CR (old Mac) are cut exactly where they
//! are with LF; with CRLF (Windows) and a byte-order mark they still parse and are cut between
//! definitions, at line starts.

use std::path::Path;

use super::code::{self, Lang};
use super::text;
use crate::extract;

/// Each sample source file with its language.
fn sources() -> Vec<(String, Lang, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/code");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains('\r'), "{path:?} is LF-only");
        out.push((ext.clone(), Lang::from_extension(&ext).unwrap(), text));
    }
    assert_eq!(out.len(), 8, "one sample per language");
    out
}

fn lengths(chunks: &[&str]) -> Vec<usize> {
    chunks.iter().map(|c| c.len()).collect()
}

#[test]
fn a_cr_file_is_cut_exactly_where_the_lf_file_is() {
    for (ext, lang, lf) in sources() {
        let cr = lf.replace('\n', "\r");
        for budget in [200, 400] {
            let (want, got) = (
                code::split(&lf, lang, budget),
                code::split(&cr, lang, budget),
            );
            assert!(want.chunks.len() > 1, "{ext}: the budget should force cuts");
            assert_eq!(got.chunks.concat(), cr, "{ext}: lossless");
            assert_eq!(got.parsed, want.parsed, "{ext}: parsed the same");
            assert!(got.parsed, "{ext}: a CR file parses");
            assert_eq!(
                lengths(&got.chunks),
                lengths(&want.chunks),
                "{ext} at {budget}"
            );
        }
        let prose = (text::split(&lf, 100), text::split(&cr, 100));
        assert_eq!(lengths(&prose.1), lengths(&prose.0), "{ext}: prose cuts");
    }
}

#[test]
fn a_crlf_file_with_a_byte_order_mark_parses_and_is_cut_between_lines() {
    for (ext, lang, lf) in sources() {
        let mut bytes = b"\xef\xbb\xbf".to_vec();
        bytes.extend(lf.replace('\n', "\r\n").bytes());
        // The reader strips the mark; the chunker sees CRLF text.
        let (crlf, _) = extract::text::decode(&bytes).unwrap();
        assert!(crlf.starts_with(&lf[..1]), "{ext}: mark stripped");
        for budget in [200, 400] {
            let got = code::split(&crlf, lang, budget);
            assert!(got.chunks.len() > 1, "{ext}: the budget should force cuts");
            assert_eq!(got.chunks.concat(), crlf, "{ext}: lossless");
            // Parsed: cut between definitions by the syntax tree, not by the line fallback
            // a file that fails to parse gets; every cut at the start of a line.
            assert!(got.parsed, "{ext}: a CRLF file parses");
            let ends = &got.chunks[..got.chunks.len() - 1];
            assert!(
                ends.iter().all(|c| c.ends_with("\r\n")),
                "{ext} at {budget}"
            );
        }
    }
}
