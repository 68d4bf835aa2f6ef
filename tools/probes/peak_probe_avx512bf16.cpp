// AVX512-BF16 VDPBF16PS peak loop: 12 independent FP32 accumulator chains, each instruction 16
// lanes x 2 bf16 products (64 FLOP). The operands are bf16 1.0 and 2^-20, so the accumulators grow
// by 2^-19 per step and stay normal. Untested on the Zen 3 host it was written on (no AVX-512): it
// mirrors peak_loop_avx2.
#include <immintrin.h>

#include "peak_probe.h"

namespace openmla::probes::detail {

double peak_loop_avx512_bf16(long iters) {
  constexpr int kChains = 12;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3F80);  // bf16 1.0
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3580);  // bf16 2^-20
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12  // registers, not a stack array, at any -O level
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return kChains * 16.0 * 2 * 2 * static_cast<double>(iters);
}

}  // namespace openmla::probes::detail
