// CUDA kernels of RMSNorm (model/src/layers/norm.rs, whose CPU op is the reference), compiled at
// run time with NVRTC. x, g, out, dx: (R, D) rows; w, dw: (D); rinv: (R), 1 / rms of each row.
//
// One warp per row for the forward and dx: the lanes stride over the row and reduce with a
// fixed butterfly of shuffles. dw is one thread per column summing over the rows in order. No
// atomics: the same bits every run.

#define WARP 32

// The sum of v over the warp's lanes, the same in every lane.
__device__ __forceinline__ float warp_sum(float v) {
    for (int m = WARP / 2; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
}

__device__ __forceinline__ float row_rinv(const float* __restrict__ xr, int d, float eps) {
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += WARP) ss = fmaf(xr[j], xr[j], ss);
    return 1.0f / sqrtf(warp_sum(ss) / d + eps);
}

extern "C" __global__ void rms_fwd(const float* __restrict__ x, const float* __restrict__ w,
                                   float* __restrict__ out, int rows, int d, float eps) {
    const long r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + r * d;
    const float inv = row_rinv(xr, d, eps);
    for (int j = threadIdx.x; j < d; j += WARP) out[r * d + j] = xr[j] * inv * w[j];
}

// dx = r g w - x r^3 <g w, x> / D; rinv keeps r for rms_dw.
extern "C" __global__ void rms_dx(const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ g, float* __restrict__ dx,
                                  float* __restrict__ rinv, int rows, int d, float eps) {
    const long r = blockIdx.x;
    if (r >= rows) return;
    const float *xr = x + r * d, *gr = g + r * d;
    const float inv = row_rinv(xr, d, eps);
    float dot = 0.0f;
    for (int j = threadIdx.x; j < d; j += WARP) dot = fmaf(gr[j] * w[j], xr[j], dot);
    const float k = inv * inv * inv * warp_sum(dot) / d;
    for (int j = threadIdx.x; j < d; j += WARP) dx[r * d + j] = inv * gr[j] * w[j] - xr[j] * k;
    if (threadIdx.x == 0) rinv[r] = inv;
}

// dw[j] = sum over rows of g x r.
extern "C" __global__ void rms_dw(const float* __restrict__ x, const float* __restrict__ g,
                                  const float* __restrict__ rinv, float* __restrict__ dw, int rows,
                                  int d) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float acc = 0.0f;
    for (long r = 0; r < rows; r++) acc = fmaf(g[r * d + j] * x[r * d + j], rinv[r], acc);
    dw[j] = acc;
}
