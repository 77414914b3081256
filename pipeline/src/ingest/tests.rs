//! Whole runs of the ingest pipeline that need a hook only a test build has: a file whose
//! extraction never finishes (see `stages::NEVER_FINISHES`).

use std::path::Path;
use std::time::{Duration, Instant};

use super::stages::NEVER_FINISHES;
use super::*;
use crate::extract::ExtractOptions;

fn options(input: &Path, out: &Path, threads: usize, tokenizer: TokenizerSource) -> IngestOptions {
    IngestOptions {
        stages: StageOptions {
            inputs: vec![input.to_path_buf()],
            select: crate::discover::Select::All,
            exclude: out.to_path_buf(),
            follow_symlinks: false,
            threads,
            max_file_bytes: 1 << 20,
            chunk_bytes: 4096,
            file_timeout: Duration::from_millis(500),
            extract: ExtractOptions {
                text_column: "text".into(),
                batch_rows: 2,
                batch_bytes: 1 << 20,
                max_row_bytes: 1 << 20,
                pdf: Default::default(),
            },
            clean: Default::default(),
        },
        out: out.to_path_buf(),
        tokenizer,
        val_fraction: 0.1,
        limits: ShardLimits {
            row_group_tokens: 1000,
            shard_tokens: 100_000,
            zstd_level: 3,
        },
        progress: false,
    }
}

#[test]
fn a_file_that_never_finishes_fails_with_the_timeout_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let prose = "the state space model reads the sequence once. ".repeat(40);
    std::fs::write(input.join("a.txt"), &prose).unwrap();
    std::fs::write(input.join(NEVER_FINISHES), "never read to the end").unwrap();
    std::fs::write(input.join("z.md"), prose.replace("state", "scan")).unwrap();
    let rows = "{\"text\": \"one row\"}\n{\"text\": \"two rows\"}\n{\"text\": \"three\"}\n";
    std::fs::write(input.join("rows.jsonl"), rows).unwrap();
    // Both passes (tokenizer training and writing) meet the file, at one and two threads.
    for threads in [1, 2] {
        let out = dir.path().join(format!("out{threads}"));
        let opts = options(
            &input,
            &out,
            threads,
            TokenizerSource::Train { vocab_size: 300 },
        );
        let started = Instant::now();
        let summary = run(&opts).unwrap();
        assert!(started.elapsed() < Duration::from_secs(30));
        let files = &summary.manifest.totals.files;
        assert_eq!((files.ingested, files.failed), (3, 1), "{threads} threads");
        let report = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
        let line = format!(
            "{{\"source\":\"{NEVER_FINISHES}\",\"status\":\"failed\",\"reason\":\"timed out: still reading after 0.5 s (raise --file-timeout)\"}}\n"
        );
        assert_eq!(report, line);
        assert_eq!(summary.manifest.totals.documents, 2 + 3);
    }
}
