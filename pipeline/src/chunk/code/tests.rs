//! Tests of the code chunker: exact cut points per language, attachment of comments and
//! attributes, oversized definitions, fallbacks, robustness, and the sample corpus.

use super::*;

/// Split and check what must hold for any input: lossless, no empty chunk.
fn run(text: &str, lang: Lang, budget: usize) -> CodeChunks<'_> {
    let out = split(text, lang, budget);
    assert_eq!(out.chunks.concat(), text, "lossless");
    assert!(out.chunks.iter().all(|c| !c.is_empty()), "no empty chunk");
    out
}

/// Split a source that parses cleanly and return the first line of every chunk.
fn firsts(text: &str, lang: Lang, budget: usize) -> Vec<&str> {
    let out = run(text, lang, budget);
    assert!(out.parsed, "{lang:?} sample should parse");
    out.chunks
        .iter()
        .map(|c| c.lines().next().unwrap_or_default())
        .collect()
}

#[test]
fn small_file_is_one_chunk_and_empty_file_none() {
    let text = "def f():\n    return 1\n";
    let out = run(text, Lang::Python, 100);
    assert_eq!(out.chunks, vec![text]);
    assert!(out.parsed);
    assert!(run("", Lang::Rust, 10).chunks.is_empty());
}

const PYTHON: &str = r#"import os
import sys


def small():
    return 1


# Doubles its argument.
@cache
def double(x):
    return x * 2


class Greeter:
    """Says hello."""

    def __init__(self, name):
        self.name = name

    def greet(self):
        return "hello " + self.name
"#;

#[test]
fn python_cuts_between_definitions_and_keeps_comment_and_decorator_attached() {
    let got = firsts(PYTHON, Lang::Python, 70);
    // The class is over budget, so it is cut between its methods; its header stays with the
    // docstring. The comment and decorator start the chunk of `double`.
    let want = [
        "import os",
        "# Doubles its argument.",
        "class Greeter:",
        "    def __init__(self, name):",
        "    def greet(self):",
    ];
    assert_eq!(got, want);
}

const RUST: &str = r#"use std::fmt;

/// A point on the grid.
#[derive(Debug)]
struct Point {
    x: i32,
    y: i32,
}

impl Point {
    /// The origin.
    fn origin() -> Self {
        Point { x: 0, y: 0 }
    }

    #[inline]
    fn sum(&self) -> i32 {
        self.x + self.y
    }
}

fn main() {
    println!("{}", Point::origin().sum());
}
"#;

#[test]
fn rust_cuts_between_items_and_keeps_docs_and_attributes_attached() {
    let got = firsts(RUST, Lang::Rust, 100);
    // The doc comment and derive stay on the struct (packed with the `use`); the impl is over
    // budget and is cut before `#[inline]`, not between it and `fn sum`.
    assert_eq!(
        got,
        [
            "use std::fmt;",
            "impl Point {",
            "    #[inline]",
            "fn main() {"
        ]
    );
    let chunks = run(RUST, Lang::Rust, 100).chunks;
    assert!(chunks[0].ends_with("    y: i32,\n}\n\n"));
    assert!(chunks[1].ends_with("        Point { x: 0, y: 0 }\n    }\n\n"));
}

const GO: &str = r#"package shapes

import "math"

// Circle is a round shape.
type Circle struct {
	R float64
}

// Area of the circle.
func (c Circle) Area() float64 {
	return math.Pi * c.R * c.R
}

// Square has equal sides.
type Square struct {
	Side float64
}

func (s Square) Area() float64 {
	return s.Side * s.Side
}
"#;

#[test]
fn go_cuts_between_declarations_with_their_comments() {
    let got = firsts(GO, Lang::Go, 90);
    let want = [
        "package shapes",
        "// Circle is a round shape.",
        "// Area of the circle.",
        "// Square has equal sides.",
        "func (s Square) Area() float64 {",
    ];
    assert_eq!(got, want);
}

