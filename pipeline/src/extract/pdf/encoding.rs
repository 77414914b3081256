//! The base encodings of simple fonts (ISO 32000-1, Annex D): which glyph name each byte
//! code selects under StandardEncoding, WinAnsiEncoding, MacRomanEncoding and
//! PDFDocEncoding, and reading a Type 1 font program's built-in encoding.
//!
//! Tables hold glyph names rather than characters because `/Differences` also speaks in
//! names; [`super::glyphs`] turns the final names into text.

use super::glyphs::{ASCII_NAMES, LATIN1_NAMES};

/// A simple font's base encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BaseEncoding {
    Standard,
    WinAnsi,
    MacRoman,
    PdfDoc,
}

impl BaseEncoding {
    pub(crate) fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"StandardEncoding" => BaseEncoding::Standard,
            b"WinAnsiEncoding" => BaseEncoding::WinAnsi,
            b"MacRomanEncoding" | b"MacExpertEncoding" => BaseEncoding::MacRoman,
            b"PDFDocEncoding" => BaseEncoding::PdfDoc,
            _ => return None,
        })
    }

    /// The glyph name for `code`, if the encoding defines one.
    pub(crate) fn glyph(self, code: u8) -> Option<&'static str> {
        match (self, code) {
            (BaseEncoding::Standard, 0x27) => Some("quoteright"),
            (BaseEncoding::Standard, 0x60) => Some("quoteleft"),
            (_, 0x20..=0x7E) => Some(ASCII_NAMES[usize::from(code - 0x20)]),
            (BaseEncoding::Standard, 0xA1..=0xFF) => STANDARD_HIGH[usize::from(code - 0xA1)],
            (BaseEncoding::WinAnsi, 0x80..=0x9F) => WIN_ANSI_80[usize::from(code - 0x80)],
            (BaseEncoding::WinAnsi, 0xA0..=0xFF) => Some(LATIN1_NAMES[usize::from(code - 0xA0)]),
            (BaseEncoding::MacRoman, 0x80..=0xFF) => Some(MAC_ROMAN_HIGH[usize::from(code - 0x80)]),
            (BaseEncoding::PdfDoc, 0x18..=0x1F) => Some(PDF_DOC_18[usize::from(code - 0x18)]),
            (BaseEncoding::PdfDoc, 0x80..=0xA0) => PDF_DOC_80[usize::from(code - 0x80)],
            (BaseEncoding::PdfDoc, 0xA1..=0xFF) => Some(LATIN1_NAMES[usize::from(code - 0xA0)]),
            _ => None,
        }
    }
}

const WIN_ANSI_80: [Option<&str>; 32] = [
    Some("Euro"),
    None,
    Some("quotesinglbase"),
    Some("florin"),
    Some("quotedblbase"),
    Some("ellipsis"),
    Some("dagger"),
    Some("daggerdbl"),
    Some("circumflex"),
    Some("perthousand"),
    Some("Scaron"),
    Some("guilsinglleft"),
    Some("OE"),
    None,
    Some("Zcaron"),
    None,
    None,
    Some("quoteleft"),
    Some("quoteright"),
    Some("quotedblleft"),
    Some("quotedblright"),
    Some("bullet"),
    Some("endash"),
    Some("emdash"),
    Some("tilde"),
    Some("trademark"),
    Some("scaron"),
    Some("guilsinglright"),
    Some("oe"),
    None,
    Some("zcaron"),
    Some("Ydieresis"),
];

