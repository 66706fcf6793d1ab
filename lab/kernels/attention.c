/* Causal self-attention forward and backward for small heads on CPU, fp32.
 *
 * Why: at the proxies' head widths (16-64) torch's CPU flash-attention kernel ran at ~30% of the
 * matmul peak and took a third of a 107k-parameter model's training step. Here every (batch, kv-head)
 * pair is one task: K is transposed once into a (head_dim x T) panel so the score tile Q K^T is a
 * broadcast-FMA over 16 keys at a time with 4 query rows sharing each load; the row softmax uses a
 * vectorised exp. The backward recomputes P from the scores and each row's log-sum-exp (as flash
 * attention does: Dao et al. 2022, arXiv:2205.14135), keeping it in the task's cache-resident scratch
 * rather than writing T^2 floats per head to memory and reading them back. The backward's key-side
 * gradients are computed transposed, dK^T = Q^T dS and dV^T = dO^T P, so they too are vectorised over
 * keys with long inner sums (over queries) instead of over the narrow head width.
 *
 * Written with GCC/Clang vector extensions (vector_size 64): AVX-512 where -march=native has it, two
 * AVX2 registers elsewhere. Layouts: q, k, v, o, dout, dq, dk, dv are (B, heads, T, D) described by
 * element strides (batch, head, time) with the last dimension contiguous; lse is (B, H, T) contiguous
 * (NULL in the forward: not kept). D must be a multiple of 16 and at most 256. H is a multiple
 * of G (grouped-query attention: query head h reads kv head h / (H / G)).
 *
 * Rotary position embeddings (Su et al. 2021, arXiv:2104.09864; rotate-half pairs (j, j + D/2)) are
 * applied here when tables are given: q and k come in unrotated, are rotated as they are copied into
 * the task's scratch, and their gradients are rotated back as they are written, so the model spends no
 * separate passes on them.
 *
 * Each task's arithmetic is the same whatever the batch or thread count, so results are
 * deterministic and a row's bits do not depend on the rows beside it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

/* Register tiles: R rows x KC vectors of accumulators. Measured on a 2-core AVX-512 machine (fp32,
 * T 256, head width 16-64), forward + backward: R 8 x KC 1 and 16 x 1 fastest, 8 x 2 5-10% slower,
 * 4 x 4 12-20% slower, 20 x 1 and more 50% slower (registers spill). */
#ifndef R
#define R 8       /* query (or key) rows per register tile */
#endif
#ifndef KC
#define KC 1      /* key vectors per score tile: 16 keys */
#endif
#define MAXD 256

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static int min_int(int a, int b) { return a < b ? a : b; }

/* panel (D x Tp) = rows (T x D, row stride rs) transposed, zero beyond T */
static void transpose(const float *rows, long rs, int T, int D, int Tp, float *panel) {
    for (int d = 0; d < D; d++) memset(panel + (long)d * Tp + T, 0, sizeof(float) * (Tp - T));
    for (int t0 = 0; t0 < T; t0 += W) {  /* 16 x 16 blocks: both sides stay in L1 */
        int tn = min_int(T - t0, W);
        for (int d = 0; d < D; d++)
            for (int t = 0; t < tn; t++) panel[(long)d * Tp + t0 + t] = rows[(t0 + t) * rs + d];
    }
}


/* one R x (KC vectors) tile of panel_gemm: acc[r][c] = sum_s a[r*ar + s*as] * panel[s*ps + c*W];
 * NR, NV compile-time (the full tile has no branches in its loop) */