const JAVASCRIPT: &str = r#"const fs = require('fs');

/** Adds two numbers. */
function add(a, b) {
  return a + b;
}

class Stack {
  constructor() {
    this.items = [];
  }

  // Put one on top.
  push(x) {
    this.items.push(x);
  }

  pop() {
    return this.items.pop();
  }
}

module.exports = { add, Stack };
"#;

#[test]
fn javascript_cuts_between_functions_and_methods() {
    let got = firsts(JAVASCRIPT, Lang::JavaScript, 70);
    // The class is over budget: cut between methods, the line comment staying on `push`.
    let want = [
        "const fs = require('fs');",
        "/** Adds two numbers. */",
        "class Stack {",
        "  // Put one on top.",
        "  pop() {",
        "module.exports = { add, Stack };",
    ];
    assert_eq!(got, want);
}

const C: &str = r#"#include <stdio.h>

/* Largest of two ints. */
static int max(int a, int b)
{
    return a > b ? a : b;
}

struct pair {
    int first;
    int second;
};

/*
 * Sum of a pair.
 */
int pair_sum(struct pair p)
{
    return p.first + p.second;
}

int main(void)
{
    struct pair p = {1, 2};
    printf("%d %d\n", max(p.first, p.second), pair_sum(p));
    return 0;
}
"#;

#[test]
fn c_cuts_between_functions_and_keeps_block_comments_attached() {
    let got = firsts(C, Lang::C, 90);
    // `main` alone is over budget, so it is cut between its statements.
    let want = [
        "#include <stdio.h>",
        "/* Largest of two ints. */",
        "struct pair {",
        "/*",
        "int main(void)",
        "    printf(\"%d %d\\n\", max(p.first, p.second), pair_sum(p));",
    ];
    assert_eq!(got, want);
    // The multi-line block comment opens the chunk of the function it documents.
    let chunks = run(C, Lang::C, 90).chunks;
    assert!(chunks[3].starts_with("/*\n * Sum of a pair.\n */\nint pair_sum"));
}

const JAVA: &str = r#"import java.util.List;

/** Counts things. */
public class Counter {
    private int count;

    /** Adds one. */
    @Deprecated
    public void increment() {
        count++;
    }

    public int get() {
        return count;
    }
}
"#;

#[test]
fn java_cuts_between_methods_with_javadoc_and_annotations() {
    let got = firsts(JAVA, Lang::Java, 100);
    // The class is over budget: its Javadoc opens its chunk, and the method's Javadoc and
    // annotation open the method's.
    let want = [
        "import java.util.List;",
        "/** Counts things. */",
        "    /** Adds one. */",
        "    public int get() {",
    ];
    assert_eq!(got, want);
    let chunks = run(JAVA, Lang::Java, 100).chunks;
    assert!(chunks[2].contains("    @Deprecated\n    public void increment() {"));
}

const CPP: &str = r#"#include <vector>

namespace geo {

// A 2D vector.
struct Vec2 {
    double x, y;
};

double dot(Vec2 a, Vec2 b) {
    return a.x * b.x + a.y * b.y;
}

}  // namespace geo

int main() {
    return geo::dot({1, 2}, {3, 4}) > 0 ? 0 : 1;
}
"#;

#[test]
fn cpp_opens_a_namespace_that_is_over_budget() {
    let got = firsts(CPP, Lang::Cpp, 100);
    // The namespace is over budget: its header packs with the commented struct, and its
    // closing line stays with the last function.
    let want = [
        "#include <vector>",
        "namespace geo {",
        "double dot(Vec2 a, Vec2 b) {",
        "int main() {",
    ];
    assert_eq!(got, want);
    let chunks = run(CPP, Lang::Cpp, 100).chunks;
    assert!(chunks[2].ends_with("}  // namespace geo\n\n"));
}

const TYPESCRIPT: &str = r#"export interface Shape {
  area(): number;
}

export class Rect implements Shape {
  constructor(private w: number, private h: number) {}

