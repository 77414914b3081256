//! Where a syntax tree lets code be cut: ranked cut points between definitions.
//!
//! The walk opens only what does not fit the budget. The root's children (imports, functions,
//! classes, ...) give rank-0 cuts at the start of their first line. A child that, with its
//! leading comments and trailing blank lines, is over budget is opened in turn and its own
//! children give cuts one rank deeper: methods in a class, statements in a function. A body
//! (`block`, `class_body`, `{ ... }`) opens at its owner's rank, so a class header packs with
//! the first methods rather than being cut off alone. Comments, attributes and decorators on
//! the lines right above an item glue to it: its cut moves above them, and any cut between
//! them and the item is dropped. Nothing small is ever opened, so nothing small is cut inside.

use tree_sitter::{Node, Tree};

/// A place where a chunk may end, and how good a place it is: lower ranks are cuts between
/// larger units, and the packer prefers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cut {
    pub at: usize,
    pub rank: u8,
}

/// Ranks stop growing here: cuts nested deeper all count as equally fine-grained.
const MAX_RANK: u8 = 200;

/// How far up from a token to look for the comment or attribute node it starts (a `#` token
/// inside `#[derive(..)]`, a doc marker inside `///`). Bounded because `parent` walks down
/// from the root and very deep trees would make it slow.
const MAX_CLIMB: usize = 8;

/// Cut points for `text` (parsed into `tree`) with chunks of `budget` bytes, sorted by offset,
/// one per offset, all strictly inside the text and at line starts.
pub(crate) fn cuts(tree: &Tree, text: &str, budget: usize) -> Vec<Cut> {
    let bytes = text.as_bytes();
    let root = tree.root_node();
    let mut cuts = Vec::new();
    // Spans (lo, hi] between an item and the comments glued above it: no cut may fall there.
    let mut glue = Vec::new();
    // Opened definitions as (start, end): their first inner cut is dropped (see `finish`).
    let mut heads = Vec::new();
    let mut cursor = root.walk();
    // Explicit stack rather than recursion: nesting depth comes from the input.
    let mut stack = vec![(root, 0u8, 0usize)];
    while let Some((node, rank, floor)) = stack.pop() {
        let body = node.child_by_field_name("body").map(|b| b.id());
        let children: Vec<Node> = node.children(&mut cursor).collect();
        for child in children {
            let mut lead = child.start_byte();
            if child.is_named() {
                if let Some(line) = line_start(bytes, child.start_byte()) {
                    lead = attach_up(bytes, root, line, child.start_byte() - line, floor);
                    if lead > floor {
                        cuts.push(Cut { at: lead, rank });
                    }
                    if lead < line {
                        glue.push((lead.max(floor), line));
                    }
                }
            }
            let mut end = child.end_byte();
            if child.is_named() && !is_attachable(child) {
                if let Some(after) = end_before_blank_line(bytes, end) {
                    cuts.push(Cut { at: after, rank });
                    end = after;
                }
            }
            if end.saturating_sub(lead.min(child.start_byte())) > budget && child.child_count() > 0
            {
                let transparent = Some(child.id()) == body || is_body(child.kind());
                let (rank, floor) = if transparent {
                    (rank, floor)
                } else {
                    let deeper = rank.saturating_add(1).min(MAX_RANK);
                    let start = floor.max(lead.min(child.start_byte()));
                    heads.push((start, child.end_byte()));
                    (deeper, start)
                };
                stack.push((child, rank, floor));
            }
        }
    }
    finish(cuts, glue, &heads, text.len())
}

/// Sort, keep the best rank per offset, drop offsets at the ends and inside glued spans, and
/// drop the first cut inside each opened definition (the one between its header, `impl X {`
/// or `class A:` or a signature, and its first item) when that first item was opened too:
/// cut there, the header would always be a chunk of its own.
fn finish(
    mut cuts: Vec<Cut>,
    mut glue: Vec<(usize, usize)>,
    heads: &[(usize, usize)],
    len: usize,
) -> Vec<Cut> {
    cuts.retain(|c| c.at > 0 && c.at < len);
    cuts.sort_unstable();
    cuts.dedup_by_key(|c| c.at);
    glue.sort_unstable();
    // Merge into disjoint spans, then sweep both sorted lists together.
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(glue.len());
    for (lo, hi) in glue {
        match spans.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => spans.push((lo, hi)),
        }
    }
    let mut next = 0;
    cuts.retain(|c| {
        while next < spans.len() && spans[next].1 < c.at {
            next += 1;
        }
        !(next < spans.len() && spans[next].0 < c.at)
    });
    // Found on the list as it stands, so nested heads that share a first cut drop only it.
    // Only a first item that was itself opened (a deeper cut follows it) loses its cut: a
    // small one may still end the header's chunk rather than be split.
    let mut headers: Vec<usize> = heads
        .iter()
        .filter_map(|&(lo, hi)| {
            let first = cuts.partition_point(|c| c.at <= lo);
            let (cut, next) = (cuts.get(first)?, cuts.get(first + 1)?);
            (next.at < hi && next.rank > cut.rank).then_some(cut.at)
        })
        .collect();
    headers.sort_unstable();
    cuts.retain(|c| headers.binary_search(&c.at).is_err());
    cuts
}

