// CUDA kernels of the fused selective scan: the same math and packed layout as the CPU kernel
// (scan/cpu.rs), compiled at run time with NVRTC.
//
// Inputs, contiguous: x = (S, B, L, D) = [u | delta | z?]; bc = (B, L, 2N) = [B | C];
// params = (D, N + 2) = [A | D | delta_bias]; resets = (B, L) u8, nonzero = reset before step t.
//
// One thread per (batch row, channel), the state of N floats in registers. Blocks are one warp
// of 32 consecutive channels of one batch row, so the loads of u, delta, z are coalesced and
// B_t, C_t are the same address for the whole warp. The backward reduces dB and dC over the
// warp with a fixed butterfly of shuffles and over warps in a second kernel, in a fixed order:
// no atomics, the same bits every run.

#define WARP 32

__device__ __forceinline__ float softplus_f(float x) {
    return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
}

__device__ __forceinline__ float sigmoid_f(float x) {
    float e = expf(-fabsf(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

struct Dims {
    int b, l, d, has_z, softplus, has_resets, chunk;
};

// Step t of the recurrence for channel c of batch row bi: the reset, dt = softplus(delta +
// bias), then h <- exp(dt A) h + dt u B_t. Returns u; writes dt.
template <int N>
__device__ __forceinline__ float advance(float (&h)[N], const float (&a)[N], float bias,
                                         const float* __restrict__ x, const float* __restrict__ bc,
                                         const unsigned char* __restrict__ resets, const Dims& dm,
                                         int bi, int t, int c, float& dt) {
    const long bld = (long)dm.b * dm.l * dm.d;
    const long row = (long)bi * dm.l + t;
    const long off = row * dm.d + c;
    if (dm.has_resets && resets[row]) {
#pragma unroll
        for (int k = 0; k < N; k++) h[k] = 0.0f;
    }
    const float v = x[bld + off] + bias;
    dt = dm.softplus ? softplus_f(v) : v;
    const float u = x[off];
    const float du = dt * u;
    const float* bt = bc + row * 2 * N;
#pragma unroll
    for (int k = 0; k < N; k++) h[k] = fmaf(expf(dt * a[k]), h[k], du * bt[k]);
    return u;
}

template <int N>
__device__ void scan_fwd(const float* __restrict__ x, const float* __restrict__ bc,
                         const float* __restrict__ params, const unsigned char* __restrict__ resets,
                         float* __restrict__ y, Dims dm) {
    const int bi = blockIdx.y;
    const int c = blockIdx.x * WARP + threadIdx.x;
    if (c >= dm.d) return;
    const long bld = (long)dm.b * dm.l * dm.d;
    const float* p = params + (long)c * (N + 2);
    float a[N];
#pragma unroll
    for (int k = 0; k < N; k++) a[k] = p[k];
    const float dskip = p[N], bias = p[N + 1];
    float h[N];
#pragma unroll
    for (int k = 0; k < N; k++) h[k] = 0.0f;
    for (int t = 0; t < dm.l; t++) {
        float dt;
        const float u = advance<N>(h, a, bias, x, bc, resets, dm, bi, t, c, dt);
        const long off = ((long)bi * dm.l + t) * dm.d + c;
        const float* ct = bc + ((long)bi * dm.l + t) * 2 * N + N;
        float acc = 0.0f;
#pragma unroll
        for (int k = 0; k < N; k++) acc = fmaf(h[k], ct[k], acc);
        float out = fmaf(dskip, u, acc);
        if (dm.has_z) {
            const float z = x[2 * bld + off];
            out *= z * sigmoid_f(z);
        }
        y[off] = out;
    }
}

// Backward. Per thread: a forward pass storing the state at the end of every chunk (ckpt),
// then the chunks last to first: recompute the chunk's states into hbuf, run the reverse
// recurrence through them. Scratch layouts put the thread index last, so accesses coalesce.
//
// Outputs: gx = [du | ddelta | dz?] (S, B, L, D); dbc_part (B, W, L, 2N) per-warp partials of
// dB | dC (W = warps per row); dpar_part (B, D, N + 2) per-row partials of dA | dD | d_bias.
template <int N>
__device__ void scan_bwd(const float* __restrict__ x, const float* __restrict__ bc,
                         const float* __restrict__ params, const unsigned char* __restrict__ resets,
                         const float* __restrict__ dout, float* __restrict__ gx,
                         float* __restrict__ dbc_part, float* __restrict__ dpar_part,
                         float* __restrict__ ckpt, float* __restrict__ hbuf, Dims dm) {
    const int bi = blockIdx.y;
    const int lane = threadIdx.x;
    const int c = blockIdx.x * WARP + lane;
    const bool live = c < dm.d;
    // Dead lanes (past the last channel) run with zeros: the warp's shuffles need all lanes.
    const int cc = live ? c : 0;
    const long nthreads = (long)gridDim.x * WARP * gridDim.y;
    const long tid = ((long)bi * gridDim.x + blockIdx.x) * WARP + lane;
    const long bld = (long)dm.b * dm.l * dm.d;
    const int kc = dm.chunk;
    const int nchunks = (dm.l + kc - 1) / kc;
    const float* p = params + (long)cc * (N + 2);
    float a[N];
#pragma unroll
    for (int k = 0; k < N; k++) a[k] = live ? p[k] : 0.0f;
    const float dskip = live ? p[N] : 0.0f, bias = live ? p[N + 1] : 0.0f;

    // Pass 1: checkpoints (state at the end of each chunk but the last).
    {
        float h[N];
#pragma unroll
        for (int k = 0; k < N; k++) h[k] = 0.0f;
        for (int t = 0; t < (nchunks - 1) * kc; t++) {
            float dt;
            advance<N>(h, a, bias, x, bc, resets, dm, bi, t, cc, dt);
            if ((t + 1) % kc == 0) {
#pragma unroll
                for (int k = 0; k < N; k++) ckpt[((long)(t / kc) * N + k) * nthreads + tid] = h[k];
            }
        }
    }

    float dh[N], da_acc[N];
#pragma unroll
    for (int k = 0; k < N; k++) {
        dh[k] = 0.0f;
        da_acc[k] = 0.0f;
    }
    float dd_acc = 0.0f, dbias_acc = 0.0f;
    const int nw = gridDim.x;
    for (int ci = nchunks - 1; ci >= 0; ci--) {
        const int t0 = ci * kc;
        const int t1 = min(t0 + kc, dm.l);
        // Recompute this chunk's states.
        float h[N];
#pragma unroll
        for (int k = 0; k < N; k++)
            h[k] = ci == 0 ? 0.0f : ckpt[((long)(ci - 1) * N + k) * nthreads + tid];
        for (int t = t0; t < t1; t++) {
            float dt;
            advance<N>(h, a, bias, x, bc, resets, dm, bi, t, cc, dt);
#pragma unroll
            for (int k = 0; k < N; k++) hbuf[((long)(t - t0) * N + k) * nthreads + tid] = h[k];
        }
        // Reverse recurrence through the chunk.
        for (int t = t1 - 1; t >= t0; t--) {
            const int i = t - t0;
            const long row = (long)bi * dm.l + t;
            const long off = row * dm.d + cc;
            const bool reset = dm.has_resets && resets[row];
            const float v = x[bld + off] + bias;
            float dt = v, sg = 1.0f;
            if (dm.softplus) {
                dt = softplus_f(v);
                sg = sigmoid_f(v);
            }
            const float u = x[off];
            const float g = live ? dout[off] : 0.0f;
            float dy = g, zs = 1.0f, z = 0.0f;
            if (dm.has_z) {
                z = x[2 * bld + off];
                zs = z * sigmoid_f(z);
                dy = g * zs;
            }
            const float* bt = bc + row * 2 * N;
            const float dtu = dt * u;
            float hb = 0.0f, hda = 0.0f, yc = 0.0f;
            float pb[N], pc[N];
#pragma unroll
            for (int k = 0; k < N; k++) {
                const float ht = hbuf[((long)i * N + k) * nthreads + tid];
                float hp = 0.0f;
                if (!reset) {
                    if (i > 0) {
                        hp = hbuf[((long)(i - 1) * N + k) * nthreads + tid];
                    } else if (ci > 0) {
                        hp = ckpt[((long)(ci - 1) * N + k) * nthreads + tid];
                    }
                }
                const float da = expf(dt * a[k]);
                yc = fmaf(ht, bt[N + k], yc);
                dh[k] = fmaf(dy, bt[N + k], dh[k]);
                // Padding lanes add exact zeros, whatever channel 0's values.
                pc[k] = live ? dy * ht : 0.0f;
                pb[k] = live ? dh[k] * dtu : 0.0f;
                hb = fmaf(dh[k], bt[k], hb);
                const float dda = dh[k] * hp * da;
                da_acc[k] = fmaf(dda, dt, da_acc[k]);
                hda = fmaf(dda, a[k], hda);
                dh[k] *= da;
            }
            if (reset) {
#pragma unroll
                for (int k = 0; k < N; k++) dh[k] = 0.0f;
            }
            dd_acc = fmaf(dy, u, dd_acc);
            const float ddt = fmaf(u, hb, hda) * sg;
            dbias_acc += ddt;
            if (live) {
                gx[off] = fmaf(dt, hb, dy * dskip);
                gx[bld + off] = ddt;
                if (dm.has_z) {
                    const float y = fmaf(dskip, u, yc);
                    const float s = sigmoid_f(z);
                    gx[2 * bld + off] = g * y * s * (1.0f + z * (1.0f - s));
                }
            }
            // dB, dC summed over the warp's channels: a fixed butterfly, deterministic.
#pragma unroll
            for (int k = 0; k < N; k++) {
#pragma unroll
                for (int m = WARP / 2; m > 0; m /= 2) {
                    pb[k] += __shfl_xor_sync(0xffffffffu, pb[k], m);
                    pc[k] += __shfl_xor_sync(0xffffffffu, pc[k], m);
                }
            }
            if (lane == 0) {
                float* dst = dbc_part + (((long)bi * nw + blockIdx.x) * dm.l + t) * 2 * N;
#pragma unroll
                for (int k = 0; k < N; k++) {
                    dst[k] = pb[k];
                    dst[N + k] = pc[k];
                }
            }
        }
    }
    if (live) {
        float* pp = dpar_part + ((long)bi * dm.d + c) * (N + 2);
#pragma unroll
        for (int k = 0; k < N; k++) pp[k] = da_acc[k];
        pp[N] = dd_acc;
        pp[N + 1] = dbias_acc;
    }
}

// dbc (B, L, 2N) = sum over warps w, in order, of dbc_part (B, W, L, 2N).
extern "C" __global__ void scan_reduce_dbc(const float* __restrict__ part, float* __restrict__ out,
                                           int b, int w, long row_len) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)b * row_len) return;
    const long bi = i / row_len, j = i % row_len;
    float s = 0.0f;
    for (int k = 0; k < w; k++) s += part[(bi * w + k) * row_len + j];
    out[i] = s;
}

