/* An LSTM layer's recurrence with AVX512-BF16 dot products, for training in bf16 on a CPU
 * without AMX tiles (AMD Zen 4 and later, Intel Cooper Lake).
 *
 * lstm_amx.c's design, arguments and packed layout, with each tile product replaced by
 * `vdpbf16ps` (_mm512_dpbf16_ps): 16 fp32 lanes, each adding the dot product of a pair of bf16
 * values of the left operand (broadcast to every lane) and the lane's own pair of the right
 * one. The packed right operand lstm_train.py builds for the tiles, [column blocks of 16][K / 2]
 * [16][2], is exactly that: each 64-byte line of a block is one K pair of its 16 columns. See
 * lstm_amx.c for the recurrence, the threads' split of the hidden units and the gate
 * arithmetic, which are the same here line for line (lstm_math.h's sigmoid and tanh, fp16
 * activated gates kept for backward, fp32 cell, dh and dc, fp32 sums of the bias and table
 * gradients), and docs/experiments.md, "AVX512-BF16 recurrence", for what it measured.
 *
 * A product is blocked ROWS rows by up to COLS column blocks of 16: ROWS * COLS fp32
 * accumulators live in registers over the whole K, and each K pair costs COLS loads of the
 * right operand and ROWS broadcasts of the left for ROWS * COLS dot products. Forward's
 * column blocks are a unit block's four gates, two at a time, so its products land gate by
 * gate as lstm_amx.c's do. 8 x 2 measured a little faster than 4 x 4, 4 x 2 and 16 x 1 (all
 * within 10 %, at about 145 GFLOP/s on 2 Sapphire Rapids cores: docs/experiments.md).
 *
 * The kernels return UNSUPPORTED_SHAPE, touching nothing, for the shapes lstm_amx.c refuses
 * (the same constants, so that lstm_train.py treats both alike): steps > 0, batch a positive
 * multiple of 16, hidden a positive multiple of 32, threads > 0. charrnn_avx512_abi, at the
 * end, lets native.py check these constants at load.
 */
#include <immintrin.h>
#include <limits.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lstm_math.h" /* the gates' sigmoid and tanh, shared with lstm_step.c and lstm_amx.c */

#define TILE 16  /* hidden units per block, fp32 lanes of a vector, and the batch multiple */
#define KSTEP 32 /* the hidden multiple, as lstm_amx.c's (bf16 values of K in a tile) */
#define ROWS 8 /* rows of a product's register block (batch is a multiple) */
#define COLS 2 /* column blocks of 16 of a product's register block (4 and 8 blocks are multiples) */
#define ABI_VERSION 1 /* charrnn.native.AVX512_ABI_VERSION: raise both when a function's arguments change */

/* The kernels' return codes besides 0, as lstm_train.py reads them. */
#define OUT_OF_MEMORY (-1)
#define UNSUPPORTED_SHAPE (-2)

static int shape_supported(int steps, int batch, int hidden, int threads) {
    return steps > 0 && batch > 0 && batch % TILE == 0 && hidden > 0 && hidden % KSTEP == 0
           && hidden <= INT_MAX / 4 && threads > 0; /* 4 * hidden is an int below */
}

static inline float from_bf16(uint16_t v) {
    const union { uint32_t bits; float value; } x = {.bits = (uint32_t)v << 16};
    return x.value;
}

