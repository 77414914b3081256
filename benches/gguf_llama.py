"""What `mamba export` writes, run in llama.cpp (llama-cpp-python builds it from PyPI): greedy
decoding of 32 tokens in llama.cpp equals `mamba generate --temperature 0`, for f32 and f16
exports of both architectures, with a tokenizer `mamba ingest` trained and with the
GPT-NeoX-style one of model/tests/fixtures/pretrained; then decode speed of a q8_0 export of a
130m-shaped model in llama.cpp beside `mamba generate --weights int8`, alternating.

    pip install llama-cpp-python gguf        # builds llama.cpp (~15 min on 2 cores)
    cargo build --release
    python3 benches/gguf_llama.py /tmp/llama-check          # work folder (made, reused)
    python3 benches/gguf_llama.py /tmp/llama-check --only speed --runs 5

Checkpoints are trained here first (`mamba train`, tiny preset, 300 steps on the sample
corpus, one per tokenizer and architecture), so the greedy choice is not a coin toss between
near-equal logits. Prints one line per comparison and exits 1 on any difference.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAMBA = os.environ.get("MAMBA_BIN", os.path.join(REPO, "target/release/mamba"))
NEOX = os.path.join(REPO, "model/tests/fixtures/pretrained/tokenizer.json")
PROMPTS = ["The model", "def main():\n    ", "Shards are written"]
NEW = 32


def run(*args):
    out = subprocess.run([MAMBA, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"mamba {' '.join(args)}: {out.stderr[-2000:]}")
    return out.stdout


def prepare(work):
    """{(tokenizer, arch): checkpoint dir}, trained on the sample corpus."""
    cks = {}
    for tok in ["trained", "neox"]:
        shards = os.path.join(work, f"shards-{tok}")
        if not os.path.exists(os.path.join(shards, "manifest.json")):
            extra = ["--tokenizer", NEOX] if tok == "neox" else ["--vocab-size", "2048"]
            run("ingest", os.path.join(REPO, "data"), shards, "-q", *extra)
        for arch in ["mamba1", "mamba2"]:
            ck = os.path.join(work, f"ck-{tok}-{arch}")
            if not os.path.exists(os.path.join(ck, "final", "config.json")):
                run("train", "--shards", shards, "--arch", arch, "--model-size", "tiny",
                    "--max-steps", "300", "--lr", "3e-3", "--warmup-steps", "20",
                    "--save-every", "1000", "--eval-every", "1000", "--log-every", "1000",
                    "--checkpoint-dir", ck, "-q")
            cks[(tok, arch)] = os.path.join(ck, "final")
    return cks


def ours(ck, prompt, weights="f32"):
    return run("generate", "--checkpoint", ck, "--prompt", prompt, "--temperature", "0",
               "--max-new-tokens", str(NEW), "--ignore-eos", "--no-echo",
               "--weights", weights).rstrip("\n")


def llama_greedy(gguf, prompt):
    from llama_cpp import Llama
    llm = Llama(model_path=gguf, n_ctx=256, n_threads=2, verbose=False)
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
    out = []
    for t in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(t)
        if len(out) == NEW:
            break
    text = b"".join(llm.detokenize([t]) for t in out).decode("utf-8", errors="replace")
    return ids, out, text


def equality(work):
    cks, bad = prepare(work), 0
    for (tok, arch), ck in cks.items():
        for ty in ["f32", "f16"]:
            gguf = os.path.join(work, f"{tok}-{arch}-{ty}.gguf")
            run("export", ck, gguf, "--type", ty)
            for prompt in PROMPTS:
                _, ids, theirs = llama_greedy(gguf, prompt)
                mine = ours(ck, prompt)
                same = theirs == mine
                bad += not same
                print(f"{tok:8} {arch} {ty}  {prompt!r:22} {'equal' if same else 'DIFFERENT'}"
                      f"  ({len(ids)} tokens: {mine[:40]!r})")
                if not same:
                    print(f"    llama.cpp: {theirs!r}\n    mamba:     {mine!r}")
    return bad


LLAMA_DECODE = """
import sys, time
import numpy as np
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_threads=2, n_threads_batch=2, n_ctx=512, verbose=False)
ids = llm.tokenize(sys.argv[2].encode(), add_bos=False, special=False)
llm.eval(ids)
nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
t = time.perf_counter()
for _ in range(int(sys.argv[3])):
    llm.eval([nxt])
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
print((time.perf_counter() - t) / int(sys.argv[3]))
"""


def speed(work, runs=3):
    """ms per decoded token of a 130m-shaped model: llama.cpp on our q8_0 export, `mamba
    generate --weights int8` (64 more tokens' process time over one token's, / 64)."""
    shards = os.path.join(work, "shards-neox")
    ck = os.path.join(work, "ck-130m")
    if not os.path.exists(os.path.join(ck, "final", "config.json")):
        run("train", "--shards", shards, "--model-size", "130m", "--max-steps", "1",
            "--seq-len", "32", "--batch-size", "1", "--warmup-steps", "0",
            "--checkpoint-dir", ck, "-q")
    ck = os.path.join(ck, "final")
    gguf = os.path.join(work, "m130-q8_0.gguf")
    run("export", ck, gguf, "--type", "q8_0")
    theirs, mine = [], []

    def process(new):
        t = time.perf_counter()
        run("generate", "--checkpoint", ck, "--prompt", PROMPTS[0], "--temperature", "0",
            "--max-new-tokens", str(new), "--ignore-eos", "--weights", "int8")
        return time.perf_counter() - t

    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", LLAMA_DECODE, gguf, PROMPTS[0], "64"],
                             capture_output=True, text=True, check=True)
        theirs.append(float(out.stdout.strip()) * 1e3)
        mine.append((process(65) - process(1)) / 64 * 1e3)
    t, m = statistics.median(theirs), statistics.median(mine)
    print(f"130m-shaped, decode ms/token (median of {runs}, alternating): llama.cpp q8_0 "
          f"{t:.1f} ({1e3 / t:.1f} tokens/s), mamba --weights int8 {m:.1f} ({1e3 / m:.1f} "
          f"tokens/s); mamba / llama.cpp speed {t / m:.2f}")
    print(f"  runs: llama.cpp {[round(x, 1) for x in theirs]}, mamba {[round(x, 1) for x in mine]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work", nargs="?", default="/tmp/llama-check")
    ap.add_argument("--runs", type=int, default=3, help="pairs of the speed comparison")
    ap.add_argument("--only", choices=["equality", "speed"])
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    import llama_cpp
    print(f"llama-cpp-python {llama_cpp.__version__}, load {os.getloadavg()[0]:.1f}")
    bad = 0
    if a.only != "speed":
        bad = equality(a.work)
    if a.only != "equality":
        speed(a.work, a.runs)
    sys.exit(1 if bad else 0)


main()