static inline __attribute__((always_inline)) void gemm_tile(
        const float *a, long ar, long as, const float *panel, long ps, int sb, int se, float *out, long os,
        float scale, int accumulate, const int NR, const int NV) {
    vf acc[R][KC];
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NV; c++) acc[r][c] = splat(0.0f);
    for (int d = sb; d < se; d++) {
        const float *pr = panel + (long)d * ps;
        vf b[KC];
        for (int c = 0; c < NV; c++) b[c] = ld(pr + c * W);
        for (int r = 0; r < NR; r++) {
            vf x = splat(a[r * ar + d * as]);
            for (int c = 0; c < NV; c++) acc[r][c] += x * b[c];
        }
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NV; c++) {
            float *dst = out + (long)r * os + c * W;
            vf y = acc[r][c] * splat(scale);
            st(dst, accumulate ? ld(dst) + y : y);
        }
}

/* out[r][kb..ke) (+)= scale * sum_{s in [sb, se)} a[r*ar + s*as] * panel[s*ps + kb..ke) for nrows <= R
 * rows; ke - kb a multiple of W. The R x KC accumulators stay in registers through the whole sum. */
static void panel_gemm(const float *a, long ar, long as, int nrows, const float *panel, long ps, int sb, int se,
                       int kb, int ke, float *out, long os, float scale, int accumulate) {
    for (int j0 = kb; j0 < ke; j0 += KC * W) {
        int nv = min_int((ke - j0) / W, KC);
        const float *pj = panel + j0;
        float *oj = out + j0;
        if (nrows == R) {  /* full row tiles: no branches in the loop, whatever the chunk's width */
            switch (nv) {
                case 1: gemm_tile(a, ar, as, pj, ps, sb, se, oj, os, scale, accumulate, R, 1); break;
#if KC > 2
                case 2: gemm_tile(a, ar, as, pj, ps, sb, se, oj, os, scale, accumulate, R, 2); break;
#endif
#if KC > 3
                case 3: gemm_tile(a, ar, as, pj, ps, sb, se, oj, os, scale, accumulate, R, 3); break;
#endif
                default: gemm_tile(a, ar, as, pj, ps, sb, se, oj, os, scale, accumulate, R, KC);
            }
            continue;
        }
        for (int r = 0; r < nrows; r++) {
            switch (nv) {
                case 1: gemm_tile(a + r * ar, ar, as, pj, ps, sb, se, oj + r * os, os, scale, accumulate, 1, 1); break;
#if KC > 2
                case 2: gemm_tile(a + r * ar, ar, as, pj, ps, sb, se, oj + r * os, os, scale, accumulate, 1, 2); break;
#endif
#if KC > 3
                case 3: gemm_tile(a + r * ar, ar, as, pj, ps, sb, se, oj + r * os, os, scale, accumulate, 1, 3); break;
#endif
                default: gemm_tile(a + r * ar, ar, as, pj, ps, sb, se, oj + r * os, os, scale, accumulate, 1, KC);
            }
        }
    }
}

/* o[r][:] = scale * sum_{j < nk} w[r*ws + j] * rows[j*rs][:] for up to R rows, the D = nd * W columns
 * taken KC vectors at a time (accumulators in registers) */
static inline __attribute__((always_inline)) void weights_by_rows(
        const float *w, long ws, int nrows, int nk, const float *rows, long rs, int nd, float scale, float *o,
        long os) {
    for (int c0 = 0; c0 < nd; c0 += KC) {
        int nc = min_int(nd - c0, KC);
        vf acc[R][KC];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < KC; c++) acc[r][c] = splat(0.0f);
        for (int j = 0; j < nk; j++) {
            const float *row = rows + j * rs + c0 * W;
            vf x[KC];
            for (int c = 0; c < KC; c++) x[c] = c < nc ? ld(row + c * W) : splat(0.0f);
            for (int r = 0; r < R; r++) {
                vf a = splat(r < nrows ? w[r * ws + j] : 0.0f);
                for (int c = 0; c < KC; c++) acc[r][c] += a * x[c];
            }
        }
        for (int r = 0; r < nrows; r++)
            for (int c = 0; c < nc; c++) st(o + r * os + (c0 + c) * W, acc[r][c] * splat(scale));
    }
}

