//! Tests of `extract_pages` on whole documents: PDFs built here with lopdf, the committed
//! sample, hostile files, and agreement with `pdftotext` (poppler-utils must be installed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flate2::write::ZlibEncoder;
use flate2::Compression;
use lopdf::{dictionary, Dictionary, Document, Object, ObjectId, Stream};

use super::*;

/// A one-font document assembled page by page.
struct Builder {
    doc: Document,
    pages_id: ObjectId,
    kids: Vec<Object>,
    resources: Dictionary,
}

impl Builder {
    fn new() -> Self {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
        });
        Builder {
            doc,
            pages_id,
            kids: Vec::new(),
            resources: dictionary! {"Font" => dictionary! {"F1" => font}},
        }
    }

    fn page(&mut self, content: &[u8]) -> &mut Self {
        self.page_stream(Stream::new(Dictionary::new(), content.to_vec()))
    }

    fn page_stream(&mut self, stream: Stream) -> &mut Self {
        let content = self.doc.add_object(stream);
        let page = self.doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => self.pages_id, "Contents" => content,
            "Resources" => self.resources.clone(),
        });
        self.kids.push(page.into());
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        let pages = dictionary! {
            "Type" => "Pages", "Kids" => self.kids.clone(), "Count" => self.kids.len() as i64,
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        };
        self.doc
            .objects
            .insert(self.pages_id, Object::Dictionary(pages));
        let catalog = self
            .doc
            .add_object(dictionary! {"Type" => "Catalog", "Pages" => self.pages_id});
        self.doc.trailer.set("Root", catalog);
        let mut out = Vec::new();
        self.doc.save_to(&mut out).unwrap();
        out
    }
}

