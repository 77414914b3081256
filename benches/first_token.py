"""Time to first token, peak resident memory and decode speed of `mamba generate` beside
transformers and llama.cpp, on one checkpoint, on the CPU. Every figure comes from a fresh
process; contenders alternate run by run, so load on the machine hits them alike.

    pip install torch transformers tokenizers llama-cpp-python gguf   # llama.cpp: optional
    cargo build --release
    python benches/first_token.py --make /tmp/m130          # a random 130m-shaped checkpoint
    python benches/first_token.py /tmp/m130 --gguf /tmp/m130-f32.gguf --gguf /tmp/m130-q8_0.gguf

The GGUF files come from llama.cpp's converter (in the llama-cpp-python sdist,
vendor/llama.cpp), run on a copy of the checkpoint without tokenizer.json (it then uses its
built-in GPT-NeoX vocabulary; token ids are passed in directly, so the vocabulary is moot):

    python vendor/llama.cpp/convert_hf_to_gguf.py DIR --outtype f32  --outfile m130-f32.gguf
    python vendor/llama.cpp/convert_hf_to_gguf.py DIR --outtype q8_0 --outfile m130-q8_0.gguf

What is timed, per contender:
  mamba         the whole `mamba generate --max-new-tokens 1` process (start, load, tokenize,
                prefill, one token); decode = (64 more tokens' process time - that) / 64;
                with f32 weights, `--weights bf16` and `--weights int8`
  transformers  from_pretrained + generate(max_new_tokens=1) inside the process (imports
                not counted); decode from generate(max_new_tokens=65) the same way
  llama.cpp     Llama(...) load + eval of the prompt ids inside the process; decode = one
                eval per token, 64 tokens
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "def add(a, b):"
NEW = 64


def make(dir_):
    import torch
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    cfg = MambaConfig(vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24,
                      expand=2, conv_kernel=4, time_step_rank="auto", use_mambapy=False)
    MambaForCausalLM(cfg).float().save_pretrained(dir_, safe_serialization=True)
    tok = os.path.join(REPO, "model/tests/fixtures/pretrained/tokenizer.json")
    with open(tok, "rb") as src, open(os.path.join(dir_, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())


def timed(cmd):
    """(wall seconds reported by the child or measured here, peak RSS MB) of one process."""
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "RSS %M"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    rss = int(out.stderr.strip().split("RSS ")[-1]) / 1024
    inner = [l for l in out.stdout.splitlines() if l.startswith("SECONDS ")]
    return (float(inner[-1].split()[1]) if inner else wall), rss


def ours(ckpt, new, weights="f32"):
    return timed([os.path.join(REPO, "target/release/mamba"), "generate", "--checkpoint", ckpt,
                  "--prompt", PROMPT, "--max-new-tokens", str(new), "--seed", "1",
                  "--ignore-eos", "--temperature", "0", "--weights", weights])


TRANSFORMERS = """
import sys, time, torch
from transformers import MambaForCausalLM
torch.set_num_threads(2)
ids = torch.tensor([[int(x) for x in sys.argv[2].split(",")]])
t = time.perf_counter()
m = MambaForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, use_mambapy=False)
m.generate(ids, max_new_tokens=int(sys.argv[3]), do_sample=False, min_new_tokens=int(sys.argv[3]))
print("SECONDS", time.perf_counter() - t)
"""

LLAMA = """
import sys, time
import numpy as np
from llama_cpp import Llama
ids = [int(x) for x in sys.argv[2].split(",")]
t = time.perf_counter()
llm = Llama(model_path=sys.argv[1], n_threads=2, n_threads_batch=2, n_ctx=512, verbose=False)
llm.eval(ids)
ttft = time.perf_counter() - t
nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
t = time.perf_counter()
for _ in range(int(sys.argv[3])):
    llm.eval([nxt])
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
print("DECODE", (time.perf_counter() - t) / max(int(sys.argv[3]), 1))
print("SECONDS", ttft)
"""


def transformers(ckpt, ids, new):
    return timed([sys.executable, "-c", TRANSFORMERS, ckpt, ids, str(new)])


def llama(gguf, ids, new):
    out = subprocess.run(["/usr/bin/time", "-f", "RSS %M", sys.executable, "-c", LLAMA, gguf,
                          ids, str(new)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"llama.cpp failed: {out.stderr[-2000:]}")
    lines = dict(l.split(" ", 1) for l in out.stdout.splitlines() if " " in l)
    rss = int(out.stderr.strip().split("RSS ")[-1]) / 1024
    return float(lines["SECONDS"]), float(lines["DECODE"]), rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt", nargs="?")
    ap.add_argument("--make", metavar="DIR")
    ap.add_argument("--gguf", action="append", default=[])
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if a.make:
        make(a.make)
        print("wrote", a.make)
        return
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(os.path.join(a.ckpt, "tokenizer.json")).encode(PROMPT).ids
    ids_arg = ",".join(map(str, ids))
    size = os.path.getsize(os.path.join(a.ckpt, "model.safetensors")) / 2**20
    print(f"checkpoint {a.ckpt}: {size:.0f} MiB; prompt of {len(ids)} tokens; "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = {}
    for run in range(a.runs):
        for name, f in [("mamba", lambda: (ours(a.ckpt, 1), ours(a.ckpt, 1 + NEW))),
                        ("mamba --weights bf16", lambda: (ours(a.ckpt, 1, "bf16"),
                                                          ours(a.ckpt, 1 + NEW, "bf16"))),
                        ("mamba --weights int8", lambda: (ours(a.ckpt, 1, "int8"),
                                                          ours(a.ckpt, 1 + NEW, "int8"))),
                        ("transformers", lambda: (transformers(a.ckpt, ids_arg, 1),
                                                  transformers(a.ckpt, ids_arg, 1 + NEW)))]:
            (t1, rss), (tn, _) = f()
            rows.setdefault(name, []).append((t1, (tn - t1) / NEW, rss))
        for g in a.gguf:
            t1, dec, rss = llama(g, ids_arg, NEW)
            rows.setdefault("llama.cpp " + os.path.basename(g), []).append((t1, dec, rss))
    print(f"{'':34} {'first token s':>14} {'decode tok/s':>13} {'peak RSS MiB':>13} {'RSS/ckpt':>9}")
    for name, r in rows.items():
        t1 = statistics.median(x[0] for x in r)
        dec = statistics.median(x[1] for x in r)
        rss = statistics.median(x[2] for x in r)
        print(f"{name:34} {t1:14.3f} {1 / dec:13.1f} {rss:13.0f} {rss / size:9.2f}")
    print("(medians of", a.runs, "runs; each figure from its own process)")


if __name__ == "__main__":
    main()
