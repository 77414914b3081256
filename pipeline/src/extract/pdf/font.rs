//! Fonts as text extraction needs them: how a shown string splits into character codes, the
//! text of each code, and each glyph's advance width (ISO 32000-1, 9.6-9.10).
//!
//! Text comes from the first of these that knows the code: the font's ToUnicode CMap, its
//! `/Encoding` (base encoding plus `/Differences`, through glyph names), the built-in encoding
//! of an embedded Type 1 program, and finally the code itself read as Latin-1.

use lopdf::{Dictionary, Document, Object};

use super::cmap::CMap;
use super::encoding::{type1_builtin, BaseEncoding};
use super::filters::{decode_stream, Undecodable};
use super::glyphs::{expand_ligature, glyph_text};
use super::limits::Budget;
use super::metrics::Family;
use super::{dict_get, resolve, PdfError};

/// Largest `/W` or `/Widths` array honoured; past it, the rest take the default width.
const MAX_WIDTH_ENTRIES: usize = 1 << 16;

/// One glyph of a shown string, as the interpreter needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Glyph<'a> {
    /// The glyph's text, empty when the font does not say.
    pub text: &'a str,
    /// Horizontal advance in text space units per unit of font size.
    pub width: f64,
    /// Whether word spacing (`Tw`) applies: the single-byte code 32.
    pub is_space: bool,
}

#[derive(Debug)]
enum Kind {
    /// One byte per code, text precomputed for all 256 codes.
    Simple { text: Vec<String> },
    /// Multi-byte codes split by an encoding CMap (Identity-H when none is embedded).
    Composite {
        encoding: Option<Box<CMap>>,
        to_unicode: Option<Box<CMap>>,
    },
}

#[derive(Debug)]
enum Widths {
    Simple {
        first: u32,
        widths: Vec<f64>,
        missing: f64,
        family: Option<Family>,
    },
    Composite {
        default: f64,
        ranges: Vec<(u32, u32, f64)>,
    },
}

/// A font dictionary read once and kept for every string shown in it.
#[derive(Debug)]
pub(crate) struct Font {
    kind: Kind,
    widths: Widths,
    /// Glyph space to text space: 1/1000, or a Type 3 font's `/FontMatrix`.
    scale: f64,
}

impl Font {
    /// Reads a font dictionary. Broken parts fall back to defaults; only a budget limit
    /// (an embedded font program that inflates too far) is an error.
    pub(crate) fn load(
        doc: &Document,
        font: &Dictionary,
        budget: &mut Budget,
    ) -> Result<Font, PdfError> {
        let subtype = dict_get(doc, font, b"Subtype")
            .and_then(|o| o.as_name().ok())
            .unwrap_or(b"Type1");
        let scale = match (subtype, dict_get(doc, font, b"FontMatrix")) {
            (b"Type3", Some(Object::Array(m))) => m.first().and_then(number).unwrap_or(0.001),
            _ => 0.001,
        };
        let to_unicode = match dict_get(doc, font, b"ToUnicode") {
            Some(Object::Stream(s)) => read_cmap(doc, s, budget)?,
            _ => None,
        };
        if subtype == b"Type0" {
            let encoding = match dict_get(doc, font, b"Encoding") {
                Some(Object::Stream(s)) => read_cmap(doc, s, budget)?.map(Box::new),
                _ => None,
            };
            let descendant = match dict_get(doc, font, b"DescendantFonts") {
                Some(Object::Array(a)) => a
                    .first()
                    .map(|d| resolve(doc, d))
                    .and_then(|d| d.as_dict().ok()),
                _ => None,
            };
            return Ok(Font {
                kind: Kind::Composite {
                    encoding,
                    to_unicode: to_unicode.map(Box::new),
                },
                widths: descendant.map_or(
                    Widths::Composite {
                        default: 1000.0,
                        ranges: Vec::new(),
                    },
                    |d| cid_widths(doc, d),
                ),
                scale,
            });
        }
        let text = simple_text(doc, font, to_unicode.as_ref(), budget)?;
        Ok(Font {
            kind: Kind::Simple { text },
            widths: simple_widths(doc, font),
            scale,
        })
    }

