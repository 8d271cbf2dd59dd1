/* An LSTM layer's recurrence on AMX tiles, for training in bf16 on a CPU.
 *
 * charrnn/native/recurrence.py calls this once per layer and direction for a whole window; see there
 * for why. The hidden-to-hidden product of each time step (64 x 256 by 256 x 1024 for the
 * default model at batch 64) is too small for oneDNN to run well on AMX (see
 * docs/experiments.md, "The AMX recurrence"); here it is a handful of tile instructions per
 * block of 16 hidden units, and the gate arithmetic follows in the same call, without
 * returning to Python or waking threads between time steps.
 *
 * Threads split the hidden units in blocks of 16; each thread owns its units' four gates
 * (forward) and its units' columns of dh (backward), so one barrier a time step suffices:
 * every thread's next product reads the whole h (forward) or the whole gate gradient
 * (backward) of the step just done.
 *
 *   forward:   a = act(x_gates + h_prev @ W_hh^T + bias)   sigmoid for i, f, o; tanh for g
 *              c = f * c_prev + i * g,   h = o * tanh(c)
 *   backward:  dh = grad_h + dh_rec       (from the layer above, and from step t + 1)
 *              dc = dc + dh * o * (1 - tanh(c)^2)
 *              d_gates = dc * g * i(1-i), dc * c_prev * f(1-f), dc * i * (1-g^2), dh * tanh(c) * o(1-o)
 *              dc = dc * f,   dh_rec = d_gates @ W_hh     (carried to step t - 1)
 *
 * Gates are in PyTorch's order (i, f, g, o), rows [batch][4 * hidden]. Products are bf16 with
 * fp32 accumulation; the gate arithmetic, the cell and dh/dc are fp32. Memory bandwidth, not
 * arithmetic, bounds the gate arithmetic, so the activated gates are kept for backward in
 * fp16 (they lie in [-1, 1]; 11 significant bits against bf16's 8) and tanh(c) is computed
 * again in backward rather than kept (see docs/experiments.md, "The AMX recurrence").
 *
 * The kernels return UNSUPPORTED_SHAPE, touching nothing, unless steps > 0, batch is a
 * positive multiple of 16 (rows of a tile), hidden a positive multiple of 32 (bf16 values of
 * K in a tile) and threads > 0; threads beyond hidden / 16 find no units and wait at the
 * barriers. The caller packs W_hh into the tiles' pair-interleaved layout (lstm_train.py:
 * _pack), [column blocks of 16][K / 2][16][2], and passes ids that index the table.
 * charrnn_amx_abi, at the end, lets native.py check these constants at load.
 */
#include <immintrin.h>
#include <limits.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define TILE 16  /* rows of a tile, and columns of an output tile */
#define KSTEP 32 /* bf16 values of K per tile */
#define GROUP 4  /* output tiles accumulated at once (tiles 0-3; A in 4 and 6, B in 5) */
#define ABI_VERSION 1 /* charrnn.native.AMX_ABI_VERSION: raise both when a function's arguments change */

#include "lstm_recurrence.h" /* shape checks, value types, the gate arithmetic: shared with lstm_vector.c */

/* Linux hands out AMX state only on request, once per process. 0 on success. */
int charrnn_amx_init(void) {
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 0 : -1;
}

struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
};

/* Tile configuration is per thread, and oneDNN's kernels load their own between our calls. */
static void configure_tiles(void) {
    struct tile_config config = {.palette = 1};
    for (int t = 0; t < 7; t++) {
        config.bytes_per_row[t] = 64;
        config.rows[t] = TILE;
    }
    _tile_loadconfig(&config);
}

/* out (count * 16 rows x 16 columns, fp32, rows out_stride bytes apart) = a (count * 16 rows
 * x k_len, bf16, rows a_stride bytes apart) @ one packed column block b (k_len / 2 x 16 x 2). */
static inline void tile_product(const uint16_t *a, size_t a_stride, int count, const uint16_t *b, int k_len,
                                float *out, size_t out_stride) {
    const char *a0 = (const char *)a;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < k_len; k += KSTEP) {
        _tile_loadd(5, b + (size_t)k * TILE, 64);
        _tile_loadd(4, a0 + 2 * k, a_stride);
        _tile_dpbf16ps(0, 4, 5);
        if (count > 1) {
            _tile_loadd(6, a0 + 2 * k + TILE * a_stride, a_stride);
            _tile_dpbf16ps(1, 6, 5);
        }
        if (count > 2) {
            _tile_loadd(4, a0 + 2 * k + 2 * TILE * a_stride, a_stride);
            _tile_dpbf16ps(2, 4, 5);
        }
        if (count > 3) {
            _tile_loadd(6, a0 + 2 * k + 3 * TILE * a_stride, a_stride);
            _tile_dpbf16ps(3, 6, 5);
        }
    }
    char *o = (char *)out;
    _tile_stored(0, o, out_stride);
    if (count > 1) _tile_stored(1, o + TILE * out_stride, out_stride);
    if (count > 2) _tile_stored(2, o + 2 * TILE * out_stride, out_stride);
    if (count > 3) _tile_stored(3, o + 3 * TILE * out_stride, out_stride);
}

/* In a thread of a kernel's parallel region: its units, a scratch buffer of floats_per_unit
 * floats per unit, and its tile configuration. NULL if the buffer cannot be had. */
static float *start_thread(int hidden, size_t floats_per_unit, size_t *u0, int *n) {
    float *scratch = thread_share(hidden, floats_per_unit, u0, n);
    if (scratch != NULL)
        configure_tiles();
    return scratch;
}