fn extract(bytes: &[u8]) -> Result<Vec<String>, PdfError> {
    extract_pages(bytes, &PdfLimits::default())
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = repo_path("pipeline/tests/fixtures/pdf").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn built_pdf_gives_its_words_and_lines_per_page() {
    let bytes = Builder::new()
        .page(b"BT /F1 12 Tf 72 700 Td 14 TL (Hello world, this is) Tj T* (the second line.) Tj ET")
        .page(
            b"BT /F1 10 Tf 1 0 0 1 72 600 Tm (Page two) Tj 0 -12 Td (\x93quoted\x94 caf\xe9) Tj ET",
        )
        .bytes();
    let pages = extract(&bytes).unwrap();
    assert_eq!(
        pages,
        [
            "Hello world, this is\nthe second line.",
            "Page two\n“quoted” café"
        ]
    );
}

#[test]
fn kerning_and_positioning_make_word_spaces() {
    // No space characters at all: words are separated by TJ offsets and by Td moves, as
    // TeX writes them; small kerns stay inside words.
    let bytes = Builder::new()
        .page(b"BT /F1 10 Tf 72 700 Td [(W)80(ord)-333(next)] TJ 30 0 Td (gap) Tj ET")
        .bytes();
    assert_eq!(extract(&bytes).unwrap(), ["Word next gap"]);
}

#[test]
fn text_inside_form_xobjects_is_found() {
    let mut b = Builder::new();
    let form = Stream::new(
        dictionary! {"Type" => "XObject", "Subtype" => "Form", "BBox" => vec![0.into(), 0.into(), 100.into(), 100.into()],
        "Matrix" => vec![1.into(), 0.into(), 0.into(), 1.into(), 0.into(), (-50).into()]},
        b"BT /F1 10 Tf 72 700 Td (from the form) Tj ET".to_vec(),
    );
    let form_id = b.doc.add_object(form);
    b.resources.set("XObject", dictionary! {"X1" => form_id});
    let bytes = b
        .page(b"BT /F1 10 Tf 72 700 Td (on the page) Tj ET /X1 Do")
        .bytes();
    assert_eq!(extract(&bytes).unwrap(), ["on the page\nfrom the form"]);
}

#[test]
fn sample_pdf_reads_back_as_written() {
    let pages = extract(&std::fs::read(repo_path("data/sample.pdf")).unwrap()).unwrap();
    assert_eq!(pages.len(), 2);
    assert!(
        pages[0].starts_with("mamba sample, page 1\nmamba trains Mamba language models"),
        "{}",
        pages[0]
    );
    assert!(
        pages[1].contains("more than one page – the extractor"),
        "{}",
        pages[1]
    );
    assert!(pages.iter().all(|p| !p.contains("  ")));
}

// ---- agreement with pdftotext ----

/// Words of `pdftotext file -` (plain mode), as the benchmark counts them.
fn pdftotext_words(path: &Path) -> Vec<String> {
    let out = Command::new("pdftotext")
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext must be installed for these tests (apt-get install poppler-utils)");
    assert!(
        out.status.success(),
        "pdftotext failed on {}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn our_words(bytes: &[u8]) -> Vec<String> {
    extract(bytes)
        .unwrap()
        .join("\n")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn sample_matches_pdftotext_word_for_word() {
    let path = repo_path("data/sample.pdf");
    assert_eq!(
        our_words(&std::fs::read(&path).unwrap()),
        pdftotext_words(&path)
    );
}

#[test]
fn generated_pdfs_match_pdftotext_word_for_word() {
    let mut b = Builder::new();
    b.page(b"BT /F1 11 Tf 72 700 Td [(T)70(yp)-10(esetting)-300(with)-300(kerns)] TJ 0 -14 Td (and \x96 dashes,) Tj ET")
        .page(b"BT /F1 9 Tf 2 Tr 0 1 -1 0 300 100 Tm (rotated words here) Tj ET");
    let bytes = b.bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generated.pdf");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(our_words(&bytes), pdftotext_words(&path));
}

#[test]
fn owner_password_only_pdf_is_read_like_pdftotext() {
    let path = repo_path("pipeline/tests/fixtures/pdf/owner-only.pdf");
    assert_eq!(
        our_words(&fixture("owner-only.pdf")),
        pdftotext_words(&path)
    );
}

// ---- hostile input: each fails fast with its reason ----

/// Runs `extract_pages` on a thread with a 2 MiB stack (a typical worker's) and checks it
/// finishes within `secs`.
fn extract_on_small_stack(
    bytes: Vec<u8>,
    limits: PdfLimits,
    secs: u64,
) -> Result<Vec<String>, PdfError> {
    let start = Instant::now();
    let result = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || extract_pages(&bytes, &limits))
        .unwrap()
        .join()
        .expect("extraction must not crash its thread");
    assert!(
        start.elapsed() < Duration::from_secs(secs),
        "took {:?}",
        start.elapsed()
    );
    result
}

#[test]
fn garbage_and_truncated_files_are_malformed() {
    let err = extract(b"this is not a pdf at all").unwrap_err();
    assert!(matches!(err, PdfError::Malformed(_)), "{err}");
    assert_eq!(err.to_string(), "malformed pdf: no %PDF header");
    let mut noise = b"%PDF-1.7\n".to_vec();
    noise.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    assert!(matches!(extract(&noise), Err(PdfError::Malformed(_))));
    let sample = std::fs::read(repo_path("data/sample.pdf")).unwrap();
    for cut in [20, sample.len() / 3] {
        let err = extract(&sample[..cut]).unwrap_err();
        assert!(matches!(err, PdfError::Malformed(_)), "cut at {cut}: {err}");
    }
}

#[test]
fn password_protected_pdf_is_encrypted() {
    let err = extract(&fixture("encrypted.pdf")).unwrap_err();
    assert!(matches!(err, PdfError::Encrypted), "{err}");
    assert_eq!(err.to_string(), "pdf is encrypted and needs a password");
}

#[test]
fn nested_array_bomb_is_rejected_without_overflowing_the_stack() {
    let mut b = Builder::new();
    let bomb = [b"[".repeat(100_000), b"]".repeat(100_000)].concat();
    b.doc
        .trailer
        .set("Junk", Object::string_literal("placeholder"));
    let mut bytes = b.page(b"BT /F1 10 Tf 72 700 Td (x) Tj ET").bytes();
    let at = bytes.windows(11).position(|w| w == b"placeholder").unwrap() - 1;
    bytes.splice(at..at + 13, bomb.iter().copied());
    let err = extract_on_small_stack(bytes.clone(), PdfLimits::default(), 5).unwrap_err();
    assert!(
        matches!(err, PdfError::Malformed(ref m) if m.contains("nest deeper")),
        "{err}"
    );
    // lopdf's own parser, given the same bytes, must not overflow either.
    let parsed = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || Document::load_mem(&bytes).is_ok())
        .unwrap()
        .join();
    assert!(parsed.is_ok(), "lopdf crashed on deep nesting");
}

#[test]
fn nested_arrays_inside_a_content_stream_do_not_overflow() {
    let content = [
        b"BT /F1 10 Tf 72 700 Td (before) Tj ".to_vec(),
        b"[".repeat(100_000),
        b"] TJ".to_vec(),
    ]
    .concat();
    let mut stream = Stream::new(Dictionary::new(), content);
    stream.compress().unwrap();
    let bytes = Builder::new().page_stream(stream).bytes();
    let pages = extract_on_small_stack(bytes, PdfLimits::default(), 5).unwrap();
    assert_eq!(pages, ["before"]);
}

#[test]
fn flate_bomb_hits_the_size_limit() {
    // 1 GiB of zeros compresses to about 1 MiB.
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    let stream = Stream::new(dictionary! {"Filter" => "FlateDecode"}, bomb).with_compression(false);
    let bytes = Builder::new().page_stream(stream).bytes();
    let err = extract_on_small_stack(bytes, PdfLimits::default(), 10).unwrap_err();
    assert!(matches!(err, PdfError::SizeLimit(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "pdf too large: a stream decompresses to more than 64 MiB"
    );
}

#[test]
fn self_drawing_form_hits_the_depth_limit() {
    let mut b = Builder::new();
    let form_id = b.doc.new_object_id();
    let form = Stream::new(
        dictionary! {"Type" => "XObject", "Subtype" => "Form",
        "Resources" => dictionary! {"XObject" => dictionary! {"Me" => form_id}}},
        b"/Me Do /Me Do".to_vec(),
    );
    b.doc.objects.insert(form_id, Object::Stream(form));
    b.resources.set("XObject", dictionary! {"X" => form_id});
    let bytes = b.page(b"/X Do").bytes();
    let err = extract_on_small_stack(bytes, PdfLimits::default(), 5).unwrap_err();
    assert!(matches!(err, PdfError::DepthLimit(64)), "{err}");
}

#[test]
fn long_chain_of_forms_hits_the_depth_limit() {
    let mut b = Builder::new();
    let mut next: Option<ObjectId> = None;
    for _ in 0..10 {
        let (resources, content) = match next {
            Some(id) => (
                dictionary! {"XObject" => dictionary! {"N" => id}},
                b"/N Do".to_vec(),
            ),
            None => (dictionary! {}, b"".to_vec()),
        };
        let form = Stream::new(
            dictionary! {"Subtype" => "Form", "Resources" => resources},
            content,
        );
        next = Some(b.doc.add_object(form));
    }
    b.resources
        .set("XObject", dictionary! {"X" => next.unwrap()});
    let bytes = b.page(b"/X Do").bytes();
    let shallow = PdfLimits {
        max_depth: 4,
        ..PdfLimits::default()
    };
    assert!(matches!(
        extract_pages(&bytes, &shallow),
        Err(PdfError::DepthLimit(4))
    ));
    assert!(extract(&bytes).is_ok());
}

#[test]
fn deadline_and_total_size_are_enforced() {
    let bytes = Builder::new()
        .page(b"BT /F1 10 Tf 72 700 Td (text) Tj ET")
        .bytes();
    let no_time = PdfLimits {
        deadline: Duration::ZERO,
        ..PdfLimits::default()
    };
    std::thread::sleep(Duration::from_millis(1));
    assert!(matches!(
        extract_pages(&bytes, &no_time),
        Err(PdfError::TimeLimit)
    ));
    let tiny = PdfLimits {
        max_total_bytes: 10,
        ..PdfLimits::default()
    };
    assert!(matches!(
        extract_pages(&bytes, &tiny),
        Err(PdfError::SizeLimit(_))
    ));
}
