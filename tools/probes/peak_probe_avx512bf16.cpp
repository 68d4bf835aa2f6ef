// AVX512-BF16 VDPBF16PS peak loop: 12 independent FP32 accumulator chains, each instruction 16
// lanes x 2 bf16 products (64 FLOP). The operands are bf16 1.0 and 2^-20, so the accumulators grow
// by 2^-19 per step and stay normal.
// tile_gemm_loop_avx512bf16: the AVX512-BF16 token-list attention's own QK^T strip
// (cpu/bf16_qk_strip.h) on the V3.2 shape, a strip of 32 keys x 576 dims times Q^T of 128 heads,
// with no gather, dequant or softmax around it (as tile_gemm_loop_amx for AMX).
#include <immintrin.h>

#include <cstdint>

#include "cpu/bf16_qk_strip.h"
#include "peak_probe.h"
#include "tile_gemm_operands.h"

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
  const TileGemmOperands op = tile_gemm_operands();
  for (long s = 0; s < strips; ++s)
    bf16_qk_strip(op.ks, kTileGemmDepth, op.qv, kTileGemmHeads, op.st);
  asm volatile("" : : "r"(op.st) : "memory");
  return tile_gemm_flops(strips);
}

}  // namespace openmla::probes::detail
