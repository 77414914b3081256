"""Runs the train_step bench and a PyTorch reference of the same step in turns, so that load on
a shared machine hits both alike, and prints the median of the paired speed ratios. The
reference is mambapy's Mamba-1 (mambapy_step.py) or, with `mamba2`, transformers' Mamba-2
(mamba2_step.py, with BENCH_ARCH=mamba2 for ours).

    cargo bench -p mamba-model --bench train_step --no-run
    python3 model/benches/compare_mambapy.py [PAIRS] [mamba1|mamba2]
"""
import os
import re
import statistics
import subprocess
import sys


def tokens_per_s(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return float(re.search(r"tokens/s: (\d+)", out).group(1))


def main(pairs=3, arch="mamba1"):
    ours_cmd = ["cargo", "bench", "-q", "-p", "mamba-model", "--bench", "train_step"]
    ref = {"mamba1": ("mambapy", "mambapy_step.py"), "mamba2": ("transformers", "mamba2_step.py")}
    name, script = ref[arch]
    ref_cmd = [sys.executable, os.path.join("model/benches", script)]
    env = dict(os.environ, BENCH_ARCH=arch)
    ratios = []
    for i in range(int(pairs)):
        theirs = tokens_per_s(ref_cmd)
        ours = tokens_per_s(ours_cmd, env)
        ratios.append(ours / theirs)
        print(f"pair {i + 1}: mamba {ours:.0f} tokens/s, {name} {theirs:.0f} tokens/s, ratio {ours / theirs:.2f}")
    print(f"median ratio mamba/{name} ({arch}) over {pairs} pairs: {statistics.median(ratios):.2f} (target >= 5)")


if __name__ == "__main__":
    main(*sys.argv[1:])
