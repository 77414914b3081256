// Runs the SSD state-passing CUDA kernels (model/src/mixers/mamba2/passing.cu) on the CPU through the
// shim (shim.h), for model/tests/cuda_emulated.rs.
//
// passing DIR ROWS C M BLOCK
// reads DIR/{s,g,de}.f32; writes DIR/e.f32 (the forward) and DIR/ds.f32 (the adjoint).
#include "shim.h"

#include "../../src/mixers/mamba2/passing.cu"

int main(int argc, char** argv) {
    if (argc != 6) {
        std::fprintf(stderr, "usage: passing DIR ROWS C M BLOCK\n");
        return 2;
    }
    const std::string dir = argv[1];
    const int rows = std::atoi(argv[2]), c = std::atoi(argv[3]), m = std::atoi(argv[4]);
    const unsigned block = std::atoi(argv[5]);
    const size_t len = (size_t)rows * c * m;
    auto s = load<float>(dir + "/s.f32", len);
    auto g = load<float>(dir + "/g.f32", (size_t)rows * c);
    auto de = load<float>(dir + "/de.f32", len + (size_t)rows * m);
    // NaN where a kernel would leave an element unwritten.
    std::vector<float> e(len + (size_t)rows * m, NAN), ds(len, NAN);
    const dim3 grid{(unsigned)(((size_t)rows * m + block - 1) / block), 1, 1}, threads{block, 1, 1};
    launch(grid, threads, [&] { pass_fwd(s.data(), g.data(), e.data(), rows, c, m); });
    launch(grid, threads, [&] { pass_bwd(de.data(), g.data(), ds.data(), rows, c, m); });
    save(dir + "/e.f32", e);
    save(dir + "/ds.f32", ds);
    return 0;
}
