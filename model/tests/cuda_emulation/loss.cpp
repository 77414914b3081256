// Runs the cross-entropy CUDA kernels (model/src/loss.cu) on the CPU through the shim
// (shim.h), for model/tests/cuda_emulated.rs.
//
// loss DIR N V
// reads DIR/{x,g}.f32 and DIR/t.u32; writes DIR/nll.f32 and DIR/dx.f32.
#include "shim.h"

#include "../../src/loss.cu"

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: loss DIR N V\n");
        return 2;
    }
    const std::string dir = argv[1];
    const int n = std::atoi(argv[2]), v = std::atoi(argv[3]);
    auto x = load<float>(dir + "/x.f32", (size_t)n * v);
    auto g = load<float>(dir + "/g.f32", n);
    auto t = load<unsigned>(dir + "/t.u32", n);
    // NaN where a kernel would leave an element unwritten.
    std::vector<float> nll(n, NAN), dx((size_t)n * v, NAN);
    const dim3 rows{(unsigned)n, 1, 1}, warp{32, 1, 1};
    launch(rows, warp, [&] { ce_fwd(x.data(), t.data(), nll.data(), n, v); });
    launch(rows, warp, [&] { ce_bwd(x.data(), t.data(), g.data(), dx.data(), n, v); });
    save(dir + "/nll.f32", nll);
    save(dir + "/dx.f32", dx);
    return 0;
}
