// Runs the selective-scan CUDA kernels (model/src/kernels/scan/scan.cu) on the CPU: every block's
// 32 lanes are 32 threads, and a warp shuffle is a barrier-synchronised exchange between them.
// This checks the kernels' indexing, chunked recomputation and fixed-order reductions against
// the CPU op without a GPU (model/tests/scan_cuda_emulated.rs); it says nothing of their speed.
//
// host DIR B L D N HAS_Z SOFTPLUS HAS_RESETS CHUNK
// reads DIR/{x,bc,params,dout}.f32 and DIR/resets.u8; writes DIR/y.f32 and DIR/grads.f32.
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

#include "../../src/kernels/scan/scan.cu"

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

#define KERNELS(N) \
    case N: fwd = scan_fwd_##N; bwd = scan_bwd_##N; break;

int main(int argc, char** argv) {
    if (argc != 10) {
        std::fprintf(stderr, "usage: host DIR B L D N HAS_Z SOFTPLUS HAS_RESETS CHUNK\n");
        return 2;
    }
    const std::string dir = argv[1];
    Dims dm{std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]), std::atoi(argv[6]),
            std::atoi(argv[7]), std::atoi(argv[8]), std::atoi(argv[9])};
    const int n = std::atoi(argv[5]);
    const size_t b = dm.b, l = dm.l, d = dm.d, bld = b * l * d, s = dm.has_z ? 3 : 2;
    void (*fwd)(const float*, const float*, const float*, const unsigned char*, float*, Dims);
    void (*bwd)(const float*, const float*, const float*, const unsigned char*, const float*,
                float*, float*, float*, float*, float*, Dims);
    switch (n) {
        KERNELS(4) KERNELS(8) KERNELS(16) KERNELS(32) KERNELS(64) KERNELS(128)
        default: return 2;
    }
    auto x = load<float>(dir + "/x.f32", s * bld);
    auto bc = load<float>(dir + "/bc.f32", b * l * 2 * n);
    auto params = load<float>(dir + "/params.f32", d * (n + 2));
    auto resets = load<unsigned char>(dir + "/resets.u8", b * l);
    auto dout = load<float>(dir + "/dout.f32", bld);

    const unsigned warps = (d + 31) / 32;
    const dim3 grid{warps, (unsigned)b, 1}, warp{32, 1, 1};
    std::vector<float> y(bld);
    launch(grid, warp, [&] { fwd(x.data(), bc.data(), params.data(), resets.data(), y.data(), dm); });
    save(dir + "/y.f32", y);

    // The same buffers as model/src/kernels/scan/cuda.rs allocates.
    const size_t threads = warps * 32 * b, nchunks = (l + dm.chunk - 1) / dm.chunk;
    std::vector<float> out(s * bld + b * l * 2 * n + d * (n + 2));
    std::vector<float> dbc_part(b * warps * l * 2 * n), dpar_part(b * d * (n + 2));
    std::vector<float> ckpt(nchunks * n * threads), hbuf(dm.chunk * n * threads);
    launch(grid, warp, [&] {
        bwd(x.data(), bc.data(), params.data(), resets.data(), dout.data(), out.data(),
            dbc_part.data(), dpar_part.data(), ckpt.data(), hbuf.data(), dm);
    });
    const long row = l * 2 * n, plen = d * (n + 2);
    const unsigned tpb = 256;
    launch(dim3{(unsigned)((b * row + tpb - 1) / tpb), 1, 1}, dim3{tpb, 1, 1}, [&] {
        scan_reduce_dbc(dbc_part.data(), out.data() + s * bld, dm.b, warps, row);
    });
    launch(dim3{(unsigned)((plen + tpb - 1) / tpb), 1, 1}, dim3{tpb, 1, 1}, [&] {
        scan_reduce_params(dpar_part.data(), out.data() + s * bld + b * row, dm.b, plen);
    });
    save(dir + "/grads.f32", out);
    return 0;
}
