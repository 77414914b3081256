//! Discover: walk the inputs in a stable order and classify every file by extension and content.
//!
//! Every path the walk meets becomes exactly one [`Found`], numbered in walk order; the
//! number is what the writer reorders by, so output does not depend on thread timing.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::chunk::code::Lang;

/// How a file will be read, decided from its name and its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pdf,
    Text,
    Code(Lang),
    Config(ConfigFormat),
    Dataset(DatasetFormat),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigFormat {
    Json,
    Yaml,
    Toml,
    Xml,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetFormat {
    Parquet,
    Arrow,
    Jsonl,
    JsonlGz,
    JsonlZst,
}

/// One path met by the walk: a file to read (its format and size), or why it is skipped.
#[derive(Debug)]
pub struct Found {
    /// The file's number among those emitted (what the writer orders by).
    pub index: usize,
    /// The file's number in the walk over all inputs: `index` when every file is read.
    pub number: usize,
    pub path: PathBuf,
    /// Path relative to its input root, with `/` separators: the `source` column.
    pub source: String,
    pub verdict: Result<(Format, u64), Skip>,
}

/// Why discovery will not read a file: skipped by rule, or failed (could not be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    Skipped(String),
    Failed(String),
}

/// How many leading bytes are sniffed for binary content.
const SNIFF_BYTES: usize = 8192;

/// Extensions of plain-text formats read as prose.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt", "md", "markdown", "rst", "text", "org", "adoc", "asciidoc", "tex", "csv", "tsv", "log",
    "ini", "cfg", "conf", "html", "htm", "css", "sh", "bash", "sql", "r", "rb", "pl", "lua",
];

/// Extensions that are certainly not text; skipped without reading.
const BINARY_EXTENSIONS: &[&str] = &[
    "png",
    "jpg",
    "jpeg",
    "gif",
    "bmp",
    "ico",
    "webp",
    "tif",
    "tiff",
    "zip",
    "tar",
    "gz",
    "bz2",
    "xz",
    "7z",
    "rar",
    "exe",
    "dll",
    "so",
    "dylib",
    "o",
    "a",
    "class",
    "jar",
    "pyc",
    "wasm",
    "mp3",
    "mp4",
    "wav",
    "ogg",
    "flac",
    "avi",
    "mov",
    "mkv",
    "woff",
    "woff2",
    "ttf",
    "otf",
    "bin",
    "pt",
    "safetensors",
    "onnx",
    "npy",
    "npz",
    "sqlite",
    "db",
    "doc",
    "xls",
    "ppt",
    "docx",
    "xlsx",
    "pptx",
];

/// Classifies by the file name alone; `None` means "sniff the content".
pub fn format_from_name(name: &str) -> Option<Result<Format, String>> {
    let lower = name.to_ascii_lowercase();
    let dataset = [
        (".jsonl.gz", DatasetFormat::JsonlGz),
        (".jsonl.zst", DatasetFormat::JsonlZst),
        (".jsonl", DatasetFormat::Jsonl),
        (".parquet", DatasetFormat::Parquet),
        (".arrow", DatasetFormat::Arrow),
    ];
    if let Some((_, f)) = dataset.iter().find(|(suffix, _)| lower.ends_with(suffix)) {
        return Some(Ok(Format::Dataset(*f)));
    }
    let ext = lower.rsplit_once('.').map(|(_, e)| e)?;
    let format = match ext {
        "pdf" => Format::Pdf,
        "json" => Format::Config(ConfigFormat::Json),
        "yaml" | "yml" => Format::Config(ConfigFormat::Yaml),
        "toml" => Format::Config(ConfigFormat::Toml),
        "xml" => Format::Config(ConfigFormat::Xml),
        e if TEXT_EXTENSIONS.contains(&e) => Format::Text,
        e if BINARY_EXTENSIONS.contains(&e) => return Some(Err(format!("binary (.{e})"))),
        e => Format::Code(Lang::from_extension(e)?),
    };
    Some(Ok(format))
}

/// True when the bytes look like binary data: a NUL, or many control characters.
pub fn looks_binary(head: &[u8]) -> bool {
    if head.contains(&0) {
        return true;
    }
    let control = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c | 0x1b))
        .count();
    control * 10 > head.len()
}

