/* Native CPU kernels of the ``cpu.native.*`` tactics (workbench/kernels/cpu/native.py).

   Small models spend most of their time in per-call overhead: a NumPy layer is a dozen ufunc
   calls of ~1 us each whatever the tensor size. These kernels do a whole layer in one call, in
   float32, straight into the output buffer the Python side keeps between runs, with the GIL
   released. They are candidates like any other: the CPU target times them against the BLAS and
   NumPy tactics on the layer's own shapes and keeps the fastest.

   conv2d      direct 2-D convolution (NCHW, groups, strides, dilations, pads) with bias,
               residual and ReLU / Clip in the reference order (bias, residual, activation).
   depthwise_c8  the same for depthwise convolutions, in blocks of 8 channels (NCHW8c).
   conv2d_blocked  the same, stride 1 along W, as register-blocked implicit GEMM.
   im2col      the column matrix of the BLAS convolution tactic, in one pass.
   winograd_in / winograd_out  the transforms of a Winograd F(2x2, 3x3) convolution (the GEMMs
               between them are BLAS calls).
   layer_norm  LayerNorm over the last axis, optionally of x + skip (+ bias): SkipLayerNorm.
   layer_norm_cf  LayerNorm across axis 1 (channels first); rms_norm: RMSNorm.
   softmax     softmax over the last axis, in place.
   attention   softmax(scale * Q K^T + mask) V over strided Q / K / V / output views (any
               layout), additive or boolean masks, causal, grouped K/V heads.
   pool2d      MaxPool / AveragePool over 2-D windows; global_pool: their global forms.
   lrn         LRN across channels.
   pointwise   a fused pointwise chain (arithmetic, max / min, ReLU, exp, tanh, sigmoid, erf...)
               over broadcast float32 inputs in one pass, row by row.
   activate    an epilogue activation (ReLU, Clip, GELU, Sigmoid, SiLU, Tanh) in place, for the
               GEMM / convolution / pointwise tactics.

   The arithmetic follows the reference kernels' formulas; statistics (means, variances, softmax
   sums) are accumulated in double, dot products in float32 as BLAS does, so results agree with
   the reference to float32 round-off. Built by hatch_build.py at install. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* ---- buffers ---------------------------------------------------------------------------- */

typedef struct {
    Py_buffer b;
    int held;
} Buf;

static void release(Buf *bufs, int n) {
    for (int i = 0; i < n; i++) {
        if (bufs[i].held) {
            PyBuffer_Release(&bufs[i].b);
            bufs[i].held = 0;
        }
    }
}

/* A float32 (or, with ``boolean``, a bool) buffer of ``ndim`` dims; strided unless ``contig``.
   None gives an empty Buf (held == 0) when ``optional``. */
static int get(PyObject *o, Buf *out, const char *what, int ndim, int writable, int contig, int optional,
               int boolean) {
    out->held = 0;
    if (o == Py_None) {
        if (optional) return 0;
        PyErr_Format(PyExc_TypeError, "%s: an array is required", what);
        return -1;
    }
    int flags = PyBUF_FORMAT | (contig ? PyBUF_C_CONTIGUOUS : PyBUF_STRIDES) | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, &out->b, flags) < 0) return -1;
    out->held = 1;
    const char *f = out->b.format ? out->b.format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    int ok = boolean ? (strcmp(f, "?") == 0 && out->b.itemsize == 1) : (strcmp(f, "f") == 0 && out->b.itemsize == 4);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s: expected %s, got format '%s'", what, boolean ? "bool" : "float32",
                     out->b.format ? out->b.format : "B");
        return -1;
    }
    if (ndim >= 0 && out->b.ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d dims, got %d", what, ndim, out->b.ndim);
        return -1;
    }
    return 0;
}

