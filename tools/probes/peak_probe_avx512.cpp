// AVX-512 FP32 FMA peak loop: 12 independent accumulator chains (latency 4 x 2 FMA units on Intel
// = 8 in flight; Zen 4 runs each zmm FMA as two 256-bit halves). Untested on the Zen 3 host it was
// written on: it mirrors peak_loop_avx2.
#include <immintrin.h>

#include "peak_probe.h"

namespace openmla::probes::detail {

double peak_loop_avx512(long iters) {
  constexpr int kChains = 12;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.9999f), b = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12  // registers, not a stack array, at any -O level
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return kChains * 16.0 * 2 * static_cast<double>(iters);
}

}  // namespace openmla::probes::detail
