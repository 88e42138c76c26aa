/* The streaming BC-ResNet step as one C call: kwsbench's "native" streaming runtime.
 *
 * kwsbench/stream/native.py turns a StreamingBCResNet into a program, a list of ops over float32 buffers
 * it allocates, and calls kws_step(program) once per hop. Why C: a 100 ms step of BC-ResNet-1 is about
 * 0.3M multiply-adds in ~180 graph nodes; graph runtimes pay 0.4-0.9 us of dispatch per node and 13 us per
 * call, which is most of their 150 us. Here an op costs what its arithmetic costs.
 *
 * Layout: every activation is time-major, channels innermost, [frames][frequencies][channels], so that
 * (1) the inner loops run over channels (convolutions are depthwise or 1x1 across channels) and
 * (2) a layer's past frames sit right before its new ones: the state of a causal convolution, a delay line
 * or the window mean is the first `past` frames of its work buffer, PUSH appends the hop's new frames and
 * SHIFT (run after every op has read them) keeps the last `past` for the next hop.
 *
 * The frontend computes the hop's log-mel frames with a radix-2 FFT (the real n_fft-point DFT as an
 * n_fft/2-point complex one), vectorised across the hop's frames.
 */
#include <stdint.h>
#include <string.h>

enum {
    OP_FRONTEND = 1,
    OP_PUSH = 2,
    OP_SHIFT = 3,
    OP_CONV = 4,
    OP_DEPTHWISE = 5,
    OP_AFFINE = 6,
    OP_RELU = 7,
    OP_SILU = 8,
    OP_MERGE = 9,
    OP_MEAN = 10,
    OP_FREQUENCY_MEAN = 11,
};

enum { NI = 16, NP = 12 }; /* ints and pointers per op: must match native.py */

typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));

/* exp(x) for SiLU in plain arithmetic, so that the loop vectorises (libm's expf is a call per element):
 * 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2], p the degree-6 Taylor polynomial: relative error below
 * 2e-7 (float32 rounding is 6e-8). Adding and subtracting 1.5 * 2^23 rounds to the nearest integer. */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
    const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    union { float f; int32_t i; } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

/* log(x) for x > 0 normal, vectorisable: Cephes' logf (x = m 2^e, m in [sqrt(1/2), sqrt(2)), a degree-9
 * polynomial in m - 1), about 1 ulp. */
static inline float log_approx(float x) {
    union { float f; int32_t i; } u = {.f = x};
    float e = (float)(((u.i >> 23) & 0xff) - 126);
    u.i = (u.i & 0x007fffff) | 0x3f000000; /* m in [0.5, 1) */
    float m = u.f;
    const int low = m < 0.70710678f;
    e = low ? e - 1.0f : e;
    m = low ? m + m - 1.0f : m - 1.0f;
    const float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z - 2.12194440e-4f * e - 0.5f * z;
    return m + y + 0.693359375f * e;
}

/* The hop's log-mel frames. Arrays indexed [bin][frame] with the frames padded to 8-float vectors (nv of
 * them), so that every butterfly runs over all the hop's frames at once; padded frames stay zero. */