static int as_long(PyObject *o, long *v) {
    *v = PyLong_AsLong(o);
    return (*v == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* args[from .. from + n) as longs into out[0 .. n) */
static int as_longs(PyObject *const *args, int from, int n, long *out) {
    for (int i = 0; i < n; i++)
        if (as_long(args[from + i], &out[i]) < 0) return -1;
    return 0;
}

static int as_double(PyObject *o, double *v) {
    *v = PyFloat_AsDouble(o);
    return (*v == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* A double sum of float32 values in 4 lanes. */
static inline double sum_f64(const float *a, long n) {
    double lane[4] = {0, 0, 0, 0};
    long t = 0;
    for (; t + 4 <= n; t += 4)
        for (int l = 0; l < 4; l++) lane[l] += a[t + l];
    double acc = (lane[0] + lane[2]) + (lane[1] + lane[3]);
    for (; t < n; t++) acc += a[t];
    return acc;
}

/* ---- conv2d ----------------------------------------------------------------------------- */

typedef struct {
    long n, c, h, w, m, cg, r, s, oh, ow, sh, sw, pt, pl, dh, dw, group, act;
    float lo, hi;
} ConvGeo;

static inline long ceil_div(long a, long b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
static inline long floor_div(long a, long b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* bias, residual, activation on one output plane, in the reference order */
HOT static void epilogue(float *restrict yp, long plane, const float *bias, const float *restrict res, long act,
                         float lo, float hi) {
    if (bias) {
        const float b0 = *bias;
        for (long i = 0; i < plane; i++) yp[i] += b0;
    }
    if (res)
        for (long i = 0; i < plane; i++) yp[i] += res[i];
    if (act == 1) {
        for (long i = 0; i < plane; i++) yp[i] = yp[i] < 0.0f ? 0.0f : yp[i]; /* NaN stays NaN */
    } else if (act == 2) {
        for (long i = 0; i < plane; i++) {
            float v = yp[i] < lo ? lo : yp[i];
            yp[i] = v > hi ? hi : v;
        }
    }
}

HOT static void conv2d_run(const ConvGeo *g, const float *x, const float *wt, const float *bias, const float *res,
                           float *y) {
    const long plane = g->oh * g->ow, mg = g->m / g->group;
    for (long n = 0; n < g->n; n++) {
        for (long m = 0; m < g->m; m++) {
            const long grp = m / mg;
            float *yp = y + (n * g->m + m) * plane;
            const float b0 = bias ? bias[m] : 0.0f;
            for (long i = 0; i < plane; i++) yp[i] = 0.0f;
            for (long cc = 0; cc < g->cg; cc++) {
                const float *xp = x + (n * g->c + grp * g->cg + cc) * g->h * g->w;
                const float *wp = wt + ((m * g->cg + cc) * g->r) * g->s;
                for (long r = 0; r < g->r; r++) {
                    /* output rows whose input row oh*sh - pt + r*dh lies inside the image */
                    const long off_h = r * g->dh - g->pt;
                    long oh0 = ceil_div(-off_h, g->sh), oh1 = floor_div(g->h - 1 - off_h, g->sh);
                    if (oh0 < 0) oh0 = 0;
                    if (oh1 > g->oh - 1) oh1 = g->oh - 1;
                    for (long s = 0; s < g->s; s++) {
                        const float wv = wp[r * g->s + s];
                        const long off_w = s * g->dw - g->pl;
                        long ow0 = ceil_div(-off_w, g->sw), ow1 = floor_div(g->w - 1 - off_w, g->sw);
                        if (ow0 < 0) ow0 = 0;
                        if (ow1 > g->ow - 1) ow1 = g->ow - 1;
                        if (ow1 < ow0) continue;
                        for (long oh = oh0; oh <= oh1; oh++) {
                            const float *restrict xr = xp + (oh * g->sh + off_h) * g->w + off_w;
                            float *restrict yr = yp + oh * g->ow;
                            if (g->sw == 1) {
                                for (long ow = ow0; ow <= ow1; ow++) yr[ow] += wv * xr[ow];
                            } else {
                                const long sw = g->sw;
                                for (long ow = ow0; ow <= ow1; ow++) yr[ow] += wv * xr[ow * sw];
                            }
                        }
                    }
                }
            }
            epilogue(yp, plane, bias ? &b0 : NULL, res ? res + (n * g->m + m) * plane : NULL, g->act, g->lo, g->hi);
        }
    }
}

/* Convolution with stride 1 along W as register-blocked implicit GEMM: 8 (or 4) output channels x
   8 output columns of one row accumulate in registers over every (input channel, kernel row, kernel
   column), one contiguous load of 8 padded inputs and 4 broadcast weights per step; no im2col
   matrix. ``wt`` is [group][C/group * R * S][M/group]; ``xp`` a scratch of C * hp * wp floats. */
#define MB 4
#define NB 8
typedef float v8f __attribute__((vector_size(32)));

/* k (4 or 8, a constant where it is inlined) output channels x 8 columns of output row ``oh``
   from column ``ow0``, in k vector registers: with 8, enough independent accumulators to hide
   the FMA latency */
static inline void block_kx8(const ConvGeo *g, const float *xg, long hp, long wp, const float *wg, long mg, long oh,
                             long ow0, float *yb, long plane, const int k) {
    v8f a[8] = {{0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}};
    for (long cc = 0; cc < g->cg; cc++) {
        const float *xc = xg + cc * hp * wp;
        for (long r = 0; r < g->r; r++) {
            const float *xrow = xc + (oh * g->sh + r * g->dh) * wp + ow0;
            const float *wrow = wg + ((cc * g->r + r) * g->s) * mg;
            for (long s = 0; s < g->s; s++) {
                v8f xv;
                memcpy(&xv, xrow + s * g->dw, sizeof xv);
                const float *wv = wrow + s * mg;
                for (int i = 0; i < k; i++) a[i] += wv[i] * xv;
            }
        }
    }
    for (int i = 0; i < k; i++) memcpy(yb + i * plane, &a[i], sizeof a[i]);
}

/* the same for a partial block (the last channels or columns) */
static void block_tail(const ConvGeo *g, const float *xg, long hp, long wp, const float *wg, long mg, long oh,
                       long ow0, long mb, long nb, float *yb, long plane) {
    float acc[2 * MB][NB] = {{0}};
    for (long cc = 0; cc < g->cg; cc++) {
        const float *xc = xg + cc * hp * wp;
        for (long r = 0; r < g->r; r++) {
            const float *xrow = xc + (oh * g->sh + r * g->dh) * wp + ow0;
            const float *wrow = wg + ((cc * g->r + r) * g->s) * mg;
            for (long s = 0; s < g->s; s++)
                for (long i = 0; i < mb; i++)
                    for (long j = 0; j < nb; j++) acc[i][j] += wrow[s * mg + i] * xrow[s * g->dw + j];
        }
    }
    for (long i = 0; i < mb; i++)
        for (long j = 0; j < nb; j++) yb[i * plane + j] = acc[i][j];
}

typedef struct {
    const ConvGeo *g;
    long hp, wp, mblocks;
    const float *wt, *bias, *res, *xp;
    float *y;
} BlockedJob;

/* one task: output channels [8k, 8k + 8) (4 or fewer for the last) of one image and group */
HOT static void conv_blocked_task(void *arg, long task) {
    const BlockedJob *j = arg;
    const ConvGeo *g = j->g;
    const long mg = g->m / g->group, kk = g->cg * g->r * g->s, plane = g->oh * g->ow, hp = j->hp, wp = j->wp;
    const long mbk = task % j->mblocks, grp = (task / j->mblocks) % g->group, n = task / j->mblocks / g->group;
    const float *xg = j->xp + (n * g->c + grp * g->cg) * hp * wp, *wg = j->wt + grp * kk * mg;
    const long m_end = (mbk + 1) * 2 * MB < mg ? (mbk + 1) * 2 * MB : mg;
    for (long m0 = mbk * 2 * MB; m0 < m_end;) {
        /* a block of 8 channels, else one of 4, then what is left */
        const long mb = m_end - m0 >= 2 * MB ? 2 * MB : m_end - m0 >= MB ? MB : m_end - m0;
        for (long oh = 0; oh < g->oh; oh++)
            for (long ow0 = 0; ow0 < g->ow; ow0 += NB) {
                const long nb = g->ow - ow0 < NB ? g->ow - ow0 : NB;
                float *yb = j->y + ((n * g->m + grp * mg + m0) * g->oh + oh) * g->ow + ow0;
                if (mb == 2 * MB && nb == NB)
                    block_kx8(g, xg, hp, wp, wg + m0, mg, oh, ow0, yb, plane, 8);
                else if (mb == MB && nb == NB)
                    block_kx8(g, xg, hp, wp, wg + m0, mg, oh, ow0, yb, plane, 4);
                else
                    block_tail(g, xg, hp, wp, wg + m0, mg, oh, ow0, mb, nb, yb, plane);
            }
        for (long m = m0; m < m0 + mb; m++) {
            const long om = grp * mg + m;
            epilogue(j->y + (n * g->m + om) * plane, plane, j->bias ? j->bias + om : NULL,
                     j->res ? j->res + (n * g->m + om) * plane : NULL, g->act, g->lo, g->hi);
        }
        m0 += mb;
    }
}

/* ``xp``: a scratch of N * C * hp * wp floats (every image padded first) */
static void conv_blocked_run(const ConvGeo *g, long hp, long wp, const float *x, const float *wt, const float *bias,
                             const float *res, float *y, float *xp) {
    memset(xp, 0, sizeof(float) * (size_t)(g->n * g->c * hp * wp));
    for (long n = 0; n < g->n; n++)
        for (long ch = 0; ch < g->c; ch++)
            for (long ih = 0; ih < g->h && ih + g->pt < hp; ih++) {
                const long cnt = g->w < wp - g->pl ? g->w : wp - g->pl;
                memcpy(xp + ((n * g->c + ch) * hp + ih + g->pt) * wp + g->pl, x + ((n * g->c + ch) * g->h + ih) * g->w,
                       sizeof(float) * (size_t)cnt);
            }
    const long mg = g->m / g->group;
    BlockedJob job = {g, hp, wp, (mg + 2 * MB - 1) / (2 * MB), wt, bias, res, xp, y};
    for (long t = 0; t < g->n * g->group * job.mblocks; t++) conv_blocked_task(&job, t);
}

/* Depthwise convolution in blocks of 8 channels (NCHW8c): the image copied into a zero-padded
   [C/8][hp][wp][8] scratch (8 input planes read in step), every output pixel of a block one 8-lane
   vector summed over the kernel, then written back to NCHW through the epilogue. ``wt`` is
   [C/8][R][S][8] (channels past C zero); ``scratch`` holds C8 * hp * wp + 8 * OH * OW floats. */
HOT static void depthwise_c8_run(const ConvGeo *g, long hp, long wp, const float *x, const float *wt,
                                 const float *bias, const float *res, float *y, float *scratch) {
    const long c = g->c, cb = (c + 7) / 8, plane = g->oh * g->ow;
    for (long n = 0; n < g->n; n++) {
        const float *xn = x + n * c * g->h * g->w;
        const long wmax = g->w < wp - g->pl ? g->w : wp - g->pl;
        for (long b = 0; b < cb; b++) {
            const long lanes = c - b * 8 < 8 ? c - b * 8 : 8;
            float *xb = scratch + b * hp * wp * 8;
            /* zero only what the image does not cover: pad rows, pad columns, missing lanes */
            for (long ih = 0; ih < hp; ih++) {
                float *row = xb + ih * wp * 8;
                const long src_h = ih - g->pt;
                if (src_h < 0 || src_h >= g->h || lanes < 8) {
                    memset(row, 0, sizeof(float) * (size_t)(wp * 8));
                } else {
                    memset(row, 0, sizeof(float) * (size_t)(g->pl * 8));
                    memset(row + (g->pl + wmax) * 8, 0, sizeof(float) * (size_t)((wp - g->pl - wmax) * 8));
                }
            }
            const long hw = g->h * g->w;
            for (long ih = 0; ih < g->h && ih + g->pt < hp; ih++) {
                float *dst = xb + ((ih + g->pt) * wp + g->pl) * 8;
                const float *src = xn + (b * 8 * g->h + ih) * g->w; /* lane l's row is src + l * hw */
                if (lanes == 8) { /* 8 rows in step, one contiguous 8-vector per column */
                    for (long iw = 0; iw < wmax; iw++) {
                        const float t[8] = {src[iw], src[hw + iw], src[2 * hw + iw], src[3 * hw + iw],
                                            src[4 * hw + iw], src[5 * hw + iw], src[6 * hw + iw], src[7 * hw + iw]};
                        memcpy(dst + iw * 8, t, sizeof t);
                    }
                } else {
                    for (long l = 0; l < lanes; l++)
                        for (long iw = 0; iw < wmax; iw++) dst[iw * 8 + l] = src[l * hw + iw];
                }
            }
        }
        float *yn = y + n * c * plane;
        const long kr = g->r, ks = g->s, sh = g->sh, sw8 = g->sw * 8, dh = g->dh, dw8 = g->dw * 8, oh_n = g->oh,
                   ow_n = g->ow;
        float *acc = scratch + cb * 8 * hp * wp; /* one block's outputs, [OH*OW][8] */
        for (long b = 0; b < cb; b++) {
            const long lanes = c - b * 8 < 8 ? c - b * 8 : 8;
            const float *wb = wt + b * kr * ks * 8;
            const float *xb = scratch + b * hp * wp * 8;
            if (kr == 3 && ks == 3) {
                /* the common 3x3: the block's 9 weight vectors stay in registers */
                v8f w0, w1, w2, w3, w4, w5, w6, w7, w8;
                memcpy(&w0, wb, 32), memcpy(&w1, wb + 8, 32), memcpy(&w2, wb + 16, 32);
                memcpy(&w3, wb + 24, 32), memcpy(&w4, wb + 32, 32), memcpy(&w5, wb + 40, 32);
                memcpy(&w6, wb + 48, 32), memcpy(&w7, wb + 56, 32), memcpy(&w8, wb + 64, 32);
                const long row = wp * 8 * dh;
                for (long oh = 0; oh < oh_n; oh++)
                    for (long ow = 0; ow < ow_n; ow++) {
                        const float *x0 = xb + oh * sh * wp * 8 + ow * sw8;
                        v8f t0, t1, t2, a;
                        memcpy(&t0, x0, 32), memcpy(&t1, x0 + dw8, 32), memcpy(&t2, x0 + 2 * dw8, 32);
                        a = w0 * t0 + w1 * t1 + w2 * t2;
                        memcpy(&t0, x0 + row, 32), memcpy(&t1, x0 + row + dw8, 32), memcpy(&t2, x0 + row + 2 * dw8, 32);
                        a += w3 * t0 + w4 * t1 + w5 * t2;
                        memcpy(&t0, x0 + 2 * row, 32), memcpy(&t1, x0 + 2 * row + dw8, 32);
                        memcpy(&t2, x0 + 2 * row + 2 * dw8, 32);
                        a += w6 * t0 + w7 * t1 + w8 * t2;
                        memcpy(acc + (oh * ow_n + ow) * 8, &a, sizeof a);
                    }
            } else {
                for (long oh = 0; oh < oh_n; oh++)
                    for (long ow = 0; ow < ow_n; ow++) {
                        v8f a = {0};
                        for (long r = 0; r < kr; r++) {
                            const float *xr = xb + ((oh * sh + r * dh) * wp) * 8 + ow * sw8;
                            const float *wr = wb + r * ks * 8;
                            for (long s2 = 0; s2 < ks; s2++) {
                                v8f xv, wv;
                                memcpy(&xv, xr + s2 * dw8, sizeof xv);
                                memcpy(&wv, wr + s2 * 8, sizeof wv);
                                a += wv * xv;
                            }
                        }
                        memcpy(acc + (oh * ow_n + ow) * 8, &a, sizeof a);
                    }
            }
            float *yb = yn + b * 8 * plane; /* back to NCHW: lane l's plane is yb + l * plane */
            if (lanes == 8) {
                for (long p = 0; p < plane; p++) {
                    float t[8];
                    memcpy(t, acc + p * 8, sizeof t);
                    yb[p] = t[0], yb[plane + p] = t[1], yb[2 * plane + p] = t[2], yb[3 * plane + p] = t[3];
                    yb[4 * plane + p] = t[4], yb[5 * plane + p] = t[5], yb[6 * plane + p] = t[6];
                    yb[7 * plane + p] = t[7];
                }
            } else {
                for (long l = 0; l < lanes; l++)
                    for (long p = 0; p < plane; p++) yb[l * plane + p] = acc[p * 8 + l];
            }
        }
        const float *rn = res ? res + n * c * plane : NULL;
        for (long ch = 0; ch < c; ch++)
            epilogue(yn + ch * plane, plane, bias ? bias + ch : NULL, rn ? rn + ch * plane : NULL, g->act, g->lo, g->hi);
    }
}

/* mode 0: conv2d (w [M, C/g, R, S]); 1: depthwise_c8 (w [C/8, R, S, 8]); 2: conv2d_blocked
   (w [group, C/g, R, S, M/g], stride 1 along W). */
static PyObject *conv_common(PyObject *const *args, Py_ssize_t nargs, int mode) {
    const int c8 = mode == 1;
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "conv2d takes 15 arguments");
        return NULL;
    }
    Buf b[5];
    memset(b, 0, sizeof b);
    ConvGeo g;
    long v[8];
    double lo, hi;
    if (as_longs(args, 5, 8, v) < 0) return NULL;
    if (as_double(args[13], &lo) < 0 || as_double(args[14], &hi) < 0) return NULL;
    if (get(args[0], &b[0], "x", 4, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "w", mode == 2 ? 5 : 4, 0, 1, 0, 0) < 0 ||
        get(args[2], &b[2], "bias", 1, 0, 1, 1, 0) < 0 || get(args[3], &b[3], "residual", 4, 0, 1, 1, 0) < 0 ||
        get(args[4], &b[4], "y", 4, 1, 1, 0, 0) < 0) {
        release(b, 5);
        return NULL;
    }
    Py_ssize_t *xs = b[0].b.shape, *ws = b[1].b.shape, *ys = b[4].b.shape;
    g.n = xs[0], g.c = xs[1], g.h = xs[2], g.w = xs[3];
    if (mode == 1)
        g.m = g.c, g.cg = 1, g.r = ws[1], g.s = ws[2];
    else if (mode == 2)
        g.m = ws[0] * ws[4], g.cg = ws[1], g.r = ws[2], g.s = ws[3];
    else
        g.m = ws[0], g.cg = ws[1], g.r = ws[2], g.s = ws[3];
    g.oh = ys[2], g.ow = ys[3];
    g.sh = v[0], g.sw = v[1], g.pt = v[2], g.pl = v[3], g.dh = v[4], g.dw = v[5], g.group = v[6], g.act = v[7];
    g.lo = (float)lo, g.hi = (float)hi;
    const char *bad = NULL;
    if (g.group < 1 || g.m % g.group || g.c != g.cg * g.group) bad = "channels do not match the weights and group";
    else if (c8 && (g.group != g.c || ws[0] != (g.c + 7) / 8 || ws[3] != 8))
        bad = "depthwise_c8 needs group == channels and [C/8, R, S, 8] weights";
    else if (mode == 2 && (ws[0] != g.group || g.sw != 1)) bad = "conv2d_blocked needs [group, ...] weights and stride 1 along W";
    else if (ys[0] != g.n || ys[1] != g.m) bad = "output batch or channels do not match";
    else if (g.sh < 1 || g.sw < 1 || g.dh < 1 || g.dw < 1 || g.pt < 0 || g.pl < 0) bad = "bad strides, dilations or pads";
    else if (g.oh < 1 || g.ow < 1) bad = "empty output"; /* every read is clamped to the image */
    else if (b[2].held && b[2].b.shape[0] != g.m) bad = "bias length differs from the output channels";
    else if (b[3].held && (b[3].b.shape[0] != g.n || b[3].b.shape[1] != g.m || b[3].b.shape[2] != g.oh ||
                           b[3].b.shape[3] != g.ow))
        bad = "residual shape differs from the output";
    if (bad) {
        release(b, 5);
        PyErr_Format(PyExc_ValueError, "conv2d: %s", bad);
        return NULL;
    }
    const float *x = b[0].b.buf, *w = b[1].b.buf;
    const float *bias = b[2].held ? b[2].b.buf : NULL, *res = b[3].held ? b[3].b.buf : NULL;
    float *y = b[4].b.buf;
    float *scratch = NULL;
    long hp = 0, wp = 0;
    if (mode != 0) {
        const long need_h = (g.oh - 1) * g.sh + (g.r - 1) * g.dh + 1, need_w = (g.ow - 1) * g.sw + (g.s - 1) * g.dw + 1;
        hp = need_h > g.h + g.pt ? need_h : g.h + g.pt;
        wp = need_w > g.w + g.pl ? need_w : g.w + g.pl;
        scratch = malloc(sizeof(float) * (c8 ? (size_t)hp * (size_t)wp * (size_t)((g.c + 7) / 8 * 8) + 8 * (size_t)(g.oh * g.ow)
                                              : (size_t)hp * (size_t)wp * (size_t)(g.c * g.n)));
        if (!scratch) {
            release(b, 5);
            return PyErr_NoMemory();
        }
    }
    Py_BEGIN_ALLOW_THREADS
    if (mode == 1)
        depthwise_c8_run(&g, hp, wp, x, w, bias, res, y, scratch);
    else if (mode == 2)
        conv_blocked_run(&g, hp, wp, x, w, bias, res, y, scratch);
    else
        conv2d_run(&g, x, w, bias, res, y);
    Py_END_ALLOW_THREADS
    free(scratch);
    release(b, 5);
    Py_RETURN_NONE;
}

static PyObject *conv2d(PyObject *self, PyObject *const *args, Py_ssize_t nargs) { return conv_common(args, nargs, 0); }

static PyObject *depthwise_c8(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return conv_common(args, nargs, 1);
}

static PyObject *conv2d_blocked(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return conv_common(args, nargs, 2);
}

/* The receptive fields of output rows [oh0, oh0 + rows) of one image xi [C,H,W] into
   cols [C, kh, kw, rows, OW] (zeros where a field reaches into the padding); contiguous row
   copies where the stride along W is 1. */
static void im2col_rows(const float *xi, long c, long h, long w, float *cols, long kh, long kw, long sh, long sw, long pt,
                        long pl, long dh, long dw, long oh0, long rows, long ow) {
    for (long ch = 0; ch < c; ch++) {
        const float *xp = xi + ch * h * w;
        for (long r = 0; r < kh; r++)
            for (long s2 = 0; s2 < kw; s2++) {
                float *dst = cols + ((ch * kh + r) * kw + s2) * rows * ow;
                const long off_w = s2 * dw - pl;
                long ow0 = ceil_div(-off_w, sw), ow1 = floor_div(w - 1 - off_w, sw);
                if (ow0 < 0) ow0 = 0;
                if (ow1 > ow - 1) ow1 = ow - 1;
                for (long y = 0; y < rows; y++) {
                    float *row = dst + y * ow;
                    const long ih = (oh0 + y) * sh - pt + r * dh;
                    if (ih < 0 || ih >= h || ow1 < ow0) {
                        memset(row, 0, sizeof(float) * (size_t)ow);
                        continue;
                    }
                    const float *src = xp + ih * w + off_w;
                    for (long q = 0; q < ow0; q++) row[q] = 0.0f;
                    if (sw == 1)
                        memcpy(row + ow0, src + ow0, sizeof(float) * (size_t)(ow1 - ow0 + 1));
                    else
                        for (long q = ow0; q <= ow1; q++) row[q] = src[q * sw];
                    for (long q = ow1 + 1; q < ow; q++) row[q] = 0.0f;
                }
            }
    }
}

/* im2col(x, cols, kh, kw, sh, sw, pt, pl, dh, dw): the receptive fields of x [N,C,H,W] into
   cols [N, C, kh, kw, OH, OW], for the BLAS convolution, in one pass. */
static PyObject *im2col(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "im2col takes 10 arguments");
        return NULL;
    }
    long v[8];
    if (as_longs(args, 2, 8, v) < 0) return NULL;
    Buf b[2];
    memset(b, 0, sizeof b);
    if (get(args[0], &b[0], "x", 4, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "cols", 6, 1, 1, 0, 0) < 0) {
        release(b, 2);
        return NULL;
    }
    Py_ssize_t *xs = b[0].b.shape, *cs = b[1].b.shape;
    const long n = xs[0], c = xs[1], h = xs[2], w = xs[3], kh = v[0], kw = v[1], sh = v[2], sw = v[3], pt = v[4],
               pl = v[5], dh = v[6], dw = v[7], rows = cs[4], ow = cs[5];
    if (cs[0] != n || cs[1] != c || cs[2] != kh || cs[3] != kw || sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 ||
        pl < 0) {
        release(b, 2);
        PyErr_SetString(PyExc_ValueError, "im2col: the columns' shape or the geometry does not match the input");
        return NULL;
    }
    const float *x = b[0].b.buf;
    float *cols = b[1].b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (long i = 0; i < n; i++)
        im2col_rows(x + i * c * h * w, c, h, w, cols + i * c * kh * kw * rows * ow, kh, kw, sh, sw, pt, pl, dh, dw, 0,
                    rows, ow);
    Py_END_ALLOW_THREADS
    release(b, 2);
    Py_RETURN_NONE;
}

/* ---- Winograd F(2x2, 3x3) ---------------------------------------------------------------------
   A 3x3, stride-1 convolution as 16 GEMMs over 4x4 input tiles: winograd_in writes V = B^T d B of
   every tile, the caller multiplies the transformed weights U = G g G^T by V (BLAS, one batched
   call), winograd_out writes Y = A^T M A of every tile and the epilogue. 2.25 times fewer
   multiplications than the direct form; F(2x2, 3x3)'s transforms add ~1e-7 relative error. */

/* a row of tiles at a time: the 4 input rows padded into ``rows`` (4 x wpad), then each of the
   16 transformed values for every tile of the row, written contiguously (``rows`` also holds the
   4 x tw column differences of the first stage) */
HOT static void winograd_in_run(const float *x, long n, long c, long h, long w, long pt, long pl, long th, long tw,
                                long nt, float *v, float *rows, long wpad) {
    float *t = rows + 4 * wpad;
    for (long i = 0; i < n; i++)
        for (long ch = 0; ch < c; ch++) {
            const float *xp = x + (i * c + ch) * h * w;
            for (long ty = 0; ty < th; ty++) {
                for (int r = 0; r < 4; r++) {
                    float *row = rows + r * wpad;
                    const long ih = 2 * ty - pt + r;
                    memset(row, 0, sizeof(float) * (size_t)wpad);
                    if (ih < 0 || ih >= h) continue;
                    const long lo = pl, cnt = w < wpad - pl ? w : wpad - pl;
                    memcpy(row + lo, xp + ih * w, sizeof(float) * (size_t)(cnt > 0 ? cnt : 0));
                }
                const float *d0 = rows, *d1 = rows + wpad, *d2 = rows + 2 * wpad, *d3 = rows + 3 * wpad;
                const long base = (i * th + ty) * tw;
                for (int q = 0; q < 4; q++) { /* column q of every tile: t = B^T d, one row of 4 per tile */
                    float *t0 = t, *t1 = t + tw, *t2 = t + 2 * tw, *t3 = t + 3 * tw;
                    for (long tx = 0; tx < tw; tx++) {
                        const long col = 2 * tx + q;
                        t0[tx] = d0[col] - d2[col];
                        t1[tx] = d1[col] + d2[col];
                        t2[tx] = d2[col] - d1[col];
                        t3[tx] = d1[col] - d3[col];
                    }
                    /* keep column q of t for the second stage: stash in v's rows for k = r*4 + q */
                    for (int r = 0; r < 4; r++) memcpy(v + ((r * 4 + q) * c + ch) * nt + base, t + r * tw, sizeof(float) * (size_t)tw);
                }
                for (int r = 0; r < 4; r++) { /* V = t B along each row of t, in place */
                    float *c0 = v + ((r * 4 + 0) * c + ch) * nt + base, *c1 = v + ((r * 4 + 1) * c + ch) * nt + base;
                    float *c2 = v + ((r * 4 + 2) * c + ch) * nt + base, *c3 = v + ((r * 4 + 3) * c + ch) * nt + base;
                    for (long tx = 0; tx < tw; tx++) {
                        const float a0 = c0[tx], a1 = c1[tx], a2 = c2[tx], a3 = c3[tx];
                        c0[tx] = a0 - a2;
                        c1[tx] = a1 + a2;
                        c2[tx] = a2 - a1;
                        c3[tx] = a1 - a3;
                    }
                }
            }
        }
}

/* winograd_in(x [N,C,H,W], v [16, C, N*TH*TW], pt, pl) */
static PyObject *winograd_in(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "winograd_in takes 4 arguments");
        return NULL;
    }
    long pt, pl;
    if (as_long(args[2], &pt) < 0 || as_long(args[3], &pl) < 0) return NULL;
    Buf b[2];
    memset(b, 0, sizeof b);
    if (get(args[0], &b[0], "x", 4, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "v", 3, 1, 1, 0, 0) < 0) {
        release(b, 2);
        return NULL;
    }
    const long n = b[0].b.shape[0], c = b[0].b.shape[1], h = b[0].b.shape[2], w = b[0].b.shape[3];
    const long oh = h + 2 * pt - 2, ow = w + 2 * pl - 2, th = (oh + 1) / 2, tw = (ow + 1) / 2, nt = n * th * tw;
    if (b[1].b.shape[0] != 16 || b[1].b.shape[1] != c || b[1].b.shape[2] != nt || pt < 0 || pl < 0 || oh < 1 || ow < 1) {
        release(b, 2);
        PyErr_SetString(PyExc_ValueError, "winograd_in: v is not [16, C, tiles] for this input and padding");
        return NULL;
    }
    const float *x = b[0].b.buf;
    float *v = b[1].b.buf;
    const long wpad = 2 * tw + 2; /* a padded input row: every tile reads columns 2tx .. 2tx + 3 */
    float *rows = malloc(sizeof(float) * (size_t)(4 * wpad + 4 * tw));
    if (!rows) {
        release(b, 2);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    winograd_in_run(x, n, c, h, w, pt, pl, th, tw, nt, v, rows, wpad);
    Py_END_ALLOW_THREADS
    free(rows);
    release(b, 2);
    Py_RETURN_NONE;
}

/* winograd_out(m [16, M, N*TH*TW], y [N,M,OH,OW], bias|None, residual|None, act, lo, hi) */
static PyObject *winograd_out(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "winograd_out takes 7 arguments");
        return NULL;
    }
    long act;
    double lo, hi;
    if (as_long(args[4], &act) < 0 || as_double(args[5], &lo) < 0 || as_double(args[6], &hi) < 0) return NULL;
    Buf b[4];
    memset(b, 0, sizeof b);
    if (get(args[0], &b[0], "m", 3, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "y", 4, 1, 1, 0, 0) < 0 ||
        get(args[2], &b[2], "bias", 1, 0, 1, 1, 0) < 0 || get(args[3], &b[3], "residual", 4, 0, 1, 1, 0) < 0) {
        release(b, 4);
        return NULL;
    }
    const long n = b[1].b.shape[0], mm = b[1].b.shape[1], oh = b[1].b.shape[2], ow = b[1].b.shape[3];
    const long th = (oh + 1) / 2, tw = (ow + 1) / 2, nt = n * th * tw, plane = oh * ow;
    if (b[0].b.shape[0] != 16 || b[0].b.shape[1] != mm || b[0].b.shape[2] != nt || (b[2].held && b[2].b.shape[0] != mm) ||
        (b[3].held && b[3].b.len != b[1].b.len)) {
        release(b, 4);
        PyErr_SetString(PyExc_ValueError, "winograd_out: m, bias or residual do not match the output");
        return NULL;
    }
    const float *m = b[0].b.buf, *bias = b[2].held ? b[2].b.buf : NULL, *res = b[3].held ? b[3].b.buf : NULL;
    float *y = b[1].b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (long i = 0; i < n; i++)
        for (long o = 0; o < mm; o++) {
            float *yp = y + (i * mm + o) * plane;
            for (long ty = 0; ty < th; ty++)
                for (long tx = 0; tx < tw; tx++) {
                    const long tile = (i * th + ty) * tw + tx;
                    float a[4][4];
                    for (int k = 0; k < 16; k++) a[k / 4][k % 4] = m[(k * mm + o) * nt + tile];
                    float s0[4], s1[4];
                    for (int q = 0; q < 4; q++) {
                        s0[q] = a[0][q] + a[1][q] + a[2][q];
                        s1[q] = a[1][q] - a[2][q] - a[3][q];
                    }
                    const float out[2][2] = {{s0[0] + s0[1] + s0[2], s0[1] - s0[2] - s0[3]},
                                             {s1[0] + s1[1] + s1[2], s1[1] - s1[2] - s1[3]}};
                    for (int r = 0; r < 2; r++)
                        for (int q = 0; q < 2; q++) {
                            const long yy = 2 * ty + r, xx = 2 * tx + q;
                            if (yy < oh && xx < ow) yp[yy * ow + xx] = out[r][q];
                        }
                }
            epilogue(yp, plane, bias ? bias + o : NULL, res ? res + (i * mm + o) * plane : NULL, act, (float)lo, (float)hi);
        }
    Py_END_ALLOW_THREADS
    release(b, 4);
    Py_RETURN_NONE;
}

