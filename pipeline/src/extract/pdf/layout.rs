//! Turning positioned glyphs into plain text: a word space where a visible gap separates two
//! glyphs on one baseline, a line break where the baseline moves.
//!
//! PDF text has no spaces of its own in most files (TeX moves the pen instead of drawing a
//! space glyph), so word boundaries come from geometry. Glyphs arrive in content-stream
//! order, which for single-column documents is reading order; the gaps are measured along
//! the baseline direction so rotated pages read the same way.

/// A gap wider than this fraction of the font size is a word space. TeX's narrowest
/// inter-word space is about 0.22 em and its largest kerns about 0.1 em.
const WORD_GAP: f64 = 0.15;
/// A baseline shift larger than this fraction of the font size starts a new line;
/// superscripts and subscripts move by less.
const LINE_SHIFT: f64 = 0.5;
/// A jump back along the baseline larger than this fraction of the font size separates
/// words too (text drawn out of order); smaller ones are overprinted accents.
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

/// Where the previous glyph ended.
#[derive(Debug, Clone, Copy)]
struct Pen {
    x: f64,
    y: f64,
    dir: (f64, f64),
    size: f64,
}

/// The text of one page as it is built.
#[derive(Debug, Default)]
pub(crate) struct PageText {
    out: String,
    pen: Option<Pen>,
}

impl PageText {
    pub(crate) fn push(&mut self, g: Placed<'_>) {
        if !(g.x.is_finite() && g.y.is_finite() && g.advance.is_finite()) {
            return;
        }
        let size = g.size.abs().max(1e-6);
        if let Some(pen) = self.pen {
            let (dx, dy) = (g.x - pen.x, g.y - pen.y);
            let along = dx * pen.dir.0 + dy * pen.dir.1;
            let across = -dx * pen.dir.1 + dy * pen.dir.0;
            let same_dir = g.dir.0 * pen.dir.0 + g.dir.1 * pen.dir.1 > 0.99;
            let scale = size.max(pen.size);
            if !same_dir || across.abs() > LINE_SHIFT * scale {
                self.new_line();
            } else if along > WORD_GAP * scale || along < -BACK_GAP * scale {
                self.space();
            }
        }
        if !g.text.is_empty() {
            if g.text.chars().all(char::is_whitespace) {
                self.space();
            } else {
                self.out.push_str(g.text);
            }
        }
        self.pen = Some(Pen {
            x: g.x + g.dir.0 * g.advance,
            y: g.y + g.dir.1 * g.advance,
            dir: g.dir,
            size,
        });
    }

    fn space(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with([' ', '\n']) {
            self.out.push(' ');
        }
    }

    fn new_line(&mut self) {
        let trimmed = self.out.trim_end_matches(' ').len();
        self.out.truncate(trimmed);
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
    }

    /// The page's text: lines separated by `\n`, no trailing white space.
    pub(crate) fn finish(mut self) -> String {
        let trimmed = self.out.trim_end().len();
        self.out.truncate(trimmed);
        self.out
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
        page.push(glyph(5.2, 100.0, "b")); // kern-sized gap: same word
        page.push(glyph(13.5, 100.0, "c")); // 3.3 units = 0.33 em: a word space
        page.push(glyph(15.0, 102.0, "2")); // superscript: same line
        page.push(glyph(0.0, 88.0, "d")); // next line
        assert_eq!(page.finish(), "ab c2\nd");
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
    fn rotated_text_measures_along_its_baseline() {
        let mut page = PageText::default();
        let up = |y: f64, text| Placed {
            x: 50.0,
            y,
            dir: (0.0, 1.0),
            advance: 5.0,
            size: 10.0,
            text,
        };
        page.push(up(0.0, "a"));
        page.push(up(5.0, "b"));
        page.push(up(14.0, "c"));
        assert_eq!(page.finish(), "ab c");
    }

    #[test]
    fn far_backward_jump_separates_words() {
        let mut page = PageText::default();
        page.push(glyph(100.0, 10.0, "left"));
        page.push(glyph(0.0, 10.0, "right"));
        page.push(glyph(3.0, 10.0, "´"));
        assert_eq!(page.finish(), "left right´");
    }
}
