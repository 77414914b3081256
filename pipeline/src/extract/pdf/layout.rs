//! Turning positioned glyphs into plain text: word spaces where visible gaps separate
//! glyphs on one baseline, line breaks where the baseline moves.
//!
//! Most PDF text has no space characters (TeX moves the pen instead of drawing a space), so
//! word boundaries come from geometry. The rules follow what `pdftotext` does, so that the
//! words we produce are the words people are used to getting out of a PDF:
//! - glyphs split into fragments at gaps over [`WORD_BREAK`] em, at size changes, baseline
//!   shifts and space glyphs;
//! - fragments on a line are then joined without a space when the gap is under
//!   [`CHAR_SPACING`] em (a superscript right after its word), except in letter-spaced
//!   lines of single characters, where only gaps clearly wider than the narrowest count;
//! - a line ending in a hyphen continues on the next line of the same paragraph with the
//!   hyphen dropped.
//!
//! Glyphs arrive in content-stream order, which for single-column documents is reading order;
//! gaps are measured along the baseline direction, so rotated text reads the same way.

/// A gap wider than this fraction of the font size splits a word.
const WORD_BREAK: f64 = 0.1;
/// Fragments closer than this fraction of the font size belong to one word.
const CHAR_SPACING: f64 = 0.03;
/// In a line of single characters, gaps up to this multiple of the narrowest are in-word.
const WIDE_SPACING: f64 = 1.3;
/// Letter-spacing never hides a gap wider than this fraction of the font size.
const WIDE_SPACING_MAX: f64 = 0.4;
/// A baseline shift of more than this many device units (points) splits fragments.
const BASELINE_SHIFT: f64 = 0.5;
/// A baseline shift larger than this fraction of the font size starts a new line;
/// superscripts and subscripts move by less.
const LINE_SHIFT: f64 = 0.5;
/// A line ending in a hyphen joins the next one when the next baseline is at most this many
/// font sizes away: the same paragraph.
const HYPHEN_JOIN: f64 = 2.0;
/// A jump back along the baseline larger than this fraction of the font size separates
/// words (text drawn out of order); smaller ones are overprinted accents.
const BACK_GAP: f64 = 1.0;

/// One glyph placed on the page, in device space.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed<'a> {
    /// Where the glyph starts.
    pub x: f64,
    pub y: f64,
    /// Unit vector along the baseline.
    pub dir: (f64, f64),
    /// Distance the pen moves along the baseline for this glyph, spacing included.
    pub advance: f64,
    /// Font size in device space.
    pub size: f64,
    pub text: &'a str,
}

/// Where the previous visible glyph ended.
#[derive(Debug, Clone, Copy)]
struct Pen {
    x: f64,
    y: f64,
    dir: (f64, f64),
    size: f64,
}

/// A fragment of the current line: glyphs with no break between them.
#[derive(Debug, Clone, Copy)]
struct Fragment {
    /// Byte range in `PageText::line`.
    start: usize,
    end: usize,
    chars: usize,
    /// Gap before it, in font sizes; `f64::INFINITY` when a space glyph or a jump forces one.
    gap: f64,
}

/// The text of one page as it is built.
#[derive(Debug, Default)]
pub(crate) struct PageText {
    out: String,
    line: String,
    fragments: Vec<Fragment>,
    pen: Option<Pen>,
    /// A space glyph was shown since the last visible glyph.
    space_seen: bool,
    /// A spacing accent waiting to see whether the next glyph is drawn under it.
    accent: Option<Accent>,
}

/// A spacing accent glyph and the combining mark it becomes over a letter.
#[derive(Debug, Clone, Copy)]
struct Accent {
    x: f64,
    y: f64,
    dir: (f64, f64),
    advance: f64,
    size: f64,
    spacing: &'static str,
    mark: char,
}

/// The combining mark of a spacing accent. TeX's OT1 fonts have no accented letters and
/// draw `é` as `´` overprinted on `e`; pdftotext writes such pairs as letter + combining mark.
fn combining(text: &str) -> Option<(&'static str, char)> {
    Some(match text {
        "´" => ("´", '\u{301}'),
        "¨" => ("¨", '\u{308}'),
        "ˆ" => ("ˆ", '\u{302}'),
        "˜" => ("˜", '\u{303}'),
        "¸" => ("¸", '\u{327}'),
        "ˇ" => ("ˇ", '\u{30C}'),
        "˘" => ("˘", '\u{306}'),
        "˙" => ("˙", '\u{307}'),
        "˚" => ("˚", '\u{30A}'),
        "¯" => ("¯", '\u{304}'),
        "˝" => ("˝", '\u{30B}'),
        "˛" => ("˛", '\u{328}'),
        _ => return None,
    })
}

