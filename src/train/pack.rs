//! Packing: the chunks of the token stream are joined into windows of `seq_len + 1` tokens with
//! EOS between documents and no padding, recording where each document starts; a batch of
//! windows becomes the model's inputs, targets and reset mask.
//!
//! Consecutive windows overlap by one token (the last target of a window is the first input of
//! the next), so every token of the stream is predicted exactly once.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// `seq_len + 1` tokens and the positions in it where a document begins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub tokens: Vec<u32>,
    pub starts: Vec<u32>,
}

/// Builds windows from rows fed one at a time. Its whole state is serialisable, so a resumed
/// loader continues mid-window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packer {
    pub seq_len: usize,
    pub eos: u32,
    pub cur: Window,
    /// Document of the last row begun; a row of another document starts a new one.
    pub prev_doc: Option<u64>,
    pub pending_eos: bool,
    pub pending_start: bool,
}

impl Packer {
    pub fn new(seq_len: usize, eos: u32) -> Self {
        Packer {
            seq_len,
            eos,
            cur: Window {
                tokens: Vec::with_capacity(seq_len + 1),
                starts: Vec::new(),
            },
            prev_doc: None,
            pending_eos: false,
            pending_start: false,
        }
    }

    /// Called once before the tokens of a row: a row of a new document closes the previous
    /// document with EOS and marks a start. Chunks of one document arrive in order (the
    /// shard keeps them so), and simply continue it.
    pub fn begin_row(&mut self, doc_id: u64) {
        if self.prev_doc != Some(doc_id) {
            self.pending_eos = self.prev_doc.is_some();
            self.pending_start = true;
            self.prev_doc = Some(doc_id);
        }
    }

    /// Consumes tokens of `row` from `*tok` on until a window is complete (returned) or the row
    /// is used up (`None`, with `*tok == row.len()`).
    pub fn next_window(&mut self, row: &[u32], tok: &mut usize) -> Option<Window> {
        let full = self.seq_len + 1;
        loop {
            if self.cur.tokens.len() == full {
                let last = self.cur.tokens[self.seq_len];
                let last_starts = self.cur.starts.last() == Some(&(self.seq_len as u32));
                let mut next = Window {
                    tokens: Vec::with_capacity(full),
                    starts: Vec::new(),
                };
                next.tokens.push(last);
                if last_starts {
                    next.starts.push(0);
                }
                return Some(std::mem::replace(&mut self.cur, next));
            }
            if self.pending_eos {
                self.cur.tokens.push(self.eos);
                self.pending_eos = false;
                continue;
            }
            if *tok >= row.len() {
                return None;
            }
            if self.pending_start {
                self.cur.starts.push(self.cur.tokens.len() as u32);
                self.pending_start = false;
            }
            let take = (row.len() - *tok).min(full - self.cur.tokens.len());
            self.cur.tokens.extend_from_slice(&row[*tok..*tok + take]);
            *tok += take;
        }
    }
}

/// Model-ready batch: `b` windows as flat row-major (b, seq_len) arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub batch_size: usize,
    pub seq_len: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    /// 1 where an input position starts a document (the model zeroes its state there).
    pub resets: Vec<u8>,
}

impl Batch {
    pub fn from_windows(windows: &[Window], seq_len: usize) -> Batch {
        let b = windows.len();
        let mut batch = Batch {
            batch_size: b,
            seq_len,
            inputs: Vec::with_capacity(b * seq_len),
            targets: Vec::with_capacity(b * seq_len),
            resets: vec![0; b * seq_len],
        };
        for (i, w) in windows.iter().enumerate() {
            batch.inputs.extend_from_slice(&w.tokens[..seq_len]);
            batch.targets.extend_from_slice(&w.tokens[1..=seq_len]);
            for &s in &w.starts {
                if (s as usize) < seq_len {
                    batch.resets[i * seq_len + s as usize] = 1;
                }
            }
        }
        batch
    }

    /// Tokens the model is trained on in this batch.
    pub fn tokens(&self) -> usize {
        self.inputs.len()
    }

