//! End-to-end tests of `mamba generate` on a tiny random checkpoint written by the test: the
//! same seed gives the same text, prompts come from flags, files and stdin, several prompts
//! batch, beams run, and each kind of bad input gets one clear line and exit status 2.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use candle_core::Device;
use mamba_model::{Config, MambaLM};
use mamba_pipeline::tokenize::Vocab;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mamba"));
    c.env("CANDLE_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1");
    c
}

/// A checkpoint directory: a random tiny model of `model_vocab` rows and a tokenizer trained
/// on a few sentences.
fn checkpoint(dir: &Path, model_vocab: Option<usize>) {
    let texts = ["The quick brown fox jumps over the lazy dog. Hello world!"; 10];
    let vocab = Vocab::train(texts.iter(), 300).unwrap();
    let n = model_vocab.unwrap_or(vocab.vocab_size());
    let (model, _) = MambaLM::init(&Config::preset("tiny", n).unwrap(), 4, &Device::Cpu).unwrap();
    model.save(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), vocab.to_json().unwrap()).unwrap();
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn seeded_sampling_prompts_from_everywhere_and_beams() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    checkpoint(&ck, None);
    let ck = ck.to_str().unwrap();
    let gen = |extra: &[&str]| {
        let mut a = vec!["generate", "--checkpoint", ck, "--max-new-tokens", "20"];
        a.extend(extra);
        stdout(&run(&a, None))
    };
    let a = gen(&["--prompt", "Hello", "--seed", "3", "--ignore-eos"]);
    let b = gen(&["--prompt", "Hello", "--seed", "3", "--ignore-eos"]);
    let c = gen(&["--prompt", "Hello", "--seed", "4", "--ignore-eos"]);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.starts_with("Hello") && a.len() > "Hello\n".len(), "{a:?}");
    let k = gen(&["--prompt", "Hello", "--top-k", "1", "--seed", "9"]);
    let g = gen(&["--prompt", "Hello", "--temperature", "0"]);
    assert_eq!(k, g, "top-k 1 is greedy");
    // A prompt file and stdin give the same prompt; two prompts print two blocks.
    let file = tmp.path().join("p.txt");
    std::fs::write(&file, "Hello\n").unwrap();
    let from_file = gen(&[
        "--prompt-file",
        file.to_str().unwrap(),
        "--temperature",
        "0",
    ]);
    assert_eq!(from_file, g);
    let args = [
        "generate",
        "--checkpoint",
        ck,
        "--max-new-tokens",
        "20",
        "--temperature",
        "0",
    ];
    assert_eq!(stdout(&run(&args, Some("Hello\n"))), g);
    let two = gen(&[
        "--prompt",
        "The fox",
        "--prompt",
        "Hello",
        "--temperature",
        "0",
    ]);
    let blocks: Vec<&str> = two.split("\n---\n").collect();
    assert_eq!(blocks.len(), 2, "{two:?}");
    assert_eq!(blocks[1], g);
    let beams = gen(&["--prompt", "Hello", "--num-beams", "3", "--no-echo"]);
    assert!(!beams.starts_with("Hello"));
}

/// `--weights bf16` and `int8` generate from the same checkpoint; an unknown value is a usage
/// error. (How close their logits stay to f32 is tested in the model crate.)
#[test]
fn reduced_weights_generate() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), None);
    let ck = dir.path().to_str().unwrap();
    let args = |w: &'static str| -> Vec<&str> {
        vec![
            "generate",
            "--checkpoint",
            ck,
            "--prompt",
            "The quick",
            "--temperature",
            "0",
        ]
        .into_iter()
        .chain(["--max-new-tokens", "3", "--weights", w])
        .collect()
    };
    for w in ["f32", "bf16", "int8"] {
        let out = run(&args(w), None);
        assert!(
            out.status.success(),
            "{w}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout(&out).starts_with("The quick"), "{w}");
    }
    let bad = run(
        &[
            "generate",
            "--checkpoint",
            ck,
            "--prompt",
            "x",
            "--weights",
            "f8",
        ],
        None,
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn bad_input_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    checkpoint(&ck, None);
    let small = tmp.path().join("small");
    checkpoint(&small, Some(64));
    let bare = tmp.path().join("bare");
    checkpoint(&bare, None);
    std::fs::remove_file(bare.join("tokenizer.json")).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let missing = s(&tmp.path().join("nope"));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![missing, "--prompt".into(), "x".into()], "not found"),
        (
            vec![s(&bare), "--prompt".into(), "x".into()],
            "no tokenizer.json",
        ),
        (
            vec![s(&small), "--prompt".into(), "x".into()],
            "but the model's vocabulary is 64",
        ),
        (
            vec![s(&ck), "--prompt".into(), " ".into()],
            "prompt 1 is empty",
        ),
        (
            vec![
                s(&ck),
                "--prompt".into(),
                "x".into(),
                "--top-p".into(),
                "2".into(),
            ],
            "--top-p 2",
        ),
        (
            vec![
                s(&ck),
                "--prompt".into(),
                "x".into(),
                "--temperature".into(),
                "-1".into(),
            ],
            "--temperature -1",
        ),
        (
            vec![
                s(&ck),
                "--prompt".into(),
                "x".into(),
                "--repetition-penalty".into(),
                "0".into(),
            ],
            "--repetition-penalty 0",
        ),
        (
            vec![
                s(&ck),
                "--prompt".into(),
                "x".into(),
                "--num-beams".into(),
                "0".into(),
            ],
            "--num-beams",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["generate".to_string(), "--checkpoint".into()];
        a.extend(args);
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let o = run(&a, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{a:?}: {err}");
        assert!(err.contains(want), "{a:?}: {err}");
    }
}
