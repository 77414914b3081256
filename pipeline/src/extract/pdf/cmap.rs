//! CMaps: ToUnicode maps (character code -> text) and the code-space ranges that say how a
//! string of bytes splits into character codes (ISO 32000-1, 9.7.5 and 9.10.3).
//!
//! Only the operators text extraction needs are read: `begincodespacerange`, `beginbfchar`,
//! `beginbfrange` (both the incrementing and the array form), and `begincidchar` /
//! `begincidrange` for embedded encoding CMaps. Everything else in the PostScript is skipped.
//! Ranges are kept as ranges, so a hostile `<0000> <FFFF>` costs one entry, not 65,536.

use std::collections::HashMap;

/// One `begincodespacerange` entry: codes of `len` bytes between `lo` and `hi`.
#[derive(Debug, Clone, Copy)]
struct CodeSpace {
    len: usize,
    lo: u32,
    hi: u32,
}

/// A parsed CMap: how to split bytes into codes, and what each code maps to.
#[derive(Debug, Default, Clone)]
pub(crate) struct CMap {
    spaces: Vec<CodeSpace>,
    /// Single mappings from `bfchar`, and the text of small ranges.
    chars: HashMap<u32, String>,
    /// `bfrange` entries with an incrementing destination: (lo, hi, first destination).
    ranges: Vec<(u32, u32, Vec<u16>)>,
    /// `cidchar` / `cidrange` entries: (lo, hi, first CID).
    cids: Vec<(u32, u32, u32)>,
}

/// A token of the CMap's PostScript syntax, as far as we care about it.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Hex(Vec<u8>),
    Int(u32),
    Word(&'a [u8]),
    ArrayStart,
    ArrayEnd,
}

/// The largest range we expand into single entries; bigger ones stay as arithmetic.
const MAX_RANGE_SPAN: u32 = 0x1_0000;

impl CMap {
    /// Parses CMap source. Broken entries are skipped: a half-readable map still beats none.
    pub(crate) fn parse(src: &[u8]) -> CMap {
        let tokens = tokenize(src);
        let mut map = CMap::default();
        let mut i = 0;
        while i < tokens.len() {
            match tokens[i] {
                Token::Word(b"begincodespacerange") => i = map.read_spaces(&tokens, i + 1),
                Token::Word(b"beginbfchar") => i = map.read_bfchar(&tokens, i + 1),
                Token::Word(b"beginbfrange") => i = map.read_bfrange(&tokens, i + 1),
                Token::Word(b"begincidchar") | Token::Word(b"begincidrange") => {
                    i = map.read_cids(&tokens, i + 1)
                }
                _ => i += 1,
            }
        }
        map
    }

    pub(crate) fn has_code_spaces(&self) -> bool {
        !self.spaces.is_empty()
    }

    /// The next character code at the start of `bytes` and its length in bytes. Without
    /// code-space ranges, codes are `default_len` bytes long.
    pub(crate) fn next_code(&self, bytes: &[u8], default_len: usize) -> (u32, usize) {
        for len in 1..=4.min(bytes.len()) {
            let code = be(&bytes[..len]);
            if self
                .spaces
                .iter()
                .any(|s| s.len == len && s.lo <= code && code <= s.hi)
            {
                return (code, len);
            }
        }
        // No range matches: take the shortest length the map uses, as viewers do.
        let len = self
            .spaces
            .iter()
            .map(|s| s.len)
            .min()
            .unwrap_or(default_len);
        let len = len.clamp(1, bytes.len().max(1)).min(bytes.len());
        (be(&bytes[..len]), len.max(1))
    }

    /// The text a code maps to, if the map covers it.
    pub(crate) fn lookup(&self, code: u32) -> Option<String> {
        if let Some(s) = self.chars.get(&code) {
            return Some(s.clone());
        }
        let (lo, _, dst) = self
            .ranges
            .iter()
            .find(|(lo, hi, _)| *lo <= code && code <= *hi)?;
        Some(utf16(&offset_last(dst, code - lo)))
    }