static void frontend(const int32_t *ip, void *const *pp) {
    const int n = ip[0], hop = ip[1], win = ip[2], half = ip[3], n_mels = ip[4], nv = (n + 7) / 8;
    const float *samples = pp[0], *window = pp[1], *twiddle = pp[2], *post = pp[3], *mel_w = pp[4];
    const int32_t *bitrev = pp[5], *mel_start = pp[6], *mel_count = pp[7];
    v8 *re = pp[8], *im = pp[9], *power = pp[10];
    float *out = pp[11];
    float eps; /* log(mel + eps), its float32 bits in ip[5] */
    memcpy(&eps, ip + 5, sizeof eps);

    /* z[m] = x[2m] + i x[2m + 1], windowed, zero past the window, in bit-reversed order. */
    for (int m = 0; m < half; ++m) {
        float *zr = (float *)(re + bitrev[m] * nv), *zi = (float *)(im + bitrev[m] * nv);
        const int a = 2 * m, b = 2 * m + 1;
        const float wa = a < win ? window[a] : 0.0f, wb = b < win ? window[b] : 0.0f;
        for (int j = 0; j < n; ++j) {
            zr[j] = wa * samples[j * hop + a];
            zi[j] = wb * samples[j * hop + b];
        }
    }
    /* Radix-2 decimation in time. */
    for (int size = 2; size <= half; size *= 2) {
        const int h = size / 2, stride = half / size;
        for (int start = 0; start < half; start += size) {
            for (int k = 0; k < h; ++k) {
                const float wr = twiddle[2 * k * stride], wi = twiddle[2 * k * stride + 1];
                v8 *ar = re + (start + k) * nv, *ai = im + (start + k) * nv;
                v8 *br = re + (start + k + h) * nv, *bi = im + (start + k + h) * nv;
                for (int v = 0; v < nv; ++v) {
                    const v8 tr = wr * br[v] - wi * bi[v], ti = wr * bi[v] + wi * br[v];
                    br[v] = ar[v] - tr;
                    bi[v] = ai[v] - ti;
                    ar[v] += tr;
                    ai[v] += ti;
                }
            }
        }
    }
    /* X[k] = E[k] + W^k O[k]: E, O the DFTs of the even and odd samples, from Z[k] and conj(Z[half - k]). */
    for (int k = 0; k <= half; ++k) {
        const int k1 = k % half, k2 = (half - k) % half;
        const float cr = post[2 * k], ci = post[2 * k + 1];
        const v8 *ar = re + k1 * nv, *ai = im + k1 * nv, *br = re + k2 * nv, *bi = im + k2 * nv;
        v8 *pw = power + k * nv;
        for (int v = 0; v < nv; ++v) {
            const v8 er = 0.5f * (ar[v] + br[v]), ei = 0.5f * (ai[v] - bi[v]);
            const v8 or_ = 0.5f * (ai[v] + bi[v]), oi = -0.5f * (ar[v] - br[v]);
            const v8 xr = er + cr * or_ - ci * oi, xi = ei + cr * oi + ci * or_;
            pw[v] = xr * xr + xi * xi;
        }
    }
    /* Mel: each filter's non-zero bins only. */
    const float *w = mel_w;
    for (int m = 0; m < n_mels; ++m) {
        v8 acc[nv];
        for (int v = 0; v < nv; ++v) acc[v] = (v8){0};
        for (int k = 0; k < mel_count[m]; ++k) {
            const v8 *pw = power + (mel_start[m] + k) * nv;
            for (int v = 0; v < nv; ++v) acc[v] += w[k] * pw[v];
        }
        w += mel_count[m];
        float mel[8 * nv];
        memcpy(mel, acc, sizeof mel);
        for (int j = 0; j < n; ++j) out[j * n_mels + m] = log_approx(mel[j] + eps);
    }
}

/* Convolutions run over "positions" (output frame t, output frequency fo), P at a time: P independent
 * accumulators per 8-channel vector keep the FMA units busy where one chain would wait on each result.
 * Channel counts are padded to multiples of 8 by native.py (zero weights, zero channels), and the input
 * of a convolution with frequency padding carries its zero rows (PUSH writes between them), so a tap is
 * a fixed offset from a position's first input row: no bounds to check. Ints: [cin, cout, fin (with its
 * padding), fout, kf, kt, frequency stride, -, time dilation, n]; `in` has (kt - 1) * d past frames. */
enum { P = 8 };

/* The first input row of positions p0 .. p0 + P - 1; positions past the end repeat position 0 (computed,
 * never stored). */
static inline void bases(const int32_t *ip, const float *in, int stride, int p0, const float *base[P]) {
    const int fin = ip[2], fout = ip[3], s = ip[6], positions = ip[9] * fout;
    for (int p = 0; p < P; ++p) {
        const int pos = p0 + p < positions ? p0 + p : 0;
        base[p] = in + ((pos / fout) * fin + (pos % fout) * s) * stride;
    }
}

/* Dense (groups 1): out[pos][:] = b + sum over taps and ci of W[j][q][ci][:] * in[row][ci];
 * depthwise (groups = channels): out[pos][c] = b[c] + sum over taps of W[j][q][c] * in[row][c].
 * Inlined into each caller with `dense` a constant, so neither form tests it in its loops. */
static inline __attribute__((always_inline)) void convolve(const int32_t *ip, void *const *pp, const int dense) {
    const int cin = ip[0], cout = ip[1], fin = ip[2], fout = ip[3], kf = ip[4], kt = ip[5], d = ip[8];
    const int positions = ip[9] * fout, tap = dense ? cin * cout : cout;
    const float *in = pp[0], *w = pp[2], *bias = pp[3];
    float *out = pp[1];
    for (int p0 = 0; p0 < positions; p0 += P) {
        const int np = positions - p0 < P ? positions - p0 : P;
        const float *base[P];
        bases(ip, in, cin, p0, base);
        for (int v = 0; v < cout; v += 8) {
            v8 acc[P];
            const v8 b = bias ? *(const v8 *)(bias + v) : (v8){0};
            for (int p = 0; p < P; ++p) acc[p] = b;
            for (int j = 0; j < kt; ++j)
                for (int q = 0; q < kf; ++q) {
                    const int off = (j * d * fin + q) * cin;
                    const float *wq = w + (j * kf + q) * tap + v;
                    if (dense) {
                        for (int ci = 0; ci < cin; ++ci) {
                            const v8 wv = *(const v8 *)(wq + ci * cout);
                            for (int p = 0; p < P; ++p) acc[p] += wv * base[p][off + ci];
                        }
                    } else {
                        const v8 wv = *(const v8 *)wq;
                        for (int p = 0; p < P; ++p) acc[p] += wv * *(const v8 *)(base[p] + off + v);
                    }
                }
            for (int p = 0; p < np; ++p) *(v8 *)(out + (p0 + p) * cout + v) = acc[p];
        }
    }
}

