// KV compressor, fp32-FMA kernel written once against the width-generic vector layer of
// cpu/fma_vec.h (include only from compressor_avx512.cpp, 16 lanes, or compressor_avx2.cpp,
// 8 lanes; each defines its KernelEntry on compressor_fma_run).
// Algorithm: one task per emitting token. The window's state rows are resolved once to pointers
// (nullptr for -1 slots; CSA slots of the entry's own tokens point at their second half). The
// 512 channels are pooled in blocks of kPoolVecs vectors: a max pass over the window, then one
// pass accumulating 2^((z - max) log2 e) and its product with a, so a block's rows (window x
// kPoolVecs vectors x 2 arrays: 8 KiB for HCA with AVX2) stay in L1 between the passes. The
// pooled vector then goes through compressor_finish_row (bf16, RMSNorm, RoPE, MODEL1 quantiser).
// Invariants: -1 slots are never dereferenced; each entry is written by its token's task alone,
// in window order, so results do not depend on the thread count.
// Everything has internal linkage: the header is compiled under different ISA flags.
#pragma once

#include <cstdint>
#include <limits>

#include "core/thread_pool.h"
#include "cpu/fma_vec.h"
#include "ops/compressor/compressor.h"

namespace openmla {
namespace {

constexpr int kPoolVecs = 4;
constexpr int64_t kMaxWindow = 128;
constexpr float kCompressLog2e = 1.4426950408889634f;

/// Pools channels [j0, j0 + kPoolVecs * kFmaLanes) of the window `rows` (z at +width).
inline void pool_channel_block(const float* const* rows, int64_t window, int64_t width, int64_t j0,
                               float* pooled) {
  FmaVec m[kPoolVecs], num[kPoolVecs], den[kPoolVecs];
  for (int v = 0; v < kPoolVecs; ++v) {
    m[v] = fv_set1(-std::numeric_limits<float>::infinity());
    num[v] = fv_zero();
    den[v] = fv_zero();
  }
  for (int64_t w = 0; w < window; ++w) {
    if (rows[w] == nullptr) continue;
    const float* z = rows[w] + width + j0;
    for (int v = 0; v < kPoolVecs; ++v) m[v] = fv_max(m[v], fv_load(z + v * kFmaLanes));
  }
  const FmaVec log2e = fv_set1(kCompressLog2e);
  for (int v = 0; v < kPoolVecs; ++v) m[v] = fv_mul(m[v], log2e);
  for (int64_t w = 0; w < window; ++w) {
    if (rows[w] == nullptr) continue;
    const float* a = rows[w] + j0;
    for (int v = 0; v < kPoolVecs; ++v) {
      const FmaVec z = fv_load(a + width + v * kFmaLanes);
      const FmaVec e = fv_exp2(fv_sub(fv_mul(z, log2e), m[v]));
      den[v] = fv_add(den[v], e);
      num[v] = fv_fma(e, fv_load(a + v * kFmaLanes), num[v]);
    }
  }
  for (int v = 0; v < kPoolVecs; ++v) fv_store(pooled + j0 + v * kFmaLanes, fv_div(num[v], den[v]));
}

inline void compress_row_fma(const CompressorParams& p, int64_t t) {
  const float* rows[kMaxWindow];
  for (int64_t w = 0; w < p.window; ++w) {
    const int64_t s = p.gather_slots.at(t, w);
    rows[w] = s < 0 ? nullptr : p.state.row(s) + window_channel_offset(p, w);
  }
  alignas(64) float pooled[kCompressorHeadDim];
  for (int64_t j0 = 0; j0 < p.head_dim; j0 += kPoolVecs * kFmaLanes)
    pool_channel_block(rows, p.window, p.state.width, j0, pooled);
  compressor_finish_row(p, t, pooled);
}

const char* compressor_fma_unsupported(const void* params) {
  const auto& p = *static_cast<const CompressorParams*>(params);
  if (p.window > kMaxWindow) return "window longer than 128";
  if (p.head_dim % (kPoolVecs * kFmaLanes) != 0) return "head_dim not a multiple of the block";
  return nullptr;
}

Status compressor_fma_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const CompressorParams*>(params);
  parallel_for(static_cast<int64_t>(p.rows.size()), config.num_threads,
               [&](int64_t i, int) { compress_row_fma(p, p.rows[static_cast<size_t>(i)]); });
  return Status::Ok();
}

}  // namespace
}  // namespace openmla
