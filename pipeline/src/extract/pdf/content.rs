//! A content-stream interpreter for text: it follows the graphics and text state (CTM, text
//! matrix, font, spacing; ISO 32000-1, 8.4 and 9.3-9.4) through the text-showing operators
//! and Form XObjects, and hands every glyph, placed on the page, to [`PageText`].
//!
//! Paths, colours and images are ignored. The deadline is checked as operations are read,
//! and Form XObjects may nest only `max_depth` deep and never inside themselves, so neither
//! a huge nor a self-referencing content stream can run away.

use std::collections::HashMap;
use std::rc::Rc;

use lopdf::content::{Content, Operation};
use lopdf::{Dictionary, Document, Object};

use super::filters::{decode_stream, Undecodable};
use super::font::Font;
use super::layout::{PageText, Placed};
use super::limits::Budget;
use super::{dict_get, PdfError};

type Matrix = [f64; 6];
const IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
/// Saved graphics states kept at most; deeper `q` nesting is counted, not stored.
const MAX_SAVED_STATES: usize = 1024;
/// The deadline is read once per this many operations.
const OPS_PER_TIME_CHECK: u32 = 1024;

/// `a × b`, both in PDF's row-vector convention.
fn mul(a: &Matrix, b: &Matrix) -> Matrix {
    [
        a[0] * b[0] + a[1] * b[2],
        a[0] * b[1] + a[1] * b[3],
        a[2] * b[0] + a[3] * b[2],
        a[2] * b[1] + a[3] * b[3],
        a[4] * b[0] + a[5] * b[2] + b[4],
        a[4] * b[1] + a[5] * b[3] + b[5],
    ]
}

fn translate(tx: f64, ty: f64) -> Matrix {
    [1.0, 0.0, 0.0, 1.0, tx, ty]
}

fn num(o: &Object) -> f64 {
    match o {
        Object::Integer(i) => *i as f64,
        Object::Real(r) => f64::from(*r),
        _ => 0.0,
    }
}

fn matrix(operands: &[Object]) -> Option<Matrix> {
    let v: Vec<f64> = operands.iter().map(num).collect();
    v.try_into().ok()
}

/// The part of the graphics state that `q` / `Q` save, text state included.
#[derive(Debug, Clone)]
struct GState {
    ctm: Matrix,
    font: Option<Rc<Font>>,
    size: f64,
    char_space: f64,
    word_space: f64,
    h_scale: f64,
    leading: f64,
    rise: f64,
}

impl GState {
    fn new(ctm: Matrix) -> Self {
        GState {
            ctm,
            font: None,
            size: 0.0,
            char_space: 0.0,
            word_space: 0.0,
            h_scale: 1.0,
            leading: 0.0,
            rise: 0.0,
        }
    }
}

/// State shared by all pages of a document: the budget and what was already decoded.
pub(crate) struct Interpreter<'d> {
    doc: &'d Document,
    pub(crate) budget: Budget,
    /// Fonts by the address of their dictionary in the (immutable) document.
    fonts: HashMap<usize, Rc<Font>>,
    /// Decoded Form XObject content by stream address; `None` if it cannot be decoded.
    forms: HashMap<usize, Option<Rc<Vec<u8>>>>,
    /// Forms being drawn, innermost last.
    form_stack: Vec<usize>,
    ops_since_check: u32,
}

impl<'d> Interpreter<'d> {
    pub(crate) fn new(doc: &'d Document, budget: Budget) -> Self {
        Interpreter {
            doc,
            budget,
            fonts: HashMap::new(),
            forms: HashMap::new(),
            form_stack: Vec::new(),
            ops_since_check: 0,
        }
    }

