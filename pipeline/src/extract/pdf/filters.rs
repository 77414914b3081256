//! Decoding stream data through its `/Filter` chain with a hard cap on the output size.
//!
//! lopdf can decompress streams itself, but a content stream is untrusted data: a 50 KB
//! Flate stream can inflate to gigabytes. Here every filter writes into a buffer that refuses
//! to grow past the budget, so a decompression bomb stops after `max_stream_bytes` with a
//! [`PdfError::SizeLimit`]. Damaged Flate data keeps what inflated before the damage, as
//! viewers do, so one bad byte near the end of a page does not lose the page.

use std::io::Read;

use flate2::read::{DeflateDecoder, ZlibDecoder};
use lopdf::{Document, Object, Stream};

use super::limits::{human_bytes, Budget};
use super::PdfError;

/// Why a stream's data could not be decoded, short of a limit being hit.
#[derive(Debug)]
pub(crate) enum Undecodable {
    /// A filter we do not implement (image codecs, mostly); the stream is skipped.
    Unsupported,
    /// A limit was hit; the whole extraction fails with this error.
    Limit(PdfError),
}

impl From<PdfError> for Undecodable {
    fn from(e: PdfError) -> Self {
        Undecodable::Limit(e)
    }
}

/// The decoded data of `stream`, charged against `budget`.
pub(crate) fn decode_stream(
    doc: &Document,
    stream: &Stream,
    budget: &mut Budget,
) -> Result<Vec<u8>, Undecodable> {
    budget.check_time()?;
    let allowance = budget.stream_allowance();
    let filters = names(doc, stream.dict.get(b"Filter").ok());
    let mut data = stream.content.clone();
    for filter in &filters {
        data = match filter.as_slice() {
            b"FlateDecode" | b"Fl" => inflate(&data, allowance)?,
            b"ASCIIHexDecode" | b"AHx" => ascii_hex(&data),
            b"ASCII85Decode" | b"A85" => ascii85(&data),
            _ => return Err(Undecodable::Unsupported),
        };
        if data.len() > allowance {
            return Err(too_big(allowance).into());
        }
    }
    if has_predictor(doc, stream) {
        // Predictors belong to image and cross-reference data, never to text.
        return Err(Undecodable::Unsupported);
    }
    budget.charge(data.len())?;
    Ok(data)
}

fn too_big(allowance: usize) -> PdfError {
    PdfError::SizeLimit(format!(
        "a stream decompresses to more than {}",
        human_bytes(allowance)
    ))
}

/// The filter names of a `/Filter` entry: one name, or an array of them.
fn names(doc: &Document, filter: Option<&Object>) -> Vec<Vec<u8>> {
    let Some(filter) = filter.map(|f| super::resolve(doc, f)) else {
        return Vec::new();
    };
    match filter {
        Object::Name(n) => vec![n.clone()],
        Object::Array(items) => items
            .iter()
            .filter_map(|i| super::resolve(doc, i).as_name().ok().map(<[u8]>::to_vec))
            .collect(),
        _ => Vec::new(),
    }
}

fn has_predictor(doc: &Document, stream: &Stream) -> bool {
    let parms = match stream
        .dict
        .get(b"DecodeParms")
        .map(|p| super::resolve(doc, p))
    {
        Ok(Object::Dictionary(d)) => vec![d],
        Ok(Object::Array(items)) => items
            .iter()
            .filter_map(|i| super::resolve(doc, i).as_dict().ok())
            .collect(),
        _ => Vec::new(),
    };
    parms.iter().any(|d| {
        d.get(b"Predictor")
            .and_then(Object::as_i64)
            .is_ok_and(|p| p > 1)
    })
}

/// Inflates zlib data (or raw deflate data, which some writers emit), reading at most one
/// byte past `limit` so a bomb is caught without ever holding more than the limit.
fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, PdfError> {
    let out = read_bounded(ZlibDecoder::new(data), limit)?;
    if out.is_empty() && !data.is_empty() {
        return read_bounded(DeflateDecoder::new(data), limit);
    }
    Ok(out)
}

fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, PdfError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    // A read error means damaged data: keep what came out before it.
    let _ = reader.take(cap).read_to_end(&mut out);
    if out.len() > limit {
        return Err(too_big(limit));
    }
    Ok(out)
}

