"""The f32 matmul ceiling of this machine's cores: PyTorch's CPU matmul (oneDNN/MKL) on square
products, median and best of 7 after 3 warm-up products. The bound on any training step's
speed here is its FLOPs over this rate (BENCHMARKS.md, "Mamba-2 on the CPU").

    python3 model/benches/matmul_ceiling.py [THREADS]
"""
import statistics
import sys
import time

import torch


def main(threads=2):
    torch.set_num_threads(int(threads))
    for m in (1024, 2048):
        a, b = torch.randn(m, m), torch.randn(m, m)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(7):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        flops = 2 * m**3
        print(f"f32 matmul {m}^3, {threads} threads: median {flops / statistics.median(times) / 1e9:.0f} "
              f"GFLOP/s, best {flops / min(times) / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main(*sys.argv[1:])