/* ---- layer_norm / softmax --------------------------------------------------------------- */

HOT static void layer_norm_run(long rows, long cols, const float *x, const float *skip, const float *add_bias,
                               float *s_out, const float *scale, const float *bias, double eps, float *y) {
    for (long i = 0; i < rows; i++) {
        const float *xr = x + i * cols;
        float *yr = y + i * cols;
        const float *src = xr;
        if (skip) {
            float *sr = s_out + i * cols;
            const float *kr = skip + i * cols;
            for (long j = 0; j < cols; j++) {
                float v = xr[j] + kr[j];
                if (add_bias) v += add_bias[j];
                sr[j] = v;
            }
            src = sr;
        }
        const float mean = (float)(sum_f64(src, cols) / (double)cols);
        double lane[4] = {0, 0, 0, 0};
        long j = 0;
        for (; j + 4 <= cols; j += 4)
            for (int l = 0; l < 4; l++) {
                const float d = src[j + l] - mean;
                yr[j + l] = d;
                lane[l] += (double)d * (double)d;
            }
        double sq = (lane[0] + lane[2]) + (lane[1] + lane[3]);
        for (; j < cols; j++) {
            const float d = src[j] - mean;
            yr[j] = d;
            sq += (double)d * (double)d;
        }
        const float den = (float)sqrt((double)(float)(sq / (double)cols) + eps);
        for (long j = 0; j < cols; j++) {
            float v = yr[j] / den;
            if (scale) v *= scale[j];
            if (bias) v += bias[j];
            yr[j] = v;
        }
    }
}