    /// Calls `f` with each glyph of the shown string `bytes`, in order.
    pub(crate) fn glyphs(&self, bytes: &[u8], mut f: impl FnMut(Glyph<'_>)) {
        match &self.kind {
            Kind::Simple { text } => {
                for &b in bytes {
                    let text = text[usize::from(b)].as_str();
                    let width = self.width(u32::from(b), text);
                    f(Glyph {
                        text,
                        width,
                        is_space: b == b' ',
                    });
                }
            }
            Kind::Composite {
                encoding,
                to_unicode,
            } => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    let (code, len) = match encoding {
                        Some(cmap) if cmap.has_code_spaces() => cmap.next_code(rest, 2),
                        _ => CMap::default().next_code(rest, 2),
                    };
                    rest = &rest[len.min(rest.len())..];
                    let cid = encoding.as_ref().and_then(|e| e.cid(code)).unwrap_or(code);
                    let text = to_unicode
                        .as_ref()
                        .and_then(|m| m.lookup(code))
                        .map(normalize)
                        .unwrap_or_default();
                    let width = self.width(cid, &text);
                    f(Glyph {
                        text: &text,
                        width,
                        is_space: len == 1 && code == 32,
                    });
                }
            }
        }
    }

    /// Advance width of `code` (a CID for composite fonts) in text space per unit size.
    fn width(&self, code: u32, text: &str) -> f64 {
        let w = match &self.widths {
            Widths::Simple {
                first,
                widths,
                missing,
                family,
            } => code
                .checked_sub(*first)
                .and_then(|i| widths.get(i as usize).copied())
                .unwrap_or_else(|| family.map_or(*missing, |f| f.width(text))),
            Widths::Composite { default, ranges } => {
                // Sorted by first CID: the candidate is the last entry starting at or before it.
                let i = ranges.partition_point(|r| r.0 <= code);
                i.checked_sub(1)
                    .map(|i| ranges[i])
                    .filter(|r| code <= r.1)
                    .map_or(*default, |r| r.2)
            }
        };
        w * self.scale
    }
}

fn number(o: &Object) -> Option<f64> {
    match o {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) => Some(f64::from(*r)),
        _ => None,
    }
}

fn read_cmap(
    doc: &Document,
    stream: &lopdf::Stream,
    budget: &mut Budget,
) -> Result<Option<CMap>, PdfError> {
    match decode_stream(doc, stream, budget) {
        Ok(data) => Ok(Some(CMap::parse(&data))),
        Err(Undecodable::Unsupported) => Ok(None),
        Err(Undecodable::Limit(e)) => Err(e),
    }
}

/// Ligatures spelled out and NUL padding dropped, so words compare equal to typed text.
fn normalize(text: String) -> String {
    if !text
        .chars()
        .any(|c| expand_ligature(c).is_some() || c == '\0')
    {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match expand_ligature(c) {
            Some(letters) => out.push_str(letters),
            None if c == '\0' => {}
            None => out.push(c),
        }
    }
    out
}

/// The text of all 256 codes of a simple font.
fn simple_text(
    doc: &Document,
    font: &Dictionary,
    to_unicode: Option<&CMap>,
    budget: &mut Budget,
) -> Result<Vec<String>, PdfError> {
    let mut names: Vec<Option<String>> = vec![None; 256];
    let encoding = dict_get(doc, font, b"Encoding");
    let (base, differences) = match encoding {
        Some(Object::Name(n)) => (BaseEncoding::from_name(n), None),
        Some(Object::Dictionary(d)) => (
            dict_get(doc, d, b"BaseEncoding")
                .and_then(|n| n.as_name().ok())
                .and_then(BaseEncoding::from_name),
            dict_get(doc, d, b"Differences").and_then(|a| a.as_array().ok()),
        ),
        _ => (None, None),
    };
    // The base: a named encoding, else the embedded program's own, else Standard (9.6.6.1).
    let builtin = match base {
        Some(_) => None,
        // Without a ToUnicode map the program's encoding is the only clue left.
        None if to_unicode.is_none() => embedded_type1_encoding(doc, font, budget)?,
        None => None,
    };
    let base = base.unwrap_or(BaseEncoding::Standard);
    for (code, slot) in names.iter_mut().enumerate() {
        *slot = base.glyph(code as u8).map(str::to_string);
    }
    if let Some(builtin) = builtin {
        for (code, name) in builtin {
            names[usize::from(code)] = Some(name);
        }
    }
    if let Some(differences) = differences {
        let mut code = 0usize;
        for item in differences {
            match resolve(doc, item) {
                Object::Integer(i) => code = usize::try_from(*i).unwrap_or(256),
                Object::Name(n) => {
                    if let Some(slot) = names.get_mut(code) {
                        *slot = Some(String::from_utf8_lossy(n).into_owned());
                    }
                    code += 1;
                }
                _ => {}
            }
        }
    }
    Ok((0..256u32)
        .map(|code| {
            let mapped = to_unicode
                .and_then(|m| m.lookup(code))
                .filter(|t| !t.is_empty());
            let named = || names[code as usize].as_deref().and_then(glyph_text);
            // Codes no table names keep their Latin-1 reading, as viewers fall back to.
            let raw = || {
                char::from_u32(code)
                    .filter(|c| !c.is_control())
                    .map(String::from)
            };
            normalize(mapped.or_else(named).or_else(raw).unwrap_or_default())
        })
        .collect())
}