/// Bodies open at their owner's rank (see the module comment). Grammars name them this way.
fn is_body(kind: &str) -> bool {
    kind.ends_with("_body")
        || kind.ends_with("block")
        || matches!(
            kind,
            "compound_statement" | "declaration_list" | "field_declaration_list"
        )
}

/// Comments, attributes, decorators and annotations belong to the item below them.
fn is_attachable(node: Node) -> bool {
    let kind = node.kind();
    kind.contains("comment")
        || matches!(
            kind,
            "attribute_item"
                | "decorator"
                | "annotation"
                | "marker_annotation"
                | "attribute_declaration"
        )
}

/// Spaces and tabs: what may come before the first token of a line.
fn is_indent(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\x0b' | b'\x0c')
}

/// The start of the line holding `at`, when only indentation comes before `at` on that line.
fn line_start(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at.min(bytes.len());
    while i > 0 {
        match bytes[i - 1] {
            b'\n' => return Some(i),
            b if is_indent(b) => i -= 1,
            _ => return None,
        }
    }
    Some(0)
}

/// When the rest of the line after `end` is blank and so is the line after it, the start of
/// that next line: a cut there keeps an item's trailing blank lines out of the next chunk's
/// way without splitting anything.
fn end_before_blank_line(bytes: &[u8], end: usize) -> Option<usize> {
    let rest_blank = |from: usize| -> Option<usize> {
        let mut i = from;
        while i < bytes.len() && (is_indent(bytes[i]) || bytes[i] == b'\r') {
            i += 1;
        }
        (i < bytes.len() && bytes[i] == b'\n').then_some(i + 1)
    };
    let next = rest_blank(end)?;
    rest_blank(next).map(|_| next)
}

/// Move a cut at the start of line `line` up over the comment and attribute lines right above
/// it (no blank line between) that start at the item's indentation `indent`, but never to or
/// above `floor`. A comment indented deeper ends the block above (Python) and stays there.
fn attach_up(bytes: &[u8], root: Node, line: usize, indent: usize, floor: usize) -> usize {
    let mut lead = line;
    while lead > floor && lead > 0 {
        // The previous line is bytes[prev .. lead - 1], lead - 1 being its '\n'.
        let mut prev = lead - 1;
        while prev > 0 && bytes[prev - 1] != b'\n' {
            prev -= 1;
        }
        let Some(first) = (prev..lead - 1).find(|&i| !is_indent(bytes[i]) && bytes[i] != b'\r')
        else {
            break; // a blank line: what is above belongs to something else
        };
        let Some(above) = attachable_at(root, first) else {
            break;
        };
        match line_start(bytes, above.start_byte()) {
            Some(up)
                if up < lead && above.end_byte() <= lead && above.start_byte() - up == indent =>
            {
                lead = up
            }
            _ => break,
        }
    }
    lead
}

/// The comment or attribute node covering byte `at`, if the token there is part of one.
fn attachable_at(root: Node, at: usize) -> Option<Node> {
    let mut node = root.descendant_for_byte_range(at, at)?;
    for _ in 0..MAX_CLIMB {
        if is_attachable(node) {
            return Some(node);
        }
        if node.start_byte() != at {
            return None;
        }
        node = node.parent()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_start_needs_only_indentation_before() {
        let b = b"ab\n  cd\nef";
        assert_eq!(line_start(b, 5), Some(3));
        assert_eq!(line_start(b, 6), None);
        assert_eq!(line_start(b, 0), Some(0));
        assert_eq!(line_start(b, 8), Some(8));
    }

    #[test]
    fn end_before_blank_line_wants_a_blank_next_line() {
        let b = b"x}\n\ny";
        assert_eq!(end_before_blank_line(b, 2), Some(3));
        let b = b"x}\n}\n";
        assert_eq!(end_before_blank_line(b, 2), None);
        let b = b"x} // note\n\n";
        assert_eq!(end_before_blank_line(b, 2), None);
    }

    #[test]
    fn finish_drops_glued_duplicate_and_header_offsets() {
        let cuts = vec![
            Cut { at: 10, rank: 1 },
            Cut { at: 10, rank: 0 },
            Cut { at: 0, rank: 0 },
            Cut { at: 25, rank: 0 },
            Cut { at: 30, rank: 2 },
            Cut { at: 99, rank: 0 },
        ];
        // (20, 30] glues a comment to its item: 25 and 30 go, 20 itself (the lead) may stay.
        let kept = finish(cuts.clone(), vec![(20, 30)], &[], 50);
        assert_eq!(kept, vec![Cut { at: 10, rank: 0 }]);
        // A definition opened over 5..40 whose first item (at 10) was opened too (a deeper cut
        // at 12 follows) loses that first cut, and only it.
        let more = vec![
            Cut { at: 10, rank: 1 },
            Cut { at: 12, rank: 2 },
            Cut { at: 20, rank: 1 },
        ];
        let kept = finish(more.clone(), vec![], &[(5, 40), (5, 40)], 50);
        assert_eq!(kept, more[1..].to_vec());
        // A small first item keeps its cut.
        let kept = finish(
            more[..1].iter().chain(&more[2..]).copied().collect(),
            vec![],
            &[(5, 40)],
            50,
        );
        assert_eq!(kept.len(), 2);
    }
}
