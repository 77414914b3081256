"""The figures of a `mamba inspect` report computed from a shard store with pyarrow and
`tokenizers`, without any of mamba's code. argv: store, seq_len, top. Prints JSON."""
import glob, json, os, sys
from collections import Counter, defaultdict
import pyarrow.parquet as pq
from tokenizers import Tokenizer

store, seq_len, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tok = Tokenizer.from_file(os.path.join(store, "tokenizer.json"))
out = {"splits": {}}
chunk_lens, doc_len, doc_kind, doc_lang = [], {}, {}, {}
counts, comp, uncomp = Counter(), 0, 0
source_tokens, source_docs = Counter(), defaultdict(set)
for split in ["train", "val"]:
    files = sorted(glob.glob(os.path.join(store, split + "-*.parquet")))
    fig = dict(shards=len(files), row_groups=0, rows=0, documents=0, tokens=0, bytes=0)
    docs = set()
    for f in files:
        pf = pq.ParquetFile(f)
        md = pf.metadata
        fig["row_groups"] += md.num_row_groups
        fig["bytes"] += os.path.getsize(f)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            uncomp += rg.total_byte_size
            comp += sum(rg.column(i).total_compressed_size for i in range(rg.num_columns))
        t = pf.read().to_pylist()
        for r in t:
            n = len(r["tokens"])
            assert n == r["n_tokens"]
            fig["rows"] += 1
            fig["tokens"] += n
            chunk_lens.append(n)
            counts.update(r["tokens"])
            d = r["doc_id"]
            docs.add(d)
            doc_len[d] = doc_len.get(d, 0) + n
            doc_kind[d], doc_lang[d] = r["kind"], r["lang"]
            source_tokens[r["source"]] += n
            source_docs[r["source"]].add(d)
    fig["documents"] = len(docs)
    out["splits"][split] = fig
total = sum(chunk_lens)
out["compression_ratio"] = uncomp / comp

def groups(of):
    g = defaultdict(lambda: [0, 0])
    for d, n in doc_len.items():
        g[of[d]][0] += 1
        g[of[d]][1] += n
    rows = [dict(name=k, documents=v[0], tokens=v[1], share=v[1] / total) for k, v in g.items()]
    return sorted(rows, key=lambda r: (-r["tokens"], r["name"]))
out["by_kind"], out["by_lang"] = groups(doc_kind), groups(doc_lang)

def dist(lens):
    s = sorted(lens)
    pct = lambda p: s[max(1, -(-p * len(s) // 100)) - 1]
    lo, hi = (min(s)).bit_length(), (max(s)).bit_length()
    bins = []
    for e in range(lo, hi + 1):
        a, b = (0 if e == 0 else 1 << (e - 1)), (1 << e) - 1
        bins.append(dict(lo=a, hi=b, count=sum(1 for x in s if a <= x <= b)))
    return dict(count=len(s), total=sum(s), min=s[0], max=s[-1], mean=sum(s) / len(s),
                percentiles=[dict(p=p, value=pct(p)) for p in [10, 25, 50, 90, 99]],
                histogram=bins)
out["documents"] = dist(list(doc_len.values()))
out["chunks"] = dist(chunk_lens)
out["documents_longer"] = sum(1 for n in doc_len.values() if n > seq_len)
out["chunks_longer"] = sum(1 for n in chunk_lens if n > seq_len)
vocab = tok.get_vocab_size(with_added_tokens=True)
out["vocab_size"] = vocab
out["vocab_used"] = len(counts)
out["out_of_vocab"] = sum(n for t, n in counts.items() if t >= vocab)
def text(i):
    t = tok.decode([i], skip_special_tokens=False)
    return t if t and "\ufffd" not in t else tok.id_to_token(i)
ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
out["top_tokens"] = [dict(id=i, text=text(i), count=n, share=n / total) for i, n in ranked]
srcs = sorted(source_tokens.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
out["top_sources"] = [dict(source=k, documents=len(source_docs[k]), tokens=v) for k, v in srcs]
tj = json.load(open(os.path.join(store, "tokenizer.json")))
out["special_tokens"] = [t["content"] for t in tj["added_tokens"] if t["special"]]
def cls(reason):
    import re
    return "duplicate" if reason.startswith("duplicate of ") else re.split(r"[(:]", reason)[0].strip()
reasons = {"skipped": Counter(), "failed": Counter()}
for line in open(os.path.join(store, "report.jsonl")):
    e = json.loads(line)
    if e["status"] in reasons:
        reasons[e["status"]][cls(e["reason"])] += 1
for k, c in reasons.items():
    out[k] = [dict(reason=r, count=n) for r, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]
print(json.dumps(out))
