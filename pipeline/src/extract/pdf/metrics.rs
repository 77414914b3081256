//! Glyph widths of the standard 14 fonts, for fonts that name one and carry no `/Widths`.
//!
//! Older PDFs (and our own sample) may use Helvetica or Times without widths; the viewer is
//! meant to know them. Widths decide where a glyph ends and so whether the gap to the next
//! one is a word space, so a reasonable figure matters more than an exact one: printable
//! ASCII is listed per family (in 1/1000 em, from the fonts' published metrics), other
//! characters take the family's typical lower-case width.

/// A standard font family; bold and oblique variants share their family's widths except
/// where listed separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Helvetica,
    HelveticaBold,
    Times,
    Courier,
    /// Symbol and ZapfDingbats: no useful per-glyph table here.
    Other,
}

/// Helvetica, 0x20..=0x7E.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/// Helvetica-Bold, 0x20..=0x7E.
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
    611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
    278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
];

/// Times-Roman, 0x20..=0x7E.
const TIMES: [u16; 95] = [
    250, 333, 408, 500, 500, 833, 778, 180, 333, 333, 500, 564, 250, 333, 250, 278, 500, 500, 500,
    500, 500, 500, 500, 500, 500, 500, 278, 278, 564, 564, 564, 444, 921, 722, 667, 667, 722, 611,
    556, 722, 722, 333, 389, 722, 611, 889, 722, 722, 556, 722, 667, 556, 611, 722, 722, 944, 722,
    722, 611, 333, 278, 333, 469, 500, 333, 444, 500, 444, 500, 444, 333, 500, 500, 278, 278, 500,
    278, 778, 500, 500, 500, 500, 333, 389, 278, 500, 500, 722, 500, 500, 444, 480, 200, 480, 541,
];

impl Family {
    /// The family of a `/BaseFont` name, subset prefix (`ABCDEF+`) and style suffixes ignored;
    /// `None` when the name is not one of the standard 14 or a common alias of one.
    pub(crate) fn of(base_font: &[u8]) -> Option<Family> {
        let name = match base_font.iter().position(|&b| b == b'+') {
            Some(6) => &base_font[7..],
            _ => base_font,
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let bold = name.contains("bold");
        Some(
            if name.starts_with("helvetica") || name.starts_with("arial") {
                if bold {
                    Family::HelveticaBold
                } else {
                    Family::Helvetica
                }
            } else if name.starts_with("times") {
                Family::Times
            } else if name.starts_with("courier") {
                Family::Courier
            } else if name.starts_with("symbol") || name.starts_with("zapfdingbats") {
                Family::Other
            } else {
                return None;
            },
        )
    }

    /// Width in 1/1000 em of the glyph whose text is `text`.
    pub(crate) fn width(self, text: &str) -> f64 {
        let table = match self {
            Family::Helvetica => &HELVETICA,
            Family::HelveticaBold => &HELVETICA_BOLD,
            Family::Times => &TIMES,
            Family::Courier => return 600.0,
            Family::Other => return 600.0,
        };
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c @ ' '..='~'), None) => f64::from(table[c as usize - 0x20]),
            _ => f64::from(table[usize::from(b'n' - 0x20)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_select_families() {
        assert_eq!(Family::of(b"Helvetica"), Some(Family::Helvetica));
        assert_eq!(
            Family::of(b"ABCDEF+Helvetica-BoldOblique"),
            Some(Family::HelveticaBold)
        );
        assert_eq!(Family::of(b"Times-Italic"), Some(Family::Times));
        assert_eq!(Family::of(b"Courier"), Some(Family::Courier));
        assert_eq!(Family::of(b"CMR10"), None);
    }

    #[test]
    fn widths_come_from_the_family() {
        assert_eq!(Family::Helvetica.width(" "), 278.0);
        assert_eq!(Family::Helvetica.width("W"), 944.0);
        assert_eq!(Family::HelveticaBold.width("b"), 611.0);
        assert_eq!(Family::Times.width("a"), 444.0);
        assert_eq!(Family::Courier.width("i"), 600.0);
        assert_eq!(Family::Times.width("é"), 500.0);
    }
}