/* x_gates [steps][batch][4H] bf16 (x @ W_ih^T, no bias), or with ids ([steps][batch]) a table
 * [vocab][4H] whose row ids[t][b] is row (t, b)'s: a one-hot input's projection is a row of
 * W_ih^T, so the first layer looks its inputs up; w_packed: W_hh^T packed, K = hidden;
 * h0 [batch][H] bf16, c0 [batch][H]; out: acts [steps][batch][4H] fp16 (the activated gates),
 * c [steps][batch][H], h [steps][batch][H] bf16. Returns 0, OUT_OF_MEMORY or UNSUPPORTED_SHAPE.
 *
 * Each time step, a thread first lands the products for all its units in `pre` (rows of its
 * units, gate by gate), then runs the gate arithmetic along rows: going down columns of 16
 * units instead put every access 1-4 KB from the last, and those addresses share cache
 * sets, which cost more than the arithmetic. */
int charrnn_amx_lstm_forward(int steps, int batch, int hidden, int threads, const uint16_t *x_gates,
                             const int64_t *ids, const uint16_t *w_packed, const float *bias, const uint16_t *h0,
                             const float *c0, uint16_t *acts, float *c, uint16_t *h) {
    if (!shape_supported(steps, batch, hidden, threads))
        return UNSUPPORTED_SHAPE;
    const size_t H = (size_t)hidden, B = (size_t)batch;
    const int row_tiles = batch / TILE;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|:failed)
    {
        size_t u0;
        int n;
        float *pre = start_thread(hidden, 4 * B, &u0, &n); /* [4][batch][n] */
        failed = pre == NULL;
        for (int t = 0; t < steps; t++) {
            const uint16_t *h_prev = t > 0 ? h + (size_t)(t - 1) * B * H : h0;
            for (int block = 0; block < n / TILE && !failed; block++)
                for (int g = 0; g < 4; g++)
                    for (int m0 = 0; m0 < row_tiles; m0 += GROUP)
                        tile_product(h_prev + (size_t)m0 * TILE * H, 2 * H,
                                     row_tiles - m0 < GROUP ? row_tiles - m0 : GROUP,
                                     w_packed + ((size_t)g * H + u0 + (size_t)block * TILE) * H, hidden,
                                     pre + ((size_t)g * B + (size_t)m0 * TILE) * n + (size_t)block * TILE,
                                     (size_t)n * sizeof(float));
            if (!failed)
                forward_step_units(t, B, H, u0, n, pre, x_gates, ids, bias, c0, acts, c, h);
            #pragma omp barrier
        }
        if (!failed)
            _tile_release();
        free(pre);
    }
    return failed ? OUT_OF_MEMORY : 0;
}

/* acts and c as forward wrote them, c0 [batch][H]; grad_h [steps][batch][H] bf16 (the
 * gradient of the layer's output); w_packed: W_hh packed, K = 4 * hidden. dh_rec and dc
 * [batch][H] fp32 come in as the gradients of the last h and c and leave as those of h0 and
 * c0; d_gates [steps][batch][4H] bf16 receives the gates' pre-activation gradients, and
 * d_bias [4H] (zeroed by the caller) their sum over steps and rows. With ids (forward's),
 * d_table [vocab][4H] (zeroed by the caller) receives their sums by the row looked up.
 * Returns as forward does. */
int charrnn_amx_lstm_backward(int steps, int batch, int hidden, int threads, const uint16_t *acts, const float *c,
                               const float *c0, const uint16_t *grad_h, const uint16_t *w_packed, float *dh_rec,
                               float *dc, uint16_t *d_gates, float *d_bias, const int64_t *ids, float *d_table) {
    if (!shape_supported(steps, batch, hidden, threads))
        return UNSUPPORTED_SHAPE;
    const size_t H = (size_t)hidden, G = 4 * H, B = (size_t)batch;
    const int row_tiles = batch / TILE;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|:failed)
    {
        size_t u0;
        int n;
        float *gates = start_thread(hidden, 4, &u0, &n); /* one row's, fp32 */
        failed = gates == NULL;
        for (int t = steps - 1; t >= 0; t--) {
            if (!failed)
                backward_step_units(t, B, H, u0, n, gates, acts, c, c0, grad_h, dh_rec, dc, d_gates, d_bias, ids,
                                    d_table);
            #pragma omp barrier /* the product below reads every thread's gate gradients */
            const uint16_t *step_gates = d_gates + (size_t)t * B * G;
            for (int block = 0; block < n / TILE && !failed; block++)
                for (int m0 = 0; m0 < row_tiles; m0 += GROUP)
                    tile_product(step_gates + (size_t)m0 * TILE * G, 2 * G,
                                 row_tiles - m0 < GROUP ? row_tiles - m0 : GROUP,
                                 w_packed + (u0 + (size_t)block * TILE) * G, (int)G,
                                 dh_rec + (size_t)m0 * TILE * H + u0 + (size_t)block * TILE, H * sizeof(float));
            /* No barrier: the next step reads only this thread's own columns of dh_rec, and
             * writes gate gradients of another step than the one just read. */
        }
        if (!failed)
            _tile_release();
        free(gates);
    }
    return failed ? OUT_OF_MEMORY : 0;
}

/* What native.py checks when it loads this library, so that lstm_train.py's constants
 * cannot silently disagree with this file's: for "version", "block" (hidden units a thread
 * takes at a time, and columns of a packed block of W), "batch_multiple" and
 * "hidden_multiple", the value; -1 for any other name. */
long charrnn_amx_abi(const char *name) {
    static const struct { const char *name; long value; } answers[] = {
        {"version", ABI_VERSION}, {"block", TILE}, {"batch_multiple", TILE}, {"hidden_multiple", KSTEP},
    };
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++)
        if (strcmp(name, answers[i].name) == 0)
            return answers[i].value;
    return -1;
}
