"""Reads a shard store with pyarrow and Python `tokenizers` only, and checks it against the
documented contract: schema, manifest totals, checksums, tokenizer, and that decoding the
chunks of each text/code/config document gives back its source file exactly.

Usage: python3 tests/check_shards.py SHARDS_DIR [INPUT_ROOT]
"""
import collections
import hashlib
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import tokenizers

SCHEMA = pa.schema([
    pa.field("doc_id", pa.uint64(), nullable=False),
    pa.field("chunk", pa.uint32(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("lang", pa.string(), nullable=False),
    pa.field("tokens", pa.list_(pa.field("item", pa.uint32(), nullable=False)), nullable=False),
    pa.field("n_tokens", pa.uint32(), nullable=False),
])


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(shards, root=None):
    m = json.load(open(os.path.join(shards, "manifest.json")))
    assert m["schema_version"] == 1, m["schema_version"]
    tok_path = os.path.join(shards, m["tokenizer"]["file"])
    assert sha256(tok_path) == m["tokenizer"]["sha256"], "tokenizer sha256"
    tok = tokenizers.Tokenizer.from_file(tok_path)
    assert tok.get_vocab_size() == m["tokenizer"]["vocab_size"], "vocab size"
    if m["tokenizer"]["origin"] == "trained":
        assert tok.token_to_id("<|endoftext|>") == m["tokenizer"]["eos_id"], "eos id"

    totals = m["totals"]
    rows = tokens = 0
    split_tokens = collections.Counter()
    docs = collections.defaultdict(list)
    for shard in m["shards"]:
        path = os.path.join(shards, shard["file"])
        assert sha256(path) == shard["sha256"], shard["file"]
        assert os.path.getsize(path) == shard["bytes"], shard["file"]
        meta = pq.ParquetFile(path).metadata
        for i in range(meta.num_row_groups):
            for j in range(meta.num_columns):
                assert meta.row_group(i).column(j).compression == "ZSTD", shard["file"]
        table = pq.read_table(path)
        assert table.schema.remove_metadata().equals(SCHEMA), table.schema
        assert table.num_rows == shard["rows"], shard["file"]
        n = sum(table.column("n_tokens").to_pylist())
        lengths = [len(t) for t in table.column("tokens").to_pylist()]
        assert lengths == table.column("n_tokens").to_pylist(), "n_tokens"
        assert n == shard["tokens"], shard["file"]
        assert shard["file"].startswith(shard["split"] + "-"), shard["file"]
        rows += table.num_rows
        tokens += n
        split_tokens[shard["split"]] += n
        for r in table.to_pylist():
            docs[(r["doc_id"], r["source"], r["kind"])].append((r["chunk"], r["tokens"]))
    assert rows == totals["chunks"], (rows, totals["chunks"])
    assert tokens == totals["tokens"], (tokens, totals["tokens"])
    assert split_tokens["train"] == totals["train"]["tokens"], "train tokens"
    assert split_tokens["val"] == totals["val"]["tokens"], "val tokens"
    assert len(docs) == totals["documents"], (len(docs), totals["documents"])
    assert sum(g["tokens"] for g in totals["by_kind"].values()) == tokens, "by_kind"
    assert sum(g["tokens"] for g in totals["by_lang"].values()) == tokens, "by_lang"

    checked = 0
    if root:
        for (doc_id, source, kind), chunks in docs.items():
            chunks.sort()
            assert [c for c, _ in chunks] == list(range(len(chunks))), source
            if kind not in ("text", "code", "config"):
                continue
            text = "".join(tok.decode(t, skip_special_tokens=False) for _, t in chunks)
            with open(os.path.join(root, source), encoding="utf-8") as f:
                assert text == f.read(), f"decoded chunks of {source} differ from the file"
            checked += 1
    print(f"ok: {len(m['shards'])} shards, {rows} rows, {tokens} tokens, "
          f"{len(docs)} documents, {checked} decoded back to their source")


if __name__ == "__main__":
    main(*sys.argv[1:])