    /// The CID a code maps to in an encoding CMap, if the map covers it.
    pub(crate) fn cid(&self, code: u32) -> Option<u32> {
        self.cids
            .iter()
            .find(|(lo, hi, _)| *lo <= code && code <= *hi)
            .map(|(lo, _, cid)| cid.saturating_add(code - lo))
    }

    fn read_spaces(&mut self, t: &[Token], mut i: usize) -> usize {
        while let (Some(Token::Hex(lo)), Some(Token::Hex(hi))) = (t.get(i), t.get(i + 1)) {
            if !lo.is_empty() && lo.len() <= 4 && lo.len() == hi.len() {
                self.spaces.push(CodeSpace {
                    len: lo.len(),
                    lo: be(lo),
                    hi: be(hi),
                });
            }
            i += 2;
        }
        i
    }

    fn read_bfchar(&mut self, t: &[Token], mut i: usize) -> usize {
        while let (Some(Token::Hex(src)), Some(dst)) = (t.get(i), t.get(i + 1)) {
            if let Token::Hex(dst) = dst {
                self.chars.insert(be(src), utf16(&units(dst)));
            }
            i += 2;
        }
        i
    }

    fn read_bfrange(&mut self, t: &[Token], mut i: usize) -> usize {
        while let (Some(Token::Hex(lo)), Some(Token::Hex(hi))) = (t.get(i), t.get(i + 1)) {
            let (lo, hi) = (be(lo), be(hi));
            i += 2;
            match t.get(i) {
                Some(Token::Hex(dst)) => {
                    if hi >= lo {
                        self.ranges.push((lo, hi, units(dst)));
                    }
                    i += 1;
                }
                Some(Token::ArrayStart) => {
                    i += 1;
                    let mut code = lo;
                    while let Some(Token::Hex(dst)) = t.get(i) {
                        if code <= hi && code - lo < MAX_RANGE_SPAN {
                            self.chars.insert(code, utf16(&units(dst)));
                        }
                        code = code.saturating_add(1);
                        i += 1;
                    }
                    if t.get(i) == Some(&Token::ArrayEnd) {
                        i += 1;
                    }
                }
                _ => break,
            }
        }
        i
    }

    fn read_cids(&mut self, t: &[Token], mut i: usize) -> usize {
        loop {
            match (t.get(i), t.get(i + 1), t.get(i + 2)) {
                (Some(Token::Hex(lo)), Some(Token::Hex(hi)), Some(Token::Int(cid))) => {
                    self.cids.push((be(lo), be(hi), *cid));
                    i += 3;
                }
                (Some(Token::Hex(code)), Some(Token::Int(cid)), _) => {
                    let code = be(code);
                    self.cids.push((code, code, *cid));
                    i += 2;
                }
                _ => return i,
            }
        }
    }
}

/// Big-endian value of up to four bytes (longer inputs keep their last four).
fn be(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b))
}

/// UTF-16BE code units of a destination string (an odd trailing byte is dropped).
fn units(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect()
}

