#!/usr/bin/env python3
"""Datasets of book-length rows, for the ingest memory figures in BENCHMARKS.md.

    long_rows.py jsonl OUT.jsonl [ROWS] [ROW_KB]     # default 2000 rows of ~190 KB (~387 MB)
    long_rows.py gz OUT.jsonl.gz [ROWS] [ROW_KB]     # default 3000 rows of ~1 MB, gzip

The text is prose-like words from a fixed seed, so the run is the same everywhere. The gzip
input repeats one 16 KB block through every row, with a different first line per row: about
3 GB of text in a 23 MB file, like the templated dumps that decompress to gigabytes.
"""
import gzip
import json
import random
import sys

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will more can out some what about time into only other new could said people "
    "river mountain history engine library window garden letter morning station question"
).split()


def paragraph(rng, words):
    out = []
    for i in range(words):
        w = rng.choice(WORDS)
        out.append(w.capitalize() if i % 17 == 0 else w)
        if i % 17 == 16:
            out[-1] += "."
    return " ".join(out) + "."


def row_text(rng, kb):
    parts, size = [], 0
    while size < kb * 1024:
        p = paragraph(rng, rng.randint(60, 160))
        parts.append(p)
        size += len(p) + 2
    return "\n\n".join(parts)


def main():
    mode, out = sys.argv[1], sys.argv[2]
    rng = random.Random(7)
    if mode == "jsonl":
        rows = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
        kb = int(sys.argv[4]) if len(sys.argv) > 4 else 190
        with open(out, "w") as f:
            for i in range(rows):
                f.write(json.dumps({"id": i, "text": row_text(rng, kb)}) + "\n")
    elif mode == "gz":
        rows = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
        kb = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
        # gzip's window is 32 KB: only repeats closer than that compress.
        block = row_text(rng, 16)
        body = "\n\n".join([block] * (kb // 16))
        with gzip.open(out, "wt", compresslevel=9) as f:
            for i in range(rows):
                f.write(json.dumps({"id": i, "text": f"Volume {i}.\n\n{body}"}) + "\n")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