// dparams (D, N + 2) = sum over batch rows, in order, of dpar_part (B, D, N + 2).
extern "C" __global__ void scan_reduce_params(const float* __restrict__ part,
                                              float* __restrict__ out, int b, long len) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    float s = 0.0f;
    for (int k = 0; k < b; k++) s += part[k * len + i];
    out[i] = s;
}

#define SCAN_KERNELS(N)                                                                         \
    extern "C" __global__ void scan_fwd_##N(const float* x, const float* bc, const float* params, \
                                            const unsigned char* resets, float* y, Dims dm) {     \
        scan_fwd<N>(x, bc, params, resets, y, dm);                                              \
    }                                                                                           \
    extern "C" __global__ void scan_bwd_##N(const float* x, const float* bc, const float* params, \
                                            const unsigned char* resets, const float* dout,       \
                                            float* gx, float* dbc_part, float* dpar_part,         \
                                            float* ckpt, float* hbuf, Dims dm) {                  \
        scan_bwd<N>(x, bc, params, resets, dout, gx, dbc_part, dpar_part, ckpt, hbuf, dm);      \
    }

SCAN_KERNELS(4)
SCAN_KERNELS(8)
SCAN_KERNELS(16)
SCAN_KERNELS(32)
SCAN_KERNELS(64)
SCAN_KERNELS(128)
SCAN_KERNELS(256)