/* rows (T x D, row stride rs) rotated by the RoPE tables cs, sn (T x D/2) into out (T x D, stride D);
 * without tables a plain copy. back: the transposed rotation (a gradient taken back to the input). */
static void rope_rows(const float *rows, long rs, int T, int D, const float *cs, const float *sn, int back,
                      float *out, long os) {
    int h = D / 2;
    for (int t = 0; t < T; t++) {
        const float *x = rows + t * rs, *c = cs ? cs + (long)t * h : NULL, *sv = sn ? sn + (long)t * h : NULL;
        float *y = out + t * os;
        if (!c) {
            memcpy(y, x, sizeof(float) * D);
            continue;
        }
        float sign = back ? -1.0f : 1.0f;
        for (int j = 0; j < h; j++) {
            float x1 = x[j], x2 = x[j + h], sj = sign * sv[j];
            y[j] = x1 * c[j] - x2 * sj;
            y[j + h] = x2 * c[j] + x1 * sj;
        }
    }
}

/* zeros after the diagonal, up to the next multiple of KC * W keys (the key-chunk sums read that far) */
static void pad_row(float *row, int i, int Tp) {
    int end = min_int(round_up(i + 1, KC * W), Tp);
    if (end > i + 1) memset(row + i + 1, 0, sizeof(float) * (end - i - 1));
}

/* S rows i0.. (up to R) = scale Q K^T, masked (keys j > i: -inf), nk = the tile's keys rounded to W */
static inline void score_rows(const float *qb, long qst, int i0, int nrows, const float *kt, int Tp, int D, int nk,
                              float *s, float scale) {
    const vi iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    panel_gemm(qb + i0 * qst, qst, 1, nrows, kt, Tp, 0, D, 0, nk, s, Tp, scale, 0);
    for (int r = 0; r < nrows; r++) {
        int i = i0 + r;
        for (int j = nk - W; j >= 0 && j + W - 1 > i; j -= W) {  /* only the diagonal's vectors */
            float *sj = s + (long)r * Tp + j;
            st(sj, vsel(iota + j <= i, ld(sj), splat(-INFINITY)));
        }
    }
}

/* one query head of one batch row: o, and each row's log-sum-exp (NULL: not kept) */
static inline __attribute__((always_inline)) void fwd_head(
        const float *qb, long qst, const float *kt, const float *vb, long vst, float *ob, long ost, float *lse,
        float *s, int T, int Tp, int D, int nd, float scale) {
    for (int i0 = 0; i0 < T; i0 += R) {
        int nrows = min_int(T - i0, R), nk = round_up(i0 + nrows, W);
        score_rows(qb, qst, i0, nrows, kt, Tp, D, nk, s, scale);
        for (int r = 0; r < nrows; r++) {
            float *sr = s + (long)r * Tp;
            vf m = splat(-INFINITY);
            for (int j = 0; j < nk; j += W) m = vmax(ld(sr + j), m);
            float mx = hmax(m);
            vf vm = splat(mx), sum = splat(0.0f);
            for (int j = 0; j < nk; j += W) {
                vf e = vexp(ld(sr + j) - vm);
                st(sr + j, e);
                sum += e;
            }
            float total = hsum(sum);
            vf inv = splat(1.0f / total);
            for (int j = 0; j < nk; j += W) st(sr + j, ld(sr + j) * inv);
            if (lse) lse[i0 + r] = mx + logf(total);
        }
        weights_by_rows(s, Tp, nrows, i0 + nrows, vb, vst, nd, 1.0f, ob + i0 * ost, ost);
    }
}

/* one query head's share of the backward: P recomputed from the scores and the forward's
 * log-sum-exp (into p), dS into ds, dq; dK^T and dV^T of its kv head accumulated into dkt, dvt
 * (D x Tp). p and ds stay in cache for the key-side sums. */