/// Decides how to read one file: its name first, then its first bytes.
fn classify(path: &Path, name: &str) -> Result<(Format, u64), Skip> {
    let unreadable = |e: std::io::Error| Skip::Failed(format!("unreadable: {e}"));
    let skip = |reason: &str| Err(Skip::Skipped(reason.into()));
    let size = fs::metadata(path).map_err(unreadable)?.len();
    if size == 0 {
        return skip("empty");
    }
    let by_name = format_from_name(name).transpose().map_err(Skip::Skipped)?;
    if let Some(Format::Dataset(_)) = by_name {
        return Ok((by_name.unwrap_or(Format::Text), size));
    }
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    fs::File::open(path)
        .and_then(|f| f.take(SNIFF_BYTES as u64).read_to_end(&mut head))
        .map_err(unreadable)?;
    // Readers accept bytes before the header (a mail or HTTP prefix) within its first KiB.
    let pdf_header = crate::extract::pdf::header_offset(&head);
    if pdf_header == Some(0) || (by_name == Some(Format::Pdf) && pdf_header.is_some()) {
        return Ok((Format::Pdf, size));
    }
    if by_name == Some(Format::Pdf) {
        return skip("not a PDF (no %PDF- header in its first 1024 bytes)");
    }
    let text_bom = head.starts_with(&[0xff, 0xfe]) || head.starts_with(&[0xfe, 0xff]);
    if !text_bom && looks_binary(&head) {
        return skip("binary");
    }
    Ok((by_name.unwrap_or(Format::Text), size))
}

/// Which of the walked files a run reads: all of them, one part of several, or a sample.
///
/// Parts and samples are chosen by a hash of the file's `source`, so a file's part depends on
/// its path alone: adding files moves none of the others.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Select {
    All,
    /// Part `index` of `count`, counted from 1.
    Part {
        index: u32,
        count: u32,
    },
    /// About this fraction of the files.
    Sample {
        fraction: f64,
    },
}

/// What a walk met, read or not: the number of paths and a hash of their sources in walk
/// order. Equal for two walks of the same, unchanged inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walked {
    pub files: usize,
    pub hash: u64,
}

impl Select {
    pub fn keeps(self, source: &str) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(source.as_bytes());
        match self {
            Select::All => true,
            Select::Part { index, count } => hash % u64::from(count.max(1)) + 1 == u64::from(index),
            Select::Sample { fraction } => (hash as f64) < fraction * u64::MAX as f64,
        }
    }
}

/// Walks `roots` (files or folders) in sorted order, calling `emit` for every file met that
/// `select` keeps, numbered both among those and over the whole walk (see [`Found`]); returns
/// what the whole walk met.
///
/// Symlinks are skipped unless `follow_links`; when followed, a link back to an ancestor is
/// reported instead of looping. Anything under `exclude` (the output folder) is not entered.
pub fn walk(
    roots: &[PathBuf],
    follow_links: bool,
    exclude: &Path,
    select: Select,
    mut emit: impl FnMut(Found),
) -> Walked {
    let exclude = fs::canonicalize(exclude).ok();
    let (mut index, mut number) = (0, 0);
    let mut names = xxhash_rust::xxh3::Xxh3Default::new();
    for root in roots {
        let prefix = if roots.len() > 1 {
            root_name(root)
        } else {
            String::new()
        };
        let walker = walkdir::WalkDir::new(root)
            .follow_links(follow_links)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                exclude.is_none() || fs::canonicalize(e.path()).ok() != exclude || e.depth() == 0
            });
        for entry in walker {
            // A file to classify (its name), or why it is not read.
            let (path, met): (PathBuf, Result<String, Skip>) = match entry {
                Ok(e) if e.path_is_symlink() && !follow_links => {
                    let reason = "symlink (pass --follow-symlinks to read it)";
                    (e.into_path(), Err(Skip::Skipped(reason.into())))
                }
                Ok(e) if e.file_type().is_file() => {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (e.into_path(), Ok(name))
                }
                Ok(e) if e.file_type().is_dir() => continue,
                Ok(e) => (
                    e.into_path(),
                    Err(Skip::Skipped("not a regular file".into())),
                ),
                Err(err) => {
                    let path = err.path().map(Path::to_path_buf);
                    let reason = match err.loop_ancestor() {
                        Some(a) => Skip::Skipped(format!("symlink loop back to {}", a.display())),
                        None => Skip::Failed(format!("unreadable: {err}")),
                    };
                    (path.unwrap_or_else(|| root.clone()), Err(reason))
                }
            };
            let source = relative(root, &path, &prefix);
            number += 1;
            names.update(source.as_bytes());
            names.update(b"\n");
            if !select.keeps(&source) {
                continue;
            }
            let verdict = met.and_then(|name| classify(&path, &name));
            emit(Found {
                index,
                number: number - 1,
                path,
                source,
                verdict,
            });
            index += 1;
        }
    }
    Walked {
        files: number,
        hash: names.digest(),
    }
}

fn root_name(root: &Path) -> String {
    let name = root.file_name().map(|n| n.to_string_lossy().into_owned());
    format!(
        "{}/",
        name.unwrap_or_else(|| root.to_string_lossy().into_owned())
    )
}