/* layer_norm(x, y, scale|None, bias|None, eps, skip|None, add_bias|None, s_out|None)
   x, y (and skip, s_out) C-contiguous float32 of one shape, normalised over the last ``cols``
   elements, where cols is the length of scale (or of x's last dim without a scale). */
static PyObject *layer_norm(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "layer_norm takes 8 arguments");
        return NULL;
    }
    Buf b[7];
    memset(b, 0, sizeof b);
    double eps;
    if (as_double(args[4], &eps) < 0) return NULL;
    if (get(args[0], &b[0], "x", -1, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "y", -1, 1, 1, 0, 0) < 0 ||
        get(args[2], &b[2], "scale", -1, 0, 1, 1, 0) < 0 || get(args[3], &b[3], "bias", -1, 0, 1, 1, 0) < 0 ||
        get(args[5], &b[4], "skip", -1, 0, 1, 1, 0) < 0 || get(args[6], &b[5], "add_bias", -1, 0, 1, 1, 0) < 0 ||
        get(args[7], &b[6], "s_out", -1, 1, 1, 1, 0) < 0) {
        release(b, 7);
        return NULL;
    }
    const Py_ssize_t total = b[0].b.len / 4;
    Py_ssize_t cols = b[2].held ? b[2].b.len / 4 : (b[0].b.ndim ? b[0].b.shape[b[0].b.ndim - 1] : 1);
    const char *bad = NULL;
    if (cols < 1 || total % cols) bad = "the normalised size does not divide the input";
    else if (b[1].b.len != b[0].b.len) bad = "output size differs from the input";
    else if (b[3].held && b[3].b.len / 4 != cols) bad = "bias length differs from the normalised size";
    else if (b[4].held && (b[4].b.len != b[0].b.len || !b[6].held || b[6].b.len != b[0].b.len))
        bad = "skip and its sum output must match the input";
    else if (b[5].held && (b[5].b.len / 4 != cols || !b[4].held)) bad = "the added bias needs a skip and the normalised size";
    if (bad) {
        release(b, 7);
        PyErr_Format(PyExc_ValueError, "layer_norm: %s", bad);
        return NULL;
    }
    const float *x = b[0].b.buf;
    float *y = b[1].b.buf;
    const float *scale = b[2].held ? b[2].b.buf : NULL, *bias = b[3].held ? b[3].b.buf : NULL;
    const float *skip = b[4].held ? b[4].b.buf : NULL, *add_bias = b[5].held ? b[5].b.buf : NULL;
    float *s_out = b[6].held ? b[6].b.buf : NULL;
    const long rows = (long)(total / cols);
    Py_BEGIN_ALLOW_THREADS
    layer_norm_run(rows, (long)cols, x, skip, add_bias, s_out, scale, bias, eps, y);
    Py_END_ALLOW_THREADS
    release(b, 7);
    Py_RETURN_NONE;
}

/* exp(x) in float32 (Cephes' expf: range reduction by ln 2, a degree-5 polynomial, 2^n from the
   exponent bits; relative error ~1e-7), branch-free so loops over it vectorise. exp(-inf) is 0,
   NaN stays NaN, inputs below the smallest normal result give 0, above 88.7 give +inf. */
static inline float exp_f32(float x) {
    const float lo = -87.33654f, hi = 88.72283f;
    float c = x < lo ? lo : x;
    c = c > hi ? hi : c;
    float fx = floorf(c * 1.44269504088896341f + 0.5f);
    float r = c - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    union {
        int i;
        float f;
    } pow2;
    pow2.i = ((int)fx + 127) << 23;
    y *= pow2.f;
    y = x < lo ? 0.0f : y;
    y = x > hi ? INFINITY : y;
    return x != x ? x : y;
}

/* LayerNorm over axis 1 of x [N, C, P] (channels first): statistics per (n, p) across C,
   accumulated in double, vectorised across P. ``stat`` holds 2 * P doubles. */
HOT static void layer_norm_cf_run(long n, long c, long p, const float *x, const float *scale, const float *bias,
                                  double eps, float *y, double *stat) {
    double *mean = stat, *var = stat + p;
    for (long b = 0; b < n; b++) {
        const float *xb = x + b * c * p;
        float *yb = y + b * c * p;
        for (long i = 0; i < p; i++) mean[i] = 0.0, var[i] = 0.0;
        for (long ch = 0; ch < c; ch++)
            for (long i = 0; i < p; i++) mean[i] += xb[ch * p + i];
        for (long i = 0; i < p; i++) mean[i] = (float)(mean[i] / (double)c);
        for (long ch = 0; ch < c; ch++)
            for (long i = 0; i < p; i++) {
                const float d = xb[ch * p + i] - (float)mean[i];
                yb[ch * p + i] = d;
                var[i] += (double)d * (double)d;
            }
        for (long i = 0; i < p; i++) var[i] = (float)sqrt((double)(float)(var[i] / (double)c) + eps);
        for (long ch = 0; ch < c; ch++) {
            const float sc = scale ? scale[ch] : 1.0f, bi = bias ? bias[ch] : 0.0f;
            for (long i = 0; i < p; i++) {
                float v = yb[ch * p + i] / (float)var[i];
                if (scale) v *= sc;
                if (bias) v += bi;
                yb[ch * p + i] = v;
            }
        }
    }
}

