/* Sigmoid and tanh for the LSTM gates of lstm_step.c and lstm_amx.c.
 *
 * e^x to about 1e-7 relative error, written so that the compiler vectorizes the loops
 * that call it (the C library's expf is one call per element; floorf needs
 * -fno-trapping-math to vectorize, which native.FLAGS passes).
 *
 * e^x = 2^n * e^r with n = round(x / ln 2) and |r| <= ln(2) / 2: a polynomial gives e^r and
 * the exponent bits give 2^n. x is first held to [-87, 88], where 2^n (n in [-126, 127]) is a
 * normal float, so +-inf saturate like any large input: sigmoid to 0 and 1, tanh to -1 and 1.
 * A NaN passes the clamp (both comparisons are false) and makes p a NaN, so e^NaN is a NaN
 * whatever its 2^n. 2^n is built from n's bits, not by an (int32_t) cast, which is undefined
 * for a NaN: as fast as the cast, where a NaN test before the cast slowed the gates down. */
#ifndef CHARRNN_LSTM_MATH_H
#define CHARRNN_LSTM_MATH_H

#include <stdint.h>

static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    const float r = x - n * 0.693145751953125f - n * 1.428606765330187045e-06f; /* ln 2 in two parts */
    const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
                    + r * (1.0f / 720))))));
    /* 2^n from n's bits, with no float-to-int conversion: n + 1.5 * 2^23 is exact and holds n
     * in its low bits. The arithmetic is unsigned, so a NaN's bits are as defined as any. */
    const union { float value; uint32_t bits; } shifted = {.value = n + 12582912.0f};
    const union { uint32_t bits; float value; } scale = {.bits = (shifted.bits - 0x4b400000u + 127u) << 23};
    return p * scale.value;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

static inline float tanh_approx(float x) { return 2.0f * sigmoid(2.0f * x) - 1.0f; }

#endif
