/* An LSTM layer's recurrence on vector units, for training on a CPU without AMX tiles. One
 * source, built twice (native.py):
 *
 * - bf16 (the default build): for bf16 autocast on CPUs with AVX512-BF16 (AMD Zen 4 and later,
 *   Intel Cooper Lake). Each product is `vdpbf16ps` (_mm512_dpbf16_ps): 16 fp32 lanes, each
 *   adding the dot product of a pair of bf16 values of the left operand (broadcast to every
 *   lane) and the lane's own pair of the right one. The packed right operand lstm_train.py
 *   builds for lstm_amx.c's tiles, [column blocks of 16][K / 2][16][2], is exactly that: each
 *   64-byte line of a block is one K pair of its 16 columns.
 * - fp32 (-DVALUE_FP32): for full-precision training on CPUs with AVX2 and FMA, or AVX-512.
 *   Each product is a fused multiply-add of one left value, broadcast, and a line of 16
 *   columns of the right operand, packed [column blocks of 16][K][16]: one AVX-512 register
 *   per line, or two AVX2 ones (-march=native decides). Values, saved gates and sums are all
 *   fp32: nothing is rounded that nn.LSTM keeps.
 *
 * Either way it is lstm_amx.c's design, arguments and packed block order, with each tile product
 * replaced by a register block: see lstm_amx.c for the recurrence, the threads' split of the
 * hidden units and the gate arithmetic, which are the same here line for line
 * (lstm_recurrence.h), and docs/experiments.md, "AVX512-BF16 recurrence" and "fp32 recurrence",
 * for what they measured.
 *
 * A product is blocked ROWS rows by up to COLS column blocks of 16: ROWS * COLS accumulators of
 * 16 fp32 lanes live in registers over the whole K, and each line of K costs COLS loads of the
 * right operand and ROWS broadcasts of the left for ROWS * COLS multiply-adds. Forward's column
 * blocks are a unit block's four gates, COLS at a time, so its products land gate by gate as
 * lstm_amx.c's do. With AVX-512 (32 registers) 8 x 2 measured a little faster than 4 x 4, 4 x 2
 * and 16 x 1 (all within 10 %, at about 145 GFLOP/s on 2 Sapphire Rapids cores in bf16:
 * docs/experiments.md); AVX2's 16 registers, each half a line, hold 4 x 1.
 *
 * The kernels return UNSUPPORTED_SHAPE, touching nothing, for the shapes lstm_amx.c refuses
 * (the same constants, so that lstm_train.py treats every kernel alike): steps > 0, batch a
 * positive multiple of 16, hidden a positive multiple of 32, threads > 0. charrnn_vector_abi,
 * at the end, lets native.py check these constants, and the build's value type, at load.
 */
#include <limits.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TILE 16  /* hidden units per block, fp32 lanes of a line, and the batch multiple */
#define KSTEP 32 /* the hidden multiple, as lstm_amx.c's (bf16 values of K in a tile) */
#define ABI_VERSION 1 /* charrnn.native.VECTOR_ABI_VERSION: raise both when a function's arguments change */

#include "lstm_recurrence.h" /* shape checks, value types, the gate arithmetic: shared with lstm_amx.c */

#include <immintrin.h>

#ifdef VALUE_FP32
#define K_PER_LINE 1 /* values of K in a line of a packed column block */
#ifdef __AVX512F__
typedef __m512 line_t;
#define LANES 16 /* fp32 lanes of a register */
#define ROWS 8   /* rows of a product's register block (batch is a multiple) */
#define COLS 2   /* column blocks of 16 of a product's register block (4 and 8 blocks are multiples) */

static inline line_t load_line(const float *p) { return _mm512_loadu_ps(p); }

static inline line_t broadcast(const float *p) { return _mm512_set1_ps(*p); }

static inline __m512 multiply_add(__m512 acc, line_t left, line_t right) { return _mm512_fmadd_ps(left, right, acc); }

static inline void store_acc(float *p, __m512 acc) { _mm512_storeu_ps(p, acc); }
#else /* AVX2 and FMA */
typedef __m256 line_t;
#define LANES 8
#define ROWS 4
#define COLS 1

