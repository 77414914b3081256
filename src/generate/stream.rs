//! Turning generated token ids into text as they arrive: the whole continuation is decoded
//! again at each token (a BPE token can be part of a character, and byte-level decoding is
//! only right on whole sequences), and only the part that can no longer change is released:
//! never an incomplete UTF-8 sequence, never a prefix of a `--stop` string.

use mamba_pipeline::tokenize::Vocab;

/// The text of one continuation, released in pieces.
pub struct TextStream<'a> {
    vocab: &'a Vocab,
    stop: &'a [String],
    pub tokens: Vec<u32>,
    /// Bytes of the decoded text already released.
    released: usize,
    /// Set once a stop string appeared: the text ends before it.
    pub stopped: bool,
}

impl<'a> TextStream<'a> {
    pub fn new(vocab: &'a Vocab, stop: &'a [String]) -> Self {
        TextStream {
            vocab,
            stop,
            tokens: Vec::new(),
            released: 0,
            stopped: false,
        }
    }

    fn decode(&self) -> String {
        self.vocab
            .tokenizer
            .decode(&self.tokens, true)
            .unwrap_or_default()
    }

    /// Adds a token; returns the text that is now final (possibly empty).
    pub fn push(&mut self, token: u32) -> String {
        self.tokens.push(token);
        let text = self.decode();
        if let Some(cut) = self.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            self.stopped = true;
            return self.release(&text, cut);
        }
        // A trailing replacement character may be half a character still being generated.
        let mut end = text.trim_end_matches('\u{FFFD}').len();
        // Hold back what could still become a stop string.
        let hold = self.stop.iter().map(|s| s.len()).max().unwrap_or(1) - 1;
        end = end.saturating_sub(hold);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.release(&text, end)
    }

    /// Everything not yet released (at the end of generation).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let text = self.decode();
        self.release(&text, text.len())
    }

    fn release(&mut self, text: &str, end: usize) -> String {
        if end <= self.released || !text.is_char_boundary(self.released) {
            return String::new();
        }
        let piece = text[self.released..end].to_string();
        self.released = end;
        piece
    }

    /// The final text: up to the first stop string, if one appeared.
    pub fn text(&self) -> String {
        let text = self.decode();
        match self.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            Some(cut) => text[..cut].to_string(),
            None => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        let texts = ["hello world. hello there, world!"; 20];
        Vocab::train(texts.iter(), 300).unwrap()
    }

    #[test]
    fn pieces_add_up_and_stop_strings_cut() {
        let v = vocab();
        let ids = v.encode("hello there, world! hello world.").unwrap();
        let none: Vec<String> = Vec::new();
        let mut s = TextStream::new(&v, &none);
        let mut out: String = ids.iter().map(|&t| s.push(t)).collect();
        out += &s.finish();
        assert_eq!(out, "hello there, world! hello world.");
        let stop = vec!["world!".to_string()];
        let mut s = TextStream::new(&v, &stop);
        let mut out = String::new();
        for &t in &ids {
            out += &s.push(t);
            if s.stopped {
                break;
            }
        }
        out += &s.finish();
        assert!(s.stopped);
        assert_eq!(out, "hello there, ");
        assert_eq!(s.text(), "hello there, ");
    }
}