static void conv(const int32_t *ip, void *const *pp) { convolve(ip, pp, 1); }

static void depthwise(const int32_t *ip, void *const *pp) { convolve(ip, pp, 0); }

void kws_step(int32_t n_ops, const int32_t *ints, void *const *ptrs) {
    for (int32_t k = 0; k < n_ops; ++k) {
        const int32_t *ip = ints + k * NI;
        void *const *pp = ptrs + k * NP;
        switch (ip[NI - 1]) {
        case OP_FRONTEND:
            frontend(ip, pp);
            break;
        case OP_PUSH: { /* ip[0] new frames of ip[1] floats after ip[4] past frames of ip[2] floats, at ip[3] */
            const float *x = pp[0];
            float *work = (float *)pp[1] + ip[4] * ip[2] + ip[3];
            for (int t = 0; t < ip[0]; ++t) memcpy(work + t * ip[2], x + t * ip[1], sizeof(float) * ip[1]);
            break;
        }
        case OP_SHIFT: /* keep the last ip[1] floats of ip[0] + ip[1]: the next hop's past */
            memmove(pp[0], (float *)pp[0] + ip[0], sizeof(float) * ip[1]);
            break;
        case OP_CONV:
            conv(ip, pp);
            break;
        case OP_DEPTHWISE:
            depthwise(ip, pp);
            break;
        case OP_AFFINE: { /* x[t][f][c] * scale[f][c] + shift[f][c] */
            const int n = ip[0], fc = ip[1];
            const float *restrict x = pp[0], *restrict scale = pp[2], *restrict shift = pp[3];
            float *restrict y = pp[1];
            for (int t = 0; t < n; ++t)
                for (int i = 0; i < fc; ++i) y[t * fc + i] = x[t * fc + i] * scale[i] + shift[i];
            break;
        }
        case OP_RELU: {
            const float *x = pp[0];
            float *y = pp[1];
            for (int i = 0; i < ip[0]; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
            break;
        }
        case OP_SILU: {
            const float *x = pp[0];
            float *y = pp[1];
            for (int i = 0; i < ip[0]; ++i) y[i] = x[i] / (1.0f + exp_approx(-x[i]));
            break;
        }
        case OP_MERGE: { /* ReLU([x +] [aux +] temporal broadcast over frequency), channels in vectors */
            const int n = ip[0], f = ip[1], nv = ip[2] / 8;
            const v8 *aux = pp[0], *temporal = pp[1], *x = pp[2];
            v8 *y = pp[3];
            for (int t = 0; t < n; ++t)
                for (int q = 0; q < f; ++q)
                    for (int v = 0; v < nv; ++v) {
                        const int at = (t * f + q) * nv + v;
                        v8 sum = temporal[t * nv + v];
                        if (aux) sum += aux[at];
                        if (x) sum += x[at];
                        y[at] = (v8)((v8i)sum & (sum > 0.0f)); /* ReLU: keep the positive lanes */
                    }
            break;
        }
        case OP_FREQUENCY_MEAN: { /* (n, F, C) -> (n, 1, C) */
            const int n = ip[0], f = ip[1], nv = ip[2] / 8;
            const v8 *x = pp[0];
            v8 *y = pp[1];
            for (int t = 0; t < n; ++t)
                for (int v = 0; v < nv; ++v) {
                    v8 sum = x[t * f * nv + v];
                    for (int q = 1; q < f; ++q) sum += x[(t * f + q) * nv + v];
                    y[t * nv + v] = sum / (float)f;
                }
            break;
        }
        case OP_MEAN: { /* the mean of the last ip[0] frames of ip[0] - 1 + ip[2], ip[1] channels each */
            const int frames = ip[0], ch = ip[1], n = ip[2];
            const float *x = (const float *)pp[0] + (n - 1) * ch;
            float *y = pp[1];
            for (int c = 0; c < ch; ++c) y[c] = 0.0f;
            for (int t = 0; t < frames; ++t)
                for (int c = 0; c < ch; ++c) y[c] += x[t * ch + c];
            for (int c = 0; c < ch; ++c) y[c] /= (float)frames;
            break;
        }
        }
    }
}
