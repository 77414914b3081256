// CUDA kernels of the SSD's state passing (model/src/mixers/mamba2/passing.rs, whose CPU loops are the
// reference), compiled at run time with NVRTC.
//
// Rows r of c chunk states of m elements each: s = (R, c, m), g = (R, c), e = (R, c + 1, m).
// One thread per (row, element), sequential over the chunks: neighbouring threads read and
// write neighbouring addresses, and each result is one fixed chain of multiply-adds, the same
// bits every run.

// e[0] = 0; e[k + 1] = g[k] e[k] + s[k].
extern "C" __global__ void pass_fwd(const float* __restrict__ s, const float* __restrict__ g,
                                    float* __restrict__ e, int rows, int c, int m) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * m) return;
    const long r = i / m, j = i % m;
    const float* sr = s + r * c * m + j;
    const float* gr = g + r * c;
    float* er = e + r * (c + 1) * m + j;
    float h = 0.0f;
    er[0] = h;
    for (int k = 0; k < c; k++) {
        h = fmaf(gr[k], h, sr[(long)k * m]);
        er[(long)(k + 1) * m] = h;
    }
}

// The adjoint: with a[c] = de[c] and a[k] = g[k] a[k + 1] + de[k], ds[k] = a[k + 1].
extern "C" __global__ void pass_bwd(const float* __restrict__ de, const float* __restrict__ g,
                                    float* __restrict__ ds, int rows, int c, int m) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * m) return;
    const long r = i / m, j = i % m;
    const float* der = de + r * (c + 1) * m + j;
    const float* gr = g + r * c;
    float* dsr = ds + r * c * m + j;
    float a = der[(long)c * m];
    for (int k = c - 1; k >= 0; k--) {
        dsr[(long)k * m] = a;
        a = fmaf(gr[k], a, der[(long)k * m]);
    }
}
