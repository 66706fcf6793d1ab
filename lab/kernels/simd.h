/* Vector helpers shared by the lab's CPU kernels: 16-float vectors through GCC/Clang vector
 * extensions (AVX-512 registers with -march=native where the CPU has them, two AVX2 ones elsewhere),
 * and a vectorised exp for the softmax-like ops. */
#ifndef LAB_SIMD_H
#define LAB_SIMD_H

#define W 16 /* floats per vector */

typedef float vf __attribute__((vector_size(64), aligned(64)));
typedef int vi __attribute__((vector_size(64), aligned(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4)));  /* unaligned loads and stores */

static inline vf splat(float x) { return (vf){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
static inline vf ld(const float *p) { return (vf)(*(const vfu *)p); }
static inline void st(float *p, vf x) { *(vfu *)p = (vfu)x; }
static inline vf vsel(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }  /* mask ? a : b */
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }

/* e^x, x <= 0 (a softmax after subtracting the row max): 2^n * p(r), n = round(x / ln 2),
 * r = x - n ln 2 in two parts, p the degree-6 Taylor polynomial (|rel err| < 2e-7 on [-ln2/2, ln2/2]). */
static inline vf vexp(vf x) {
    const vf lo = splat(-87.0f);
    vi keep = x >= lo;
    x = vmax(x, lo);
    vf t = x * splat(1.44269504088896341f);
    vf n = (t + splat(12582912.0f)) - splat(12582912.0f); /* round to nearest */
    vf r = x - n * splat(0.693359375f);
    r = r - n * splat(-2.12194440e-4f);
    vf p = splat(1.0f / 720);
    p = p * r + splat(1.0f / 120);
    p = p * r + splat(1.0f / 24);
    p = p * r + splat(1.0f / 6);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return (vf)(((vi)(p * (vf)e)) & keep);
}

static inline float hsum(vf x) {
    float s = 0.0f;
    for (int i = 0; i < W; i++) s += x[i];
    return s;
}

static inline float hmax(vf x) {
    float m = x[0];
    for (int i = 1; i < W; i++) m = x[i] > m ? x[i] : m;
    return m;
}

#endif