static inline __attribute__((always_inline)) void bwd_head(
        const float *qb, long qst, const float *kt, const float *kb, long kst, const float *vt, const float *ob,
        long ost, const float *lse, const float *dob, long dost, float *dqb, long dqst, float *p, float *ds,
        float *dkt, float *dvt, int T, int Tp, int D, int nd, float scale) {
    for (int i0 = 0; i0 < T; i0 += R) {  /* P, dS = P (dP - rowsum(dO o O)), dQ = scale dS K */
        int nrows = min_int(T - i0, R), nk = round_up(i0 + nrows, W);
        float *pr0 = p + (long)i0 * Tp, *dsr0 = ds + (long)i0 * Tp;
        score_rows(qb, qst, i0, nrows, kt, Tp, D, nk, pr0, scale);
        panel_gemm(dob + i0 * dost, dost, 1, nrows, vt, Tp, 0, D, 0, nk, dsr0, Tp, 1.0f, 0);  /* dP */
        for (int r = 0; r < nrows; r++) {
            int i = i0 + r;
            const float *dor = dob + i * dost, *orow = ob + i * ost;
            vf acc = splat(0.0f);
            for (int c = 0; c < nd; c++) acc += ld(dor + c * W) * ld(orow + c * W);
            vf di = splat(hsum(acc)), l = splat(lse[i]);
            float *pr = pr0 + (long)r * Tp, *dsr = dsr0 + (long)r * Tp;
            for (int j = 0; j < nk; j += W) {
                vf pj = vexp(ld(pr + j) - l);  /* 0 past i: exp(-inf) */
                st(pr + j, pj);
                st(dsr + j, pj * (ld(dsr + j) - di));
            }
            pad_row(pr, nk - 1, Tp);
            pad_row(dsr, nk - 1, Tp);
        }
        weights_by_rows(dsr0, Tp, nrows, i0 + nrows, kb, kst, nd, scale, dqb + i0 * dqst, dqst);
    }
    for (int kc = 0; kc < T; kc += KC * W) {  /* keys kc.., queries i >= kc (dS, P are 0 above the diagonal) */
        int ke = min_int(kc + KC * W, Tp);
        for (int d0 = 0; d0 < D; d0 += R) {
            int nr = min_int(R, D - d0);
            panel_gemm(qb + d0, 1, qst, nr, ds, Tp, kc, T, kc, ke, dkt + (long)d0 * Tp, Tp, scale, 1);
            panel_gemm(dob + d0, 1, dost, nr, p, Tp, kc, T, kc, ke, dvt + (long)d0 * Tp, Tp, 1.0f, 1);
        }
    }
}

#define DISPATCH(call)                                                  \
    switch (nd) {                                                       \
        case 1: { const int nd_ = 1; call; break; }                      \
        case 2: { const int nd_ = 2; call; break; }                      \
        case 3: { const int nd_ = 3; call; break; }                      \
        case 4: { const int nd_ = 4; call; break; }                      \
        case 8: { const int nd_ = 8; call; break; }                      \
        default: { const int nd_ = nd; call; break; }                    \
    }