/* layer_norm_cf(x, y, scale|None, bias|None, eps): LayerNorm across axis 1 of a C-contiguous
   float32 x of rank >= 2; scale and bias hold one value per channel. */
static PyObject *layer_norm_cf(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "layer_norm_cf takes 5 arguments");
        return NULL;
    }
    double eps;
    if (as_double(args[4], &eps) < 0) return NULL;
    Buf b[4];
    memset(b, 0, sizeof b);
    if (get(args[0], &b[0], "x", -1, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "y", -1, 1, 1, 0, 0) < 0 ||
        get(args[2], &b[2], "scale", -1, 0, 1, 1, 0) < 0 || get(args[3], &b[3], "bias", -1, 0, 1, 1, 0) < 0) {
        release(b, 4);
        return NULL;
    }
    const char *bad = NULL;
    long n = 0, c = 0, p = 1;
    if (b[0].b.ndim < 2) bad = "x needs rank >= 2";
    else {
        n = (long)b[0].b.shape[0], c = (long)b[0].b.shape[1];
        for (int i = 2; i < b[0].b.ndim; i++) p *= (long)b[0].b.shape[i];
        if (b[1].b.len != b[0].b.len) bad = "output size differs from the input";
        else if ((b[2].held && b[2].b.len / 4 != c) || (b[3].held && b[3].b.len / 4 != c))
            bad = "scale / bias need one value per channel";
        else if (c < 1) bad = "no channels";
    }
    double *stat = bad ? NULL : malloc(sizeof(double) * 2 * (size_t)(p > 0 ? p : 1));
    if (!bad && !stat) {
        release(b, 4);
        return PyErr_NoMemory();
    }
    if (bad) {
        release(b, 4);
        PyErr_Format(PyExc_ValueError, "layer_norm_cf: %s", bad);
        return NULL;
    }
    const float *x = b[0].b.buf, *scale = b[2].held ? b[2].b.buf : NULL, *bias = b[3].held ? b[3].b.buf : NULL;
    float *y = b[1].b.buf;
    Py_BEGIN_ALLOW_THREADS
    layer_norm_cf_run(n, c, p, x, scale, bias, eps, y, stat);
    Py_END_ALLOW_THREADS
    free(stat);
    release(b, 4);
    Py_RETURN_NONE;
}

/* rms_norm(x, y, scale|None, eps, cols): y = x * (1 / sqrt(mean(x^2) + eps)) * scale over rows of
   ``cols`` values of a C-contiguous float32 x (the reference's order: the reciprocal first). */
static PyObject *rms_norm(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "rms_norm takes 5 arguments");
        return NULL;
    }
    double eps;
    long cols;
    if (as_double(args[3], &eps) < 0 || as_long(args[4], &cols) < 0) return NULL;
    Buf b[3];
    memset(b, 0, sizeof b);
    if (get(args[0], &b[0], "x", -1, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "y", -1, 1, 1, 0, 0) < 0 ||
        get(args[2], &b[2], "scale", -1, 0, 1, 1, 0) < 0) {
        release(b, 3);
        return NULL;
    }
    const long total = (long)(b[0].b.len / 4);
    if (cols < 1 || total % cols || b[1].b.len != b[0].b.len || (b[2].held && b[2].b.len / 4 != cols)) {
        release(b, 3);
        PyErr_SetString(PyExc_ValueError, "rms_norm: rows, output or scale do not match");
        return NULL;
    }
    const float *x = b[0].b.buf, *scale = b[2].held ? b[2].b.buf : NULL;
    float *y = b[1].b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (long i = 0; i < total / cols; i++) {
        const float *xr = x + i * cols;
        float *yr = y + i * cols;
        double lane[4] = {0, 0, 0, 0};
        long j = 0;
        for (; j + 4 <= cols; j += 4)
            for (int l = 0; l < 4; l++) lane[l] += (double)(xr[j + l] * xr[j + l]);
        double sq = (lane[0] + lane[2]) + (lane[1] + lane[3]);
        for (; j < cols; j++) sq += (double)(xr[j] * xr[j]);
        const float inv = 1.0f / (float)sqrt((double)(float)(sq / (double)cols) + eps);
        for (j = 0; j < cols; j++) {
            float v = xr[j] * inv;
            if (scale) v *= scale[j];
            yr[j] = v;
        }
    }
    Py_END_ALLOW_THREADS
    release(b, 3);
    Py_RETURN_NONE;
}

/* The reference softmax of one row in place: max shift (a non-finite max shifts by 0), exp, sum. */
HOT static void softmax_row(float *e, long n) {
    float lane[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int nan[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    long j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            const float v = e[j + l];
            nan[l] |= v != v;
            lane[l] = v > lane[l] ? v : lane[l];
        }
    float m = -INFINITY;
    int any_nan = 0;
    for (int l = 0; l < 8; l++) {
        m = lane[l] > m ? lane[l] : m;
        any_nan |= nan[l];
    }
    for (; j < n; j++) {
        any_nan |= e[j] != e[j];
        m = e[j] > m ? e[j] : m;
    }
    if (any_nan || !isfinite(m)) m = 0.0f;
    for (long j = 0; j < n; j++) e[j] = exp_f32(e[j] - m);
    const float s = (float)sum_f64(e, n);
    for (long j = 0; j < n; j++) e[j] /= s;
}

/* softmax(x): softmax over the last dim of a C-contiguous float32 array, in place. */
static PyObject *softmax(PyObject *self, PyObject *arg) {
    Buf b;
    if (get(arg, &b, "x", -1, 1, 1, 0, 0) < 0) {
        release(&b, 1);
        return NULL;
    }
    const long n = b.b.ndim ? (long)b.b.shape[b.b.ndim - 1] : 1;
    const long rows = n ? (long)(b.b.len / 4 / n) : 0;
    float *x = b.b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (long i = 0; i < rows; i++) softmax_row(x + i * n, n);
    Py_END_ALLOW_THREADS
    release(&b, 1);
    Py_RETURN_NONE;
}

/* ---- attention -------------------------------------------------------------------------- */

typedef struct {
    long b, h, sq, d, hk, sk;
    Py_ssize_t qs[4], ks[4], vs[4], os[4], ms[4]; /* strides in elements (bool mask: bytes) */
    float scale, causal_fill; /* a finite fill is added to the score, as the reference does */
    int mask_kind, causal, nan_to_zero, finite_fill;
} AttnGeo;

HOT static void attention_run(const AttnGeo *g, const float *q, const float *k, const float *v, const void *mask,
                              float *o, float *p, float *kt) {
    const long rep = g->h / g->hk, sk = g->sk, d = g->d;
    for (long bi = 0; bi < g->b; bi++) {
        for (long hi = 0; hi < g->h; hi++) {
            const long hk = hi / rep;
            const float *qb = q + bi * g->qs[0] + hi * g->qs[1];
            const float *kb = k + bi * g->ks[0] + hk * g->ks[1];
            const float *vb = v + bi * g->vs[0] + hk * g->vs[1];
            /* K transposed to [D, Sk] once per head: each score row is then D passes of
               contiguous multiply-adds over the keys, summed over D in order as a dot product is */
            for (long j = 0; j < sk; j++)
                for (long t = 0; t < d; t++) kt[t * sk + j] = kb[j * g->ks[2] + t * g->ks[3]];
            for (long i = 0; i < g->sq; i++) {
                const float *qr = qb + i * g->qs[2];
                for (long j = 0; j < sk; j++) p[j] = 0.0f;
                for (long t = 0; t < d; t++) {
                    const float qv = qr[t * g->qs[3]];
                    const float *kr = kt + t * sk;
                    for (long j = 0; j < sk; j++) p[j] += qv * kr[j];
                }
                if (g->scale != 1.0f)
                    for (long j = 0; j < sk; j++) p[j] *= g->scale;
                const long keep_to = g->causal ? i + sk - g->sq : sk - 1; /* the last unmasked key */
                const float *mf = g->mask_kind == 1 ? (const float *)mask + bi * g->ms[0] + hi * g->ms[1] + i * g->ms[2] : NULL;
                const char *mb = g->mask_kind == 2 ? (const char *)mask + bi * g->ms[0] + hi * g->ms[1] + i * g->ms[2] : NULL;
                for (long j = 0; j < sk; j++) {
                    if (j > keep_to) p[j] = g->finite_fill ? p[j] + g->causal_fill : -INFINITY;
                    else if (mf) p[j] += mf[j * g->ms[3]];
                    else if (mb && !mb[j * g->ms[3]]) p[j] = -INFINITY;
                }
                softmax_row(p, sk);
                if (g->nan_to_zero)
                    for (long j = 0; j < sk; j++) p[j] = p[j] != p[j] ? 0.0f : p[j];
                float *orow = o + bi * g->os[0] + hi * g->os[1] + i * g->os[2];
                if (g->vs[3] == 1 && g->os[3] == 1) {
                    for (long t = 0; t < d; t++) orow[t] = 0.0f;
                    for (long j = 0; j < sk; j++) {
                        const float pj = p[j];
                        const float *restrict vr = vb + j * g->vs[2];
                        float *restrict out = orow;
                        for (long t = 0; t < d; t++) out[t] += pj * vr[t];
                    }
                } else {
                    for (long t = 0; t < d; t++) orow[t * g->os[3]] = 0.0f;
                    for (long j = 0; j < sk; j++) {
                        const float pj = p[j];
                        const float *vr = vb + j * g->vs[2];
                        for (long t = 0; t < d; t++) orow[t * g->os[3]] += pj * vr[t * g->vs[3]];
                    }
                }
            }
        }
    }
}

static int strides_of(const Buf *b, Py_ssize_t *out, Py_ssize_t item) {
    for (int i = 0; i < 4; i++) {
        if (b->b.strides[i] % item) return -1;
        out[i] = b->b.strides[i] / item;
    }
    return 0;
}

/* The mask's strides in elements once broadcast (NumPy's rules, aligned right) to ``dims``;
   -1 if it does not broadcast, -2 if a stride is not whole elements. */
static int broadcast_strides(const Buf *b, const long *dims, Py_ssize_t *out, Py_ssize_t item) {
    const int nd = b->b.ndim;
    if (nd > 4) return -1;
    for (int i = 0; i < 4; i++) {
        const int k = i - (4 - nd);
        if (k < 0) {
            out[i] = 0;
            continue;
        }
        const Py_ssize_t n = b->b.shape[k];
        if (n == 1) out[i] = 0;
        else if (n == dims[i]) {
            if (b->b.strides[k] % item) return -2;
            out[i] = b->b.strides[k] / item;
        } else
            return -1;
    }
    return 0;
}

/* attention(q, k, v, mask|None, out, scale, mask_kind, causal, nan_to_zero, causal_fill)
   q, out [B,H,Sq,D]; k, v [B,Hk,Sk,D] (H a multiple of Hk); a mask that broadcasts to
   [B,H,Sq,Sk] (float32 additive, mask_kind 1, or bool, mask_kind 2); any strides. Causal:
   keys after a query's position (aligned to the end) score -inf, or, with a finite causal_fill,
   their unmasked score plus the fill (the reference's rule for exporters' finfo.min masks). */
static PyObject *attention(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "attention takes 10 arguments");
        return NULL;
    }
    Buf b[5];
    memset(b, 0, sizeof b);
    AttnGeo g;
    double scale, fill;
    long kind, causal, ntz;
    if (as_double(args[5], &scale) < 0 || as_long(args[6], &kind) < 0 || as_long(args[7], &causal) < 0 ||
        as_long(args[8], &ntz) < 0 || as_double(args[9], &fill) < 0)
        return NULL;
    if (get(args[0], &b[0], "q", 4, 0, 0, 0, 0) < 0 || get(args[1], &b[1], "k", 4, 0, 0, 0, 0) < 0 ||
        get(args[2], &b[2], "v", 4, 0, 0, 0, 0) < 0 ||
        get(args[3], &b[3], "mask", -1, 0, 0, kind == 0, kind == 2) < 0 || get(args[4], &b[4], "out", 4, 1, 0, 0, 0) < 0) {
        release(b, 5);
        return NULL;
    }
    Py_ssize_t *qs = b[0].b.shape, *ks = b[1].b.shape, *vs = b[2].b.shape, *os = b[4].b.shape;
    g.b = qs[0], g.h = qs[1], g.sq = qs[2], g.d = qs[3], g.hk = ks[1], g.sk = ks[2];
    g.scale = (float)scale, g.mask_kind = (int)kind, g.causal = (int)causal, g.nan_to_zero = (int)ntz;
    g.finite_fill = isfinite(fill) ? 1 : 0, g.causal_fill = (float)fill;
    const char *bad = NULL;
    if (ks[0] != g.b || vs[0] != g.b || ks[3] != g.d || vs[1] != g.hk || vs[2] != g.sk || vs[3] != g.d)
        bad = "q, k and v shapes do not match";
    else if (g.hk < 1 || g.h % g.hk) bad = "query heads are not a multiple of the key heads";
    else if (os[0] != g.b || os[1] != g.h || os[2] != g.sq || os[3] != g.d) bad = "output shape differs from q";
    else if (kind < 0 || kind > 2) bad = "unknown mask kind";
    else if (kind && !b[3].held) bad = "the mask kind needs a mask";
    else if (strides_of(&b[0], g.qs, 4) || strides_of(&b[1], g.ks, 4) || strides_of(&b[2], g.vs, 4) ||
             strides_of(&b[4], g.os, 4))
        bad = "strides are not whole elements";
    else if (kind) {
        const long dims[4] = {g.b, g.h, g.sq, g.sk};
        const int r = broadcast_strides(&b[3], dims, g.ms, kind == 2 ? 1 : 4);
        if (r == -1) bad = "the mask does not broadcast to [B, H, Sq, Sk]";
        else if (r) bad = "mask strides are not whole elements";
    }
    if (bad) {
        release(b, 5);
        PyErr_Format(PyExc_ValueError, "attention: %s", bad);
        return NULL;
    }
    float *p = malloc(sizeof(float) * (size_t)(g.sk > 0 ? g.sk : 1) * (size_t)(1 + (g.d > 0 ? g.d : 1)));
    if (!p) {
        release(b, 5);
        return PyErr_NoMemory();
    }
    const float *q = b[0].b.buf, *k = b[1].b.buf, *v = b[2].b.buf;
    const void *mask = b[3].held ? b[3].b.buf : NULL;
    float *o = b[4].b.buf;
    Py_BEGIN_ALLOW_THREADS
    attention_run(&g, q, k, v, mask, o, p, p + (g.sk > 0 ? g.sk : 1));
    Py_END_ALLOW_THREADS
    free(p);
    release(b, 5);
    Py_RETURN_NONE;
}