/// The built-in encoding of an embedded Type 1 font program (`/FontFile`), if any.
fn embedded_type1_encoding(
    doc: &Document,
    font: &Dictionary,
    budget: &mut Budget,
) -> Result<Option<Vec<(u8, String)>>, PdfError> {
    let Some(Object::Dictionary(descriptor)) = dict_get(doc, font, b"FontDescriptor") else {
        return Ok(None);
    };
    let Some(Object::Stream(program)) = dict_get(doc, descriptor, b"FontFile") else {
        return Ok(None);
    };
    match decode_stream(doc, program, budget) {
        Ok(data) => Ok(type1_builtin(&data)),
        Err(Undecodable::Unsupported) => Ok(None),
        Err(Undecodable::Limit(e)) => Err(e),
    }
}

fn simple_widths(doc: &Document, font: &Dictionary) -> Widths {
    let first = dict_get(doc, font, b"FirstChar")
        .and_then(|o| o.as_i64().ok())
        .unwrap_or(0);
    let widths: Vec<f64> = match dict_get(doc, font, b"Widths") {
        Some(Object::Array(a)) => a
            .iter()
            .take(MAX_WIDTH_ENTRIES)
            .map(|w| number(resolve(doc, w)).unwrap_or(0.0))
            .collect(),
        _ => Vec::new(),
    };
    let missing = match dict_get(doc, font, b"FontDescriptor") {
        Some(Object::Dictionary(d)) => dict_get(doc, d, b"MissingWidth").and_then(number),
        _ => None,
    };
    let family = if widths.is_empty() {
        dict_get(doc, font, b"BaseFont")
            .and_then(|n| n.as_name().ok())
            .and_then(Family::of)
    } else {
        None
    };
    Widths::Simple {
        first: u32::try_from(first).unwrap_or(0),
        widths,
        // A font with neither widths nor a standard name gets a typical text width.
        missing: missing.unwrap_or(if family.is_none() && first == 0 {
            500.0
        } else {
            0.0
        }),
        family,
    }
}