void lab_attn_fwd(const float *q, const float *k, const float *v, const float *cs, const float *sn, float *o,
                  float *lse, int B, int H, int G, int T, int D,
                  long qsb, long qsh, long qst, long ksb, long ksh, long kst,
                  long vsb, long vsh, long vst, long osb, long osh, long ost, float scale, int threads) {
    int Tp = round_up(T, W), rep = H / G, nd = D / W;
    size_t rows = sizeof(float) * (size_t)T * D;
#pragma omp parallel num_threads(threads)
    {
        float *kt = aligned_alloc(64, sizeof(float) * (size_t)D * Tp);
        float *s = aligned_alloc(64, sizeof(float) * (size_t)R * Tp);
        float *qr = aligned_alloc(64, rows), *kr = aligned_alloc(64, rows);
#pragma omp for schedule(dynamic)
        for (int task = 0; task < B * G; task++) {
            int b = task / G, g = task % G;
            rope_rows(k + b * ksb + g * ksh, kst, T, D, cs, sn, 0, kr, D);
            transpose(kr, D, T, D, Tp, kt);
            const float *vb = v + b * vsb + g * vsh;
            for (int h = g * rep; h < (g + 1) * rep; h++) {
                rope_rows(q + b * qsb + h * qsh, qst, T, D, cs, sn, 0, qr, D);
                float *ob = o + b * osb + h * osh, *lb = lse ? lse + (long)(b * H + h) * T : NULL;
                DISPATCH(fwd_head(qr, D, kt, vb, vst, ob, ost, lb, s, T, Tp, D, nd_, scale))
            }
        }
        free(kt);
        free(s);
        free(qr);
        free(kr);
    }
}

void lab_attn_bwd(const float *q, const float *k, const float *v, const float *cs, const float *sn, const float *o,
                  const float *lse, const float *dout, float *dq, float *dk, float *dv, int B, int H, int G, int T,
                  int D,
                  long qsb, long qsh, long qst, long ksb, long ksh, long kst, long vsb, long vsh, long vst,
                  long osb, long osh, long ost, long dosb, long dosh, long dost,
                  long dqsb, long dqsh, long dqst, long dksb, long dksh, long dkst,
                  long dvsb, long dvsh, long dvst, float scale, int threads) {
    int Tp = round_up(T, W), rep = H / G, nd = D / W;
    size_t panel = sizeof(float) * (size_t)D * Tp, rows = sizeof(float) * (size_t)T * D;
#pragma omp parallel num_threads(threads)
    {
        float *vt = aligned_alloc(64, panel), *kt = aligned_alloc(64, panel);
        float *dkt = aligned_alloc(64, panel), *dvt = aligned_alloc(64, panel);
        float *ds = aligned_alloc(64, sizeof(float) * (size_t)T * Tp), *pp = aligned_alloc(64, sizeof(float) * (size_t)T * Tp);
        float *qr = aligned_alloc(64, rows), *kr = aligned_alloc(64, rows), *gr = aligned_alloc(64, rows);
#pragma omp for schedule(dynamic)
        for (int task = 0; task < B * G; task++) {
            int b = task / G, g = task % G;
            rope_rows(k + b * ksb + g * ksh, kst, T, D, cs, sn, 0, kr, D);
            transpose(kr, D, T, D, Tp, kt);
            transpose(v + b * vsb + g * vsh, vst, T, D, Tp, vt);
            memset(dkt, 0, panel);
            memset(dvt, 0, panel);
            for (int h = g * rep; h < (g + 1) * rep; h++) {
                rope_rows(q + b * qsb + h * qsh, qst, T, D, cs, sn, 0, qr, D);
                const float *ob = o + b * osb + h * osh;
                const float *dob = dout + b * dosb + h * dosh, *lb = lse + (long)(b * H + h) * T;
                DISPATCH(bwd_head(qr, D, kt, kr, D, vt, ob, ost, lb, dob, dost, gr, D, pp, ds, dkt, dvt, T, Tp, D, nd_,
                                  scale))
                rope_rows(gr, D, T, D, cs, sn, 1, dq + b * dqsb + h * dqsh, dqst);  /* dq: rotated back */
            }
            float *dvb = dv + b * dvsb + g * dvsh;
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++) {
                    gr[(long)t * D + d] = dkt[(long)d * Tp + t];
                    dvb[t * dvst + d] = dvt[(long)d * Tp + t];
                }
            rope_rows(gr, D, T, D, cs, sn, 1, dk + b * dksb + g * dksh, dkst);
        }
        free(vt);
        free(kt);
        free(dkt);
        free(dvt);
        free(ds);
        free(pp);
        free(qr);
        free(kr);
        free(gr);
    }
}
