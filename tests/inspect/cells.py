"""Reads (file, row group, row) cells of a shard store and decodes their tokens.
argv: store, JSON [[file, row_group, row], ...]. Prints JSON."""
import json, os, sys
import pyarrow.parquet as pq
from tokenizers import Tokenizer
store, cells = sys.argv[1], json.loads(sys.argv[2])
tok = Tokenizer.from_file(os.path.join(store, "tokenizer.json"))
out = []
for f, g, r in cells:
    row = pq.ParquetFile(os.path.join(store, f)).read_row_group(g).to_pylist()[r]
    out.append(dict(source=row["source"], doc_id=row["doc_id"], chunk=row["chunk"],
                    n_tokens=row["n_tokens"], text=tok.decode(row["tokens"], skip_special_tokens=False)))
print(json.dumps(out))
