// Runs the selective-scan CUDA kernels (model/src/kernels/scan/scan.cu) on the CPU through the
// shim (shim.h): each block is one warp of 32 lanes. This checks the kernels' indexing, chunked
// recomputation and fixed-order reductions against the CPU op without a GPU
// (model/tests/scan_cuda_emulated.rs); it says nothing of their speed.
//
// scan DIR B L D N HAS_Z SOFTPLUS HAS_RESETS CHUNK
// reads DIR/{x,bc,params,dout}.f32 and DIR/resets.u8; writes DIR/y.f32 and DIR/grads.f32.
#include "shim.h"

#include "../../src/kernels/scan/scan.cu"

#define KERNELS(N) \
    case N: fwd = scan_fwd_##N; bwd = scan_bwd_##N; break;

int main(int argc, char** argv) {
    if (argc != 10) {
        std::fprintf(stderr, "usage: scan DIR B L D N HAS_Z SOFTPLUS HAS_RESETS CHUNK\n");
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
        KERNELS(4) KERNELS(8) KERNELS(16) KERNELS(32) KERNELS(64) KERNELS(128) KERNELS(256)
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
