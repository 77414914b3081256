// Runs Mamba-3's trapezoid CUDA kernels (model/src/mixers/mamba3/trap.cu) on the CPU through the
// shim (shim.h), for model/tests/cuda_emulated.rs.
//
// trap DIR B L H R P N
// reads DIR/{qk,v,coef,dy}.f32; writes DIR/{y,state,dqk,dv,dcoef}.f32.
#include "shim.h"

#include "../../src/mixers/mamba3/trap.cu"

int main(int argc, char** argv) {
    if (argc != 8) {
        std::fprintf(stderr, "usage: trap DIR B L H R P N\n");
        return 2;
    }
    const std::string dir = argv[1];
    const int b = std::atoi(argv[2]), l = std::atoi(argv[3]), h = std::atoi(argv[4]);
    const int r = std::atoi(argv[5]), p = std::atoi(argv[6]), n = std::atoi(argv[7]);
    const size_t rows = (size_t)b * l * h;
    auto qk = load<float>(dir + "/qk.f32", rows * 2 * r * n);
    auto v = load<float>(dir + "/v.f32", rows * r * p);
    auto coef = load<float>(dir + "/coef.f32", rows * 3);
    auto dy = load<float>(dir + "/dy.f32", rows * r * p);
    // NaN where a kernel would leave an element unwritten.
    std::vector<float> y(rows * r * p, NAN), state((size_t)b * h * p * n, NAN);
    std::vector<float> dqk(rows * 2 * r * n, NAN), dv(rows * r * p, NAN), dcoef(rows * 3, NAN);
    const size_t spans = (l + SPAN - 1) / SPAN;
    std::vector<float> ws((size_t)b * h * (spans + SPAN + 4) * p * n, NAN);
    const dim3 grid{(unsigned)(b * h), 1, 1}, warp{32, 1, 1};
    launch(grid, warp, [&] {
        trap_fwd(qk.data(), v.data(), coef.data(), y.data(), state.data(), b, l, h, r, p, n);
    });
    launch(grid, warp, [&] {
        trap_bwd(qk.data(), v.data(), coef.data(), dy.data(), dqk.data(), dv.data(), dcoef.data(),
                 ws.data(), b, l, h, r, p, n);
    });
    save(dir + "/y.f32", y);
    save(dir + "/state.f32", state);
    save(dir + "/dqk.f32", dqk);
    save(dir + "/dv.f32", dv);
    save(dir + "/dcoef.f32", dcoef);
    return 0;
}