    /// (inputs, targets, resets) on `dev`; resets are `None` when documents may see each other.
    pub fn tensors(
        &self,
        dev: &Device,
        doc_reset: bool,
    ) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        let shape = (self.batch_size, self.seq_len);
        let ids = Tensor::from_slice(&self.inputs, shape, dev)?;
        let targets = Tensor::from_slice(&self.targets, shape, dev)?;
        let resets = if doc_reset {
            Some(Tensor::from_slice(&self.resets, shape, dev)?)
        } else {
            None
        };
        Ok((ids, targets, resets))
    }

    /// Rows `from..to` of this batch (a micro-batch, or one rank's share, of a larger one).
    pub fn rows(&self, from: usize, to: usize) -> Batch {
        let l = self.seq_len;
        Batch {
            batch_size: to - from,
            seq_len: l,
            inputs: self.inputs[from * l..to * l].to_vec(),
            targets: self.targets[from * l..to * l].to_vec(),
            resets: self.resets[from * l..to * l].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOS: u32 = 0;

    /// Feeds (doc, tokens) rows and collects every complete window.
    fn pack(rows: &[(u64, Vec<u32>)], seq_len: usize) -> Vec<Window> {
        let mut p = Packer::new(seq_len, EOS);
        let mut out = Vec::new();
        for (doc, toks) in rows {
            p.begin_row(*doc);
            let mut tok = 0;
            while let Some(w) = p.next_window(toks, &mut tok) {
                out.push(w);
            }
            assert_eq!(tok, toks.len());
        }
        out
    }

    #[test]
    fn documents_are_joined_with_eos_and_starts_recorded() {
        // doc 1: two chunks (10..14, 14..16), doc 2: 20..23, doc 3: 30..
        let rows = vec![
            (1, vec![10, 11, 12, 13]),
            (1, vec![14, 15]),
            (2, vec![20, 21, 22]),
            (3, vec![30, 31, 32, 33, 34, 35, 36]),
        ];
        let w = pack(&rows, 4);
        let stream: Vec<u32> = vec![
            10, 11, 12, 13, 14, 15, EOS, 20, 21, 22, EOS, 30, 31, 32, 33, 34, 35, 36,
        ];
        // windows of 5 overlapping by one: stream[0..5], stream[4..9], ...
        assert_eq!(w.len(), (stream.len() - 1) / 4);
        for (i, win) in w.iter().enumerate() {
            assert_eq!(win.tokens, stream[i * 4..i * 4 + 5]);
        }
        // document starts at stream positions 0 (10), 7 (20), 11 (30)
        assert_eq!(w[0].starts, vec![0]);
        assert_eq!(w[1].starts, vec![3]); // stream 7 in window 1 (4..9)
        assert_eq!(w[2].starts, vec![3]); // stream 11 in window 2 (8..13)
        assert_eq!(w[3].starts, Vec::<u32>::new());
        // no padding anywhere: every token comes from the stream
        assert!(w.iter().all(|x| x.tokens.len() == 5));
    }

    #[test]
    fn a_start_on_the_shared_token_carries_over() {
        // the second doc's first token lands on the last slot of window 0
        let rows = vec![(1, vec![1, 2, 3]), (2, vec![7, 8, 9, 10, 11])];
        let w = pack(&rows, 4);
        assert_eq!(w[0].tokens, vec![1, 2, 3, EOS, 7]);
        assert_eq!(w[0].starts, vec![0, 4]);
        assert_eq!(w[1].tokens, vec![7, 8, 9, 10, 11]);
        assert_eq!(w[1].starts, vec![0]);
    }

    #[test]
    fn batch_shifts_targets_and_marks_resets() {
        let rows = vec![(1, vec![1, 2, 3]), (2, (10..30).collect())];
        let w = pack(&rows, 4);
        let b = Batch::from_windows(&w[..2], 4);
        assert_eq!(b.inputs[..4], w[0].tokens[..4]);
        assert_eq!(b.targets[..4], w[0].tokens[1..]);
        assert_eq!(b.resets[..4], [1, 0, 0, 0]);
        // window 0 = 1 2 3 EOS 10 (start of doc 2 at 4, past the inputs); window 1 starts with it
        assert_eq!(b.resets[4..], [1, 0, 0, 0]);
        let half = b.rows(1, 2);
        assert_eq!(half.inputs, b.inputs[4..]);
        let (ids, t, r) = b.tensors(&Device::Cpu, true).unwrap();
        assert_eq!(ids.dims(), [2, 4]);
        assert_eq!(t.dims(), [2, 4]);
        assert!(r.is_some());
        assert!(b.tensors(&Device::Cpu, false).unwrap().2.is_none());
    }

    #[test]
    fn resuming_mid_row_gives_the_same_windows() {
        let row: Vec<u32> = (1..40).collect();
        let mut p = Packer::new(8, EOS);
        p.begin_row(5);
        let mut tok = 0;
        let first = p.next_window(&row, &mut tok).unwrap();
        let saved: Packer = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        let (mut q, mut tok2) = (saved, tok);
        let mut a = vec![first.clone()];
        let mut b = vec![first];
        while let Some(w) = p.next_window(&row, &mut tok) {
            a.push(w);
        }
        while let Some(w) = q.next_window(&row, &mut tok2) {
            b.push(w);
        }
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
    }
}
