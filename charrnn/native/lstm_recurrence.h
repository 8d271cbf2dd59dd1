/* What the training kernels (lstm_amx.c, and lstm_vector.c in both its builds) share besides
 * their products: the shapes they run, the value types and their conversions, each thread's
 * share of the hidden units and its scratch, and the gate arithmetic of a time step (forward and
 * backward), so
 * that every kernel computes the same function line for line. Each includes it after defining
 * TILE (units per block) and KSTEP (the hidden multiple), and VALUE_FP32 for fp32 training.
 *
 * value_t is the type of the values that cross the kernel's boundary (x_gates, h, grad_h,
 * d_gates): bf16 under bf16 autocast, else fp32. act_t is the type of the activated gates kept
 * for backward: fp16 beside bf16 values (see lstm_amx.c), fp32 beside fp32 ones, so that fp32
 * training rounds nothing that nn.LSTM does not. */
#ifndef CHARRNN_LSTM_RECURRENCE_H
#define CHARRNN_LSTM_RECURRENCE_H

#include <limits.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lstm_math.h" /* the gates' sigmoid and tanh, shared with lstm_step.c */

/* The kernels' return codes besides 0, as lstm_train.py reads them. */
#define OUT_OF_MEMORY (-1)
#define UNSUPPORTED_SHAPE (-2)

static int shape_supported(int steps, int batch, int hidden, int threads) {
    return steps > 0 && batch > 0 && batch % TILE == 0 && hidden > 0 && hidden % KSTEP == 0
           && hidden <= INT_MAX / 4 && threads > 0; /* 4 * hidden is an int below */
}

#ifdef VALUE_FP32
typedef float value_t;
typedef float act_t;

static inline float load_value(float v) { return v; }

static inline float store_value(float f) { return f; }

static inline void store_acts(float *dst, const float *src, int n) { memcpy(dst, src, sizeof(float) * (size_t)n); }

static inline void load_acts(float *dst, const float *src, int n) { memcpy(dst, src, sizeof(float) * (size_t)n); }
#else
#include <immintrin.h>

typedef uint16_t value_t; /* bf16 */
typedef uint16_t act_t;   /* fp16 */

static inline float load_value(uint16_t v) {
    const union { uint32_t bits; float value; } x = {.bits = (uint32_t)v << 16};
    return x.value;
}

/* Round to nearest even, as torch does; a NaN stays a NaN. */
static inline uint16_t store_value(float f) {
    const union { float value; uint32_t bits; } x = {.value = f};
    const uint32_t rounded = x.bits + 0x7fffu + ((x.bits >> 16) & 1u);
    return (x.bits & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((x.bits >> 16) | 0x40u) : (uint16_t)(rounded >> 16);
}

/* n (a multiple of 16) values between fp32 and fp16 (F16C, part of AVX-512F). */
static inline void store_acts(uint16_t *dst, const float *src, int n) {
    for (int j = 0; j < n; j += 16)
        _mm256_storeu_si256((__m256i *)(dst + j), _mm512_cvtps_ph(_mm512_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT));
}

static inline void load_acts(float *dst, const uint16_t *src, int n) {
    for (int j = 0; j < n; j += 16)
        _mm512_storeu_ps(dst + j, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + j))));
}
#endif

/* Units [0, n) of one row of a thread's range. pre[g] hold the recurrent products of the
 * gates and leave holding the activated gates; the other pointers are at the range's first
 * unit (x_gates and bias at gate i, the other gates hidden apart). */
static inline void forward_units(size_t H, int n, float *restrict pre_i, float *restrict pre_f,
                                 float *restrict pre_g, float *restrict pre_o, const value_t *restrict x_gates,
                                 const float *restrict bias, const float *restrict c_prev, float *restrict c,
                                 value_t *restrict h) {
    #pragma omp simd
    for (int j = 0; j < n; j++) {
        const float i = sigmoid(pre_i[j] + load_value(x_gates[j]) + bias[j]);
        const float f = sigmoid(pre_f[j] + load_value(x_gates[H + j]) + bias[H + j]);
        const float g = tanh_approx(pre_g[j] + load_value(x_gates[2 * H + j]) + bias[2 * H + j]);
        const float o = sigmoid(pre_o[j] + load_value(x_gates[3 * H + j]) + bias[3 * H + j]);
        const float cell = f * c_prev[j] + i * g, t = tanh_approx(cell);
        pre_i[j] = i;
        pre_f[j] = f;
        pre_g[j] = g;
        pre_o[j] = o;
        c[j] = cell;
        h[j] = store_value(o * t);
    }
}

/* The hidden units a thread owns: whole blocks of 16, split as evenly as they go. */
static void my_units(int hidden, size_t *first, int *count) {
    const int blocks = hidden / TILE, threads = omp_get_num_threads(), me = omp_get_thread_num();
    const int from = blocks * me / threads, to = blocks * (me + 1) / threads;
    *first = (size_t)from * TILE;
    *count = (to - from) * TILE;
}

