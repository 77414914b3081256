"""The reference point of the Mamba-2 train_step bench: the same training step in transformers'
Mamba2ForCausalLM, whose CPU path is its PyTorch implementation of the chunked SSD (no
mamba_ssm kernels on a CPU). d_model 256, 4 layers, vocab 4096, state 128, head_dim 64, one
group, seq 256, batch 4; forward, backward and AdamW; median of 7 steps after one warm-up step.
Prints `tokens/s: N` like train_step (BENCH_ARCH=mamba2).

    pip install torch transformers
    python3 model/benches/mamba2_step.py
"""
import statistics
import time

import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

D, LAYERS, VOCAB, SEQ, BATCH, ITERS = 256, 4, 4096, 256, 4, 7

torch.manual_seed(0)
cfg = Mamba2Config(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, state_size=128,
                   head_dim=64, num_heads=2 * D // 64, n_groups=1, expand=2, conv_kernel=4,
                   tie_word_embeddings=True)
model = Mamba2ForCausalLM(cfg).float().train()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
ids = torch.randint(0, VOCAB, (BATCH, SEQ))
times = []
for i in range(ITERS + 1):
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    if i > 0:
        times.append(time.perf_counter() - start)
step = statistics.median(times)
params = sum(p.numel() for p in model.parameters())
print(f"transformers Mamba2 train step: {params} params, {torch.get_num_threads()} threads, "
      f"median {step * 1e3:.1f} ms")
print(f"tokens/s: {BATCH * SEQ / step:.0f}")
