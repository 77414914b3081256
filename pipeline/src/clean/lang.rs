//! Language: the natural language of a prose document (text, PDF, dataset row), identified
//! by whatlang's trigram model (69 languages) and written as an ISO 639-1 code (`en`, `de`)
//! into the `lang` column, where code and configs keep their language or format.
//!
//! Only the start of a long document is read (`SAMPLE_BYTES`): a book's language is settled
//! long before its end, and the model's cost grows with the text. A text whatlang cannot
//! call reliably is `und` (undetermined, as ISO 639-2 spells it).

/// Bytes of a document's start the model reads.
const SAMPLE_BYTES: usize = 4 * 1024;

/// The code of a text whose language is not reliably known.
pub const UNDETERMINED: &str = "und";

/// The language of `text`, as an ISO 639-1 code where there is one (else ISO 639-3).
pub fn identify(text: &str) -> &'static str {
    let mut end = text.len().min(SAMPLE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match whatlang::detect(&text[..end]) {
        Some(info) if info.is_reliable() => two_letter(info.lang().code()),
        _ => UNDETERMINED,
    }
}

/// ISO 639-1 for the ISO 639-3 codes whatlang gives, where the language has one.
fn two_letter(code: &'static str) -> &'static str {
    const CODES: &[(&str, &str)] = &[
        ("afr", "af"),
        ("aka", "ak"),
        ("amh", "am"),
        ("arb", "ar"),
        ("aze", "az"),
        ("bel", "be"),
        ("ben", "bn"),
        ("bul", "bg"),
        ("cat", "ca"),
        ("ces", "cs"),
        ("cmn", "zh"),
        ("dan", "da"),
        ("deu", "de"),
        ("ell", "el"),
        ("eng", "en"),
        ("epo", "eo"),
        ("est", "et"),
        ("fin", "fi"),
        ("fra", "fr"),
        ("guj", "gu"),
        ("heb", "he"),
        ("hin", "hi"),
        ("hrv", "hr"),
        ("hun", "hu"),
        ("hye", "hy"),
        ("ind", "id"),
        ("ita", "it"),
        ("jav", "jv"),
        ("jpn", "ja"),
        ("kan", "kn"),
        ("kat", "ka"),
        ("khm", "km"),
        ("kor", "ko"),
        ("lat", "la"),
        ("lav", "lv"),
        ("lit", "lt"),
        ("mal", "ml"),
        ("mar", "mr"),
        ("mkd", "mk"),
        ("mya", "my"),
        ("nep", "ne"),
        ("nld", "nl"),
        ("nob", "nb"),
        ("ori", "or"),
        ("pan", "pa"),
        ("pes", "fa"),
        ("pol", "pl"),
        ("por", "pt"),
        ("ron", "ro"),
        ("rus", "ru"),
        ("sin", "si"),
        ("slk", "sk"),
        ("slv", "sl"),
        ("sna", "sn"),
        ("spa", "es"),
        ("srp", "sr"),
        ("swe", "sv"),
        ("tam", "ta"),
        ("tel", "te"),
        ("tgl", "tl"),
        ("tha", "th"),
        ("tuk", "tk"),
        ("tur", "tr"),
        ("ukr", "uk"),
        ("urd", "ur"),
        ("uzb", "uz"),
        ("vie", "vi"),
        ("yid", "yi"),
        ("zul", "zu"),
    ];
    CODES
        .iter()
        .find(|(three, _)| *three == code)
        .map_or(code, |(_, two)| two)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_languages_get_their_two_letter_code() {
        let cases = [
            ("The selective state space model reads the whole sequence once and keeps a state of fixed size, so it is fast.", "en"),
            ("Das Modell liest die ganze Folge nur einmal und behält dabei einen Zustand fester Größe, deshalb ist es schnell.", "de"),
            ("Le modèle lit toute la séquence une seule fois et garde un état de taille fixe, ce qui le rend rapide.", "fr"),
            ("El modelo lee toda la secuencia una sola vez y mantiene un estado de tamaño fijo, por eso es rápido.", "es"),
        ];
        for (text, code) in cases {
            assert_eq!(identify(text), code, "{text}");
        }
    }

    #[test]
    fn too_little_text_is_undetermined_and_odd_input_is_fine() {
        assert_eq!(identify(""), UNDETERMINED);
        assert_eq!(identify("1234 5678"), UNDETERMINED);
        let long = "é".repeat(SAMPLE_BYTES);
        let _ = identify(&long);
    }
}
