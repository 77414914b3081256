"""Paired CPU training steps of a hybrid (Mamba-2 + attention + MLP) model: transformers' torch
path against `mamba`'s, on the same checkpoint, batch and thread count.

The model is a random `BambaForCausalLM` saved with save_pretrained into DIR (made once): d_model
256, 8 decoder layers (Mamba-2 at 7, attention at layer 3), Mamba heads 8 x 64 in 1 group, state
128, conv 4, chunk 256; attention 4 query / 2 key-value heads of 64 with RoPE on half of each;
SwiGLU MLP of 768 after each; vocabulary 4096, untied head. One step: forward, backward, AdamW
(lr 1e-4, weight decay 0.1), batch 4 x 256 tokens, no document resets (transformers' torch path
has none). Timings are medians of 7 steps after a warm-up, torch and ours alternated twice;
the ratio is ours/torch.

    pip install torch transformers safetensors
    python benches/hybrid_step.py [DIR]            # DIR defaults to /tmp/mamba-hybrid-bench
"""
import os
import re
import statistics
import subprocess
import sys
import time

import torch
from transformers import BambaConfig, BambaForCausalLM

THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
BATCH, SEQ, ITERS = 4, 256, 7
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def make(dir):
    torch.manual_seed(0)
    cfg = BambaConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=8,
        attn_layer_indices=[3], num_attention_heads=4, num_key_value_heads=2,
        mamba_n_heads=8, mamba_d_head=64, mamba_n_groups=1, mamba_d_state=128, mamba_d_conv=4,
        mamba_expand=2, mamba_chunk_size=256, tie_word_embeddings=False, pad_token_id=None,
    )
    BambaForCausalLM(cfg).float().save_pretrained(dir, safe_serialization=True)


def torch_steps(dir):
    """Median step time (s) of transformers' torch path."""
    torch.set_num_threads(THREADS)
    model = BambaForCausalLM.from_pretrained(dir).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 4096, (BATCH, SEQ + 1), generator=gen)
    x, y = ids[:, :-1], ids[:, 1:]
    times = []
    for i in range(ITERS + 1):
        t = time.perf_counter()
        logits = model(input_ids=x, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def our_steps(dir):
    """Median step time (s) of `cargo bench -p mamba-model --bench train_step` on DIR."""
    env = dict(os.environ, BENCH_INIT=dir, BENCH_SEQ=str(SEQ), BENCH_BATCH=str(BATCH),
               BENCH_ITERS=str(ITERS), RAYON_NUM_THREADS=str(THREADS))
    out = subprocess.run(["cargo", "bench", "-q", "-p", "mamba-model", "--bench", "train_step"],
                         cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
    print(out.strip())
    return float(re.search(r"step ([0-9.]+) ms", out).group(1)) / 1e3


def main():
    dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/mamba-hybrid-bench"
    if not os.path.isdir(dir):
        make(dir)
    pairs = []
    for _ in range(2):
        theirs = torch_steps(dir)
        ours = our_steps(dir)
        print(f"torch {theirs * 1e3:.1f} ms, mamba {ours * 1e3:.1f} ms, ratio {ours / theirs:.2f}")
        pairs.append((theirs, ours))
    ratios = [o / t for t, o in pairs]
    print(f"{THREADS} threads, batch {BATCH} x {SEQ}: ours/torch {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
