"""Writes the fixture run of tests/report.rs: run/metrics.jsonl and two checkpoints'
trainer_state.json, shaped like `mamba train` output (src/train/metrics.rs,
src/train/checkpoint.rs) but synthetic and seeded: 120 steps with warmup + cosine learning
rate, a falling noisy loss, fp16 loss scaling with one overflowed (skipped) step, evals every
20 steps, and a resume from step 60 that repeats steps 61-70.

    python3 tests/report/make_fixture.py
"""

import json
import math
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "run")
STEPS, WARMUP, LR, MIN_LR, TOKENS_PER_STEP = 120, 10, 3e-3, 3e-4, 512


def lr_at(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, STEPS - WARMUP)
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * t))


def steps(rng, first, last, scale):
    lines = []
    for s in range(first, last + 1):
        skipped = s == 30
        if skipped:
            scale /= 2
        if s == 100:
            scale *= 2
        loss = 2.5 + 5.0 * math.exp(-s / 40) + rng.gauss(0, 0.08)
        lines.append({
            "step": s, "epoch": 0, "tokens": s * TOKENS_PER_STEP,
            "loss": loss, "lr": lr_at(s - 1), "grad_norm": 0.4 + 2.0 * math.exp(-s / 25) + abs(rng.gauss(0, 0.05)),
            "tokens_per_s": 5000 + rng.gauss(0, 200), "loss_scale": scale, "skipped": skipped,
        })
        if s % 20 == 0:
            val = 2.7 + 5.0 * math.exp(-s / 40)
            lines.append({"step": s, "tokens": s * TOKENS_PER_STEP, "val_loss": val, "val_ppl": math.exp(val)})
    return lines, scale


def state(step):
    return {"step": step, "tokens": step * TOKENS_PER_STEP, "lr": lr_at(step - 1), "loss_scale": 65536.0,
            "config": {"model_size": "tiny", "seq_len": 64, "batch_size": 4, "grad_accum": 2,
                       "precision": "fp16", "lr": LR, "min_lr": MIN_LR, "warmup_steps": WARMUP,
                       "max_steps": STEPS, "seed": 0}}


def main():
    rng = random.Random(6)
    first, scale = steps(rng, 1, 70, 65536.0)  # the run that was killed after step 70
    resumed, _ = steps(rng, 61, STEPS, 32768.0)  # resumed from step-000060
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "metrics.jsonl"), "w") as f:
        for line in first + resumed:
            f.write(json.dumps(line) + "\n")
    for name, step in [("step-000060", 60), ("final", STEPS)]:
        os.makedirs(os.path.join(OUT, name), exist_ok=True)
        with open(os.path.join(OUT, name, "trainer_state.json"), "w") as f:
            json.dump(state(step), f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
