/* Row-wise training ops for small models on CPU, fp32: cross-entropy, SwiGLU, RMSNorm, each one pass
 * forward and one pass backward.
 *
 * Why: at the proxies' widths these ops move more bytes than they compute, and torch runs each as a
 * chain of separate kernels (log_softmax, nll, their backward and a zero fill; silu, mul and three
 * backward kernels; the norm's square, mean, rsqrt and products), each a pass over memory.
 *
 * "Groups" are independent models stacked on the row axis (lab.pack: member k owns rows
 * [k * rows_per_group, (k + 1) * rows_per_group)): a group's loss mean and gain gradient are summed
 * over its own rows only, in a fixed order (fixed 64-row chunks, then the chunks in order) that does
 * not depend on the thread count or on the other groups, so a member gets the bits its solo model gets.
 * Vectors are GCC/Clang vector extensions (AVX-512 with -march=native where the CPU has it).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define CHUNK 64 /* rows per partial sum of a gain's gradient */

/* mask of the first n lanes (n < W) */
static inline vi head(int n) {
    const vi iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return iota < n;
}

static inline vf ld_part(const float *p, int n, float fill) {
    vf x = splat(fill);
    for (int i = 0; i < n; i++) x[i] = p[i];
    return x;
}

/* ---- cross-entropy ---------------------------------------------------------------------------- */

/* loss[g] = mean over the group's rows of logsumexp(x_i) - x_i[t_i]; lse[i] kept for the backward */
void lab_ce_fwd(const float *x, const int64_t *t, int groups, long rows, int V, float *lse, float *loss,
                int threads) {
    long n = (long)groups * rows;
    float *row_loss = malloc(sizeof(float) * n);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < n; i++) {
        const float *xi = x + i * V;
        int full = V / W * W, rest = V - full;
        vf m = splat(-INFINITY);
        for (int j = 0; j < full; j += W) m = vmax(m, ld(xi + j));
        if (rest) m = vmax(m, ld_part(xi + full, rest, -INFINITY));
        float mx = m[0];
        for (int l = 1; l < W; l++) mx = m[l] > mx ? m[l] : mx;
        vf s = splat(0.0f), vm = splat(mx);
        for (int j = 0; j < full; j += W) s += vexp(ld(xi + j) - vm);
        if (rest) s += vexp(ld_part(xi + full, rest, -INFINITY) - vm);
        float l = mx + logf(hsum(s));
        lse[i] = l;
        row_loss[i] = l - xi[t[i]];
    }
    for (int g = 0; g < groups; g++) {
        double acc = 0.0;
        for (long i = 0; i < rows; i++) acc += row_loss[(long)g * rows + i];
        loss[g] = (float)(acc / (double)rows);
    }
    free(row_loss);
}

/* dx_i = scale[g] (softmax(x_i) - onehot(t_i)), scale[g] = d(loss[g]) / rows */
void lab_ce_bwd(const float *x, const int64_t *t, const float *lse, const float *scale, int groups, long rows,
                int V, float *dx, int threads) {
    long n = (long)groups * rows;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < n; i++) {
        const float *xi = x + i * V;
        float *di = dx + i * V;
        vf l = splat(lse[i]), sc = splat(scale[i / rows]);
        int full = V / W * W, rest = V - full;
        for (int j = 0; j < full; j += W) st(di + j, vexp(ld(xi + j) - l) * sc);
        for (int j = full; j < V; j++) di[j] = expf(xi[j] - lse[i]) * scale[i / rows];
        (void)rest;
        di[t[i]] -= scale[i / rows];
    }
}

/* ---- SwiGLU: h = silu(a) * b = a sigmoid(a) b --------------------------------------------------- */

