// A CUDA stand-in for running the project's kernels on the CPU: every thread of a block is a
// thread here, and a warp shuffle is a barrier-synchronised exchange between them. Blocks run
// one at a time. It checks the kernels' arithmetic and indexing, not their speed.
#pragma once
#include <barrier>
#include <math.h>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
static thread_local dim3 threadIdx, blockIdx;
static dim3 gridDim, blockDim;
static inline int min(int a, int b) { return a < b ? a : b; }

// One warp at a time: its lanes exchange values through these slots.
static std::barrier<>* warp_sync;
static float warp_slots[32];
static float __shfl_xor_sync(unsigned, float v, int m) {
    warp_slots[threadIdx.x] = v;
    warp_sync->arrive_and_wait();
    float r = warp_slots[threadIdx.x ^ m];
    warp_sync->arrive_and_wait();
    return r;
}

// Runs `kernel` over the grid, block by block; each block's threads run concurrently.
template <class F>
static void launch(dim3 grid, dim3 block, F kernel) {
    gridDim = grid;
    blockDim = block;
    std::barrier<> sync(block.x);
    warp_sync = &sync;
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            std::vector<std::thread> lanes;
            for (unsigned t = 0; t < block.x; t++)
                lanes.emplace_back([=] {
                    threadIdx.x = t;
                    blockIdx.x = bx;
                    blockIdx.y = by;
                    kernel();
                });
            for (auto& l : lanes) l.join();
        }
}

template <class T>
static std::vector<T> load(const std::string& path, size_t n) {
    std::vector<T> v(n);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f || std::fread(v.data(), sizeof(T), n, f) != n) {
        std::fprintf(stderr, "cannot read %zu values from %s\n", n, path.c_str());
        std::exit(1);
    }
    std::fclose(f);
    return v;
}

static void save(const std::string& path, const std::vector<float>& v) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(v.data(), sizeof(float), v.size(), f) != v.size()) std::exit(1);
    std::fclose(f);
}

