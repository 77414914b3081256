//! Benchmark of PDF text extraction against poppler's `pdftotext`: for every PDF under a
//! folder, the word-level F1 of our text against `pdftotext file.pdf out.txt` (plain mode,
//! not `-layout`), the page count and our extraction speed, then the token-weighted total.
//!
//! Words are whitespace-separated tokens compared as bags (counts, not order), so the score
//! measures characters and word boundaries, not reading order.
//!
//! Run: `cargo run --release -p mamba-pipeline --example pdf_f1 -- DIR [--show N]`
//! (`--show N` also lists each file's N most frequent missing and extra words).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use mamba_pipeline::extract::pdf::{extract_pages, PdfLimits};

type Bag = HashMap<String, usize>;

fn bag(text: &str) -> Bag {
    let mut bag = Bag::new();
    for word in text.split_whitespace() {
        *bag.entry(word.to_string()).or_default() += 1;
    }
    bag
}

/// Words in both bags, counted with multiplicity.
fn overlap(a: &Bag, b: &Bag) -> usize {
    a.iter()
        .map(|(w, &n)| n.min(b.get(w).copied().unwrap_or(0)))
        .sum()
}

fn f1(overlap: usize, ours: usize, reference: usize) -> f64 {
    if ours + reference == 0 {
        return 1.0;
    }
    2.0 * overlap as f64 / (ours + reference) as f64
}

/// The `n` most frequent words of `a` that `b` lacks (by count difference).
fn surplus(a: &Bag, b: &Bag, n: usize) -> Vec<(String, usize)> {
    let mut extra: Vec<(String, usize)> = a
        .iter()
        .filter_map(|(w, &c)| {
            c.checked_sub(b.get(w).copied().unwrap_or(0))
                .filter(|&d| d > 0)
                .map(|d| (w.clone(), d))
        })
        .collect();
    extra.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    extra.truncate(n);
    extra
}

fn pdftotext(path: &Path, out: &Path) -> Result<String, String> {
    let status = Command::new("pdftotext")
        .arg(path)
        .arg(out)
        .status()
        .map_err(|e| format!("cannot run pdftotext (apt-get install poppler-utils): {e}"))?;
    if !status.success() {
        return Err(format!("pdftotext failed on {}", path.display()));
    }
    std::fs::read_to_string(out).map_err(|e| e.to_string())
}

fn pdfs_under(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("pdf")))
        .collect();
    files.sort();
    files
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("usage: pdf_f1 DIR [--show N]")?;
    let show = match args.iter().position(|a| a == "--show") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .ok_or("--show needs a number")?,
        None => 0,
    };
    let files = pdfs_under(Path::new(dir));
    if files.is_empty() {
        return Err(format!("no PDF files under {dir}"));
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let limits = PdfLimits::default();
    let (mut total_overlap, mut total_ours, mut total_ref) = (0, 0, 0);
    let (mut total_bytes, mut total_secs, mut total_pages) = (0usize, 0.0f64, 0usize);
    println!("{:>7} {:>6} {:>8} {:>8}  file", "F1", "pages", "MB", "MB/s");
    for path in &files {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let start = Instant::now();
        let result = extract_pages(&bytes, &limits);
        let secs = start.elapsed().as_secs_f64();
        let reference = bag(&pdftotext(path, &tmp.path().join("out.txt"))?);
        let ref_count: usize = reference.values().sum();
        let mb = bytes.len() as f64 / 1e6;
        let pages = match result {
            Ok(pages) => pages,
            Err(e) => {
                // A failure scores zero: everything pdftotext found is missed.
                println!(
                    "{:>7.4} {:>6} {mb:>8.2} {:>8}  {}  ({e})",
                    0.0,
                    "-",
                    "-",
                    path.display()
                );
                total_ref += ref_count;
                continue;
            }
        };
        let ours = bag(&pages.join("\n"));
        let our_count: usize = ours.values().sum();
        let common = overlap(&ours, &reference);
        println!(
            "{:>7.4} {:>6} {mb:>8.2} {:>8.1}  {}",
            f1(common, our_count, ref_count),
            pages.len(),
            mb / secs.max(1e-9),
            path.display()
        );
        if show > 0 {
            println!("        missing: {:?}", surplus(&reference, &ours, show));
            println!("        extra:   {:?}", surplus(&ours, &reference, show));
        }
        (total_overlap, total_ours, total_ref) = (
            total_overlap + common,
            total_ours + our_count,
            total_ref + ref_count,
        );
        (total_bytes, total_secs, total_pages) = (
            total_bytes + bytes.len(),
            total_secs + secs,
            total_pages + pages.len(),
        );
    }
    println!(
        "{:>7.4} {total_pages:>6} {:>8.2} {:>8.1}  TOTAL ({} files, {total_ref} reference words; F1 weighted by words)",
        f1(total_overlap, total_ours, total_ref),
        total_bytes as f64 / 1e6,
        total_bytes as f64 / 1e6 / total_secs.max(1e-9),
        files.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pdf_f1: {e}");
            ExitCode::FAILURE
        }
    }
}
