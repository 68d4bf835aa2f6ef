// AVX512-BF16 VDPBF16PS peak loop: 12 independent FP32 accumulator chains, each instruction 16
// lanes x 2 bf16 products (64 FLOP). The operands are bf16 1.0 and 2^-20, so the accumulators grow
// by 2^-19 per step and stay normal.
// tile_gemm_loop_avx512bf16: the AVX512-BF16 token-list attention's own QK^T strip
// (cpu/bf16_qk_strip.h) on the V3.2 shape, a strip of 32 keys x 576 dims times Q^T of 128 heads,
// with no gather, dequant or softmax around it (as tile_gemm_loop_amx for AMX).
#include <immintrin.h>

#include <cstdint>

#include "cpu/aligned_buffer.h"
#include "cpu/bf16_qk_strip.h"
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

double tile_gemm_loop_avx512bf16(long strips) {
  constexpr int64_t kDepth = 576, kHeads = 128;
  static thread_local AlignedBuffer<uint16_t> k_buf, q_buf;
  static thread_local AlignedBuffer<float> s_buf;
  uint16_t* ks = k_buf.get(32 * kDepth);
  uint16_t* qv = q_buf.get(kDepth * kHeads);
  float* st = s_buf.get(32 * kHeads);
  static thread_local bool filled = false;
  if (!filled) {  // once per thread, so that the timed calls run the strips alone
    for (int64_t i = 0; i < 32 * kDepth; ++i) ks[i] = 0x3F80;      // bf16 1.0: no denormal, no NaN
    for (int64_t i = 0; i < kDepth * kHeads; ++i) qv[i] = 0x3C00;  // bf16 2^-7
    filled = true;
  }
  for (long s = 0; s < strips; ++s) bf16_qk_strip(ks, kDepth, qv, kHeads, st);
  asm volatile("" : : "r"(st) : "memory");
  return static_cast<double>(strips) * 2.0 * 32 * kHeads * kDepth;
}

}  // namespace openmla::probes::detail