/// StandardEncoding from 0xA1 to 0xFF.
const STANDARD_HIGH: [Option<&str>; 95] = [
    // 0xA1
    Some("exclamdown"),
    Some("cent"),
    Some("sterling"),
    Some("fraction"),
    Some("yen"),
    Some("florin"),
    Some("section"),
    Some("currency"),
    Some("quotesingle"),
    Some("quotedblleft"),
    Some("guillemotleft"),
    Some("guilsinglleft"),
    Some("guilsinglright"),
    Some("fi"),
    Some("fl"),
    // 0xB0
    None,
    Some("endash"),
    Some("dagger"),
    Some("daggerdbl"),
    Some("periodcentered"),
    None,
    Some("paragraph"),
    Some("bullet"),
    Some("quotesinglbase"),
    Some("quotedblbase"),
    Some("quotedblright"),
    Some("guillemotright"),
    Some("ellipsis"),
    Some("perthousand"),
    None,
    Some("questiondown"),
    // 0xC0
    None,
    Some("grave"),
    Some("acute"),
    Some("circumflex"),
    Some("tilde"),
    Some("macron"),
    Some("breve"),
    Some("dotaccent"),
    Some("dieresis"),
    None,
    Some("ring"),
    Some("cedilla"),
    None,
    Some("hungarumlaut"),
    Some("ogonek"),
    Some("caron"),
    // 0xD0
    Some("emdash"),
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    // 0xE0
    None,
    Some("AE"),
    None,
    Some("ordfeminine"),
    None,
    None,
    None,
    None,
    Some("Lslash"),
    Some("Oslash"),
    Some("OE"),
    Some("ordmasculine"),
    None,
    None,
    None,
    None,
    // 0xF0
    None,
    Some("ae"),
    None,
    None,
    None,
    Some("dotlessi"),
    None,
    None,
    Some("lslash"),
    Some("oslash"),
    Some("oe"),
    Some("germandbls"),
    None,
    None,
    None,
    None,
];

const MAC_ROMAN_HIGH: [&str; 128] = [
    "Adieresis",
    "Aring",
    "Ccedilla",
    "Eacute",
    "Ntilde",
    "Odieresis",
    "Udieresis",
    "aacute",
    "agrave",
    "acircumflex",
    "adieresis",
    "atilde",
    "aring",
    "ccedilla",
    "eacute",
    "egrave",
    "ecircumflex",
    "edieresis",
    "iacute",
    "igrave",
    "icircumflex",
    "idieresis",
    "ntilde",
    "oacute",
    "ograve",
    "ocircumflex",
    "odieresis",
    "otilde",
    "uacute",
    "ugrave",
    "ucircumflex",
    "udieresis",
    "dagger",
    "degree",
    "cent",
    "sterling",
    "section",
    "bullet",
    "paragraph",
    "germandbls",
    "registered",
    "copyright",
    "trademark",
    "acute",
    "dieresis",
    "notequal",
    "AE",
    "Oslash",
    "infinity",
    "plusminus",
    "lessequal",
    "greaterequal",
    "yen",
    "mu",
    "partialdiff",
    "summation",
    "product",
    "pi",
    "integral",
    "ordfeminine",
    "ordmasculine",
    "Omega",
    "ae",
    "oslash",
    "questiondown",
    "exclamdown",
    "logicalnot",
    "radical",
    "florin",
    "approxequal",
    "Delta",
    "guillemotleft",
    "guillemotright",
    "ellipsis",
    "space",
    "Agrave",
    "Atilde",
    "Otilde",
    "OE",
    "oe",
    "endash",
    "emdash",
    "quotedblleft",
    "quotedblright",
    "quoteleft",
    "quoteright",
    "divide",
    "lozenge",
    "ydieresis",
    "Ydieresis",
    "fraction",
    "currency",
    "guilsinglleft",
    "guilsinglright",
    "fi",
    "fl",
    "daggerdbl",
    "periodcentered",
    "quotesinglbase",
    "quotedblbase",
    "perthousand",
    "Acircumflex",
    "Ecircumflex",
    "Aacute",
    "Edieresis",
    "Egrave",
    "Iacute",
    "Icircumflex",
    "Idieresis",
    "Igrave",
    "Oacute",
    "Ocircumflex",
    ".notdef",
    "Ograve",
    "Uacute",
    "Ucircumflex",
    "Ugrave",
    "dotlessi",
    "circumflex",
    "tilde",
    "macron",
    "breve",
    "dotaccent",
    "ring",
    "cedilla",
    "hungarumlaut",
    "ogonek",
    "caron",
];

const PDF_DOC_18: [&str; 8] = [
    "breve",
    "caron",
    "circumflex",
    "dotaccent",
    "hungarumlaut",
    "ogonek",
    "ring",
    "tilde",
];