/// The `source` of a path: relative to its root with `/` separators; a root that is itself a
/// file is named by its file name.
fn relative(root: &Path, path: &Path, prefix: &str) -> String {
    let rel = match path.strip_prefix(root) {
        Ok(r) if !r.as_os_str().is_empty() => r.to_path_buf(),
        _ => PathBuf::from(path.file_name().unwrap_or(path.as_os_str())),
    };
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    format!("{prefix}{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk_all(root: &Path, follow: bool) -> Vec<Found> {
        let mut out = Vec::new();
        walk(
            &[root.to_path_buf()],
            follow,
            Path::new("/nonexistent-out"),
            Select::All,
            |f| out.push(f),
        );
        out
    }

    #[test]
    fn classifies_by_name_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| fs::write(dir.path().join(name), bytes).unwrap();
        write("a.py", b"print(1)\n");
        write("b.md", b"# title\n");
        write("c.json", b"{}");
        write("d.bin", b"\x00\x01\x02");
        write("e", b"plain words without extension\n");
        write("f", b"\x00\x00\x00\x00ELF");
        write("g.txt", b"");
        write("h.pdf", b"not really a pdf");
        write("i.jsonl.zst", b"x");
        write("j.unknownext", b"some text\n");
        let mut prefixed = b"Content-Type: application/pdf\r\n\r\n".to_vec();
        prefixed.extend(b"%PDF-1.4\n1 0 obj\n");
        write("k.pdf", &prefixed);
        // Only a `.pdf` may have bytes before its header; other names must start with it.
        write("l.txt", &prefixed);
        let mut late = vec![b' '; 1100];
        late.extend(b"%PDF-1.4\n");
        write("m.pdf", &late);
        let found = walk_all(dir.path(), false);
        let got: Vec<_> = found
            .iter()
            .map(|f| f.verdict.clone().map(|v| v.0).map_err(|s| format!("{s:?}")))
            .collect();
        let skipped = |r: &str| Err(format!("{:?}", Skip::Skipped(r.into())));
        assert_eq!(found[0].source, "a.py");
        assert_eq!(got[0], Ok(Format::Code(Lang::Python)));
        assert_eq!(got[1], Ok(Format::Text));
        assert_eq!(got[2], Ok(Format::Config(ConfigFormat::Json)));
        assert_eq!(got[3], skipped("binary (.bin)"));
        assert_eq!(got[4], Ok(Format::Text));
        assert_eq!(got[5], skipped("binary"));
        assert_eq!(got[6], skipped("empty"));
        assert_eq!(
            got[7],
            skipped("not a PDF (no %PDF- header in its first 1024 bytes)")
        );
        assert_eq!(got[8], Ok(Format::Dataset(DatasetFormat::JsonlZst)));
        assert_eq!(got[9], Ok(Format::Text));
        assert_eq!(got[10], Ok(Format::Pdf));
        assert_eq!(got[11], Ok(Format::Text));
        assert_eq!(
            got[12],
            skipped("not a PDF (no %PDF- header in its first 1024 bytes)")
        );
        let indices: Vec<_> = found.iter().map(|f| f.index).collect();
        assert_eq!(indices, (0..13).collect::<Vec<_>>());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_skipped_or_followed_without_looping() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("note.txt"), b"hello\n").unwrap();
        std::os::unix::fs::symlink(dir.path(), sub.join("loop")).unwrap();
        std::os::unix::fs::symlink(sub.join("note.txt"), dir.path().join("alias.txt")).unwrap();

        let skipped = walk_all(dir.path(), false);
        let sources: Vec<_> = skipped.iter().map(|f| f.source.as_str()).collect();
        assert_eq!(sources, ["alias.txt", "sub/loop", "sub/note.txt"]);
        assert!(matches!(&skipped[0].verdict, Err(Skip::Skipped(r)) if r.starts_with("symlink")));
        assert!(skipped[2].verdict.is_ok());

        let followed = walk_all(dir.path(), true);
        let sources: Vec<_> = followed.iter().map(|f| f.source.as_str()).collect();
        assert_eq!(sources, ["alias.txt", "sub/loop", "sub/note.txt"]);
        assert!(followed[0].verdict.is_ok());
        assert!(
            matches!(&followed[1].verdict, Err(Skip::Skipped(r)) if r.starts_with("symlink loop"))
        );
    }

    #[test]
    fn output_folder_inside_input_is_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("shards")).unwrap();
        fs::write(dir.path().join("shards/train-00000.parquet"), b"PAR1").unwrap();
        fs::write(dir.path().join("a.txt"), b"text\n").unwrap();
        let mut out = Vec::new();
        walk(
            &[dir.path().to_path_buf()],
            false,
            &dir.path().join("shards"),
            Select::All,
            |f| out.push(f),
        );
        let sources: Vec<_> = out.iter().map(|f| f.source.as_str()).collect();
        assert_eq!(sources, ["a.txt"]);
    }
}