/// ASCIIHexDecode: pairs of hex digits, white space ignored, `>` ends the data, and an odd
/// final digit counts as if followed by `0` (ISO 32000-1, 7.4.2).
fn ascii_hex(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2);
    let mut high: Option<u8> = None;
    for &b in data {
        if b == b'>' {
            break;
        }
        let Some(v) = (b as char).to_digit(16) else {
            continue;
        };
        let v = v as u8;
        match high.take() {
            Some(h) => out.push(h << 4 | v),
            None => high = Some(v),
        }
    }
    if let Some(h) = high {
        out.push(h << 4);
    }
    out
}

/// ASCII85Decode: groups of five base-85 digits to four bytes, `z` for four zero bytes,
/// `~>` ends the data (ISO 32000-1, 7.4.3).
fn ascii85(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 4 / 5);
    let mut group = [0u8; 5];
    let mut n = 0;
    for &b in data {
        match b {
            b'~' => break,
            b'z' if n == 0 => out.extend_from_slice(&[0; 4]),
            b'!'..=b'u' => {
                group[n] = b - b'!';
                n += 1;
                if n == 5 {
                    out.extend_from_slice(&base85_word(&group).to_be_bytes());
                    n = 0;
                }
            }
            _ => {}
        }
    }
    if n > 1 {
        // A partial group is padded with 'u' and yields n - 1 bytes.
        group[n..].fill(84);
        out.extend_from_slice(&base85_word(&group).to_be_bytes()[..n - 1]);
    }
    out
}

fn base85_word(group: &[u8; 5]) -> u32 {
    group.iter().fold(0u32, |acc, &d| {
        acc.wrapping_mul(85).wrapping_add(u32::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::pdf::PdfLimits;
    use flate2::write::ZlibEncoder;
    use flate2::Compression;
    use lopdf::Dictionary;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut enc = ZlibEncoder::new(Vec::new(), Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn flate_stream(data: Vec<u8>) -> Stream {
        let mut dict = Dictionary::new();
        dict.set("Filter", Object::Name(b"FlateDecode".to_vec()));
        Stream::new(dict, data)
    }

    #[test]
    fn flate_round_trips_and_is_charged() {
        let doc = Document::new();
        let mut budget = Budget::new(&PdfLimits::default());
        let out = decode_stream(&doc, &flate_stream(zlib(b"BT (Hi) Tj ET")), &mut budget).unwrap();
        assert_eq!(out, b"BT (Hi) Tj ET");
        assert_eq!(budget.stream_allowance(), 64 << 20);
    }

    #[test]
    fn flate_bomb_stops_at_the_stream_limit() {
        let doc = Document::new();
        let limits = PdfLimits {
            max_stream_bytes: 1 << 20,
            ..PdfLimits::default()
        };
        let mut budget = Budget::new(&limits);
        let bomb = zlib(&vec![0u8; 8 << 20]);
        match decode_stream(&doc, &flate_stream(bomb), &mut budget) {
            Err(Undecodable::Limit(PdfError::SizeLimit(msg))) => {
                assert!(msg.contains("1 MiB"), "{msg}")
            }
            other => panic!("expected a size limit, got {other:?}"),
        }
    }

    #[test]
    fn damaged_flate_keeps_what_inflated() {
        let mut data = zlib(&b"hello world ".repeat(200));
        let cut = data.len() - 6;
        data.truncate(cut);
        let out = inflate(&data, 1 << 20).unwrap();
        assert!(out.starts_with(b"hello world hello"));
    }

    #[test]
    fn ascii_filters_decode() {
        assert_eq!(ascii_hex(b"48 65 6c6C 6>"), b"Hel\x6c\x60");
        // "Man " encodes to "9jqo^" in base 85.
        assert_eq!(ascii85(b"9jqo^~>"), b"Man ");
        assert_eq!(ascii85(b"z~>"), [0, 0, 0, 0]);
        assert_eq!(ascii85(b"9jqo~>"), b"Man");
    }

    #[test]
    fn image_codecs_are_unsupported() {
        let doc = Document::new();
        let mut dict = Dictionary::new();
        dict.set("Filter", Object::Name(b"DCTDecode".to_vec()));
        let mut budget = Budget::new(&PdfLimits::default());
        assert!(matches!(
            decode_stream(&doc, &Stream::new(dict, vec![1, 2, 3]), &mut budget),
            Err(Undecodable::Unsupported)
        ));
    }
}