  area(): number {
    return this.w * this.h;
  }
}

export function total(shapes: Shape[]): number {
  return shapes.reduce((sum, s) => sum + s.area(), 0);
}
"#;

#[test]
fn typescript_cuts_between_declarations() {
    let got = firsts(TYPESCRIPT, Lang::TypeScript, 120);
    // The class alone is over budget: cut between its constructor and method.
    let want = [
        "export interface Shape {",
        "export class Rect implements Shape {",
        "  area(): number {",
        "export function total(shapes: Shape[]): number {",
    ];
    assert_eq!(got, want);
}

const TSX: &str = r#"import React from "react";

type Props = { name: string };

export function Hello({ name }: Props) {
  return <div className="hello">Hello, {name}!</div>;
}

export function Bye() {
  return <p>Bye</p>;
}
"#;

#[test]
fn tsx_parses_jsx_and_cuts_between_components() {
    let got = firsts(TSX, Lang::Tsx, 100);
    let want = [
        "import React from \"react\";",
        "export function Hello({ name }: Props) {",
        "export function Bye() {",
    ];
    assert_eq!(got, want);
    // The JSX grammar is needed: plain TypeScript cannot parse it.
    assert!(!split(TSX, Lang::TypeScript, 100).parsed);
}

const LONG_FUNCTION: &str = r#"def process(rows):
    total = 0
    for row in rows:
        total += row.amount
    count = len(rows)
    mean = total / count
    lines = [f"{r.name}: {r.amount}" for r in rows]
    return mean, lines
"#;

#[test]
fn an_oversized_function_is_cut_between_its_statements() {
    let got = firsts(LONG_FUNCTION, Lang::Python, 70);
    // The header stays with its first statement; every other cut is at a statement start.
    let want = [
        "def process(rows):",
        "    for row in rows:",
        "    count = len(rows)",
        "    lines = [f\"{r.name}: {r.amount}\" for r in rows]",
        "    return mean, lines",
    ];
    assert_eq!(got, want);
}

#[test]
fn an_oversized_statement_falls_back_to_lines() {
    let items: Vec<String> = (0..12).map(|i| format!("    \"item-{i}\",\n")).collect();
    let text = format!("NAMES = [\n{}]\n", items.concat());
    let out = run(&text, Lang::Python, 60);
    assert!(out.parsed);
    for chunk in &out.chunks {
        assert!(chunk.len() <= 60);
        assert!(chunk.ends_with('\n'), "cut at a line end: {chunk:?}");
    }
}

#[test]
fn a_syntax_error_falls_back_to_lines() {
    let text =
        "def ok():\n    return 1\n\ndef broken(:\n    return 2\n\ndef also_ok():\n    return 3\n";
    let out = run(text, Lang::Python, 30);
    assert!(!out.parsed);
    assert_eq!(out.chunks, text::split(text, 30));
    assert_eq!(out.chunks[0], "def ok():\n    return 1\n\n");
}

#[test]
fn multibyte_text_is_never_split_inside_a_character() {
    let text =
        "# Grüße, 世界 🌍\ndef grüßen(name):\n    return \"Hallo, \" + name + \" — schön 🌞\"\n\n\
                def 世界():\n    return \"日本語のテキスト🎌🎌🎌\"\n";
    for budget in 0..text.len() + 2 {
        let out = run(text, Lang::Python, budget);
        assert!(out.parsed);
        for chunk in &out.chunks {
            // A chunk is a &str, so slicing already proved the boundaries; also check size.
            assert!(chunk.len() <= budget.max(4), "{budget}: {chunk:?}");
        }
    }
}

