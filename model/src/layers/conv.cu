// CUDA kernels of the causal depthwise conv + SiLU (model/src/layers/conv.rs, whose CPU op is
// the reference), compiled at run time with NVRTC.
//
// x, out, g: (B, L, D) contiguous; p: (D, K + 1) = [the K taps | bias] per channel; starts:
// (B, L) u32, the first position of (b, t)'s document (read only when has_starts).
// pre[b, t, c] = bias[c] + sum_kk p[c, kk] x[b, t - s, c], s = K - 1 - kk, over the taps whose
// input is in the sequence and in t's document; out = silu(pre).
//
// Every kernel takes its inputs, then starts, then its output, then (B, L, D, K, has_starts).
// One thread per element for the forward, dpre and dx (neighbouring threads, neighbouring
// channels: coalesced); the parameters' gradient is one thread per (channel, tap) summing over
// every (b, t) in a fixed order: no atomics, the same bits every run.

__device__ __forceinline__ bool tap_valid(const unsigned* __restrict__ starts, int has_starts,
                                          long row, int t, int s) {
    return t >= s && (!has_starts || t - s >= (int)starts[row]);
}

// pre of element (b, t, c); row = b * L + t.
__device__ __forceinline__ float conv_pre(const float* __restrict__ x,
                                          const float* __restrict__ p,
                                          const unsigned* __restrict__ starts, int has_starts,
                                          long row, int t, int c, int d, int k) {
    const float* pc = p + (long)c * (k + 1);
    float acc = pc[k];
    for (int kk = 0; kk < k; kk++) {
        const int s = k - 1 - kk;
        if (tap_valid(starts, has_starts, row, t, s)) acc = fmaf(pc[kk], x[(row - s) * d + c], acc);
    }
    return acc;
}

__device__ __forceinline__ float sigmoid_of(float v) { return 1.0f / (1.0f + expf(-v)); }

extern "C" __global__ void conv_silu_fwd(const float* __restrict__ x, const float* __restrict__ p,
                                         const unsigned* __restrict__ starts, float* __restrict__ out,
                                         int b, int l, int d, int k, int has_starts) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)b * l * d) return;
    const long row = i / d;
    const int c = (int)(i % d), t = (int)(row % l);
    const float v = conv_pre(x, p, starts, has_starts, row, t, c, d, k);
    out[i] = v * sigmoid_of(v);
}

// dpre = g * silu'(pre).
extern "C" __global__ void conv_silu_dpre(const float* __restrict__ x, const float* __restrict__ p,
                                          const float* __restrict__ g,
                                          const unsigned* __restrict__ starts, float* __restrict__ dpre,
                                          int b, int l, int d, int k, int has_starts) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)b * l * d) return;
    const long row = i / d;
    const int c = (int)(i % d), t = (int)(row % l);
    const float v = conv_pre(x, p, starts, has_starts, row, t, c, d, k);
    const float sg = sigmoid_of(v);
    dpre[i] = g[i] * (sg * (1.0f + v * (1.0f - sg)));
}

// dx[b, u, c] = sum over the taps that read x[b, u, c]: the outputs t = u + s whose tap s is
// valid, p[c, K - 1 - s] dpre[b, t, c].
extern "C" __global__ void conv_silu_dx(const float* __restrict__ p, const float* __restrict__ dpre,
                                        const unsigned* __restrict__ starts, float* __restrict__ gx,
                                        int b, int l, int d, int k, int has_starts) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)b * l * d) return;
    const long row = i / d;
    const int c = (int)(i % d), u = (int)(row % l);
    const float* pc = p + (long)c * (k + 1);
    float acc = 0.0f;
    for (int s = 0; s < k; s++) {
        const int t = u + s;
        if (t >= l) break;
        if (tap_valid(starts, has_starts, row + s, t, s))
            acc = fmaf(pc[k - 1 - s], dpre[(row + s) * d + c], acc);
    }
    gx[i] = acc;
}

// gp[c, kk] = sum over (b, t) of dpre[b, t, c] x[b, t - s, c] (the bias, kk = K: of dpre).
extern "C" __global__ void conv_silu_dparams(const float* __restrict__ x,
                                             const float* __restrict__ dpre,
                                             const unsigned* __restrict__ starts,
                                             float* __restrict__ gp,
                                             int b, int l, int d, int k, int has_starts) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)d * (k + 1)) return;
    // Consecutive threads take consecutive channels of one tap: their reads coalesce.
    const int kk = (int)(i / d), c = (int)(i % d), s = k - 1 - kk;
    float acc = 0.0f;
    for (long row = 0; row < (long)b * l; row++) {
        const int t = (int)(row % l);
        if (kk == k) {
            acc += dpre[row * d + c];
        } else if (tap_valid(starts, has_starts, row, t, s)) {
            acc = fmaf(dpre[row * d + c], x[(row - s) * d + c], acc);
        }
    }
    gp[(long)c * (k + 1) + kk] = acc;
}