/* sigmoid(x) = 1 / (1 + e^-x), from e^-|x| <= 1 so the exp never overflows */
static inline vf vsigmoid(vf x) {
    vf ax = vsel(x < splat(0.0f), -x, x);
    vf e = vexp(-ax);
    vf pos = splat(1.0f) / (splat(1.0f) + e);
    return vsel(x < splat(0.0f), e * pos, pos);
}

void lab_swiglu_fwd(const float *a, const float *b, float *h, long n, int threads) {
    long full = n / W * W;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < full; i += W) {
        vf x = ld(a + i);
        st(h + i, x * vsigmoid(x) * ld(b + i));
    }
    for (long i = full; i < n; i++) h[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

/* da = dh b s (1 + a (1 - s)), db = dh a s, s = sigmoid(a) */
void lab_swiglu_bwd(const float *a, const float *b, const float *dh, float *da, float *db, long n, int threads) {
    long full = n / W * W;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < full; i += W) {
        vf x = ld(a + i), y = ld(b + i), g = ld(dh + i), s = vsigmoid(x);
        st(da + i, g * y * s * (splat(1.0f) + x * (splat(1.0f) - s)));
        st(db + i, g * x * s);
    }
    for (long i = full; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-a[i]));
        da[i] = dh[i] * b[i] * s * (1.0f + a[i] * (1.0f - s));
        db[i] = dh[i] * a[i] * s;
    }
}

/* ---- RMSNorm: y = x / rms(x) * w, w per group ------------------------------------------------------ */

static inline float row_dot(const float *a, const float *b, int d) {
    int full = d / W * W;
    vf s = splat(0.0f);
    for (int j = 0; j < full; j += W) s += ld(a + j) * ld(b + j);
    float r = hsum(s);
    for (int j = full; j < d; j++) r += a[j] * b[j];
    return r;
}

void lab_rms_fwd(const float *x, const float *w, float *y, float *rstd, int groups, long rows, int d, float eps,
                 int threads) {
    long n = (long)groups * rows;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < n; i++) {
        const float *xi = x + i * d, *wg = w + (i / rows) * d;
        float *yi = y + i * d;
        float r = 1.0f / sqrtf(row_dot(xi, xi, d) / (float)d + eps);
        rstd[i] = r;
        for (int j = 0; j < d; j++) yi[j] = xi[j] * r * wg[j];
    }
}

/* dx = rstd (g w - xhat mean(g w xhat)), xhat = x rstd; dw[group] = sum over its rows of g xhat */
void lab_rms_bwd(const float *x, const float *w, const float *rstd, const float *g, float *dx, float *dw,
                 int groups, long rows, int d, int threads) {
    long chunks = (rows + CHUNK - 1) / CHUNK;
    float *part = dw ? calloc((size_t)groups * chunks * d, sizeof(float)) : NULL;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long c = 0; c < groups * chunks; c++) {
        long grp = c / chunks, r0 = (c % chunks) * CHUNK, r1 = r0 + CHUNK < rows ? r0 + CHUNK : rows;
        const float *wg = w + grp * d;
        float *pc = part ? part + c * d : NULL;
        for (long r = r0; r < r1; r++) {
            long i = grp * rows + r;
            const float *xi = x + i * d, *gi = g + i * d;
            float *di = dx + i * d, rs = rstd[i], dot = 0.0f;
            for (int j = 0; j < d; j++) dot += gi[j] * wg[j] * xi[j];
            float mean = dot * rs * rs / (float)d;
            for (int j = 0; j < d; j++) {
                di[j] = rs * (gi[j] * wg[j] - xi[j] * mean);
                if (pc) pc[j] += gi[j] * xi[j] * rs;
            }
        }
    }
    if (dw) {
        for (int grp = 0; grp < groups; grp++) {
            float *dg = dw + (long)grp * d;
            memset(dg, 0, sizeof(float) * d);
            for (long c = 0; c < chunks; c++)
                for (int j = 0; j < d; j++) dg[j] += part[(grp * chunks + c) * d + j];
        }
        free(part);
    }
}
