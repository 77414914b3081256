//! The cleaning stages end to end: planted secrets and personal data gone from the decoded
//! shards and near-misses kept (the corpus of `tests/fixtures/make_secrets_corpus.py`);
//! near-duplicate clusters removed as the threshold says, the same at any thread count and
//! for parts merged.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use mamba_pipeline::shard::reader::ShardReader;
use mamba_pipeline::tokenize::Vocab;

mod common;
use common::{files, mamba, manifest, ok, repo, s};

/// Every document of a store decoded, by source, chunks in order.
fn decoded(store: &Path) -> BTreeMap<String, String> {
    let vocab = Vocab::load(&store.join("tokenizer.json"), None).unwrap();
    let mut rows = Vec::new();
    for shard in manifest(store)["shards"].as_array().unwrap() {
        let reader = ShardReader::open(&store.join(shard["file"].as_str().unwrap())).unwrap();
        for group in 0..reader.num_row_groups() {
            for row in reader.row_group(group).unwrap() {
                rows.push((
                    row.source.clone(),
                    row.doc_id,
                    row.chunk,
                    row.tokens.clone(),
                ));
            }
        }
    }
    rows.sort();
    let mut docs = BTreeMap::<String, String>::new();
    for (source, _, _, tokens) in rows {
        let text = vocab.tokenizer.decode(&tokens, false).unwrap();
        docs.entry(source).or_default().push_str(&text);
    }
    docs
}

fn expected() -> serde_json::Value {
    let path = repo().join("tests/fixtures/secrets-expected.json");
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn ingest(input: &Path, out: &Path, extra: &[&str]) -> String {
    let args = [
        "ingest",
        "--quiet",
        s(input),
        s(out),
        "--vocab-size",
        "2000",
    ];
    ok(&mamba(&[&args[..], extra].concat()))
}

#[test]
fn planted_secrets_are_gone_and_near_misses_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = repo().join("tests/fixtures/secrets");
    let out = tmp.path().join("out");
    ingest(&corpus, &out, &[]);
    let all: String = decoded(&out).into_values().collect();
    let expected = expected();
    let mut rules = BTreeMap::new();
    for planted in expected["planted"].as_array().unwrap() {
        let (rule, value) = (
            planted["rule"].as_str().unwrap(),
            planted["value"].as_str().unwrap(),
        );
        assert!(
            !all.contains(value),
            "{rule}: {value} is still in the shards"
        );
        *rules.entry(rule.to_string()).or_insert(0u64) += 1;
    }
    for near in expected["near_misses"].as_array().unwrap() {
        let near = near.as_str().unwrap();
        assert!(all.contains(near), "near-miss {near:?} was touched");
    }
    assert!(all.contains("<SECRET:aws_access_key>") && all.contains("<PII:email>"));
    // Every rule planted is counted in the manifest, and the report names rules, not values.
    let totals = &manifest(&out)["totals"]["redactions"];
    for rule in rules.keys() {
        assert!(
            totals[rule].as_u64().unwrap_or(0) >= 1,
            "{rule} not counted: {totals}"
        );
    }
    let report = fs::read_to_string(out.join("report.jsonl")).unwrap();
    assert!(report.contains("\"status\":\"redacted\""), "{report}");
    for planted in expected["planted"].as_array().unwrap() {
        assert!(!report.contains(planted["value"].as_str().unwrap()));
    }

    // `inspect` shows the totals.
    let shown = ok(&mamba(&["inspect", s(&out), "--summary"]));
    assert!(
        shown.contains("cleaned: 0 near-duplicate documents dropped"),
        "{shown}"
    );
    assert!(
        shown.contains("redacted: ") && shown.contains("secret:aws_access_key 1"),
        "{shown}"
    );
    let page = tmp.path().join("report.html");
    ok(&mamba(&["inspect", s(&out), "--html", s(&page)]));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("Cleaned: 0 near-duplicate documents dropped")
            && html.contains("Redacted")
            && html.contains("secret:aws_access_key 1"),
        "{html}"
    );

    // Turned off, every planted value is in the shards: the decoding above can see them.
    let kept = tmp.path().join("kept");
    ingest(&corpus, &kept, &["--keep-secrets", "--redact", "none"]);
    let all: String = decoded(&kept).into_values().collect();
    for planted in expected["planted"].as_array().unwrap() {
        assert!(all.contains(planted["value"].as_str().unwrap()));
    }
    assert!(manifest(&kept)["totals"]["redactions"]
        .as_object()
        .unwrap()
        .is_empty());
}

/// A small deterministic generator, so the corpus is the same on every machine.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

const EDITS: [(&str, f64); 3] = [("edit01", 0.01), ("edit05", 0.05), ("edit30", 0.30)];

