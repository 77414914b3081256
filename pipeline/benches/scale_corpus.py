"""Makes a corpus N times larger than SRC for the ingest memory benchmark.

N copies of every file, each copy changed so that no two are byte-identical (identical copies
would be skipped unread), while every format stays valid: PDFs and XML get a trailing comment,
everything else k leading newlines.

Usage: python3 scale_corpus.py SRC N OUT
"""
import os
import sys


def main(src, n, out):
    files = bytes_total = 0
    for k in range(1, int(n) + 1):
        for root, _, names in os.walk(src):
            for name in names:
                path = os.path.join(root, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                if name.endswith(".pdf"):
                    data += b"\n%%copy %d\n" % k
                elif name.endswith(".xml"):
                    data += b"\n<!-- copy %d -->\n" % k
                else:
                    data = b"\n" * k + data
                dst = os.path.join(out, "copy%d" % k, os.path.relpath(path, src))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(dst, "wb") as f:
                    f.write(data)
                files += 1
                bytes_total += len(data)
    print(f"{files} files, {bytes_total / 1e6:.0f} MB in {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