/* ---- pooling ------------------------------------------------------------------------------ */

typedef struct {
    long nc, h, w, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, kind;
} PoolGeo;

static inline float max_nan(float acc, float v) {
    const float m = v > acc ? v : acc;
    const float n = v != v ? v : m;  /* a NaN operand wins and stays */
    return acc != acc ? acc : n;
}

/* kind 0: max (padding never wins, NaN propagates), 1: sum / count[oh, ow]. Each plane is copied
   into a scratch plane padded with the reduction's identity (-inf or 0), then reduced in two
   passes: along the rows over the whole flat plane at once (kw taps at the column stride), then
   across each output row's kh rows, so every inner loop is one long contiguous vector loop.
   Returns -1 when the scratch cannot be allocated. */
HOT static int pool2d_run(const PoolGeo *g, const float *x, float *y, const float *count) {
    const long need_w = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
    const long need_h = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    long wp = need_w > g->pl + g->w ? need_w : g->pl + g->w;
    wp = (wp + g->sw - 1) / g->sw * g->sw; /* whole column strides per row: the flat pass stays aligned */
    const long hp = need_h > g->pt + g->h ? need_h : g->pt + g->h;
    const long hw = wp / g->sw;            /* row-reduced columns per padded row */
    const long tail = (g->kw - 1) * g->dw + g->sw;
    float *xp = malloc(sizeof(float) * (hp * wp + tail)), *hr = malloc(sizeof(float) * hp * hw);
    if (!xp || !hr) {
        free(xp);
        free(hr);
        return -1;
    }
    const float init = g->kind == 0 ? -INFINITY : 0.0f;
    for (long i = 0; i < hp * wp + tail; i++) xp[i] = init;
    const long plane = g->oh * g->ow, n = hp * hw;
    for (long c = 0; c < g->nc; c++) {
        const float *xc = x + c * g->h * g->w;
        float *yc = y + c * plane;
        for (long r = 0; r < g->h; r++) memcpy(xp + (r + g->pt) * wp + g->pl, xc + r * g->w, sizeof(float) * g->w);
        const long sw = g->sw, dw = g->dw;
        if (sw == 1) {
            memcpy(hr, xp, sizeof(float) * n);
            for (long s = 1; s < g->kw; s++) {
                const float *restrict src = xp + s * dw;
                if (g->kind == 0)
                    for (long j = 0; j < n; j++) hr[j] = max_nan(hr[j], src[j]);
                else
                    for (long j = 0; j < n; j++) hr[j] += src[j];
            }
        } else {
            for (long j = 0; j < n; j++) hr[j] = xp[j * sw];
            for (long s = 1; s < g->kw; s++) {
                const float *restrict src = xp + s * dw;
                if (g->kind == 0)
                    for (long j = 0; j < n; j++) hr[j] = max_nan(hr[j], src[j * sw]);
                else
                    for (long j = 0; j < n; j++) hr[j] += src[j * sw];
            }
        }
        for (long oh = 0; oh < g->oh; oh++) {
            float *restrict yr = yc + oh * g->ow;
            const float *h0 = hr + oh * g->sh * hw;
            memcpy(yr, h0, sizeof(float) * g->ow);
            for (long r = 1; r < g->kh; r++) {
                const float *restrict hrow = h0 + r * g->dh * hw;
                if (g->kind == 0)
                    for (long i = 0; i < g->ow; i++) yr[i] = max_nan(yr[i], hrow[i]);
                else
                    for (long i = 0; i < g->ow; i++) yr[i] += hrow[i];
            }
        }
        if (g->kind == 1)
            for (long i = 0; i < plane; i++) yc[i] /= count[i];
    }
    free(xp);
    free(hr);
    return 0;
}

/* pool2d(x, y, kind, kh, kw, sh, sw, pt, pl, dh, dw, count|None): MaxPool (kind 0) or AveragePool
   (kind 1, count [OH, OW]: what each window divides by) over x [N,C,H,W] into y [N,C,OH,OW]. */
static PyObject *pool2d(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "pool2d takes 12 arguments");
        return NULL;
    }
    long v[9];
    if (as_longs(args, 2, 9, v) < 0) return NULL;
    Buf b[3];
    memset(b, 0, sizeof b);
    if (get(args[0], &b[0], "x", 4, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "y", 4, 1, 1, 0, 0) < 0 ||
        get(args[11], &b[2], "count", 2, 0, 1, v[0] == 0, 0) < 0) {
        release(b, 3);
        return NULL;
    }
    Py_ssize_t *xs = b[0].b.shape, *ys = b[1].b.shape;
    PoolGeo g = {xs[0] * xs[1], xs[2], xs[3], ys[2], ys[3], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[0]};
    const char *bad = NULL;
    if (ys[0] != xs[0] || ys[1] != xs[1]) bad = "output batch or channels differ from the input";
    else if (g.kind != 0 && g.kind != 1) bad = "unknown pooling kind";
    else if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.dh < 1 || g.dw < 1 || g.pt < 0 || g.pl < 0)
        bad = "bad kernel, strides, dilations or pads";
    else if (g.kind == 1 && (b[2].b.shape[0] != g.oh || b[2].b.shape[1] != g.ow)) bad = "count shape differs from the output";
    if (bad) {
        release(b, 3);
        PyErr_Format(PyExc_ValueError, "pool2d: %s", bad);
        return NULL;
    }
    const float *x = b[0].b.buf, *count = b[2].held ? b[2].b.buf : NULL;
    float *y = b[1].b.buf;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pool2d_run(&g, x, y, count);
    Py_END_ALLOW_THREADS
    release(b, 3);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* A float32 sum in NumPy's pairwise order (blocks of 8 partial sums up to 128 values, halves
   above), so a mean matches np.mean's to the bit: a GlobalAveragePool whose channels differ only
   in their last bits then rounds as the reference does. */
static float pairwise_sum_f32(const float *a, long n) {
    if (n < 8) {
        float res = 0.0f;
        for (long i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        float r[8];
        for (int j = 0; j < 8; j++) r[j] = a[j];
        long i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    long n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum_f32(a, n2) + pairwise_sum_f32(a + n2, n - n2);
}

/* global_pool(x, y, kind): the mean (kind 1, NumPy's float32 pairwise sum) or max (kind 0, NaN propagates)
   of each [..., plane] row of a C-contiguous x into y (one value per row). */
static PyObject *global_pool(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "global_pool takes 3 arguments");
        return NULL;
    }
    long kind;
    if (as_long(args[2], &kind) < 0) return NULL;
    Buf b[2];
    memset(b, 0, sizeof b);
    if (get(args[0], &b[0], "x", -1, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "y", -1, 1, 1, 0, 0) < 0) {
        release(b, 2);
        return NULL;
    }
    const long rows = (long)(b[1].b.len / 4), total = (long)(b[0].b.len / 4);
    if (rows < 1 || total % rows || (kind != 0 && kind != 1)) {
        release(b, 2);
        PyErr_SetString(PyExc_ValueError, "global_pool: the output does not divide the input, or unknown kind");
        return NULL;
    }
    const long plane = total / rows;
    const float *x = b[0].b.buf;
    float *y = b[1].b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (long i = 0; i < rows; i++) {
        const float *r = x + i * plane;
        if (kind == 1) {
            y[i] = pairwise_sum_f32(r, plane) / (float)plane;
        } else {
            float m = -INFINITY;
            for (long j = 0; j < plane; j++) m = (r[j] > m || r[j] != r[j]) && m == m ? r[j] : m;
            y[i] = m;
        }
    }
    Py_END_ALLOW_THREADS
    release(b, 2);
    Py_RETURN_NONE;
}