/* Round to nearest even, as torch does; a NaN stays a NaN. */
static inline uint16_t to_bf16(float f) {
    const union { float value; uint32_t bits; } x = {.value = f};
    const uint32_t rounded = x.bits + 0x7fffu + ((x.bits >> 16) & 1u);
    return (x.bits & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((x.bits >> 16) | 0x40u) : (uint16_t)(rounded >> 16);
}

/* out (ROWS rows x cols <= COLS column blocks of 16, fp32; rows out_row floats apart, column blocks
 * out_col floats apart) = a (ROWS rows x k_len bf16, rows a_row values apart) @ cols packed
 * column blocks (k_len / 2 x 16 x 2 bf16 each, b_col values apart). `cols` is a constant at each
 * call, so each call compiles to its own loop with the accumulators in registers. */
static inline __attribute__((always_inline)) void dp_product(const uint16_t *restrict a, size_t a_row,
                                                             const uint16_t *restrict b, size_t b_col,
                                                             const int cols, int k_len, float *restrict out,
                                                             size_t out_row, size_t out_col) {
    __m512 acc[ROWS][COLS];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < cols; j++)
            acc[r][j] = _mm512_setzero_ps();
    for (int k = 0; k < k_len; k += 2) {
        __m512bh right[COLS];
        for (int j = 0; j < cols; j++)
            right[j] = (__m512bh)_mm512_loadu_si512(b + j * b_col + (size_t)k * TILE);
        for (int r = 0; r < ROWS; r++) {
            uint32_t pair;
            memcpy(&pair, a + r * a_row + k, sizeof pair);
            const __m512bh left = (__m512bh)_mm512_set1_epi32((int)pair);
            for (int j = 0; j < cols; j++)
                acc[r][j] = _mm512_dpbf16_ps(acc[r][j], left, right[j]);
        }
    }
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < cols; j++)
            _mm512_storeu_ps(out + r * out_row + j * out_col, acc[r][j]);
}

/* n (a multiple of 16) values between fp32 and fp16 (F16C, part of AVX-512F). */
static inline void store_fp16(uint16_t *dst, const float *src, int n) {
    for (int j = 0; j < n; j += 16)
        _mm256_storeu_si256((__m256i *)(dst + j), _mm512_cvtps_ph(_mm512_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT));
}

static inline void load_fp16(float *dst, const uint16_t *src, int n) {
    for (int j = 0; j < n; j += 16)
        _mm512_storeu_ps(dst + j, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + j))));
}

/* Units [0, n) of one row of a thread's range. pre[g] hold the recurrent products of the
 * gates and leave holding the activated gates; the other pointers are at the range's first
 * unit (x_gates and bias at gate i, the other gates hidden apart). */
static inline void forward_units(size_t H, int n, float *restrict pre_i, float *restrict pre_f,
                                 float *restrict pre_g, float *restrict pre_o, const uint16_t *restrict x_gates,
                                 const float *restrict bias, const float *restrict c_prev, float *restrict c,
                                 uint16_t *restrict h) {
    #pragma omp simd
    for (int j = 0; j < n; j++) {
        const float i = sigmoid(pre_i[j] + from_bf16(x_gates[j]) + bias[j]);
        const float f = sigmoid(pre_f[j] + from_bf16(x_gates[H + j]) + bias[H + j]);
        const float g = tanh_approx(pre_g[j] + from_bf16(x_gates[2 * H + j]) + bias[2 * H + j]);
        const float o = sigmoid(pre_o[j] + from_bf16(x_gates[3 * H + j]) + bias[3 * H + j]);
        const float cell = f * c_prev[j] + i * g, t = tanh_approx(cell);
        pre_i[j] = i;
        pre_f[j] = f;
        pre_g[j] = g;
        pre_o[j] = o;
        c[j] = cell;
        h[j] = to_bf16(o * t);
    }
}

/* The hidden units a thread owns: whole blocks of 16, split as evenly as they go. */
static void my_units(int hidden, size_t *first, int *count) {
    const int blocks = hidden / TILE, threads = omp_get_num_threads(), me = omp_get_thread_num();
    const int from = blocks * me / threads, to = blocks * (me + 1) / threads;
    *first = (size_t)from * TILE;
    *count = (to - from) * TILE;
}

/* In a thread of a kernel's parallel region: its units and a scratch buffer of
 * floats_per_unit floats per unit. NULL if the buffer cannot be had. */
static float *start_thread(int hidden, size_t floats_per_unit, size_t *u0, int *n) {
    my_units(hidden, u0, n);
    return malloc(sizeof(float) * floats_per_unit * (size_t)(*n > 0 ? *n : 1));
}

/* As charrnn_amx_lstm_forward (lstm_amx.c), which documents the arguments: x_gates [steps]
 * [batch][4H] bf16 or, with ids [steps][batch], the table whose rows they index; w_packed:
 * W_hh^T packed, K = hidden; h0 [batch][H] bf16, c0 [batch][H]; out: acts [steps][batch][4H]
 * fp16, c [steps][batch][H], h [steps][batch][H] bf16. Returns 0, OUT_OF_MEMORY or
 * UNSUPPORTED_SHAPE. */