impl PageText {
    pub(crate) fn push(&mut self, g: Placed<'_>) {
        if !(g.x.is_finite() && g.y.is_finite() && g.advance.is_finite()) {
            return;
        }
        if let Some((spacing, mark)) = combining(g.text) {
            if self.overlaps_previous(&g) {
                // Accent drawn after its letter (a cedilla under `c`).
                self.line.push(mark);
                if let Some(last) = self.fragments.last_mut() {
                    last.end = self.line.len();
                }
                return;
            }
            self.flush_accent();
            let (x, y, dir, advance, size) = (g.x, g.y, g.dir, g.advance, g.size);
            self.accent = Some(Accent {
                x,
                y,
                dir,
                advance,
                size,
                spacing,
                mark,
            });
            return;
        }
        match self.accent.take() {
            Some(a) if !g.text.is_empty() && under(&a, &g) => {
                self.place(g);
                self.line.push(a.mark);
                if let Some(last) = self.fragments.last_mut() {
                    last.end = self.line.len();
                }
            }
            Some(a) => {
                self.place(accent_glyph(&a));
                self.place(g);
            }
            None => self.place(g),
        }
    }

    /// Whether `g` starts well inside the previous glyph on the same line.
    fn overlaps_previous(&self, g: &Placed<'_>) -> bool {
        let (Some(pen), Some(_)) = (self.pen, self.fragments.last()) else {
            return false;
        };
        let (dx, dy) = (g.x - pen.x, g.y - pen.y);
        let along = dx * pen.dir.0 + dy * pen.dir.1;
        let across = -dx * pen.dir.1 + dy * pen.dir.0;
        along < -0.1 * pen.size && across.abs() <= LINE_SHIFT * pen.size
    }

    fn flush_accent(&mut self) {
        if let Some(a) = self.accent.take() {
            self.place(accent_glyph(&a));
        }
    }

    fn place(&mut self, g: Placed<'_>) {
        if !g.text.is_empty() && g.text.chars().all(char::is_whitespace) {
            // The gap a space leaves is measured from the glyph before it.
            self.space_seen = true;
            return;
        }
        let size = g.size.abs().max(1e-6);
        let mut gap = None;
        if let Some(pen) = self.pen {
            let (dx, dy) = (g.x - pen.x, g.y - pen.y);
            let along = dx * pen.dir.0 + dy * pen.dir.1;
            let across = -dx * pen.dir.1 + dy * pen.dir.0;
            let same_dir = g.dir.0 * pen.dir.0 + g.dir.1 * pen.dir.1 > 0.99;
            let scale = size.max(pen.size);
            if !same_dir || across.abs() > LINE_SHIFT * scale {
                self.end_line(same_dir && across.abs() <= HYPHEN_JOIN * scale);
            } else if self.space_seen || along < -BACK_GAP * scale {
                gap = Some(f64::INFINITY);
            } else {
                // A new size or a shifted baseline (a superscript) starts a new fragment;
                // a new font alone does not (`x` in code type, then a period in roman).
                let changed =
                    (pen.size - size).abs() > 1e-3 * scale || across.abs() > BASELINE_SHIFT;
                let em = along / scale;
                // Otherwise the glyph continues the current fragment (`gap` stays `None`).
                if changed || em > WORD_BREAK {
                    gap = Some(em.max(0.0));
                }
            }
        }
        self.space_seen = false;
        if !g.text.is_empty() {
            let start = self.line.len();
            self.line.push_str(g.text);
            let chars = g.text.chars().count();
            match (gap, self.fragments.last_mut()) {
                (None, Some(last)) => {
                    last.end = self.line.len();
                    last.chars += chars;
                }
                _ => self.fragments.push(Fragment {
                    start,
                    end: self.line.len(),
                    chars,
                    gap: gap.unwrap_or(0.0),
                }),
            }
        }
        self.pen = Some(Pen {
            x: g.x + g.dir.0 * g.advance,
            y: g.y + g.dir.1 * g.advance,
            dir: g.dir,
            size,
        });
    }

    /// Writes the current line to the page text. With `may_join`, a trailing hyphen is
    /// dropped and the next line continues the word instead of starting a new line.
    fn end_line(&mut self, may_join: bool) {
        let threshold = self.space_threshold();
        for (i, f) in self.fragments.iter().enumerate() {
            if i > 0 && f.gap >= threshold && !self.out.ends_with([' ', '\n']) {
                self.out.push(' ');
            }
            self.out.push_str(&self.line[f.start..f.end]);
        }
        self.line.clear();
        self.fragments.clear();
        self.space_seen = false;
        if may_join && self.out.ends_with('-') {
            self.out.pop();
        } else if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
    }

    /// The smallest gap, in font sizes, that separates words on the current line.
    fn space_threshold(&self) -> f64 {
        let f = &self.fragments;
        // Letter-spaced text: a line of single characters at a regular pitch is one word,
        // so only gaps clearly wider than the narrowest separate words.
        if f.len() >= 2 && f.iter().all(|frag| frag.chars == 1) {
            let min = f[1..]
                .iter()
                .map(|frag| frag.gap)
                .fold(f64::INFINITY, f64::min);
            if min > 0.0 && min.is_finite() {
                return (WIDE_SPACING * min).min(WIDE_SPACING_MAX);
            }
        }
        CHAR_SPACING
    }

