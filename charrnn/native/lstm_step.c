/* LSTM arithmetic for charrnn's sampler: one stream's whole step, and the gates of several.
 *
 * charrnn/native/build.py compiles this file on first use and calls it through ctypes; see that
 * module for why. The step does the same arithmetic as charrnn.step.LSTMStep, in one call:
 *
 *   gates = [input, own previous h] @ W + b     (layer 0: own h only, plus a table row)
 *   c     = sigmoid(f) * c + sigmoid(i) * tanh(g)
 *   h     = sigmoid(o) * tanh(c)
 *   logits = top h @ head_w + head_b
 *
 * Work is split by blocks of BLOCK hidden units: a thread computes all four gates of its
 * units and then their new c and h, so a layer needs one barrier, not two. The weights are
 * packed by charrnn.step.NativeLSTMStep so that each block reads one contiguous run of memory:
 *   layer weights [hidden / BLOCK][inputs][4 gates (i, f, o, g)][BLOCK]
 *   head weights  [vocab / BLOCK][hidden][BLOCK]   (vocab padded to a multiple of BLOCK)
 * h is double-buffered (h[current] -> h[1 - current]) so that no thread overwrites an h
 * that another thread still has to read.
 *
 * Given Gumbel noise, the step also draws the next character, argmax(logits + scale * noise)
 * as charrnn.sample.Chooser does with tensors, which saves the sampler two tensor operations
 * per character.
 *
 * charrnn_lstm_gates serves the tensor step of several streams (see there), and
 * charrnn_step_abi, at the end, lets native.py check its copy of this file's layout.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lstm_math.h"

#define BLOCK 16      /* charrnn.native.BLOCK; checked at load through charrnn_step_abi */
#define ABI_VERSION 1 /* charrnn.native.STEP_ABI_VERSION: raise both when a function's arguments change */

/* acc[g][j] += sum over k of x[k] * w[k][g][j] */
static inline void accumulate(float acc[4][BLOCK], const float *x, int n, const float *w) {
    for (int k = 0; k < n; k++) {
        const float xk = x[k];
        const float *row = w + (size_t)k * 4 * BLOCK;
        for (int g = 0; g < 4; g++)
            for (int j = 0; j < BLOCK; j++)
                acc[g][j] += xk * row[g * BLOCK + j];
    }
}

/* The model and its buffers, filled once by native.py (its LstmStepStruct mirrors this). */
struct charrnn_lstm {
    int layers, hidden, vocab, padded_vocab, threads;
    const float *table;          /* [vocab][4 * hidden]: layer 0's input gates, biases included */
    const float *const *weights; /* per layer, packed as above */
    const float *const *biases;  /* per layer [4 * hidden]; entry 0 unused */
    const float *head_w, *head_b;
    float *h[2];                 /* [layers * hidden] each */
    float *c;                    /* [layers * hidden], updated in place */
    float *logits;               /* [padded_vocab] */
};

/* Steps from character `char_id` with h[current] as the previous h. Returns the drawn
 * character given noise ([vocab]), else -1. */
