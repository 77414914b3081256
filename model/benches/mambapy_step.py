"""The reference point of the train_step bench: the same training step in mambapy (PyTorch,
parallel scan). d_model 256, 4 layers, vocab 4096, seq 256, batch 4; forward, backward and
AdamW; median of 7 steps after one warm-up step. Prints `tokens/s: N` like train_step.
MAMBAPY_SHAPE=130m uses d_model 768, 24 layers, vocab 50280, seq 2048, batch 4 instead, and
MAMBAPY_DEVICE=cuda runs on the GPU under bf16 autocast (scripts/gpu-check.sh).

Needs `pip install torch mambapy`.
"""
import contextlib
import os
import statistics
import time

import torch
import torch.nn.functional as F
from mambapy.mamba import Mamba, MambaConfig, RMSNorm

D, LAYERS, VOCAB, SEQ, BATCH, ITERS = 256, 4, 4096, 256, 4, 7
if os.environ.get("MAMBAPY_SHAPE") == "130m":
    D, LAYERS, VOCAB, SEQ, BATCH = 768, 24, 50280, 2048, 4
DEVICE = os.environ.get("MAMBAPY_DEVICE", "cpu")



class LM(torch.nn.Module):
    """Embedding, mambapy's Mamba backbone, final norm and a tied head, as in mambapy.lm (which
    cannot be imported without mamba_ssm's Triton kernels)."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, D)
        self.mamba = Mamba(MambaConfig(d_model=D, n_layers=LAYERS, pscan=True))
        self.norm_f = RMSNorm(D)

    def forward(self, ids):
        return self.norm_f(self.mamba(self.embedding(ids))) @ self.embedding.weight.T


torch.manual_seed(0)
model = LM().to(DEVICE)
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), device=DEVICE)
x, y = tokens[:, :SEQ], tokens[:, 1:]
on_gpu = DEVICE != "cpu"
autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()
times = []
for i in range(ITERS + 1):
    start = time.perf_counter()
    with autocast:
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if on_gpu:
        torch.cuda.synchronize()
    if i > 0:
        times.append(time.perf_counter() - start)
step = statistics.median(times)
print(f"mambapy train step: {torch.get_num_threads()} threads, median {step * 1e3:.1f} ms")
print(f"  tokens/s: {BATCH * SEQ / step:.0f}")
