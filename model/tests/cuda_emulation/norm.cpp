// Runs the RMSNorm CUDA kernels (model/src/layers/norm.cu) on the CPU through the shim
// (shim.h), for model/tests/cuda_emulated.rs.
//
// norm DIR ROWS D EPS
// reads DIR/{x,w,g}.f32; writes DIR/out.f32, DIR/dx.f32 and DIR/dw.f32.
#include "shim.h"

#include "../../src/layers/norm.cu"

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: norm DIR ROWS D EPS\n");
        return 2;
    }
    const std::string dir = argv[1];
    const int rows = std::atoi(argv[2]), d = std::atoi(argv[3]);
    const float eps = std::atof(argv[4]);
    const size_t n = (size_t)rows * d;
    auto x = load<float>(dir + "/x.f32", n);
    auto w = load<float>(dir + "/w.f32", d);
    auto g = load<float>(dir + "/g.f32", n);
    // NaN where a kernel would leave an element unwritten.
    std::vector<float> out(n, NAN), dx(n, NAN), rinv(rows, NAN), dw(d, NAN);
    const dim3 per_row{(unsigned)rows, 1, 1}, warp{32, 1, 1};
    launch(per_row, warp, [&] { rms_fwd(x.data(), w.data(), out.data(), rows, d, eps); });
    launch(per_row, warp, [&] { rms_dx(x.data(), w.data(), g.data(), dx.data(), rinv.data(), rows, d, eps); });
    const dim3 cols{(unsigned)((d + 31) / 32), 1, 1};
    launch(cols, warp, [&] { rms_dw(x.data(), g.data(), rinv.data(), dw.data(), rows, d); });
    save(dir + "/out.f32", out);
    save(dir + "/dx.f32", dx);
    save(dir + "/dw.f32", dw);
    return 0;
}
