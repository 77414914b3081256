// CUDA kernels of the cross-entropy op (model/src/loss.rs, whose CPU op is the reference),
// compiled at run time with NVRTC. x: (N, V) logits; t: (N) u32 targets; out: (N) nll;
// g: (N) gradient of the nll; dx: (N, V).
//
// One warp per row: the lanes stride over the vocabulary and reduce with a fixed butterfly of
// shuffles, the same bits every run. A target outside the vocabulary gives NaN (the CPU op
// refuses it by name; the device has no way to say so).

#define WARP 32
// NVRTC has no math.h: the lowest float starts the max, 0/0 is the NaN of a bad target.
#define LOWEST (-3.402823466e38f)
#define BAD_TARGET (0.0f / 0.0f)

__device__ __forceinline__ float warp_max(float v) {
    for (int m = WARP / 2; m > 0; m /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, m));
    return v;
}

__device__ __forceinline__ float warp_add(float v) {
    for (int m = WARP / 2; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
}

// log-sum-exp of a row, the same in every lane.
__device__ __forceinline__ float row_lse(const float* __restrict__ xr, int v) {
    float m = LOWEST;
    for (int j = threadIdx.x; j < v; j += WARP) m = fmaxf(m, xr[j]);
    m = warp_max(m);
    float s = 0.0f;
    for (int j = threadIdx.x; j < v; j += WARP) s += expf(xr[j] - m);
    return m + logf(warp_add(s));
}

extern "C" __global__ void ce_fwd(const float* __restrict__ x, const unsigned* __restrict__ t,
                                  float* __restrict__ out, int n, int v) {
    const long r = blockIdx.x;
    if (r >= n) return;
    const float* xr = x + r * v;
    const float l = row_lse(xr, v);
    if (threadIdx.x == 0) out[r] = t[r] < (unsigned)v ? l - xr[t[r]] : BAD_TARGET;
}

// dx = (softmax(x) - onehot(t)) g.
extern "C" __global__ void ce_bwd(const float* __restrict__ x, const unsigned* __restrict__ t,
                                  const float* __restrict__ g, float* __restrict__ dx, int n, int v) {
    const long r = blockIdx.x;
    if (r >= n) return;
    const float* xr = x + r * v;
    const float l = row_lse(xr, v), gr = g[r];
    const unsigned tr = t[r];
    for (int j = threadIdx.x; j < v; j += WARP) {
        const float p = expf(xr[j] - l);
        dx[r * v + j] = tr < (unsigned)v ? (p - ((unsigned)j == tr ? 1.0f : 0.0f)) * gr : BAD_TARGET;
    }
}