/// Eight documents of 1,200 words, each with copies edited at 1%, 5% and 30% of its words.
fn near_dup_corpus(dir: &Path) {
    let mut rng = Rng(0xC0FFEE);
    let vocab: Vec<String> = (0..3000).map(|i| format!("word{i}")).collect();
    for doc in 0..8 {
        let words: Vec<String> = (0..1200)
            .map(|_| vocab[rng.below(vocab.len())].clone())
            .collect();
        let write = |name: &str, words: &[String]| {
            let lines: Vec<String> = words.chunks(12).map(|l| l.join(" ")).collect();
            let folder = dir.join(format!("doc{doc}"));
            fs::create_dir_all(&folder).unwrap();
            fs::write(folder.join(format!("{name}.txt")), lines.join("\n")).unwrap();
        };
        write("0-original", &words);
        for (name, fraction) in EDITS {
            let mut copy = words.clone();
            for _ in 0..(words.len() as f64 * fraction) as usize {
                let at = rng.below(copy.len());
                copy[at] = vocab[rng.below(vocab.len())].clone();
            }
            write(&format!("1-{name}"), &copy);
        }
    }
}

#[test]
fn near_duplicates_follow_the_threshold_at_any_threads_and_across_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    near_dup_corpus(&data);
    let tokenizer = tmp.path().join("tokenizer.json");
    ok(&mamba(&[
        "tokenizer",
        "train",
        s(&data),
        "-o",
        s(&tokenizer),
        "--vocab-size",
        "1000",
    ]));
    let run = |out: &Path, extra: &[&str]| {
        let args = [
            "ingest",
            "--quiet",
            s(&data),
            s(out),
            "--tokenizer",
            s(&tokenizer),
        ];
        ok(&mamba(&[&args[..], extra].concat()));
    };
    let one: PathBuf = tmp.path().join("one");
    run(&one, &["--threads", "1"]);
    let sources: Vec<String> = decoded(&one).into_keys().collect();
    let kept = |name: &str| sources.iter().filter(|s| s.ends_with(name)).count();
    // J near 0.9 at 1%: always a near-duplicate; J near 0.1 at 30%: never.
    assert_eq!(kept("0-original.txt"), 8);
    assert_eq!(kept("1-edit01.txt"), 0);
    assert_eq!(kept("1-edit30.txt"), 8);
    // J near 0.63 at 5%: caught with probability about 0.3 (see clean::near_dup).
    let caught = 8 - kept("1-edit05.txt");
    assert!(caught <= 6, "{caught} of 8 copies edited at 5% caught");
    let m = manifest(&one);
    assert_eq!(
        m["totals"]["near_duplicates"].as_u64(),
        Some(8 + caught as u64)
    );
    assert_eq!(
        m["totals"]["skipped_by_reason"]["near-duplicate"].as_u64(),
        Some(8 + caught as u64)
    );
    let report = fs::read_to_string(one.join("report.jsonl")).unwrap();
    assert!(
        report.contains("near-duplicate of doc0/0-original.txt"),
        "{report}"
    );

    let two = tmp.path().join("two");
    run(&two, &["--threads", "2"]);
    assert!(files(&one) == files(&two), "1 and 2 threads differ");

    let parts: Vec<PathBuf> = (1..=3)
        .map(|i| tmp.path().join(format!("part{i}")))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        run(part, &["--threads", "2", "--part", &format!("{}/3", i + 1)]);
    }
    let merged = tmp.path().join("merged");
    let mut args = vec!["ingest", "--merge", s(&merged)];
    args.extend(parts.iter().map(|p| s(p)));
    ok(&mamba(&args));
    let (a, b) = (files(&one), files(&merged));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{name} of the merged parts differs from the single run's"
        );
    }

    // The documents are not English, nor any language: prose of made-up words.
    assert!(
        m["totals"]["by_lang"].get("und").is_some(),
        "{}",
        m["totals"]["by_lang"]
    );

    let off = tmp.path().join("off");
    run(&off, &["--near-dup", "off"]);
    assert_eq!(
        manifest(&off)["totals"]["near_duplicates"].as_u64(),
        Some(0)
    );
    assert_eq!(decoded(&off).len(), 32);
}

#[test]
fn prose_gets_its_language_and_lang_keeps_only_those_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let en = "The model reads the whole sequence once and keeps a state of fixed size. ";
    let de = "Das Modell liest die ganze Folge einmal und behält einen Zustand fester Größe. ";
    fs::write(data.join("a-en.md"), en.repeat(8)).unwrap();
    fs::write(data.join("b-de.txt"), de.repeat(8)).unwrap();
    fs::write(data.join("c.py"), "def f(x):\n    return x + 1\n").unwrap();
    let out = tmp.path().join("out");
    ingest(&data, &out, &[]);
    let langs = &manifest(&out)["totals"]["by_lang"];
    assert_eq!(langs["en"]["documents"].as_u64(), Some(1), "{langs}");
    assert_eq!(langs["de"]["documents"].as_u64(), Some(1), "{langs}");
    assert_eq!(langs["python"]["documents"].as_u64(), Some(1), "{langs}");

    let only_en = tmp.path().join("only-en");
    ingest(&data, &only_en, &["--lang", "en"]);
    let m = manifest(&only_en);
    assert_eq!(m["totals"]["filtered"]["lang:de"].as_u64(), Some(1));
    let kept: Vec<String> = decoded(&only_en).into_keys().collect();
    assert_eq!(kept, ["a-en.md", "c.py"]);

    // Keeping languages without identifying them would keep everything: refused.
    let o = mamba(&[
        "ingest",
        s(&data),
        s(&tmp.path().join("x")),
        "--lang",
        "en",
        "--lang-id",
        "off",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --lang-id on"));
}
