//! Writes `data/sample.pdf`, the project's own small PDF for the sample corpus and the PDF
//! extraction tests: two pages of prose set in the standard Helvetica font with
//! WinAnsiEncoding, built with lopdf's document API so anyone can regenerate it.
//!
//! Run: `cargo run -p mamba-pipeline --example make_sample_pdf -- data/sample.pdf`

use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, Stream};

/// Paragraphs of the sample; `\u{96}` stands for the WinAnsiEncoding en dash, byte 0x96.
const PAGES: [&[&str]; 2] = [
    &[
        "mamba trains Mamba language models on your own files. Point it at a folder of PDFs, \
         notes, source code and configuration files, and it turns them into tokenized Parquet \
         shards that a training run can stream from disk.",
        "Ingest runs as a staged pipeline: discover, extract, chunk, tokenize and write. Each \
         stage works on its own threads and passes bounded batches to the next one, so memory \
         stays flat whether the folder holds ten files or ten million.",
        "PDF files are read page by page. The text of each page is rebuilt from the positions \
         of its glyphs, so words and lines come out in reading order, and a broken, encrypted \
         or hostile file is reported and skipped instead of stopping the run.",
    ],
    &[
        "Training reads the shards back in a fixed, seeded order. A checkpoint records the \
         model, the optimizer and the exact position of the data loader, so a resumed run \
         sees the same batches as one that never stopped.",
        "This page exists so that the sample has more than one page \u{96} the extractor must \
         keep the pages apart and in order.",
    ],
];

const FONT_SIZE: i64 = 11;
const LEADING: i64 = 15;
const LEFT: i64 = 72;
const TOP: i64 = 720;
/// Characters per line: a 468 pt measure at about 5.5 pt per Helvetica character.
const LINE_CHARS: usize = 84;

fn wrap(paragraph: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in paragraph.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > LINE_CHARS {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

fn page_content(number: usize, paragraphs: &[&str]) -> Content {
    let mut ops = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F2".into(), 16.into()]),
        Operation::new("Td", vec![LEFT.into(), TOP.into()]),
        Operation::new(
            "Tj",
            vec![Object::string_literal(format!(
                "mamba sample, page {number}"
            ))],
        ),
        Operation::new("Tf", vec!["F1".into(), FONT_SIZE.into()]),
        Operation::new("TL", vec![LEADING.into()]),
        Operation::new("T*", vec![]),
    ];
    for paragraph in paragraphs {
        ops.push(Operation::new("T*", vec![]));
        for line in wrap(paragraph) {
            // Text is written so every character is one WinAnsi byte (U+0096 stands for 0x96).
            let bytes: Vec<u8> = line
                .chars()
                .map(|c| u8::try_from(c).unwrap_or(b'?'))
                .collect();
            ops.push(Operation::new("Tj", vec![Object::string_literal(bytes)]));
            ops.push(Operation::new("T*", vec![]));
        }
    }
    ops.push(Operation::new("ET", vec![]));
    Content { operations: ops }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/sample.pdf".to_string());
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = |name: &str| {
        dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => name, "Encoding" => "WinAnsiEncoding"}
    };
    let regular = doc.add_object(font("Helvetica"));
    let bold = doc.add_object(font("Helvetica-Bold"));
    let resources =
        doc.add_object(dictionary! {"Font" => dictionary! {"F1" => regular, "F2" => bold}});
    let mut kids = Vec::new();
    for (i, paragraphs) in PAGES.iter().enumerate() {
        let content = doc.add_object(Stream::new(
            dictionary! {},
            page_content(i + 1, paragraphs).encode()?,
        ));
        let page = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content,
        });
        kids.push(Object::Reference(page));
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog);
    // Flate-compressed content exercises the extractor's own stream decoder.
    doc.compress();
    doc.save(&out)?;
    println!("wrote {out}");
    Ok(())
}
