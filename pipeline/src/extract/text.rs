//! Plain text: decoding bytes to UTF-8 and naming the markup.

use std::path::Path;

use super::Repair;

/// Above this share of invalid bytes a file is treated as binary, not repaired.
const MAX_INVALID_SHARE: f64 = 0.05;

/// Decodes a text file: UTF-8 (BOM stripped) or UTF-16 with a BOM. Invalid UTF-8 is repaired
/// with U+FFFD and reported; a file that is mostly invalid is refused as binary.
pub fn decode(bytes: &[u8]) -> Result<(String, Vec<Repair>), String> {
    if let Some(rest) = bytes.strip_prefix(b"\xef\xbb\xbf") {
        return decode(rest);
    }
    let utf16 = |units: Vec<u16>| char::decode_utf16(units).map(|c| c.unwrap_or('\u{fffd}'));
    if let Some(rest) = bytes.strip_prefix(b"\xff\xfe") {
        let units = rest
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        return Ok((utf16(units).collect(), Vec::new()));
    }
    if let Some(rest) = bytes.strip_prefix(b"\xfe\xff") {
        let units = rest
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        return Ok((utf16(units).collect(), Vec::new()));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok((s.to_owned(), Vec::new())),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let invalid = text.chars().filter(|&c| c == '\u{fffd}').count();
            if invalid as f64 > MAX_INVALID_SHARE * bytes.len() as f64 {
                return Err(format!("binary ({invalid} invalid UTF-8 sequences)"));
            }
            Ok((
                text,
                vec![format!(
                    "invalid UTF-8: {invalid} sequences replaced by U+FFFD"
                )],
            ))
        }
    }
}

/// The `lang` of a prose file: its markup, from the extension.
pub fn markup(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("md" | "markdown") => "markdown",
        Some("rst") => "rst",
        Some("tex") => "latex",
        Some("html" | "htm") => "html",
        Some("org") => "org",
        Some("adoc" | "asciidoc") => "asciidoc",
        Some("csv" | "tsv") => "csv",
        _ => "plain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_with_and_without_bom() {
        assert_eq!(
            decode(b"caf\xc3\xa9").unwrap(),
            ("café".to_string(), vec![])
        );
        assert_eq!(decode(b"\xef\xbb\xbfhi").unwrap().0, "hi");
    }

    #[test]
    fn utf16_with_bom() {
        let le: Vec<u8> = [0xff, 0xfe, b'h', 0, b'i', 0].to_vec();
        assert_eq!(decode(&le).unwrap().0, "hi");
        let be: Vec<u8> = [0xfe, 0xff, 0, b'h', 0, b'i'].to_vec();
        assert_eq!(decode(&be).unwrap().0, "hi");
    }

    #[test]
    fn invalid_utf8_is_repaired_and_reported() {
        let mut bytes = b"a plain line of latin-1 text: caf".to_vec();
        bytes.push(0xe9);
        bytes.extend_from_slice(b" and more words after it\n");
        let (text, repairs) = decode(&bytes).unwrap();
        assert!(text.contains("caf\u{fffd} and more"));
        assert_eq!(repairs, ["invalid UTF-8: 1 sequences replaced by U+FFFD"]);
    }

    #[test]
    fn mostly_invalid_is_binary() {
        let bytes: Vec<u8> = (0..400)
            .map(|i| if i % 3 == 0 { 0xff } else { b'a' })
            .collect();
        assert!(decode(&bytes).unwrap_err().starts_with("binary"));
    }
}