/* ---- activations ------------------------------------------------------------------------ */

enum { ACT_NONE, ACT_RELU, ACT_CLIP, ACT_GELU, ACT_GELU_TANH, ACT_SIGMOID, ACT_SILU, ACT_TANH };

/* erf(x) by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), branch-free */
static inline float erf_f32(float x) {
    const float ax = fabsf(x);
    const float t = 1.0f / (1.0f + 0.3275911f * ax);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const float r = 1.0f - p * t * exp_f32(-ax * ax);
    return copysignf(r, x);
}

/* tanh(x): Cephes' tanhf (a polynomial below 0.625, 1 - 2 / (exp(2|x|) + 1) above), branch-free */
static inline float tanh_f32(float x) {
    const float ax = fabsf(x);
    const float z = x * x;
    const float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                          1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    const float big = copysignf(1.0f - 2.0f / (exp_f32(2.0f * ax) + 1.0f), x);
    const float r = ax < 0.625f ? small : big;
    return x != x ? x : r;
}

HOT static void activate_run(float *y, long n, int code, float lo, float hi) {
    switch (code) {
    case ACT_RELU:
        for (long i = 0; i < n; i++) y[i] = y[i] < 0.0f ? 0.0f : y[i];
        break;
    case ACT_CLIP:
        for (long i = 0; i < n; i++) {
            float v = y[i] < lo ? lo : y[i];
            y[i] = v > hi ? hi : v;
        }
        break;
    case ACT_GELU:
        for (long i = 0; i < n; i++) y[i] = 0.5f * y[i] * (1.0f + erf_f32(y[i] * 0.70710678118654752f));
        break;
    case ACT_GELU_TANH:
        for (long i = 0; i < n; i++) {
            const float x = y[i];
            y[i] = 0.5f * x * (1.0f + tanh_f32(0.7978845608028654f * (x + 0.044715f * x * x * x)));
        }
        break;
    case ACT_SIGMOID:
        for (long i = 0; i < n; i++) y[i] = 0.5f * tanh_f32(0.5f * y[i]) + 0.5f;
        break;
    case ACT_SILU:
        for (long i = 0; i < n; i++) y[i] *= 0.5f * tanh_f32(0.5f * y[i]) + 0.5f;
        break;
    case ACT_TANH:
        for (long i = 0; i < n; i++) y[i] = tanh_f32(y[i]);
        break;
    default:
        break;
    }
}

/* activate(y, code, lo, hi): the epilogue activation in place on a C-contiguous float32 array;
   code 1 ReLU, 2 Clip(lo, hi), 3 GELU (erf), 4 GELU (tanh), 5 Sigmoid, 6 SiLU, 7 Tanh. */
static PyObject *activate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "activate takes 4 arguments");
        return NULL;
    }
    long code;
    double lo, hi;
    if (as_long(args[1], &code) < 0 || as_double(args[2], &lo) < 0 || as_double(args[3], &hi) < 0) return NULL;
    if (code < ACT_NONE || code > ACT_TANH) {
        PyErr_Format(PyExc_ValueError, "activate: unknown activation code %ld", code);
        return NULL;
    }
    Buf b;
    if (get(args[0], &b, "y", -1, 1, 1, 0, 0) < 0) {
        release(&b, 1);
        return NULL;
    }
    float *y = b.b.buf;
    const long n = (long)(b.b.len / 4);
    Py_BEGIN_ALLOW_THREADS
    activate_run(y, n, (int)code, (float)lo, (float)hi);
    Py_END_ALLOW_THREADS
    release(&b, 1);
    Py_RETURN_NONE;
}

/* ---- local response normalization ---------------------------------------------------------- */

/* y = x / (bias + alpha / size * sum of x^2 over the channel window [c - lo, c + hi])^beta over
   x [N, C, plane], the window sum taken directly (no running sum) in float32; beta 0.75 (every
   Caffe-era model) is sqrt(d) * sqrt(sqrt(d)), 0.5 sqrt(d), 1 d, others powf. Returns -1 when
   the scratch cannot be allocated. */
HOT static int lrn_run(const float *x, float *y, long n, long c, long plane, long size, float alpha, float beta,
                       float bias) {
    float *acc = malloc(sizeof(float) * (plane > 0 ? plane : 1));
    if (!acc) return -1;
    const long lo = (size - 1) / 2, hi = size - 1 - lo;
    const float k = alpha / (float)size;
    const int form = beta == 0.75f ? 0 : beta == 0.5f ? 1 : beta == 1.0f ? 2 : 3;
    for (long b = 0; b < n; b++) {
        const float *xb = x + b * c * plane;
        float *yb = y + b * c * plane;
        for (long ch = 0; ch < c; ch++) {
            const long j0 = ch - lo < 0 ? 0 : ch - lo, j1 = ch + hi > c - 1 ? c - 1 : ch + hi;
            for (long i = 0; i < plane; i++) acc[i] = 0.0f;
            for (long j = j0; j <= j1; j++) {
                const float *restrict xj = xb + j * plane;
                for (long i = 0; i < plane; i++) acc[i] += xj[i] * xj[i];
            }
            const float *restrict xc = xb + ch * plane;
            float *restrict yc = yb + ch * plane;
            if (form == 0)
                for (long i = 0; i < plane; i++) {
                    const float d = bias + k * acc[i], r = sqrtf(d);
                    yc[i] = xc[i] / (r * sqrtf(r));
                }
            else if (form == 1)
                for (long i = 0; i < plane; i++) yc[i] = xc[i] / sqrtf(bias + k * acc[i]);
            else if (form == 2)
                for (long i = 0; i < plane; i++) yc[i] = xc[i] / (bias + k * acc[i]);
            else
                for (long i = 0; i < plane; i++) yc[i] = xc[i] / powf(bias + k * acc[i], beta);
        }
    }
    free(acc);
    return 0;
}

/* lrn(x, y, size, alpha, beta, bias): LRN across the channels of x [N, C, ...] into y (same shape). */
static PyObject *lrn(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "lrn takes 6 arguments");
        return NULL;
    }
    long size;
    double alpha, beta, bias;
    if (as_long(args[2], &size) < 0 || as_double(args[3], &alpha) < 0 || as_double(args[4], &beta) < 0 ||
        as_double(args[5], &bias) < 0)
        return NULL;
    Buf b[2];
    memset(b, 0, sizeof b);
    if (get(args[0], &b[0], "x", -1, 0, 1, 0, 0) < 0 || get(args[1], &b[1], "y", -1, 1, 1, 0, 0) < 0) {
        release(b, 2);
        return NULL;
    }
    const char *bad = NULL;
    if (b[0].b.ndim < 2) bad = "x needs batch and channel dims";
    else if (b[1].b.len != b[0].b.len || b[1].b.ndim != b[0].b.ndim) bad = "y differs from x in shape";
    else if (size < 1) bad = "size must be at least 1";
    if (bad) {
        release(b, 2);
        PyErr_Format(PyExc_ValueError, "lrn: %s", bad);
        return NULL;
    }
    const long n = (long)b[0].b.shape[0], c = (long)b[0].b.shape[1];
    const long plane = n * c ? (long)(b[0].b.len / 4) / (n * c) : 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = lrn_run(b[0].b.buf, b[1].b.buf, n, c, plane, size, (float)alpha, (float)beta, (float)bias);
    Py_END_ALLOW_THREADS
    release(b, 2);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* ---- pointwise chains ---------------------------------------------------------------------- */

enum { PW_ADD, PW_SUB, PW_MUL, PW_DIV, PW_MAX, PW_MIN, PW_RELU, PW_NEG, PW_EXP, PW_TANH, PW_SIGMOID, PW_ABS,
       PW_SQRT, PW_RECIPROCAL, PW_ERF, PW_COUNT };
enum { ARG_INPUT, ARG_STEP, ARG_CONST, ARG_NONE };

static inline float pw_max(float a, float b) { return a != a ? a : (b != b ? b : (a > b ? a : b)); }
static inline float pw_min(float a, float b) { return a != a ? a : (b != b ? b : (a < b ? a : b)); }

/* One step over a row: dst = op(a, b), a / b given as a row pointer with stride 0 (a broadcast
   value) or 1. No FMA contraction: each step rounds as its NumPy ufunc does. */
__attribute__((optimize("fp-contract=off"))) HOT static void pw_step(int op, float *restrict dst, const float *a,
                                                                     long sa, const float *b, long sb, long n) {
#define PW_LOOP(EXPR)                                                                                     \
    do {                                                                                                  \
        if (sa == 1 && sb == 1)                                                                           \
            for (long i = 0; i < n; i++) { const float x = a[i], y = b[i]; dst[i] = (EXPR); }             \
        else if (sa == 1)                                                                                 \
            for (long i = 0; i < n; i++) { const float x = a[i], y = b[0]; dst[i] = (EXPR); }             \
        else if (sb == 1)                                                                                 \
            for (long i = 0; i < n; i++) { const float x = a[0], y = b[i]; dst[i] = (EXPR); }             \
        else                                                                                              \
            for (long i = 0; i < n; i++) { const float x = a[0], y = b[0]; dst[i] = (EXPR); }             \
    } while (0)
    switch (op) {
    case PW_ADD: PW_LOOP(x + y); break;
    case PW_SUB: PW_LOOP(x - y); break;
    case PW_MUL: PW_LOOP(x * y); break;
    case PW_DIV: PW_LOOP(x / y); break;
    case PW_MAX: PW_LOOP(pw_max(x, y)); break;
    case PW_MIN: PW_LOOP(pw_min(x, y)); break;
    default: {
        const float *u = a;
        switch (op) {
        case PW_RELU: for (long i = 0; i < n; i++) { const float x = u[sa * i]; dst[i] = x < 0.0f ? 0.0f : x; } break;
        case PW_NEG: for (long i = 0; i < n; i++) dst[i] = -u[sa * i]; break;
        case PW_EXP: for (long i = 0; i < n; i++) dst[i] = exp_f32(u[sa * i]); break;
        case PW_TANH: for (long i = 0; i < n; i++) dst[i] = tanh_f32(u[sa * i]); break;
        case PW_SIGMOID: for (long i = 0; i < n; i++) dst[i] = 0.5f * tanh_f32(0.5f * u[sa * i]) + 0.5f; break;
        case PW_ABS: for (long i = 0; i < n; i++) dst[i] = fabsf(u[sa * i]); break;
        case PW_SQRT: for (long i = 0; i < n; i++) dst[i] = sqrtf(u[sa * i]); break;
        case PW_RECIPROCAL: for (long i = 0; i < n; i++) dst[i] = 1.0f / u[sa * i]; break;
        case PW_ERF: for (long i = 0; i < n; i++) dst[i] = erf_f32(u[sa * i]); break;
        default: break;
        }
    }
    }
#undef PW_LOOP
}

