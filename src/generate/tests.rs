//! Generation end to end on a tiny random model with a tokenizer trained on a few lines:
//! seeded determinism, greedy decoding equal to the argmax of the full forward, batching that
//! does not change a prompt's text, and the refusals.

use candle_core::{Device, Tensor};
use mamba_model::{Config, MambaLM};
use mamba_pipeline::tokenize::Vocab;

use super::sampling::{argmax, SamplingConfig};
use super::*;

fn checkpoint(seed: u64) -> Checkpoint {
    let texts = ["the cat sat on the mat. a dog ran to the park!"; 10];
    let vocab = Vocab::train(texts.iter(), 300).unwrap();
    let cfg = Config::preset("tiny", vocab.vocab_size()).unwrap();
    let (model, _) = MambaLM::init(&cfg, seed, &Device::Cpu).unwrap();
    Checkpoint {
        model,
        vocab,
        int8: false,
    }
}

fn opts(temperature: f32, seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 12,
        sampling: SamplingConfig {
            temperature,
            ..Default::default()
        },
        seed,
        stop_at_eos: false,
        ..Default::default()
    }
}

fn run(ck: &Checkpoint, prompts: &[&str], o: &GenerateOptions) -> Vec<Generation> {
    let prompts: Vec<String> = prompts.iter().map(|s| s.to_string()).collect();
    let mut streamed = vec![String::new(); prompts.len()];
    let out = generate(ck, &prompts, o, &mut |i, t| streamed[i].push_str(t)).unwrap();
    for (g, s) in out.iter().zip(&streamed) {
        assert_eq!(&g.text, s, "streamed text differs from the result");
    }
    out
}

#[test]
fn same_seed_same_text() {
    let ck = checkpoint(1);
    let a = run(&ck, &["the cat"], &opts(1.0, 5));
    let b = run(&ck, &["the cat"], &opts(1.0, 5));
    let c = run(&ck, &["the cat"], &opts(1.0, 6));
    assert_eq!(a, b);
    assert_ne!(a[0].tokens, c[0].tokens);
    assert_eq!(a[0].tokens.len(), 12);
}

#[test]
fn greedy_is_the_argmax_of_the_full_forward_and_batching_keeps_it() {
    let ck = checkpoint(2);
    let alone = run(&ck, &["the cat"], &opts(0.0, 0));
    let batched = run(&ck, &["a dog ran", "the cat"], &opts(0.0, 0));
    assert_eq!(batched[1].tokens, alone[0].tokens);
    let vocab = ck.model.config().vocab_size;
    let mut seq = ck.vocab.encode("the cat").unwrap();
    for _ in 0..12 {
        let ids = Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap();
        let l = ck.model.forward(&ids, None).unwrap().squeeze(0).unwrap();
        let last = l.get(seq.len() - 1).unwrap().to_vec1::<f32>().unwrap();
        seq.push(argmax(&last[..vocab]) as u32);
    }
    let prompt_len = seq.len() - 12;
    assert_eq!(alone[0].tokens, seq[prompt_len..]);
}

#[test]
fn beams_and_refusals() {
    let ck = checkpoint(3);
    let mut o = opts(0.0, 0);
    o.num_beams = 3;
    o.max_new_tokens = 4;
    let g = run(&ck, &["the"], &o);
    assert_eq!(g[0].tokens.len(), 4);
    let fail = |prompts: &[&str], o: &GenerateOptions| {
        let p: Vec<String> = prompts.iter().map(|s| s.to_string()).collect();
        generate(&ck, &p, o, &mut |_, _| {})
            .err()
            .unwrap()
            .to_string()
    };
    assert_eq!(fail(&["the", "  "], &opts(1.0, 0)), "prompt 2 is empty");
    let mut bad = opts(1.0, 0);
    bad.sampling.top_p = 1.5;
    assert!(fail(&["the"], &bad).contains("--top-p 1.5"));
    bad = opts(1.0, 0);
    bad.num_beams = 0;
    assert!(fail(&["the"], &bad).contains("--num-beams"));
}
