//! A pre-scan of the raw file that rejects absurdly nested arrays and dictionaries before
//! lopdf parses them.
//!
//! lopdf 0.47 stops recursing at 100 levels, but it then drops the object silently and
//! carries on; a file built to exhaust a parser should be named as such, not half-read.
//! The scan is one linear pass that skips strings, comments and stream data (binary data is
//! full of stray brackets), so it costs little next to parsing.

use super::PdfError;

/// Nesting deeper than this is rejected. Real files stay under ten levels; lopdf itself
/// gives up at 100.
pub(crate) const MAX_NESTING: usize = 100;

/// Fails if any array or dictionary in `bytes` nests deeper than [`MAX_NESTING`].
pub(crate) fn check(bytes: &[u8]) -> Result<(), PdfError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => i = skip_line(bytes, i),
            b'(' => i = skip_literal(bytes, i),
            b'<' if bytes.get(i + 1) == Some(&b'<') => {
                depth += 1;
                i += 2;
            }
            b'<' => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'>')
                    .map_or(bytes.len(), |p| i + p + 1)
            }
            b'>' if bytes.get(i + 1) == Some(&b'>') => {
                depth = depth.saturating_sub(1);
                i += 2;
            }
            b'[' => {
                depth += 1;
                i += 1;
            }
            b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b's' if bytes[i..].starts_with(b"stream")
                && (i == 0 || !bytes[i - 1].is_ascii_alphabetic()) =>
            {
                // Stream data runs to `endstream`; an object's nesting ends before it.
                depth = 0;
                i = find(bytes, i + 6, b"endstream").map_or(bytes.len(), |p| p + 9);
            }
            _ => i += 1,
        }
        if depth > MAX_NESTING {
            return Err(PdfError::Malformed(format!(
                "arrays or dictionaries nest deeper than {MAX_NESTING} levels"
            )));
        }
    }
    Ok(())
}

fn skip_line(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(bytes.len(), |p| i + p + 1)
}

/// Past the end of the literal string opening at `i`: balanced parentheses, `\` escapes.
fn skip_literal(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_nesting_passes() {
        let obj = b"1 0 obj << /Kids [ 2 0 R [ << /A [1 2] >> ] ] /S (a [[[ string) >> endobj";
        assert!(check(obj).is_ok());
    }

    #[test]
    fn deep_nesting_fails_however_it_is_built() {
        let arrays = [b"1 0 obj ".to_vec(), vec![b'['; 100_000]].concat();
        assert!(matches!(check(&arrays), Err(PdfError::Malformed(_))));
        let dicts = b"<< /A ".repeat(MAX_NESTING + 1);
        assert!(matches!(check(&dicts), Err(PdfError::Malformed(_))));
    }

    #[test]
    fn brackets_in_streams_strings_and_comments_do_not_count() {
        let mut file = b"1 0 obj << /Length 300 >>\nstream\n".to_vec();
        file.extend(vec![b'['; 300]);
        file.extend_from_slice(b"\nendstream endobj\n% [[[[[[\n(");
        file.extend(vec![b'['; 300]);
        file.extend_from_slice(b")\n<5b5b5b>");
        assert!(check(&file).is_ok());
    }
}