const PDF_DOC_80: [Option<&str>; 33] = [
    Some("bullet"),
    Some("dagger"),
    Some("daggerdbl"),
    Some("ellipsis"),
    Some("emdash"),
    Some("endash"),
    Some("florin"),
    Some("fraction"),
    Some("guilsinglleft"),
    Some("guilsinglright"),
    Some("minus"),
    Some("perthousand"),
    Some("quotedblbase"),
    Some("quotedblleft"),
    Some("quotedblright"),
    Some("quoteleft"),
    Some("quoteright"),
    Some("quotesinglbase"),
    Some("trademark"),
    Some("fi"),
    Some("fl"),
    Some("Lslash"),
    Some("OE"),
    Some("Scaron"),
    Some("Ydieresis"),
    Some("Zcaron"),
    Some("dotlessi"),
    Some("lslash"),
    Some("oe"),
    Some("scaron"),
    Some("zcaron"),
    None,
    Some("Euro"),
];

/// The built-in encoding of a Type 1 font program: the `dup <code> /<name> put` entries of
/// its clear-text part. `StandardEncoding` fonts yield `None` (the caller's default).
pub(crate) fn type1_builtin(program: &[u8]) -> Option<Vec<(u8, String)>> {
    // The encoding sits in the clear-text header, before `eexec`; stop there so the
    // encrypted binary part is never scanned.
    let end = find(program, b"eexec").unwrap_or(program.len());
    let head = &program[..end];
    let start = find(head, b"/Encoding")?;
    let rest = &head[start + b"/Encoding".len()..];
    if rest.trim_ascii_start().starts_with(b"StandardEncoding") {
        return None;
    }
    let mut out = Vec::new();
    let words: Vec<&[u8]> = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let mut i = 0;
    while i + 3 < words.len() {
        if words[i] == b"readonly" || words[i] == b"def" {
            break;
        }
        if words[i] == b"dup" && words[i + 3] == b"put" {
            let code = std::str::from_utf8(words[i + 1])
                .ok()
                .and_then(|c| c.parse::<u8>().ok());
            let name = words[i + 2]
                .strip_prefix(b"/")
                .and_then(|n| std::str::from_utf8(n).ok());
            if let (Some(code), Some(name)) = (code, name) {
                out.push((code, name.to_string()));
            }
            i += 4;
        } else {
            i += 1;
        }
    }
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_differ_where_the_spec_says() {
        assert_eq!(BaseEncoding::Standard.glyph(0x27), Some("quoteright"));
        assert_eq!(BaseEncoding::WinAnsi.glyph(0x27), Some("quotesingle"));
        assert_eq!(BaseEncoding::Standard.glyph(0xAE), Some("fi"));
        assert_eq!(BaseEncoding::WinAnsi.glyph(0x93), Some("quotedblleft"));
        assert_eq!(BaseEncoding::WinAnsi.glyph(0xE9), Some("eacute"));
        assert_eq!(BaseEncoding::MacRoman.glyph(0x8E), Some("eacute"));
        assert_eq!(BaseEncoding::MacRoman.glyph(0xDE), Some("fi"));
        assert_eq!(BaseEncoding::PdfDoc.glyph(0x93), Some("fi"));
        assert_eq!(BaseEncoding::PdfDoc.glyph(0xE9), Some("eacute"));
        assert_eq!(BaseEncoding::WinAnsi.glyph(0x81), None);
        assert_eq!(BaseEncoding::Standard.glyph(0x10), None);
    }

    #[test]
    fn reads_type1_builtin_encoding() {
        let program = b"%!PS-AdobeFont-1.0: CMMI10\n/Encoding 256 array\n0 1 255 {1 index exch /.notdef put} for\n\
            dup 11 /alpha put\ndup 58 /period put\nreadonly def\ncurrentfile eexec\n\x80\x81dup 12 /beta put";
        let enc = type1_builtin(program).unwrap();
        assert_eq!(
            enc,
            vec![(11, "alpha".to_string()), (58, "period".to_string())]
        );
        assert!(type1_builtin(b"/Encoding StandardEncoding def currentfile eexec").is_none());
    }
}
