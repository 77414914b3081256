//! The code and prose chunkers on arbitrary text, in every language, at a small budget: the
//! chunks must concatenate back to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamba_pipeline::chunk::{code, text};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let budget = 1 + usize::from(first) * 4;
    let source = String::from_utf8_lossy(rest);
    for lang in code::Lang::ALL {
        let cut = code::split(&source, lang, budget);
        assert_eq!(cut.chunks.concat(), source, "{lang:?}");
    }
    assert_eq!(text::split(&source, budget).concat(), source);
});