    /// The page's text: lines separated by `\n`, no trailing white space.
    pub(crate) fn finish(mut self) -> String {
        self.flush_accent();
        self.end_line(false);
        let trimmed = self.out.trim_end().len();
        self.out.truncate(trimmed);
        self.out
    }
}

/// Whether `g` is drawn under the accent `a`: it starts before the accent ends and ends
/// after it starts, on nearly the same baseline.
fn under(a: &Accent, g: &Placed<'_>) -> bool {
    let (dx, dy) = (g.x - a.x, g.y - a.y);
    let along = dx * a.dir.0 + dy * a.dir.1;
    let across = -dx * a.dir.1 + dy * a.dir.0;
    let size = a.size.abs();
    along < a.advance - 0.05 * size
        && along + g.advance > 0.05 * size
        && across.abs() <= LINE_SHIFT * size
}

fn accent_glyph(a: &Accent) -> Placed<'static> {
    Placed {
        x: a.x,
        y: a.y,
        dir: a.dir,
        advance: a.advance,
        size: a.size,
        text: a.spacing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glyph(x: f64, y: f64, text: &str) -> Placed<'_> {
        Placed {
            x,
            y,
            dir: (1.0, 0.0),
            advance: 5.0,
            size: 10.0,
            text,
        }
    }

    #[test]
    fn gaps_become_spaces_and_baseline_moves_become_lines() {
        let mut page = PageText::default();
        page.push(glyph(0.0, 100.0, "a"));
        page.push(glyph(5.5, 100.0, "b")); // kern-sized gap: same word
        page.push(glyph(13.5, 100.0, "c")); // 3 units = 0.3 em: a word space
        page.push(glyph(18.5, 102.0, "2")); // superscript: same line
        page.push(glyph(0.0, 88.0, "d")); // next line
        assert_eq!(page.finish(), "ab c2\nd");
    }

    #[test]
    fn superscripts_and_size_changes_split_only_at_a_visible_gap() {
        let mut page = PageText::default();
        page.push(glyph(0.0, 50.0, "x"));
        page.push(glyph(5.0, 53.0, "2")); // raised, touching: same word
        page.push(glyph(20.0, 50.0, "y"));
        page.push(Placed {
            size: 7.0,
            ..glyph(25.5, 50.0, "i")
        }); // smaller, 0.05 em away
        assert_eq!(page.finish(), "x2 y i");
    }

    #[test]
    fn space_glyphs_collapse_and_lines_lose_trailing_spaces() {
        let mut page = PageText::default();
        for (i, t) in ["x", " ", " ", "y", " "].iter().enumerate() {
            page.push(glyph(5.0 * i as f64, 50.0, t));
        }
        page.push(glyph(0.0, 30.0, "z"));
        assert_eq!(page.finish(), "x y\nz");
    }

    #[test]
    fn hyphenated_line_ends_join_within_a_paragraph() {
        let mut page = PageText::default();
        page.push(glyph(0.0, 100.0, "con-"));
        page.push(glyph(0.0, 88.0, "tinue"));
        page.push(glyph(0.0, 40.0, "far-"));
        page.push(glyph(0.0, 0.0, "away"));
        assert_eq!(page.finish(), "continue\nfar-\naway");
    }

    #[test]
    fn letter_spaced_lines_read_as_one_word() {
        let mut page = PageText::default();
        for (i, t) in ["T", "I", "T", "L", "E"].iter().enumerate() {
            page.push(glyph(8.0 * i as f64, 50.0, t));
        }
        // Evenly spaced single characters wider apart than 0.4 em stay separate (code).
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            page.push(glyph(10.0 * i as f64, 30.0, t));
        }
        assert_eq!(page.finish(), "TITLE\na b c");
    }

    #[test]
    fn rotated_text_measures_along_its_baseline() {
        let mut page = PageText::default();
        let up = |y: f64, text| Placed {
            dir: (0.0, 1.0),
            ..glyph(50.0, y, text)
        };
        page.push(up(0.0, "ab"));
        page.push(up(5.0, "c"));
        page.push(up(14.0, "d"));
        assert_eq!(page.finish(), "abc d");
    }

    #[test]
    fn overprinted_accents_become_combining_marks() {
        let mut page = PageText::default();
        page.push(Placed {
            advance: 15.0,
            ..glyph(0.0, 10.0, "Jos")
        });
        page.push(glyph(16.0, 10.0, "´")); // accent first, letter drawn under it
        page.push(glyph(15.0, 10.0, "e"));
        page.push(glyph(30.0, 10.0, "c"));
        page.push(glyph(31.0, 10.0, "¸")); // cedilla after its letter
        page.push(glyph(35.0, 10.0, "a"));
        page.push(glyph(60.0, 10.0, "¨")); // alone: stays as written
        assert_eq!(page.finish(), "Jose\u{301} c\u{327}a ¨");
    }

    #[test]
    fn far_backward_jump_separates_words() {
        let mut page = PageText::default();
        page.push(glyph(100.0, 10.0, "left"));
        page.push(glyph(0.0, 10.0, "right"));
        page.push(glyph(3.0, 10.0, "´")); // over the letter before it
        assert_eq!(page.finish(), "left right\u{301}");
    }
}
