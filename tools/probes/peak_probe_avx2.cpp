// AVX2 FP32 FMA peak loop: 12 independent accumulator chains. Zen 3 needs latency 4 x 2 FMA pipes
// = 8 chains in flight (Intel since Skylake: 4 x 2), so 12 leaves slack; nothing else is in the
// loop but the counter.
#include <immintrin.h>

#include "peak_probe.h"

namespace openmla::probes::detail {

double peak_loop_avx2(long iters) {
  constexpr int kChains = 12;
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.9999f), b = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12  // registers, not a stack array, at any -O level
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  volatile float sink = out[0];
  (void)sink;
  return kChains * 8.0 * 2 * static_cast<double>(iters);
}

}  // namespace openmla::probes::detail
