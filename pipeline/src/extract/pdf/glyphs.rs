//! Glyph names to Unicode text: the part of the Adobe Glyph List that text in Latin-script
//! documents uses, plus the `uniXXXX` / `uXXXX` and `a_b` ligature naming conventions.
//!
//! Simple fonts name their glyphs (`/Differences`, built-in Type 1 encodings), so a name is
//! often the only clue to a glyph's text. Ligatures map to their letters, as `pdftotext`
//! writes them, so "ﬁnd" and "find" are the same word.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Names of the printable ASCII characters, 0x20 to 0x7E, in order.
pub(crate) const ASCII_NAMES: [&str; 95] = [
    "space",
    "exclam",
    "quotedbl",
    "numbersign",
    "dollar",
    "percent",
    "ampersand",
    "quotesingle",
    "parenleft",
    "parenright",
    "asterisk",
    "plus",
    "comma",
    "hyphen",
    "period",
    "slash",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "colon",
    "semicolon",
    "less",
    "equal",
    "greater",
    "question",
    "at",
    "A",
    "B",
    "C",
    "D",
    "E",
    "F",
    "G",
    "H",
    "I",
    "J",
    "K",
    "L",
    "M",
    "N",
    "O",
    "P",
    "Q",
    "R",
    "S",
    "T",
    "U",
    "V",
    "W",
    "X",
    "Y",
    "Z",
    "bracketleft",
    "backslash",
    "bracketright",
    "asciicircum",
    "underscore",
    "grave",
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
    "i",
    "j",
    "k",
    "l",
    "m",
    "n",
    "o",
    "p",
    "q",
    "r",
    "s",
    "t",
    "u",
    "v",
    "w",
    "x",
    "y",
    "z",
    "braceleft",
    "bar",
    "braceright",
    "asciitilde",
];

/// Names of the Latin-1 characters 0xA0 to 0xFF, in order (0xA0 and 0xAD are the
/// no-break space and soft hyphen, written as plain ones).
pub(crate) const LATIN1_NAMES: [&str; 96] = [
    "space",
    "exclamdown",
    "cent",
    "sterling",
    "currency",
    "yen",
    "brokenbar",
    "section",
    "dieresis",
    "copyright",
    "ordfeminine",
    "guillemotleft",
    "logicalnot",
    "hyphen",
    "registered",
    "macron",
    "degree",
    "plusminus",
    "twosuperior",
    "threesuperior",
    "acute",
    "mu",
    "paragraph",
    "periodcentered",
    "cedilla",
    "onesuperior",
    "ordmasculine",
    "guillemotright",
    "onequarter",
    "onehalf",
    "threequarters",
    "questiondown",
    "Agrave",
    "Aacute",
    "Acircumflex",
    "Atilde",
    "Adieresis",
    "Aring",
    "AE",
    "Ccedilla",
    "Egrave",
    "Eacute",
    "Ecircumflex",
    "Edieresis",
    "Igrave",
    "Iacute",
    "Icircumflex",
    "Idieresis",
    "Eth",
    "Ntilde",
    "Ograve",
    "Oacute",
    "Ocircumflex",
    "Otilde",
    "Odieresis",
    "multiply",
    "Oslash",
    "Ugrave",
    "Uacute",
    "Ucircumflex",
    "Udieresis",
    "Yacute",
    "Thorn",
    "germandbls",
    "agrave",
    "aacute",
    "acircumflex",
    "atilde",
    "adieresis",
    "aring",
    "ae",
    "ccedilla",
    "egrave",
    "eacute",
    "ecircumflex",
    "edieresis",
    "igrave",
    "iacute",
    "icircumflex",
    "idieresis",
    "eth",
    "ntilde",
    "ograve",
    "oacute",
    "ocircumflex",
    "otilde",
    "odieresis",
    "divide",
    "oslash",
    "ugrave",
    "uacute",
    "ucircumflex",
    "udieresis",
    "yacute",
    "thorn",
    "ydieresis",
];