    /// Runs `content` with `resources`, starting from `ctm`, adding its glyphs to `out`.
    pub(crate) fn run(
        &mut self,
        content: &[u8],
        resources: &[&'d Dictionary],
        ctm: Matrix,
        out: &mut PageText,
    ) -> Result<(), PdfError> {
        let mut gs = GState::new(ctm);
        let mut saved: Vec<GState> = Vec::new();
        let mut unsaved_pushes = 0usize;
        let (mut tm, mut tlm) = (IDENTITY, IDENTITY);
        for op in Content::decode_iter(content) {
            // A damaged stream keeps the text read before the damage.
            let Ok(Operation { operator, operands }) = op else {
                break;
            };
            self.tick()?;
            let n = |i: usize| operands.get(i).map_or(0.0, num);
            match operator.as_str() {
                "q" if saved.len() < MAX_SAVED_STATES => saved.push(gs.clone()),
                "q" => unsaved_pushes += 1,
                "Q" if unsaved_pushes > 0 => unsaved_pushes -= 1,
                "Q" => gs = saved.pop().unwrap_or_else(|| gs.clone()),
                "cm" => {
                    if let Some(m) = matrix(&operands) {
                        gs.ctm = mul(&m, &gs.ctm);
                    }
                }
                "BT" => (tm, tlm) = (IDENTITY, IDENTITY),
                "Tf" => {
                    gs.size = n(1);
                    gs.font = match operands.first().and_then(|o| o.as_name().ok()) {
                        Some(name) => self.font(resources, name)?,
                        None => None,
                    };
                }
                "Tc" => gs.char_space = n(0),
                "Tw" => gs.word_space = n(0),
                "Tz" => gs.h_scale = n(0) / 100.0,
                "TL" => gs.leading = n(0),
                "Ts" => gs.rise = n(0),
                "Td" => {
                    tlm = mul(&translate(n(0), n(1)), &tlm);
                    tm = tlm;
                }
                "TD" => {
                    gs.leading = -n(1);
                    tlm = mul(&translate(n(0), n(1)), &tlm);
                    tm = tlm;
                }
                "Tm" => {
                    if let Some(m) = matrix(&operands) {
                        (tm, tlm) = (m, m);
                    }
                }
                "T*" => {
                    tlm = mul(&translate(0.0, -gs.leading), &tlm);
                    tm = tlm;
                }
                "Tj" => self.show(&gs, &mut tm, operands.first(), out),
                "'" | "\"" => {
                    if operator == "\"" {
                        gs.word_space = n(0);
                        gs.char_space = n(1);
                    }
                    tlm = mul(&translate(0.0, -gs.leading), &tlm);
                    tm = tlm;
                    self.show(&gs, &mut tm, operands.last(), out);
                }
                "TJ" => {
                    let Some(Object::Array(items)) = operands.first() else {
                        continue;
                    };
                    for item in items.iter() {
                        match item {
                            Object::String(..) => self.show(&gs, &mut tm, Some(item), out),
                            _ => {
                                // Numbers move the pen back by thousandths of the font size.
                                let tx = -num(item) / 1000.0 * gs.size * gs.h_scale;
                                tm = mul(&translate(tx, 0.0), &tm);
                            }
                        }
                    }
                }
                "Do" => {
                    if let Some(name) = operands.first().and_then(|o| o.as_name().ok()) {
                        self.draw_form(resources, name, &gs, out)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), PdfError> {
        self.ops_since_check += 1;
        if self.ops_since_check >= OPS_PER_TIME_CHECK {
            self.ops_since_check = 0;
            self.budget.check_time()?;
        }
        Ok(())
    }

    /// Shows one string operand: places each glyph and advances the text matrix (9.4.4).
    fn show(&self, gs: &GState, tm: &mut Matrix, operand: Option<&Object>, out: &mut PageText) {
        let (Some(Object::String(bytes, _)), Some(font)) = (operand, gs.font.as_ref()) else {
            return;
        };
        let render = [gs.size * gs.h_scale, 0.0, 0.0, gs.size, 0.0, gs.rise];
        font.glyphs(bytes, |g| {
            let trm = mul(&render, &mul(tm, &gs.ctm));
            let tx =
                (g.width * gs.size + gs.char_space + if g.is_space { gs.word_space } else { 0.0 })
                    * gs.h_scale;
            let next = mul(&translate(tx, 0.0), tm);
            let end = mul(&render, &mul(&next, &gs.ctm));
            let along = (trm[0], trm[1]);
            let len = along.0.hypot(along.1);
            let dir = if len > 0.0 {
                (along.0 / len, along.1 / len)
            } else {
                (1.0, 0.0)
            };
            let advance = (end[4] - trm[4]) * dir.0 + (end[5] - trm[5]) * dir.1;
            out.push(Placed {
                x: trm[4],
                y: trm[5],
                dir,
                advance,
                size: trm[2].hypot(trm[3]),
                text: g.text,
            });
            *tm = next;
        });
    }

    /// The font a `Tf` names, loaded once per document.
    fn font(
        &mut self,
        resources: &[&'d Dictionary],
        name: &[u8],
    ) -> Result<Option<Rc<Font>>, PdfError> {
        let Some(dict) = lookup(self.doc, resources, b"Font", name).and_then(|o| o.as_dict().ok())
        else {
            return Ok(None);
        };
        let key = std::ptr::from_ref(dict) as usize;
        if let Some(font) = self.fonts.get(&key) {
            return Ok(Some(font.clone()));
        }
        let font = Rc::new(Font::load(self.doc, dict, &mut self.budget)?);
        self.fonts.insert(key, font.clone());
        Ok(Some(font))
    }

    /// Draws the Form XObject a `Do` names (8.10); images and other XObjects are skipped.
    fn draw_form(
        &mut self,
        resources: &[&'d Dictionary],
        name: &[u8],
        gs: &GState,
        out: &mut PageText,
    ) -> Result<(), PdfError> {
        let doc = self.doc;
        let Some(Object::Stream(form)) = lookup(doc, resources, b"XObject", name) else {
            return Ok(());
        };
        if dict_get(doc, &form.dict, b"Subtype").and_then(|s| s.as_name().ok()) != Some(b"Form") {
            return Ok(());
        }
        let key = std::ptr::from_ref(form) as usize;
        if self.form_stack.contains(&key) || self.form_stack.len() >= self.budget.max_depth {
            return Err(PdfError::DepthLimit(self.budget.max_depth));
        }
        let content = match self.forms.get(&key) {
            Some(cached) => cached.clone(),
            None => {
                let decoded = match decode_stream(doc, form, &mut self.budget) {
                    Ok(data) => Some(Rc::new(data)),
                    Err(Undecodable::Unsupported) => None,
                    Err(Undecodable::Limit(e)) => return Err(e),
                };
                self.forms.insert(key, decoded.clone());
                decoded
            }
        };
        let Some(content) = content else {
            return Ok(());
        };
        let form_matrix = match dict_get(doc, &form.dict, b"Matrix") {
            Some(Object::Array(m)) => matrix(m).unwrap_or(IDENTITY),
            _ => IDENTITY,
        };
        // A form without resources of its own uses those of the page that draws it.
        let own: Vec<&'d Dictionary> = match dict_get(doc, &form.dict, b"Resources") {
            Some(Object::Dictionary(d)) => vec![d],
            _ => resources.to_vec(),
        };
        self.form_stack.push(key);
        let result = self.run(&content, &own, mul(&form_matrix, &gs.ctm), out);
        self.form_stack.pop();
        result
    }
}

/// `resources[category][name]`, searched through each resource dictionary in turn.
fn lookup<'d>(
    doc: &'d Document,
    resources: &[&'d Dictionary],
    category: &[u8],
    name: &[u8],
) -> Option<&'d Object> {
    resources.iter().find_map(|res| {
        let table = dict_get(doc, res, category)?.as_dict().ok()?;
        dict_get(doc, table, name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_compose_in_pdf_order() {
        // Scale by 2, then move by (10, 0): a point at (1, 1) lands on (12, 2).
        let m = mul(&[2.0, 0.0, 0.0, 2.0, 0.0, 0.0], &translate(10.0, 0.0));
        assert_eq!(m, [2.0, 0.0, 0.0, 2.0, 10.0, 0.0]);
        assert_eq!(matrix(&[Object::Integer(1)]), None);
    }
}