fn utf16(units: &[u16]) -> String {
    char::decode_utf16(units.iter().copied())
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// A `bfrange` destination for the code `offset` past the range start: the last code unit
/// is incremented (ISO 32000-1, 9.10.3).
fn offset_last(dst: &[u16], offset: u32) -> Vec<u16> {
    let mut out = dst.to_vec();
    if let Some(last) = out.last_mut() {
        *last = (u32::from(*last).wrapping_add(offset) & 0xFFFF) as u16;
    }
    out
}

fn tokenize(src: &[u8]) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let b = src[i];
        match b {
            b'%' => {
                while i < src.len() && src[i] != b'\n' && src[i] != b'\r' {
                    i += 1;
                }
            }
            b'<' if src.get(i + 1) == Some(&b'<') => i += 2,
            b'>' if src.get(i + 1) == Some(&b'>') => i += 2,
            b'<' => {
                let end = src[i..]
                    .iter()
                    .position(|&c| c == b'>')
                    .map_or(src.len(), |p| i + p);
                let digits: Vec<u8> = src[i + 1..end]
                    .iter()
                    .filter_map(|&c| (c as char).to_digit(16).map(|d| d as u8))
                    .collect();
                let mut bytes: Vec<u8> = digits
                    .chunks(2)
                    .map(|p| p[0] << 4 | p.get(1).copied().unwrap_or(0))
                    .collect();
                bytes.shrink_to_fit();
                tokens.push(Token::Hex(bytes));
                i = end + 1;
            }
            b'[' => {
                tokens.push(Token::ArrayStart);
                i += 1;
            }
            b']' => {
                tokens.push(Token::ArrayEnd);
                i += 1;
            }
            b'(' => {
                // Literal strings only name things here (registry, ordering); skip them.
                let mut depth = 0usize;
                while i < src.len() {
                    match src[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
            }
            _ if b.is_ascii_whitespace() || b == 0 => i += 1,
            _ => {
                let start = i;
                while i < src.len() && !b"<>[]()%/{} \t\r\n\x0c\0".contains(&src[i]) {
                    i += 1;
                }
                if i == start {
                    i += 1; // a lone delimiter such as `/` or `{`
                    continue;
                }
                let word = &src[start..i];
                match std::str::from_utf8(word)
                    .ok()
                    .and_then(|w| w.parse::<u32>().ok())
                {
                    Some(n) => tokens.push(Token::Int(n)),
                    None => tokens.push(Token::Word(word)),
                }
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"%!PS\n/CIDInit /ProcSet findresource begin\n12 dict begin begincmap\n\
        /CMapName /Test def\n1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n\
        2 beginbfchar\n<0003> <0020>\n<0011> <FB01>\nendbfchar\n\
        2 beginbfrange\n<0024> <0026> <0041>\n<0030> <0031> [<00660066> <D835DC9C>]\nendbfrange\n\
        endcmap CMapName currentdict /CMap defineresource pop end end\n";

    #[test]
    fn reads_bfchar_and_both_bfrange_forms() {
        let map = CMap::parse(SAMPLE);
        assert_eq!(map.lookup(3).as_deref(), Some(" "));
        assert_eq!(map.lookup(0x11).as_deref(), Some("\u{FB01}"));
        assert_eq!(map.lookup(0x24).as_deref(), Some("A"));
        assert_eq!(map.lookup(0x26).as_deref(), Some("C"));
        assert_eq!(map.lookup(0x27), None);
        assert_eq!(map.lookup(0x30).as_deref(), Some("ff"));
        // A surrogate pair decodes to one supplementary-plane character.
        assert_eq!(map.lookup(0x31).as_deref(), Some("\u{1D49C}"));
    }

    #[test]
    fn splits_codes_by_code_space() {
        let map = CMap::parse(b"2 begincodespacerange <00> <80> <8140> <9FFC> endcodespacerange");
        assert_eq!(map.next_code(&[0x41, 0x81, 0x40], 2), (0x41, 1));
        assert_eq!(map.next_code(&[0x81, 0x40], 2), (0x8140, 2));
        let plain = CMap::default();
        assert_eq!(plain.next_code(&[0x01, 0x02, 0x03], 2), (0x0102, 2));
        assert_eq!(plain.next_code(&[0x07], 2), (0x07, 1));
    }

    #[test]
    fn huge_ranges_stay_cheap() {
        let map = CMap::parse(b"1 beginbfrange <00000000> <FFFFFFFF> <0041> endbfrange");
        assert_eq!(map.chars.len(), 0);
        assert_eq!(map.lookup(2).as_deref(), Some("C"));
    }

    #[test]
    fn reads_cid_ranges() {
        let map = CMap::parse(
            b"1 begincidrange <0020> <007e> 1 endcidrange 1 begincidchar <00a0> 500 endcidchar",
        );
        assert_eq!(map.cid(0x21), Some(2));
        assert_eq!(map.cid(0xa0), Some(500));
        assert_eq!(map.cid(0x10), None);
    }
}