static inline line_t load_line(const float *p) { return _mm256_loadu_ps(p); }

static inline line_t broadcast(const float *p) { return _mm256_set1_ps(*p); }

static inline __m256 multiply_add(__m256 acc, line_t left, line_t right) { return _mm256_fmadd_ps(left, right, acc); }

static inline void store_acc(float *p, __m256 acc) { _mm256_storeu_ps(p, acc); }
#endif
typedef line_t acc_t;
#else /* bf16 pairs on AVX512-BF16 */
typedef __m512bh line_t; /* 16 pairs of bf16 */
typedef __m512 acc_t;
#define K_PER_LINE 2
#define LANES 16
#define ROWS 8
#define COLS 2

static inline line_t load_line(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512(p); }

static inline line_t broadcast(const uint16_t *p) {
    uint32_t pair;
    memcpy(&pair, p, sizeof pair);
    return (__m512bh)_mm512_set1_epi32((int)pair);
}

static inline acc_t multiply_add(acc_t acc, line_t left, line_t right) { return _mm512_dpbf16_ps(acc, left, right); }

static inline void store_acc(float *p, acc_t acc) { _mm512_storeu_ps(p, acc); }
#endif
#define VECS (TILE / LANES) /* registers per line of a column block: 2 with AVX2's 8 lanes, else 1 */

/* out (ROWS rows x cols <= COLS column blocks of 16, fp32; rows out_row floats apart, column blocks
 * out_col floats apart) = a (ROWS rows x k_len values, rows a_row values apart) @ cols packed
 * column blocks (k_len x 16 values each, in lines of K_PER_LINE x 16; b_col values apart). `cols`
 * is a constant at each call, so each call compiles to its own loop with the accumulators in
 * registers. */
static inline __attribute__((always_inline)) void dp_product(const value_t *restrict a, size_t a_row,
                                                             const value_t *restrict b, size_t b_col,
                                                             const int cols, int k_len, float *restrict out,
                                                             size_t out_row, size_t out_col) {
    acc_t acc[ROWS][COLS * VECS];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < cols * VECS; j++)
            acc[r][j] = (acc_t){0};
    for (int k = 0; k < k_len; k += K_PER_LINE) {
        line_t right[COLS * VECS];
        for (int j = 0; j < cols; j++)
            for (int v = 0; v < VECS; v++)
                right[j * VECS + v] = load_line(b + j * b_col + (size_t)k * TILE + v * LANES);
        for (int r = 0; r < ROWS; r++) {
            const line_t left = broadcast(a + r * a_row + k);
            for (int j = 0; j < cols * VECS; j++)
                acc[r][j] = multiply_add(acc[r][j], left, right[j]);
        }
    }
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < cols; j++)
            for (int v = 0; v < VECS; v++)
                store_acc(out + r * out_row + j * out_col + v * LANES, acc[r][j * VECS + v]);
}

/* As charrnn_amx_lstm_forward (lstm_amx.c), which documents the arguments, with values of
 * value_t and saved gates of act_t (lstm_recurrence.h): x_gates [steps][batch][4H] or, with ids
 * [steps][batch], the table whose rows they index; w_packed: W_hh^T packed, K = hidden; h0
 * [batch][H], c0 [batch][H] fp32; out: acts [steps][batch][4H], c [steps][batch][H] fp32, h
 * [steps][batch][H]. Returns 0, OUT_OF_MEMORY or UNSUPPORTED_SHAPE. */