/// `/DW` and `/W` of a CIDFont: `c [w1 w2 ...]` and `c_first c_last w` entries (9.7.4.3).
fn cid_widths(doc: &Document, cid_font: &Dictionary) -> Widths {
    let default = dict_get(doc, cid_font, b"DW")
        .and_then(number)
        .unwrap_or(1000.0);
    let mut ranges = Vec::new();
    if let Some(Object::Array(w)) = dict_get(doc, cid_font, b"W") {
        let items: Vec<&Object> = w.iter().map(|o| resolve(doc, o)).collect();
        let mut i = 0;
        while i < items.len() && ranges.len() < MAX_WIDTH_ENTRIES {
            let Some(start) = number(items[i]).map(|n| n as u32) else {
                i += 1;
                continue;
            };
            match (items.get(i + 1), items.get(i + 2)) {
                (Some(Object::Array(list)), _) => {
                    for (k, width) in list.iter().take(MAX_WIDTH_ENTRIES).enumerate() {
                        let cid = start.saturating_add(k as u32);
                        ranges.push((cid, cid, number(resolve(doc, width)).unwrap_or(default)));
                    }
                    i += 2;
                }
                (Some(end), Some(width)) => {
                    if let (Some(end), Some(width)) = (number(end), number(width)) {
                        ranges.push((start, end as u32, width));
                    }
                    i += 3;
                }
                _ => break,
            }
        }
    }
    ranges.sort_by_key(|r| r.0);
    Widths::Composite { default, ranges }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::pdf::PdfLimits;
    use lopdf::{dictionary, Stream};

    fn texts(font: &Font, bytes: &[u8]) -> Vec<(String, f64, bool)> {
        let mut out = Vec::new();
        // Widths are rounded to a millionth so products like 700 × 0.001 compare exactly.
        font.glyphs(bytes, |g| {
            out.push((
                g.text.to_string(),
                (g.width * 1e6).round() / 1e6,
                g.is_space,
            ))
        });
        out
    }

    fn load(doc: &Document, dict: &Dictionary) -> Font {
        Font::load(doc, dict, &mut Budget::new(&PdfLimits::default())).unwrap()
    }

    #[test]
    fn standard_font_without_widths_uses_its_metrics() {
        let doc = Document::new();
        let font = load(
            &doc,
            &dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding"},
        );
        let glyphs = texts(&font, b"A \x93");
        assert_eq!(glyphs[0], ("A".to_string(), 0.667, false));
        assert_eq!(glyphs[1], (" ".to_string(), 0.278, true));
        assert_eq!(glyphs[2].0, "\u{201C}");
    }

    #[test]
    fn differences_override_the_base_and_ligatures_expand() {
        let doc = Document::new();
        let encoding = dictionary! {
            "BaseEncoding" => "WinAnsiEncoding",
            "Differences" => vec![Object::Integer(12), "fi".into(), "ffl".into(), Object::Integer(65), "alpha".into()],
        };
        let font = load(
            &doc,
            &dictionary! {
                "Subtype" => "Type1", "BaseFont" => "XYZ", "Encoding" => encoding,
                "FirstChar" => 12, "Widths" => vec![Object::Integer(556), Object::Integer(833)],
            },
        );
        let glyphs = texts(&font, &[12, 13, 65, 66]);
        assert_eq!(glyphs[0], ("fi".to_string(), 0.556, false));
        assert_eq!(glyphs[1], ("ffl".to_string(), 0.833, false));
        assert_eq!(glyphs[2].0, "α");
        assert_eq!(glyphs[3].0, "B");
    }

    #[test]
    fn to_unicode_wins_over_the_encoding() {
        let mut doc = Document::new();
        let cmap = b"1 begincodespacerange <00> <FF> endcodespacerange 1 beginbfchar <41> <FB02> endbfchar".to_vec();
        let id = doc.add_object(Stream::new(Dictionary::new(), cmap));
        let font = load(
            &doc,
            &dictionary! {"Subtype" => "Type1", "BaseFont" => "X", "ToUnicode" => id},
        );
        assert_eq!(
            texts(&font, b"AB")
                .iter()
                .map(|g| g.0.as_str())
                .collect::<Vec<_>>(),
            ["fl", "B"]
        );
    }

    #[test]
    fn composite_font_splits_two_byte_codes_and_reads_w() {
        let mut doc = Document::new();
        let cmap = b"1 begincodespacerange <0000> <FFFF> endcodespacerange 2 beginbfchar <0003> <0020> <0024> <0041> endbfchar".to_vec();
        let to_unicode = doc.add_object(Stream::new(Dictionary::new(), cmap));
        let cid_font = dictionary! {
            "Subtype" => "CIDFontType2", "DW" => 700,
            "W" => vec![Object::Integer(3), Object::Array(vec![Object::Integer(250)]), Object::Integer(36), Object::Integer(40), Object::Integer(600)],
        };
        let font = load(
            &doc,
            &dictionary! {
                "Subtype" => "Type0", "Encoding" => "Identity-H", "ToUnicode" => to_unicode,
                "DescendantFonts" => vec![Object::Dictionary(cid_font)],
            },
        );
        let glyphs = texts(&font, &[0, 3, 0, 0x24, 0, 0x50]);
        assert_eq!(glyphs[0], (" ".to_string(), 0.25, false));
        assert_eq!(glyphs[1], ("A".to_string(), 0.6, false));
        assert_eq!(glyphs[2], (String::new(), 0.7, false));
    }

    #[test]
    fn type3_widths_use_the_font_matrix() {
        let doc = Document::new();
        let matrix: Vec<Object> = [0.01f32, 0.0, 0.0, 0.01, 0.0, 0.0]
            .iter()
            .map(|&v| Object::Real(v))
            .collect();
        let font = load(
            &doc,
            &dictionary! {
                "Subtype" => "Type3", "FontMatrix" => matrix, "FirstChar" => 97, "Widths" => vec![Object::Integer(50)],
            },
        );
        let glyphs = texts(&font, b"a");
        assert!((glyphs[0].1 - 0.5).abs() < 1e-6);
        assert_eq!(glyphs[0].0, "a");
    }
}
