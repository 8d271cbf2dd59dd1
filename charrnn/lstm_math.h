/* Sigmoid and tanh for the LSTM gates of lstm_step.c and lstm_amx.c.
 *
 * e^x to about 1e-7 relative error, written so that the compiler vectorizes the loops
 * that call it (the C library's expf is one call per element; floorf needs
 * -fno-trapping-math to vectorize, which native.FLAGS passes). */
#ifndef CHARRNN_LSTM_MATH_H
#define CHARRNN_LSTM_MATH_H

#include <stdint.h>

static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    const float r = x - n * 0.693145751953125f - n * 1.428606765330187045e-06f; /* ln 2 in two parts */
    const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
                    + r * (1.0f / 720))))));
    const union { int32_t bits; float value; } scale = {.bits = ((int32_t)n + 127) << 23}; /* 2^n */
    return p * scale.value;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

static inline float tanh_approx(float x) { return 2.0f * sigmoid(2.0f * x) - 1.0f; }

#endif