/// Names outside ASCII and Latin-1: typographic punctuation, ligatures, Latin Extended
/// letters of the standard encodings, and the Greek and math glyphs of TeX fonts.
const OTHER_NAMES: &[(&str, &str)] = &[
    ("fi", "fi"),
    ("fl", "fl"),
    ("ff", "ff"),
    ("ffi", "ffi"),
    ("ffl", "ffl"),
    ("dotlessi", "ı"),
    ("dotlessj", "ȷ"),
    ("quoteleft", "‘"),
    ("quoteright", "’"),
    ("quotedblleft", "“"),
    ("quotedblright", "”"),
    ("quotesinglbase", "‚"),
    ("quotedblbase", "„"),
    ("guilsinglleft", "‹"),
    ("guilsinglright", "›"),
    ("endash", "–"),
    ("emdash", "—"),
    ("bullet", "•"),
    ("ellipsis", "…"),
    ("dagger", "†"),
    ("daggerdbl", "‡"),
    ("perthousand", "‰"),
    ("trademark", "™"),
    ("Euro", "€"),
    ("florin", "ƒ"),
    ("fraction", "⁄"),
    ("circumflex", "ˆ"),
    ("tilde", "˜"),
    ("breve", "˘"),
    ("dotaccent", "˙"),
    ("ring", "˚"),
    ("hungarumlaut", "˝"),
    ("ogonek", "˛"),
    ("caron", "ˇ"),
    ("OE", "Œ"),
    ("oe", "œ"),
    ("Lslash", "Ł"),
    ("lslash", "ł"),
    ("Scaron", "Š"),
    ("scaron", "š"),
    ("Zcaron", "Ž"),
    ("zcaron", "ž"),
    ("Ydieresis", "Ÿ"),
    ("minus", "−"),
    ("nbspace", " "),
    ("sfthyphen", "-"),
    ("visiblespace", "␣"),
    ("lozenge", "◊"),
    ("notequal", "≠"),
    ("lessequal", "≤"),
    ("greaterequal", "≥"),
    ("approxequal", "≈"),
    ("infinity", "∞"),
    ("partialdiff", "∂"),
    ("summation", "∑"),
    ("product", "∏"),
    ("radical", "√"),
    ("integral", "∫"),
    ("element", "∈"),
    ("equivalence", "≡"),
    ("similar", "∼"),
    ("proportional", "∝"),
    ("prime", "′"),
    ("universal", "∀"),
    ("existential", "∃"),
    ("emptyset", "∅"),
    ("nabla", "∇"),
    ("logicaland", "∧"),
    ("logicalor", "∨"),
    ("intersection", "∩"),
    ("union", "∪"),
    ("propersubset", "⊂"),
    ("propersuperset", "⊃"),
    ("reflexsubset", "⊆"),
    ("reflexsuperset", "⊇"),
    ("asteriskmath", "∗"),
    ("arrowleft", "←"),
    ("arrowright", "→"),
    ("arrowup", "↑"),
    ("arrowdown", "↓"),
    ("arrowboth", "↔"),
    ("arrowdblleft", "⇐"),
    ("arrowdblright", "⇒"),
    ("arrowdblboth", "⇔"),
    ("angbracketleft", "⟨"),
    ("angbracketright", "⟩"),
    ("circlecopyrt", "©"),
    ("openbullet", "◦"),
    ("club", "♣"),
    ("diamond", "♦"),
    ("heart", "♥"),
    ("spade", "♠"),
    ("checkmark", "✓"),
    ("dotmath", "⋅"),
    ("triangle", "△"),
    ("alpha", "α"),
    ("beta", "β"),
    ("gamma", "γ"),
    ("delta", "δ"),
    ("epsilon", "ε"),
    ("zeta", "ζ"),
    ("eta", "η"),
    ("theta", "θ"),
    ("iota", "ι"),
    ("kappa", "κ"),
    ("lambda", "λ"),
    ("nu", "ν"),
    ("xi", "ξ"),
    ("omicron", "ο"),
    ("pi", "π"),
    ("rho", "ρ"),
    ("sigma", "σ"),
    ("tau", "τ"),
    ("upsilon", "υ"),
    ("phi", "φ"),
    ("chi", "χ"),
    ("psi", "ψ"),
    ("omega", "ω"),
    ("Gamma", "Γ"),
    ("Delta", "Δ"),
    ("Theta", "Θ"),
    ("Lambda", "Λ"),
    ("Xi", "Ξ"),
    ("Pi", "Π"),
    ("Sigma", "Σ"),
    ("Upsilon", "Υ"),
    ("Phi", "Φ"),
    ("Psi", "Ψ"),
    ("Omega", "Ω"),
    ("Ohm", "Ω"),
];