#define PW_MAXDIM 8

/* pointwise(shape, strides, inputs, consts, program, outputs)
   shape: int64 [D] (the output's, dims coalesced by the caller); strides: int64 [n_inputs, D], each
   input's strides in elements as broadcast to ``shape`` (0 on broadcast dims; the last dim's stride
   0 or 1); inputs: tuple of float32 arrays; consts: float32 [n_consts]; program: int64 [n_steps, 5]
   rows (op, a kind, a index, b kind, b index) with kinds input / step / const / none; outputs:
   tuple of (step index, C-contiguous float32 array of ``shape``). Rows of the last dim run every
   step in turn through a scratch row per step, so a chain reads and writes memory once. */
static PyObject *pointwise(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyTuple_Check(args[2]) || !PyTuple_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "pointwise(shape, strides, inputs: tuple, consts, program, outputs: tuple)");
        return NULL;
    }
    Py_buffer shp, str, cst, prg;
    if (PyObject_GetBuffer(args[0], &shp, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &str, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&shp);
        return NULL;
    }
    if (PyObject_GetBuffer(args[3], &cst, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&shp), PyBuffer_Release(&str);
        return NULL;
    }
    if (PyObject_GetBuffer(args[4], &prg, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&shp), PyBuffer_Release(&str), PyBuffer_Release(&cst);
        return NULL;
    }
    const Py_ssize_t n_in = PyTuple_GET_SIZE(args[2]), n_out = PyTuple_GET_SIZE(args[5]);
    const long nd = (long)(shp.len / 8), n_steps = (long)(prg.len / 40), n_const = (long)(cst.len / 4);
    Buf *ins = calloc((size_t)(n_in + n_out + 1), sizeof(Buf));
    long *out_step = malloc(sizeof(long) * (size_t)(n_out + 1));
    float *rows = NULL;
    const char *bad = NULL;
    if (!ins || !out_step) {
        bad = "out of memory";
        goto done;
    }
    if (shp.itemsize != 8 || str.itemsize != 8 || prg.itemsize != 8 || cst.itemsize != 4) bad = "bad table types";
    else if (nd < 1 || nd > PW_MAXDIM) bad = "1 to 8 dims";
    else if (str.len / 8 != n_in * nd) bad = "strides table does not match the inputs";
    if (bad) goto done;
    const long long *shape = shp.buf, *strides = str.buf, *prog = prg.buf;
    const float *consts = cst.buf;
    long inner = (long)shape[nd - 1], total = 1;
    for (long d = 0; d < nd; d++) {
        if (shape[d] < 0) bad = "negative dim";
        total *= (long)shape[d];
    }
    for (Py_ssize_t i = 0; i < n_in && !bad; i++) {
        if (get(PyTuple_GET_ITEM(args[2], i), &ins[i], "input", -1, 0, 0, 0, 0) < 0) goto fail;
        if (strides[i * nd + nd - 1] != 0 && strides[i * nd + nd - 1] != 1) bad = "an input's last stride is not 0 or 1";
        /* every element the strides reach lies inside the input's buffer */
        long long lo = 0, hi = 0;
        for (long d = 0; d < nd; d++) {
            const long long span = strides[i * nd + d] * (shape[d] > 0 ? shape[d] - 1 : 0);
            if (span < 0) lo += span; else hi += span;
        }
        const Py_buffer *v = &ins[i].b;
        long long vlo = 0, vhi = 0; /* the view's own reach, in elements, from its start */
        for (int d = 0; d < v->ndim; d++) {
            const long long span = (long long)(v->strides[d] / 4) * (v->shape[d] > 0 ? v->shape[d] - 1 : 0);
            if (span < 0) vlo += span; else vhi += span;
        }
        if (total > 0 && (lo < vlo || hi > vhi)) bad = "an input's strides reach outside it";
    }
    for (long k = 0; k < n_steps && !bad; k++) {
        const long long *row = prog + k * 5;
        if (row[0] < 0 || row[0] >= PW_COUNT) bad = "unknown op";
        for (int j = 0; j < 2 && !bad; j++) {
            const long long kind = row[1 + 2 * j], idx = row[2 + 2 * j];
            if ((kind == ARG_INPUT && (idx < 0 || idx >= n_in)) || (kind == ARG_STEP && (idx < 0 || idx >= k)) ||
                (kind == ARG_CONST && (idx < 0 || idx >= n_const)) || kind < 0 || kind > ARG_NONE ||
                (j == 0 && kind == ARG_NONE) || (j == 1 && kind == ARG_NONE && row[0] <= PW_MIN))
                bad = "bad operand";
        }
    }
    for (Py_ssize_t i = 0; i < n_out && !bad; i++) {
        PyObject *pair = PyTuple_GET_ITEM(args[5], i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            bad = "outputs are (step, array) pairs";
            break;
        }
        out_step[i] = PyLong_AsLong(PyTuple_GET_ITEM(pair, 0));
        if (out_step[i] == -1 && PyErr_Occurred()) goto fail;
        if (get(PyTuple_GET_ITEM(pair, 1), &ins[n_in + i], "output", -1, 1, 1, 0, 0) < 0) goto fail;
        if (out_step[i] < 0 || out_step[i] >= n_steps) bad = "output step out of range";
        else if (ins[n_in + i].b.len / 4 != total) bad = "an output's size differs from the shape";
    }
    if (bad) goto done;
    rows = malloc(sizeof(float) * (size_t)(n_steps > 0 ? n_steps : 1) * (size_t)(inner > 0 ? inner : 1));
    if (!rows) {
        bad = "out of memory";
        goto done;
    }
    {
        const float **base = malloc(sizeof(float *) * (size_t)(n_in + 1));
        float **outp = malloc(sizeof(float *) * (size_t)(n_out + 1));
        if (!base || !outp) {
            free(base), free(outp);
            bad = "out of memory";
            goto done;
        }
        for (Py_ssize_t i = 0; i < n_in; i++) base[i] = ins[i].b.buf;
        for (Py_ssize_t i = 0; i < n_out; i++) outp[i] = ins[n_in + i].b.buf;
        Py_BEGIN_ALLOW_THREADS
        long idx[PW_MAXDIM] = {0};
        const long n_rows = inner > 0 ? total / inner : 0;
        for (long r = 0; r < n_rows; r++) {
            for (long k = 0; k < n_steps; k++) {
                const long long *row = prog + k * 5;
                const float *op[2] = {NULL, NULL};
                long st[2] = {0, 0};
                for (int j = 0; j < 2; j++) {
                    const long long kind = row[1 + 2 * j], ix = row[2 + 2 * j];
                    if (kind == ARG_INPUT) {
                        long long off = 0;
                        for (long d = 0; d < nd - 1; d++) off += strides[ix * nd + d] * idx[d];
                        op[j] = base[ix] + off;
                        st[j] = (long)strides[ix * nd + nd - 1];
                    } else if (kind == ARG_STEP) {
                        op[j] = rows + ix * inner, st[j] = 1;
                    } else if (kind == ARG_CONST) {
                        op[j] = consts + ix, st[j] = 0;
                    }
                }
                pw_step((int)row[0], rows + k * inner, op[0], st[0], op[1] ? op[1] : op[0], op[1] ? st[1] : st[0], inner);
            }
            for (Py_ssize_t i = 0; i < n_out; i++) memcpy(outp[i] + r * inner, rows + out_step[i] * inner, sizeof(float) * (size_t)inner);
            for (long d = nd - 2; d >= 0; d--) { /* the next row's index */
                if (++idx[d] < shape[d]) break;
                idx[d] = 0;
            }
        }
        Py_END_ALLOW_THREADS
        free(base), free(outp);
    }
done:
    if (bad) PyErr_Format(PyExc_ValueError, "pointwise: %s", bad);
fail:
    if (ins) release(ins, (int)(n_in + n_out));
    free(ins), free(out_step), free(rows);
    PyBuffer_Release(&shp), PyBuffer_Release(&str), PyBuffer_Release(&cst), PyBuffer_Release(&prg);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* ---- module ----------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"conv2d", (PyCFunction)(void (*)(void))conv2d, METH_FASTCALL, "Direct 2-D convolution with its epilogue."},
    {"depthwise_c8", (PyCFunction)(void (*)(void))depthwise_c8, METH_FASTCALL, "Depthwise 2-D convolution, 8-channel blocks."},
    {"conv2d_blocked", (PyCFunction)(void (*)(void))conv2d_blocked, METH_FASTCALL, "Register-blocked 2-D convolution."},
    {"im2col", (PyCFunction)(void (*)(void))im2col, METH_FASTCALL, "Receptive fields into a column matrix."},
    {"winograd_in", (PyCFunction)(void (*)(void))winograd_in, METH_FASTCALL, "Winograd F(2x2,3x3) input transform."},
    {"winograd_out", (PyCFunction)(void (*)(void))winograd_out, METH_FASTCALL, "Winograd F(2x2,3x3) output transform and epilogue."},
    {"layer_norm", (PyCFunction)(void (*)(void))layer_norm, METH_FASTCALL, "LayerNorm / SkipLayerNorm over the last axis."},
    {"softmax", (PyCFunction)softmax, METH_O, "Softmax over the last axis, in place."},
    {"layer_norm_cf", (PyCFunction)(void (*)(void))layer_norm_cf, METH_FASTCALL, "LayerNorm across channels (axis 1)."},
    {"rms_norm", (PyCFunction)(void (*)(void))rms_norm, METH_FASTCALL, "RMSNorm over trailing axes."},
    {"attention", (PyCFunction)(void (*)(void))attention, METH_FASTCALL, "Scaled dot-product attention."},
    {"activate", (PyCFunction)(void (*)(void))activate, METH_FASTCALL, "An epilogue activation in place."},
    {"pool2d", (PyCFunction)(void (*)(void))pool2d, METH_FASTCALL, "MaxPool / AveragePool over 2-D windows."},
    {"pointwise", (PyCFunction)(void (*)(void))pointwise, METH_FASTCALL, "A fused pointwise chain in one pass."},
    {"lrn", (PyCFunction)(void (*)(void))lrn, METH_FASTCALL, "LRN across channels."},
    {"global_pool", (PyCFunction)(void (*)(void))global_pool, METH_FASTCALL, "GlobalAveragePool / GlobalMaxPool."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Native CPU kernels of workbench.", -1, methods,
                                     NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
