"""Runs the train_step bench and mambapy's same step in turns, so that load on a shared
machine hits both alike, and prints the median of the paired speed ratios.

    cargo bench -p mamba-model --bench train_step --no-run
    python3 model/benches/compare_mambapy.py [PAIRS]
"""
import re
import statistics
import subprocess
import sys


def tokens_per_s(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"tokens/s: (\d+)", out).group(1))


def main(pairs=3):
    ours_cmd = ["cargo", "bench", "-q", "-p", "mamba-model", "--bench", "train_step"]
    ref_cmd = [sys.executable, "model/benches/mambapy_step.py"]
    ratios = []
    for i in range(int(pairs)):
        ref = tokens_per_s(ref_cmd)
        ours = tokens_per_s(ours_cmd)
        ratios.append(ours / ref)
        print(f"pair {i + 1}: mamba {ours:.0f} tokens/s, mambapy {ref:.0f} tokens/s, ratio {ours / ref:.2f}")
    print(f"median ratio mamba/mambapy over {pairs} pairs: {statistics.median(ratios):.2f} (target >= 5)")


if __name__ == "__main__":
    main(*sys.argv[1:])