fn table() -> &'static HashMap<&'static str, String> {
    static TABLE: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = HashMap::new();
        for (pair, base) in [(&LATIN1_NAMES[..], 0xA0u32), (&ASCII_NAMES[..], 0x20)] {
            // ASCII goes last so "space" and "hyphen" keep their plain meaning.
            for (i, name) in pair.iter().enumerate() {
                if let Some(c) = char::from_u32(base + i as u32) {
                    t.insert(*name, c.to_string());
                }
            }
        }
        t.insert("space", " ".to_string());
        t.insert("hyphen", "-".to_string());
        for (name, text) in OTHER_NAMES {
            t.insert(*name, (*text).to_string());
        }
        t
    })
}

/// The text of a glyph name, or `None` for names that carry no text (`.notdef`, `g123`).
pub(crate) fn glyph_text(name: &str) -> Option<String> {
    if let Some(text) = table().get(name) {
        return Some(text.clone());
    }
    // "a.sc", "one.oldstyle": the part before the first period names the character.
    if let Some((base, _)) = name.split_once('.') {
        return if base.is_empty() {
            None
        } else {
            glyph_text(base)
        };
    }
    // "f_f_i": a ligature of its parts.
    if name.contains('_') {
        return name.split('_').map(glyph_text).collect();
    }
    if let Some(hex) = name.strip_prefix("uni") {
        if !hex.is_empty() && hex.len() % 4 == 0 {
            return (0..hex.len())
                .step_by(4)
                .map(|i| {
                    hex.get(i..i + 4)
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                })
                .collect();
        }
    }
    if let Some(hex) = name.strip_prefix('u') {
        if (4..=6).contains(&hex.len()) {
            return u32::from_str_radix(hex, 16)
                .ok()
                .and_then(char::from_u32)
                .map(String::from);
        }
    }
    None
}

/// Ligature characters spelled out, so words match however the font drew them.
pub(crate) fn expand_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{FB00}' => "ff",
        '\u{FB01}' => "fi",
        '\u{FB02}' => "fl",
        '\u{FB03}' => "ffi",
        '\u{FB04}' => "ffl",
        '\u{FB05}' | '\u{FB06}' => "st",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_text() {
        assert_eq!(glyph_text("A").as_deref(), Some("A"));
        assert_eq!(glyph_text("zero").as_deref(), Some("0"));
        assert_eq!(glyph_text("space").as_deref(), Some(" "));
        assert_eq!(glyph_text("hyphen").as_deref(), Some("-"));
        assert_eq!(glyph_text("eacute").as_deref(), Some("é"));
        assert_eq!(glyph_text("quoteright").as_deref(), Some("’"));
        assert_eq!(glyph_text("ffi").as_deref(), Some("ffi"));
        assert_eq!(glyph_text("alpha").as_deref(), Some("α"));
    }

    #[test]
    fn conventions_for_unlisted_names() {
        assert_eq!(glyph_text("uni0041").as_deref(), Some("A"));
        assert_eq!(glyph_text("uni00660069").as_deref(), Some("fi"));
        assert_eq!(glyph_text("u1D400").as_deref(), Some("\u{1D400}"));
        assert_eq!(glyph_text("f_f_l").as_deref(), Some("ffl"));
        assert_eq!(glyph_text("a.sc").as_deref(), Some("a"));
        assert_eq!(glyph_text(".notdef"), None);
        assert_eq!(glyph_text("g123"), None);
        assert_eq!(glyph_text("uniZZZZ"), None);
    }

    #[test]
    fn ligature_characters_expand() {
        assert_eq!(expand_ligature('\u{FB03}'), Some("ffi"));
        assert_eq!(expand_ligature('f'), None);
    }
}
