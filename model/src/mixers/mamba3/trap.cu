// CUDA kernels of Mamba-3's trapezoidal recurrence (model/src/mixers/mamba3/trap_cpu.rs, whose
// CPU op is the reference), compiled at run time with NVRTC.
//
// Layouts: qk (b, l, H, 2, R, N) (q then k of each rank), v (b, l, H, R, P), coef (b, l, H, 3)
// (alpha, beta, gamma; 0, 0 where a document starts), y and dy (b, l, H, R, P).
// One warp per (batch row, head), each lane owning the state rows p = lane, lane + 32, ...;
// states live in a global workspace, sums over rows are warp reductions in a fixed order: the
// same bits every run.

#define SPAN 16

__device__ __forceinline__ float warp_sum(float x) {
    for (int m = 16; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    return x;
}

// next = alpha prev + sum_r (gamma v_{t,r}) k_{t,r} + (beta v_{t-1,r}) k_{t-1,r}, row by row.
__device__ __forceinline__ void advance(const float* __restrict__ qk, const float* __restrict__ v,
                                        const float* __restrict__ coef, long row, int t, int h,
                                        int r, int p, int n, const float* prev, float* next) {
    const float* k = qk + row * 2 * r * n + r * n;
    const float* vt = v + row * r * p;
    const float* c = coef + row * 3;
    const float* kb = t > 0 ? qk + (row - h) * 2 * r * n + r * n : 0;
    const float* vb = t > 0 ? v + (row - h) * r * p : 0;
    for (int pi = threadIdx.x; pi < p; pi += 32) {
        const float* o = prev + (long)pi * n;
        float* s = next + (long)pi * n;
        for (int j = 0; j < n; j++) s[j] = c[0] * o[j];
        for (int ri = 0; ri < r; ri++) {
            const float u = c[2] * vt[ri * p + pi];
            for (int j = 0; j < n; j++) s[j] += u * k[ri * n + j];
            if (kb) {
                const float ub = c[1] * vb[ri * p + pi];
                for (int j = 0; j < n; j++) s[j] += ub * kb[ri * n + j];
            }
        }
    }
}

// y = h q per rank; `state` (b, H, P, N) ends as each task's state after its last position.
extern "C" __global__ void trap_fwd(const float* __restrict__ qk, const float* __restrict__ v,
                                    const float* __restrict__ coef, float* __restrict__ y,
                                    float* __restrict__ state, int b, int l, int h, int r, int p,
                                    int n) {
    const int task = blockIdx.x;
    if (task >= b * h) return;
    const int bi = task / h, hi = task % h;
    float* s = state + (long)task * p * n;
    for (int pi = threadIdx.x; pi < p; pi += 32)
        for (int j = 0; j < n; j++) s[(long)pi * n + j] = 0.0f;
    for (int t = 0; t < l; t++) {
        const long row = ((long)bi * l + t) * h + hi;
        // In place: each row reads only its own old values, before writing them.
        advance(qk, v, coef, row, t, h, r, p, n, s, s);
        const float* q = qk + row * 2 * r * n;
        for (int pi = threadIdx.x; pi < p; pi += 32)
            for (int ri = 0; ri < r; ri++) {
                float acc = 0.0f;
                for (int j = 0; j < n; j++) acc += s[(long)pi * n + j] * q[ri * n + j];
                y[row * r * p + ri * p + pi] = acc;
            }
    }
}

// Gradients from dy: dqk, dv, dcoef (see trap_cpu.rs). `ws` per task: (l / SPAN + 1) kept
// states, SPAN + 1 states of a span, G and G_next: (l / SPAN + SPAN + 4) x P x N floats.
extern "C" __global__ void trap_bwd(const float* __restrict__ qk, const float* __restrict__ v,
                                    const float* __restrict__ coef, const float* __restrict__ dy,
                                    float* __restrict__ dqk, float* __restrict__ dv,
                                    float* __restrict__ dcoef, float* __restrict__ ws, int b,
                                    int l, int h, int r, int p, int n) {
    const int task = blockIdx.x;
    if (task >= b * h) return;
    const int bi = task / h, hi = task % h;
    const long pn = (long)p * n;
    const int spans = (l + SPAN - 1) / SPAN;
    float* kept = ws + (long)task * (spans + SPAN + 4) * pn;
    float* states = kept + (long)spans * pn;
    float* g = states + (long)(SPAN + 1) * pn;
    float* gn = g + pn;
    // The state before each span's first position (states[0] as the running state).
    for (int pi = threadIdx.x; pi < p; pi += 32)
        for (int j = 0; j < n; j++) states[(long)pi * n + j] = gn[(long)pi * n + j] = 0.0f;
    for (int t = 0; t < l; t++) {
        if (t % SPAN == 0)
            for (int pi = threadIdx.x; pi < p; pi += 32)
                for (int j = 0; j < n; j++)
                    kept[(t / SPAN) * pn + (long)pi * n + j] = states[(long)pi * n + j];
        advance(qk, v, coef, ((long)bi * l + t) * h + hi, t, h, r, p, n, states, states);
    }
    float alpha_next = 0.0f, beta_next = 0.0f;
    for (int span = spans - 1; span >= 0; span--) {
        const int t0 = span * SPAN, t1 = min((span + 1) * SPAN, l);
        for (int pi = threadIdx.x; pi < p; pi += 32)
            for (int j = 0; j < n; j++) states[(long)pi * n + j] = kept[span * pn + (long)pi * n + j];
        for (int t = t0; t < t1; t++)
            advance(qk, v, coef, ((long)bi * l + t) * h + hi, t, h, r, p, n,
                    states + (t - t0) * pn, states + (t - t0 + 1) * pn);
        for (int t = t1 - 1; t >= t0; t--) {
            const long row = ((long)bi * l + t) * h + hi;
            const float* q = qk + row * 2 * r * n;
            const float* k = q + r * n;
            const float* vt = v + row * r * p;
            const float* c = coef + row * 3;
            const float* kb = t > 0 ? qk + (row - h) * 2 * r * n + r * n : 0;
            const float* vb = t > 0 ? v + (row - h) * r * p : 0;
            const float* dyt = dy + row * r * p;
            const float* hprev = states + (t - t0) * pn;
            const float* hcur = states + (t - t0 + 1) * pn;
            float da = 0.0f, db = 0.0f, dgm = 0.0f;
            // G_t = alpha_{t+1} G_{t+1} + sum_r dy q^T; dv = dW k with dW = gamma G + beta' G'.
            for (int pi = threadIdx.x; pi < p; pi += 32) {
                float* gr = g + (long)pi * n;
                const float* gnr = gn + (long)pi * n;
                for (int j = 0; j < n; j++) gr[j] = alpha_next * gnr[j];
                for (int ri = 0; ri < r; ri++) {
                    const float d = dyt[ri * p + pi];
                    for (int j = 0; j < n; j++) gr[j] += d * q[ri * n + j];
                }
                for (int j = 0; j < n; j++) da += gr[j] * hprev[(long)pi * n + j];
                for (int ri = 0; ri < r; ri++) {
                    float dvv = 0.0f, gk = 0.0f, gkb = 0.0f;
                    for (int j = 0; j < n; j++) {
                        const float w = c[2] * gr[j] + beta_next * gnr[j];
                        dvv += w * k[ri * n + j];
                        gk += gr[j] * k[ri * n + j];
                        if (kb) gkb += gr[j] * kb[ri * n + j];
                    }
                    dv[row * r * p + ri * p + pi] = dvv;
                    dgm += vt[ri * p + pi] * gk;
                    if (vb) db += vb[ri * p + pi] * gkb;
                }
            }
            // dq = h^T dy and dk = dW^T v: sums over the rows, across the warp.
            for (int ri = 0; ri < r; ri++)
                for (int j = 0; j < n; j++) {
                    float dq = 0.0f, dk = 0.0f;
                    for (int pi = threadIdx.x; pi < p; pi += 32) {
                        const float w = c[2] * g[(long)pi * n + j] + beta_next * gn[(long)pi * n + j];
                        dq += hcur[(long)pi * n + j] * dyt[ri * p + pi];
                        dk += w * vt[ri * p + pi];
                    }
                    dq = warp_sum(dq);
                    dk = warp_sum(dk);
                    if (threadIdx.x == 0) {
                        dqk[row * 2 * r * n + ri * n + j] = dq;
                        dqk[row * 2 * r * n + r * n + ri * n + j] = dk;
                    }
                }
            da = warp_sum(da);
            db = warp_sum(db);
            dgm = warp_sum(dgm);
            if (threadIdx.x == 0) {
                dcoef[row * 3] = da;
                dcoef[row * 3 + 1] = db;
                dcoef[row * 3 + 2] = dgm;
            }
            float* tmp = g;
            g = gn;
            gn = tmp;
            alpha_next = c[0];
            beta_next = c[1];
        }
    }
}