int charrnn_vector_lstm_forward(int steps, int batch, int hidden, int threads, const value_t *x_gates,
                                const int64_t *ids, const value_t *w_packed, const float *bias,
                                const value_t *h0, const float *c0, act_t *acts, float *c, value_t *h) {
    if (!shape_supported(steps, batch, hidden, threads))
        return UNSUPPORTED_SHAPE;
    const size_t H = (size_t)hidden, B = (size_t)batch;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|:failed)
    {
        size_t u0;
        int n;
        float *pre = thread_share(hidden, 4 * B, &u0, &n); /* [4][batch][n] */
        failed = pre == NULL;
        for (int t = 0; t < steps; t++) {
            const value_t *h_prev = t > 0 ? h + (size_t)(t - 1) * B * H : h0;
            for (int block = 0; block < n / TILE && !failed; block++)
                for (size_t g = 0; g < 4; g += COLS) /* the block's gates, COLS at a time */
                    for (size_t m0 = 0; m0 < B; m0 += ROWS)
                        dp_product(h_prev + m0 * H, H, w_packed + (g * H + u0 + (size_t)block * TILE) * H, H * H, COLS,
                                   hidden, pre + (g * B + m0) * n + (size_t)block * TILE, (size_t)n, B * n);
            if (!failed)
                forward_step_units(t, B, H, u0, n, pre, x_gates, ids, bias, c0, acts, c, h);
            #pragma omp barrier
        }
        free(pre);
    }
    return failed ? OUT_OF_MEMORY : 0;
}

/* dh_rec's columns [u0, u0 + n) for rows [m0, m0 + ROWS) = those rows of the step's gate
 * gradients @ W_hh's packed column blocks, COLS blocks at a time. */
_Static_assert(4 % COLS == 0 && TILE % ROWS == 0, "forward's gates in groups of COLS, and the batch multiple");
static void backward_product(const value_t *step_gates, size_t G, const value_t *w_packed, size_t u0, int n,
                             size_t m0, float *dh_rec, size_t H) {
    const value_t *a = step_gates + m0 * G;
    float *out = dh_rec + m0 * H + u0;
    const value_t *b = w_packed + u0 * G;
    const int blocks = n / TILE;
    int block = 0;
    for (; block + COLS <= blocks; block += COLS)
        dp_product(a, G, b + (size_t)block * TILE * G, TILE * G, COLS, (int)G, out + block * TILE, H, TILE);
    for (; block < blocks; block++) /* blocks beyond a multiple of COLS, one at a time */
        dp_product(a, G, b + (size_t)block * TILE * G, TILE * G, 1, (int)G, out + block * TILE, H, TILE);
}

/* As charrnn_amx_lstm_backward (lstm_amx.c), which documents the arguments: acts and c as
 * forward wrote them, c0; grad_h [steps][batch][H]; w_packed: W_hh packed, K = 4 * hidden;
 * dh_rec and dc (fp32) in as the last h's and c's gradients, out as h0's and c0's; d_gates
 * [steps][batch][4H]; d_bias [4H] and, with ids, d_table [vocab][4H] (both zeroed by the caller)
 * their fp32 sums. Returns as forward does. */
int charrnn_vector_lstm_backward(int steps, int batch, int hidden, int threads, const act_t *acts,
                                 const float *c, const float *c0, const value_t *grad_h,
                                 const value_t *w_packed, float *dh_rec, float *dc, value_t *d_gates,
                                 float *d_bias, const int64_t *ids, float *d_table) {
    if (!shape_supported(steps, batch, hidden, threads))
        return UNSUPPORTED_SHAPE;
    const size_t H = (size_t)hidden, G = 4 * H, B = (size_t)batch;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|:failed)
    {
        size_t u0;
        int n;
        float *gates = thread_share(hidden, 4, &u0, &n); /* one row's, fp32 */
        failed = gates == NULL;
        for (int t = steps - 1; t >= 0; t--) {
            if (!failed)
                backward_step_units(t, B, H, u0, n, gates, acts, c, c0, grad_h, dh_rec, dc, d_gates, d_bias, ids,
                                    d_table);
            #pragma omp barrier /* the product below reads every thread's gate gradients */
            const value_t *step_gates = d_gates + (size_t)t * B * G;
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
 * W), "batch_multiple", "hidden_multiple" and "value_bytes" (2 for the bf16 build, 4 for
 * fp32), the value; -1 for any other name. */
long charrnn_vector_abi(const char *name) {
    static const struct { const char *name; long value; } answers[] = {
        {"version", ABI_VERSION}, {"block", TILE}, {"batch_multiple", TILE}, {"hidden_multiple", KSTEP},
        {"value_bytes", sizeof(value_t)},
    };
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++)
        if (strcmp(name, answers[i].name) == 0)
            return answers[i].value;
    return -1;
}