#[test]
fn weird_inputs_never_panic_and_stay_lossless() {
    let nested = format!("x = {}1{}\n", "[".repeat(20_000), "]".repeat(20_000));
    let junk: String = (0..20_000u32)
        .map(|i| char::from_u32(33 + (i * 7919) % 90).unwrap_or('?'))
        .collect();
    let newlines = "\n".repeat(5_000);
    let one_line = "a = 1; ".repeat(3_000);
    let cases = [
        nested,
        junk,
        newlines,
        one_line,
        "\u{0}\u{1}\r\r\n".repeat(100),
    ];
    for text in &cases {
        for lang in Lang::ALL {
            for budget in [0, 1, 7, 256] {
                let out = run(text, lang, budget);
                assert!(out.chunks.iter().all(|c| c.len() <= budget.max(4)));
            }
        }
    }
}

#[test]
fn a_cancelled_parse_leaves_the_parser_usable() {
    let mut parser = Parser::new();
    assert!(parser.set_language(&Lang::Rust.grammar()).is_ok());
    let text = RUST.repeat(50);
    assert!(parse_within(&mut parser, &text, 0).is_none());
    let tree = parse_within(&mut parser, RUST, usize::MAX);
    let root = tree.map(|t| (t.root_node().has_error(), t.root_node().end_byte()));
    assert_eq!(root, Some((false, RUST.len())));
}

#[test]
fn threads_with_their_own_parsers_agree() {
    let sources = [
        (PYTHON, Lang::Python),
        (RUST, Lang::Rust),
        (GO, Lang::Go),
        (JAVASCRIPT, Lang::JavaScript),
        (C, Lang::C),
        (JAVA, Lang::Java),
    ];
    let expected: Vec<Vec<&str>> = sources
        .iter()
        .map(|&(t, l)| split(t, l, 64).chunks)
        .collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    // Alternate languages on one thread's parser, several rounds.
                    (0..5)
                        .flat_map(|_| sources.iter().map(|&(t, l)| split(t, l, 64).chunks))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            let got = worker.join().unwrap_or_default();
            assert_eq!(got.len(), 5 * sources.len());
            for (i, chunks) in got.iter().enumerate() {
                assert_eq!(chunks, &expected[i % sources.len()]);
            }
        }
    });
}

/// The sample corpus in `data/code/` chunked at a small budget: every file parses, every
/// chunk fits, and most cuts fall at line starts.
#[test]
fn sample_corpus_chunks_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/code");
    let mut langs = std::collections::BTreeSet::new();
    let entries = std::fs::read_dir(&dir).map(|d| d.flatten().collect::<Vec<_>>());
    for entry in entries.unwrap_or_default() {
        let path = entry.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        let Some(lang) = Lang::from_extension(ext) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.len() > 1_000, "{path:?} is long enough to be cut");
        for budget in [200, 400, 800] {
            let out = run(&text, lang, budget);
            assert!(out.parsed, "{path:?} parses");
            assert!(out.chunks.len() * budget >= text.len());
            assert!(
                out.chunks.iter().all(|c| c.len() <= budget),
                "{path:?} fits {budget}"
            );
            let at_line_start = out.chunks.iter().filter(|c| c.ends_with('\n')).count();
            assert!(
                at_line_start + 1 >= out.chunks.len(),
                "{path:?}: {:?}",
                out.chunks
            );
        }
        langs.insert(lang);
    }
    for lang in [
        Lang::Python,
        Lang::Rust,
        Lang::Go,
        Lang::JavaScript,
        Lang::C,
    ] {
        assert!(
            langs.contains(&lang),
            "data/code has a {} sample",
            lang.name()
        );
    }
}

#[test]
fn python_comment_goes_with_the_definition_at_its_indentation() {
    // Tree-sitter puts both comments inside `a`'s block; only the one at `b`'s
    // indentation belongs to `b`.
    let text = "def a():\n    x = 1\n    return x\n    # trailing note in a\n\
                # about b\ndef b():\n    return 2\n";
    let chunks = run(text, Lang::Python, 60).chunks;
    assert_eq!(chunks.len(), 2);
    assert!(chunks[0].ends_with("    # trailing note in a\n"));
    assert!(chunks[1].starts_with("# about b\ndef b():"));
}
