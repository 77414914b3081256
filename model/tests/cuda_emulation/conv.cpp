// Runs the causal conv + SiLU CUDA kernels (model/src/layers/conv.cu) on the CPU through the
// shim (shim.h), for model/tests/cuda_emulated.rs.
//
// conv DIR B L D K HAS_STARTS BLOCK
// reads DIR/{x,p,g}.f32 and DIR/starts.u32; writes DIR/out.f32, DIR/gx.f32 and DIR/gp.f32.
#include "shim.h"

#include "../../src/layers/conv.cu"

int main(int argc, char** argv) {
    if (argc != 8) {
        std::fprintf(stderr, "usage: conv DIR B L D K HAS_STARTS BLOCK\n");
        return 2;
    }
    const std::string dir = argv[1];
    const int b = std::atoi(argv[2]), l = std::atoi(argv[3]), d = std::atoi(argv[4]);
    const int k = std::atoi(argv[5]), has = std::atoi(argv[6]);
    const unsigned block = std::atoi(argv[7]);
    const size_t n = (size_t)b * l * d, np = (size_t)d * (k + 1);
    auto x = load<float>(dir + "/x.f32", n);
    auto p = load<float>(dir + "/p.f32", np);
    auto g = load<float>(dir + "/g.f32", n);
    auto starts = load<unsigned>(dir + "/starts.u32", (size_t)b * l);
    // NaN where a kernel would leave an element unwritten.
    std::vector<float> out(n, NAN), dpre(n, NAN), gx(n, NAN), gp(np, NAN);
    auto grid = [&](size_t count) { return dim3{(unsigned)((count + block - 1) / block), 1, 1}; };
    const dim3 threads{block, 1, 1};
    const unsigned* st = starts.data();
    launch(grid(n), threads, [&] { conv_silu_fwd(x.data(), p.data(), st, out.data(), b, l, d, k, has); });
    launch(grid(n), threads,
           [&] { conv_silu_dpre(x.data(), p.data(), g.data(), st, dpre.data(), b, l, d, k, has); });
    launch(grid(n), threads, [&] { conv_silu_dx(p.data(), dpre.data(), st, gx.data(), b, l, d, k, has); });
    launch(grid(np), threads,
           [&] { conv_silu_dparams(x.data(), dpre.data(), st, gp.data(), b, l, d, k, has); });
    save(dir + "/out.f32", out);
    save(dir + "/gx.f32", gx);
    save(dir + "/gp.f32", gp);
    return 0;
}
