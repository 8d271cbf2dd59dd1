/* The page's kernel: y = W x + b for one stream, in WebAssembly SIMD (f32x4).
 *
 * A character step of the default 2x256 LSTM reads 3 MB of fp32 weights for 0.8 M
 * multiply-adds, so the step is bound by how fast rows of W stream through: four rows are
 * dotted with x at once (one load of x serves four rows) into four accumulators, and only
 * the cell's pointwise functions stay in JavaScript (Math.exp/tanh; no libm here).
 *
 * Layout (made by the page's script): W row-major with rows `stride` floats apart, stride a
 * multiple of 4 and x zero-padded to it, every pointer 16-byte aligned. No libc, no stack
 * of its own beyond a few locals: built with -nostdlib and exported whole.
 */
#include <wasm_simd128.h>

static inline float hsum(v128_t v) {
    return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) + wasm_f32x4_extract_lane(v, 2) +
           wasm_f32x4_extract_lane(v, 3);
}

/* y[r] = b[r] + sum_j W[r * stride + j] * x[j], for r < rows and j < stride. */
void gemv(float *y, const float *W, const float *x, const float *b, int rows, int stride) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float *w0 = W + (long)r * stride, *w1 = w0 + stride, *w2 = w1 + stride, *w3 = w2 + stride;
        v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < stride; j += 4) {
            v128_t xv = wasm_v128_load(x + j);
            a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load(w0 + j), xv));
            a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wasm_v128_load(w1 + j), xv));
            a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(wasm_v128_load(w2 + j), xv));
            a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(wasm_v128_load(w3 + j), xv));
        }
        y[r] = b[r] + hsum(a0);
        y[r + 1] = b[r + 1] + hsum(a1);
        y[r + 2] = b[r + 2] + hsum(a2);
        y[r + 3] = b[r + 3] + hsum(a3);
    }
    for (; r < rows; r++) {
        const float *w = W + (long)r * stride;
        v128_t a = wasm_f32x4_splat(0);
        for (int j = 0; j < stride; j += 4) a = wasm_f32x4_add(a, wasm_f32x4_mul(wasm_v128_load(w + j), wasm_v128_load(x + j)));
        y[r] = b[r] + hsum(a);
    }
}
