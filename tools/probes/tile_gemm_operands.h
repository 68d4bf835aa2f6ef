// The operands of the tile-GEMM ceiling probes (peak_probe_amx.cpp, peak_probe_avx512bf16.cpp):
// the V3.2 decode QK^T shape, a strip of 32 keys x 576 dims times Q^T of 128 heads, filled once
// per thread with bf16 1.0 and 2^-7 (no denormal, no NaN) so that the timed calls run the strips
// alone. Internal linkage: included from files compiled with different ISA flags.
#pragma once

#include <cstdint>

#include "cpu/aligned_buffer.h"

namespace openmla::probes::detail {
namespace {

constexpr int64_t kTileGemmDepth = 576, kTileGemmHeads = 128;

struct TileGemmOperands {
  const uint16_t* ks;  ///< [32][kTileGemmDepth]
  const uint16_t* qv;  ///< Q^T, kTileGemmDepth x kTileGemmHeads
  float* st;           ///< S^T [32][kTileGemmHeads]
};

inline TileGemmOperands tile_gemm_operands() {
  static thread_local AlignedBuffer<uint16_t> k_buf, q_buf;
  static thread_local AlignedBuffer<float> s_buf;
  uint16_t* ks = k_buf.get(32 * kTileGemmDepth);
  uint16_t* qv = q_buf.get(kTileGemmDepth * kTileGemmHeads);
  float* st = s_buf.get(32 * kTileGemmHeads);
  static thread_local bool filled = false;
  if (!filled) {
    for (int64_t i = 0; i < 32 * kTileGemmDepth; ++i) ks[i] = 0x3F80;
    for (int64_t i = 0; i < kTileGemmDepth * kTileGemmHeads; ++i) qv[i] = 0x3C00;
    filled = true;
  }
  return {ks, qv, st};
}

/// FLOPs of `strips` strips.
inline double tile_gemm_flops(long strips) {
  return static_cast<double>(strips) * 2.0 * 32 * kTileGemmHeads * kTileGemmDepth;
}

}  // namespace
}  // namespace openmla::probes::detail