int charrnn_avx512_lstm_forward(int steps, int batch, int hidden, int threads, const uint16_t *x_gates,
                                const int64_t *ids, const uint16_t *w_packed, const float *bias,
                                const uint16_t *h0, const float *c0, uint16_t *acts, float *c, uint16_t *h) {
    if (!shape_supported(steps, batch, hidden, threads))
        return UNSUPPORTED_SHAPE;
    const size_t H = (size_t)hidden, G = 4 * H, B = (size_t)batch;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|:failed)
    {
        size_t u0;
        int n;
        float *pre = start_thread(hidden, 4 * B, &u0, &n); /* [4][batch][n] */
        failed = pre == NULL;
        for (int t = 0; t < steps; t++) {
            const uint16_t *h_prev = t > 0 ? h + (size_t)(t - 1) * B * H : h0;
            const float *c_prev = t > 0 ? c + (size_t)(t - 1) * B * H : c0;
            for (int block = 0; block < n / TILE && !failed; block++)
                for (size_t g = 0; g < 4; g += COLS) /* the block's gates, COLS at a time */
                    for (size_t m0 = 0; m0 < B; m0 += ROWS)
                        dp_product(h_prev + m0 * H, H, w_packed + (g * H + u0 + (size_t)block * TILE) * H, H * H, COLS,
                                   hidden, pre + (g * B + m0) * n + (size_t)block * TILE, (size_t)n, B * n);
            for (size_t b = 0; b < B && !failed; b++) {
                const size_t row = (size_t)t * B + b;
                float *rows[4] = {pre + b * n, pre + (B + b) * n, pre + (2 * B + b) * n, pre + (3 * B + b) * n};
                const uint16_t *inputs = x_gates + (ids != NULL ? (size_t)ids[row] : row) * G;
                forward_units(H, n, rows[0], rows[1], rows[2], rows[3], inputs + u0, bias + u0,
                              c_prev + b * H + u0, c + row * H + u0, h + row * H + u0);
                for (int g = 0; g < 4; g++)
                    store_fp16(acts + row * G + g * H + u0, rows[g], n);
            }
            #pragma omp barrier
        }
        free(pre);
    }
    return failed ? OUT_OF_MEMORY : 0;
}

/* acts: the row's activated gates, loaded to fp32, n apart. d_bias (the bias gradient, at
 * gate i, the other gates hidden apart) accumulates the gate gradients before rounding, and so
 * does d_input, the row of the input table's gradient that this row looked up, if any
 * (`with_input` is a constant at each call, so each call compiles to its own loop). */