/* acts: the row's activated gates, loaded to fp32, n apart. d_bias (the bias gradient, at
 * gate i, the other gates hidden apart) accumulates the gate gradients before rounding, and so
 * does d_input, the row of the input table's gradient that this row looked up, if any
 * (`with_input` is a constant at each call, so each call compiles to its own loop). */
static inline void backward_units(size_t H, int n, const float *restrict acts, const float *restrict c_prev,
                                  const float *restrict c, const value_t *restrict grad_h,
                                  const float *restrict dh_rec, float *restrict dc, value_t *restrict d_gates,
                                  float *restrict d_bias, const int with_input, float *restrict d_input) {
    #pragma omp simd
    for (int j = 0; j < n; j++) {
        const float i = acts[j], f = acts[n + j], g = acts[2 * n + j], o = acts[3 * n + j];
        const float t = tanh_approx(c[j]);
        const float dh = load_value(grad_h[j]) + dh_rec[j];
        const float dcell = dc[j] + dh * o * (1.0f - t * t);
        const float di = dcell * g * i * (1.0f - i), df = dcell * c_prev[j] * f * (1.0f - f);
        const float dg = dcell * i * (1.0f - g * g), d_o = dh * t * o * (1.0f - o);
        d_gates[j] = store_value(di);
        d_gates[H + j] = store_value(df);
        d_gates[2 * H + j] = store_value(dg);
        d_gates[3 * H + j] = store_value(d_o);
        d_bias[j] += di;
        d_bias[H + j] += df;
        d_bias[2 * H + j] += dg;
        d_bias[3 * H + j] += d_o;
        if (with_input) {
            d_input[j] += di;
            d_input[H + j] += df;
            d_input[2 * H + j] += dg;
            d_input[3 * H + j] += d_o;
        }
        dc[j] = dcell * f;
    }
}

/* In a thread of a kernel's parallel region: its units and a scratch buffer of floats_per_unit
 * floats per unit. NULL if the buffer cannot be had. */
static float *thread_share(int hidden, size_t floats_per_unit, size_t *u0, int *n) {
    my_units(hidden, u0, n);
    return malloc(sizeof(float) * floats_per_unit * (size_t)(*n > 0 ? *n : 1));
}

/* Forward's gate arithmetic of time step t for a thread's units [u0, u0 + n), every row of the
 * batch, once its products are in `pre` ([4][batch][n], gate by gate): the activated gates
 * (kept in acts), c and h. The inputs' projections are x_gates' row of the step or, with ids,
 * the table's row each id names. */
static inline void forward_step_units(int t, size_t B, size_t H, size_t u0, int n, float *pre,
                                      const value_t *x_gates, const int64_t *ids, const float *bias,
                                      const float *c0, act_t *acts, float *c, value_t *h) {
    const size_t G = 4 * H;
    const float *c_prev = t > 0 ? c + (size_t)(t - 1) * B * H : c0;
    for (size_t b = 0; b < B; b++) {
        const size_t row = (size_t)t * B + b;
        float *rows[4] = {pre + b * n, pre + (B + b) * n, pre + (2 * B + b) * n, pre + (3 * B + b) * n};
        const value_t *inputs = x_gates + (ids != NULL ? (size_t)ids[row] : row) * G;
        forward_units(H, n, rows[0], rows[1], rows[2], rows[3], inputs + u0, bias + u0, c_prev + b * H + u0,
                      c + row * H + u0, h + row * H + u0);
        for (int g = 0; g < 4; g++)
            store_acts(acts + row * G + g * H + u0, rows[g], n);
    }
}

/* Backward's gate arithmetic of time step t for a thread's units [u0, u0 + n), every row of
 * the batch: the gate gradients, the carried dh and dc, and the bias's (and with ids, the
 * table's) fp32 sums. `gates` is the thread's scratch for one row's activated gates. */
static inline void backward_step_units(int t, size_t B, size_t H, size_t u0, int n, float *gates,
                                       const act_t *acts, const float *c, const float *c0,
                                       const value_t *grad_h, float *dh_rec, float *dc, value_t *d_gates,
                                       float *d_bias, const int64_t *ids, float *d_table) {
    const size_t G = 4 * H;
    const float *c_prev = t > 0 ? c + (size_t)(t - 1) * B * H : c0;
    for (size_t b = 0; b < B; b++) {
        const size_t row = (size_t)t * B + b;
        for (int g = 0; g < 4; g++)
            load_acts(gates + g * n, acts + row * G + g * H + u0, n);
        const float *args_c_prev = c_prev + b * H + u0, *args_c = c + row * H + u0;
        if (ids != NULL)
            backward_units(H, n, gates, args_c_prev, args_c, grad_h + row * H + u0, dh_rec + b * H + u0,
                           dc + b * H + u0, d_gates + row * G + u0, d_bias + u0, 1,
                           d_table + (size_t)ids[row] * G + u0);
        else
            backward_units(H, n, gates, args_c_prev, args_c, grad_h + row * H + u0, dh_rec + b * H + u0,
                           dc + b * H + u0, d_gates + row * G + u0, d_bias + u0, 0, NULL);
    }
}

#endif
