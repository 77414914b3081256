"""The anchor of Mamba-2's GPU speed (scripts/gpu-check.sh, step 5b): a training step of
mamba_ssm's own Mamba2 layers (its Triton SSD; no compiled extension, so its conv is torch's
Conv1d and use_mem_eff_path, which needs causal_conv1d, is off) at the 130m shape: d_model 768,
24 pre-norm residual blocks, vocab 50280 with a tied head, batch 4 x 2048, bf16 autocast, AdamW.
Median of 10 steps after 3 warm-up steps (Triton compiles on the first). Prints `tokens/s: N`,
`peak memory: N MiB` (torch's allocator) and `parameters: N`. The norms are mamba_ssm's
Triton RMSNorm, as its own language model has them (torch's where that is missing).

Needs torch with CUDA and triton, and the wheels of scripts/mamba-ssm-wheel.sh. MAMBA_SSM_DRY=1
only builds the model on the CPU and prints its parameters (to check the imports anywhere).
"""
import importlib.util
import os
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F

D, LAYERS, VOCAB, SEQ, BATCH, WARMUP, ITERS = 768, 24, 50280, 2048, 4, 3, 10


def import_mamba2():
    """mamba_ssm's Mamba2 without its package's __init__, which imports every model it has
    (Mamba-1's CUDA extension among them); the Hugging Face hub mixin it inherits is only for
    uploading, and stands in as a plain class where huggingface_hub is missing."""
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None:
        sys.exit("mamba_ssm is not installed: pip install --no-deps mamba-ssm-wheels/*.whl")
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = pkg
    if importlib.util.find_spec("huggingface_hub") is None:
        hub = types.ModuleType("huggingface_hub")
        hub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
        sys.modules["huggingface_hub"] = hub
    from mamba_ssm.modules.mamba2 import Mamba2

    try:
        from mamba_ssm.ops.triton.layer_norm import RMSNorm
    except ImportError:
        RMSNorm = torch.nn.RMSNorm
    return Mamba2, RMSNorm


class Block(torch.nn.Module):
    def __init__(self, mamba2, device):
        super().__init__()
        self.norm = RMSNorm(D, eps=1e-5, device=device)
        self.mixer = mamba2(
            d_model=D, d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1,
            chunk_size=256, use_mem_eff_path=False, device=device,
        )

    def forward(self, h):
        return h + self.mixer(self.norm(h))


class LM(torch.nn.Module):
    def __init__(self, mamba2, device):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, D, device=device)
        # As in mamba_ssm's own language model: the first loss is then about ln(VOCAB).
        torch.nn.init.normal_(self.embedding.weight, std=0.02)
        self.layers = torch.nn.ModuleList(Block(mamba2, device) for _ in range(LAYERS))
        self.norm_f = RMSNorm(D, eps=1e-5, device=device)

    def forward(self, ids):
        h = self.embedding(ids)
        for layer in self.layers:
            h = layer(h)
        return self.norm_f(h) @ self.embedding.weight.T


Mamba2, RMSNorm = import_mamba2()
dry = os.environ.get("MAMBA_SSM_DRY") == "1"
if not dry and not torch.cuda.is_available():
    sys.exit("no CUDA device: mamba_ssm's Triton SSD runs on a GPU only (MAMBA_SSM_DRY=1 checks the imports)")
device = "cpu" if dry else "cuda"
torch.manual_seed(0)
model = LM(Mamba2, device)
# Flushed: gpu-check.sh sends this to a file and a timeout would lose what is buffered.
print(f"parameters: {sum(p.numel() for p in model.parameters())} (norms: {RMSNorm.__module__})",
      flush=True)
if dry:
    sys.exit(0)
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), device=device)
x, y = tokens[:, :SEQ], tokens[:, 1:]
times = []
begin = time.perf_counter()
for i in range(WARMUP + ITERS):
    if i == WARMUP:
        # The first step compiles and autotunes every Triton kernel: a minute or more.
        print(f"warm-up: {WARMUP} steps in {time.perf_counter() - begin:.1f} s", flush=True)
        torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB).float(), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.cuda.synchronize()
    if i >= WARMUP:
        times.append(time.perf_counter() - start)
step = statistics.median(times)
print(f"mamba_ssm Mamba2 train step: median {step * 1e3:.1f} ms, loss {loss.item():.4f}")
print(f"  tokens/s: {BATCH * SEQ / step:.0f}")
print(f"  peak memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