int charrnn_lstm_step(const struct charrnn_lstm *m, int char_id, int current, const float *noise, float scale)
{
    const int layers = m->layers, hidden = m->hidden, blocks = hidden / BLOCK;
    const float *x_gates = m->table + (size_t)char_id * 4 * hidden;
    const float *h_old = m->h[current];
    float *h_new = m->h[1 - current], *c = m->c, *logits = m->logits;
    #pragma omp parallel num_threads(m->threads)
    {
        for (int l = 0; l < layers; l++) {
            const int lower_inputs = l > 0 ? hidden : 0;
            const float *bias = l > 0 ? m->biases[l] : x_gates;
            #pragma omp for schedule(static)
            for (int blk = 0; blk < blocks; blk++) {
                const int u0 = blk * BLOCK;
                const float *w = m->weights[l] + (size_t)blk * (lower_inputs + hidden) * 4 * BLOCK;
                float acc[4][BLOCK];
                for (int g = 0; g < 4; g++)
                    for (int j = 0; j < BLOCK; j++)
                        acc[g][j] = bias[g * hidden + u0 + j];
                if (l > 0)
                    accumulate(acc, h_new + (size_t)(l - 1) * hidden, hidden, w);
                accumulate(acc, h_old + (size_t)l * hidden, hidden, w + (size_t)lower_inputs * 4 * BLOCK);
                float *cb = c + (size_t)l * hidden + u0;
                float *hb = h_new + (size_t)l * hidden + u0;
                for (int j = 0; j < BLOCK; j++) {
                    const float in = sigmoid(acc[0][j]), forget = sigmoid(acc[1][j]);
                    const float out = sigmoid(acc[2][j]), cell = tanh_approx(acc[3][j]);
                    cb[j] = forget * cb[j] + in * cell;
                    hb[j] = out * tanh_approx(cb[j]);
                }
            } /* implicit barrier: the next layer reads every unit of this one */
        }
        const float *top = h_new + (size_t)(layers - 1) * hidden;
        #pragma omp for schedule(static)
        for (int blk = 0; blk < m->padded_vocab / BLOCK; blk++) {
            float acc[BLOCK];
            for (int j = 0; j < BLOCK; j++)
                acc[j] = m->head_b[blk * BLOCK + j];
            const float *w = m->head_w + (size_t)blk * hidden * BLOCK;
            for (int k = 0; k < hidden; k++)
                for (int j = 0; j < BLOCK; j++)
                    acc[j] += top[k] * w[(size_t)k * BLOCK + j];
            for (int j = 0; j < BLOCK; j++)
                logits[blk * BLOCK + j] = acc[j];
        }
    }
    if (noise == NULL)
        return -1;
    int best = 0;
    float best_score = logits[0] + scale * noise[0];
    for (int v = 1; v < m->vocab && best_score == best_score; v++) { /* a NaN wins, as in torch.argmax */
        const float score = logits[v] + scale * noise[v];
        if (score > best_score || score != score) {
            best = v;
            best_score = score;
        }
    }
    return best;
}

/* The gates of several streams at once, for the tensor step of charrnn.step.LSTMStep: given
 * the pre-activations [batch][4 * hidden] (i, f, o, g), updates c [batch][hidden] in place
 * and writes h into rows `h_stride` floats apart. Replaces six tensor operations a layer. */
void charrnn_lstm_gates(int batch, int hidden, int threads, const float *restrict gates, float *restrict c,
                        float *restrict h, int h_stride)
{
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < batch; b++) {
        const float *restrict gi = gates + (size_t)b * 4 * hidden, *restrict gf = gi + hidden;
        const float *restrict go = gf + hidden, *restrict gc = go + hidden;
        float *restrict cb = c + (size_t)b * hidden;
        float *restrict hb = h + (size_t)b * h_stride;
        for (int j = 0; j < hidden; j++) {
            const float in = sigmoid(gi[j]), forget = sigmoid(gf[j]);
            const float out = sigmoid(go[j]), cell = tanh_approx(gc[j]);
            cb[j] = forget * cb[j] + in * cell;
            hb[j] = out * tanh_approx(cb[j]);
        }
    }
}

/* What native.py checks when it loads this library, so that its ctypes copy of struct
 * charrnn_lstm and its BLOCK cannot silently disagree with this file: for "version",
 * "size" (of the struct), "block", or the name of one of the struct's fields (its offset),
 * the value; -1 for any other name. */
long charrnn_step_abi(const char *name)
{
#define FIELD(field) {#field, (long)offsetof(struct charrnn_lstm, field)}
    static const struct { const char *name; long value; } answers[] = {
        {"version", ABI_VERSION}, {"size", (long)sizeof(struct charrnn_lstm)}, {"block", BLOCK},
        FIELD(layers), FIELD(hidden), FIELD(vocab), FIELD(padded_vocab), FIELD(threads), FIELD(table),
        FIELD(weights), FIELD(biases), FIELD(head_w), FIELD(head_b), FIELD(h), FIELD(c), FIELD(logits),
    };
#undef FIELD
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++)
        if (strcmp(name, answers[i].name) == 0)
            return answers[i].value;
    return -1;
}