static inline void backward_units(size_t H, int n, const float *restrict acts, const float *restrict c_prev,
                                  const float *restrict c, const uint16_t *restrict grad_h,
                                  const float *restrict dh_rec, float *restrict dc, uint16_t *restrict d_gates,
                                  float *restrict d_bias, const int with_input, float *restrict d_input) {
    #pragma omp simd
    for (int j = 0; j < n; j++) {
        const float i = acts[j], f = acts[n + j], g = acts[2 * n + j], o = acts[3 * n + j];
        const float t = tanh_approx(c[j]);
        const float dh = from_bf16(grad_h[j]) + dh_rec[j];
        const float dcell = dc[j] + dh * o * (1.0f - t * t);
        const float di = dcell * g * i * (1.0f - i), df = dcell * c_prev[j] * f * (1.0f - f);
        const float dg = dcell * i * (1.0f - g * g), d_o = dh * t * o * (1.0f - o);
        d_gates[j] = to_bf16(di);
        d_gates[H + j] = to_bf16(df);
        d_gates[2 * H + j] = to_bf16(dg);
        d_gates[3 * H + j] = to_bf16(d_o);
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

/* dh_rec's columns [u0, u0 + n) for rows [m0, m0 + ROWS) = those rows of the step's gate
 * gradients @ W_hh's packed column blocks, COLS blocks at a time. */
_Static_assert(COLS == 2 && TILE % ROWS == 0, "backward_product's remainder and the batch multiple");
static void backward_product(const uint16_t *step_gates, size_t G, const uint16_t *w_packed, size_t u0, int n,
                             size_t m0, float *dh_rec, size_t H) {
    const uint16_t *a = step_gates + m0 * G;
    float *out = dh_rec + m0 * H + u0;
    const uint16_t *b = w_packed + u0 * G;
    const int blocks = n / TILE;
    int block = 0;
    for (; block + COLS <= blocks; block += COLS)
        dp_product(a, G, b + (size_t)block * TILE * G, TILE * G, COLS, (int)G, out + block * TILE, H, TILE);
    if (block < blocks) /* an odd block: COLS is 2 */
        dp_product(a, G, b + (size_t)block * TILE * G, TILE * G, 1, (int)G, out + block * TILE, H, TILE);
}

/* As charrnn_amx_lstm_backward (lstm_amx.c), which documents the arguments: acts and c as
 * forward wrote them, c0; grad_h [steps][batch][H] bf16; w_packed: W_hh packed, K = 4 * hidden;
 * dh_rec and dc in as the last h's and c's gradients, out as h0's and c0's; d_gates [steps]
 * [batch][4H] bf16; d_bias [4H] and, with ids, d_table [vocab][4H] (both zeroed by the caller)
 * their fp32 sums. Returns as forward does. */
int charrnn_avx512_lstm_backward(int steps, int batch, int hidden, int threads, const uint16_t *acts,
                                 const float *c, const float *c0, const uint16_t *grad_h,
                                 const uint16_t *w_packed, float *dh_rec, float *dc, uint16_t *d_gates,
                                 float *d_bias, const int64_t *ids, float *d_table) {
    if (!shape_supported(steps, batch, hidden, threads))
        return UNSUPPORTED_SHAPE;
    const size_t H = (size_t)hidden, G = 4 * H, B = (size_t)batch;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|:failed)
    {
        size_t u0;
        int n;
        float *gates = start_thread(hidden, 4, &u0, &n); /* one row's, fp32 */
        failed = gates == NULL;
        for (int t = steps - 1; t >= 0; t--) {
            const float *c_prev = t > 0 ? c + (size_t)(t - 1) * B * H : c0;
            for (size_t b = 0; b < B && !failed; b++) {
                const size_t row = (size_t)t * B + b;
                for (int g = 0; g < 4; g++)
                    load_fp16(gates + g * n, acts + row * G + g * H + u0, n);
                const float *args_c_prev = c_prev + b * H + u0, *args_c = c + row * H + u0;
                if (ids != NULL)
                    backward_units(H, n, gates, args_c_prev, args_c, grad_h + row * H + u0, dh_rec + b * H + u0,
                                   dc + b * H + u0, d_gates + row * G + u0, d_bias + u0, 1,
                                   d_table + (size_t)ids[row] * G + u0);
                else
                    backward_units(H, n, gates, args_c_prev, args_c, grad_h + row * H + u0, dh_rec + b * H + u0,
                                   dc + b * H + u0, d_gates + row * G + u0, d_bias + u0, 0, NULL);
            }
            #pragma omp barrier /* the product below reads every thread's gate gradients */
            const uint16_t *step_gates = d_gates + (size_t)t * B * G;
            for (size_t m0 = 0; m0 < B && !failed; m0 += ROWS)
                backward_product(step_gates, G, w_packed, u0, n, m0, dh_rec, H);
            /* No barrier: the next step reads only this thread's own columns of dh_rec, and
             * writes gate gradients of another step than the one just read. */
        }
        free(gates);
    }
    return failed ? OUT_OF_MEMORY : 0;
}

/* What native.py checks when it loads this library, as lstm_amx.c's charrnn_amx_abi: for
 * "version", "block" (hidden units a thread takes at a time, and columns of a packed block of
 * W), "batch_multiple" and "hidden_multiple", the value; -1 for any other name. */
long charrnn_avx512_abi(const char *name) {
    static const struct { const char *name; long value; } answers[] = {
        {"version", ABI_VERSION}, {"block", TILE}, {"batch_multiple", TILE}, {"hidden_multiple", KSTEP},
    };
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++)
        if (strcmp(name, answers[i].name) == 0)
            return answers[i].value;
    return -1;
}
