// KV compressor, fp32-FMA kernel written once against the width-generic vector layer of
// cpu/fma_vec.h (include only from compressor_avx512.cpp, 16 lanes, or compressor_avx2.cpp,
// 8 lanes; each defines its KernelEntry on compressor_fma_run).
// Algorithm: one task per emitting token. The window's state rows are resolved once to pointers
// (nullptr for -1 slots; CSA slots of the entry's own tokens point at their second half). All
// 512 channels are pooled row by row (each row's z and a are contiguous 2 KiB runs, which the
// prefetchers follow; max, numerator and denominator live in 6 KiB of L1): a max pass over the
// window's z rows, then one pass accumulating e = 2^((z - max) log2 e) and e * a (the z rows are
// still in L2: 256 KiB for HCA). The pooled vector then goes through compressor_finish_row (bf16,
// RMSNorm, RoPE, MODEL1 quantiser).
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

constexpr int64_t kMaxWindow = 128;
constexpr float kCompressLog2e = 1.4426950408889634f;

/// Brings the `bytes` at `p` towards L1 (one prefetch per cache line).
inline void prefetch_run(const float* p, int64_t bytes) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(c + off, _MM_HINT_T0);
}

/// pooled[j] = sum_w softmax_w(z_w[j]) a_w[j] over the window `rows` (z at +width; nullptr rows
/// skipped): a max pass over the z rows, then one pass accumulating e = 2^(z log2e - max log2e)
/// and e * a. Rows are read front to back, 2 KiB runs, the next-but-one prefetched.
inline void pool_window(const float* const* rows, int64_t window, int64_t width, int64_t d,
                        float* pooled) {
  alignas(64) float m[kCompressorHeadDim], num[kCompressorHeadDim], den[kCompressorHeadDim];
  const FmaVec log2e = fv_set1(kCompressLog2e);
  for (int64_t j = 0; j < d; j += kFmaLanes)
    fv_store(m + j, fv_set1(-std::numeric_limits<float>::infinity()));
  for (int64_t w = 0; w < window; ++w) {
    if (w + 2 < window && rows[w + 2]) prefetch_run(rows[w + 2] + width, d * 4);
    if (rows[w] == nullptr) continue;
    const float* z = rows[w] + width;
    for (int64_t j = 0; j < d; j += kFmaLanes)
      fv_store(m + j, fv_max(fv_load(m + j), fv_load(z + j)));
  }
  for (int64_t j = 0; j < d; j += kFmaLanes) {
    fv_store(m + j, fv_mul(fv_load(m + j), log2e));
    fv_store(num + j, fv_zero());
    fv_store(den + j, fv_zero());
  }
  for (int64_t w = 0; w < window; ++w) {
    if (w + 2 < window && rows[w + 2]) prefetch_run(rows[w + 2], d * 4);
    if (rows[w] == nullptr) continue;
    const float* a = rows[w];
    for (int64_t j = 0; j < d; j += kFmaLanes) {
      const FmaVec e = fv_exp2(fv_sub(fv_mul(fv_load(a + width + j), log2e), fv_load(m + j)));
      fv_store(den + j, fv_add(fv_load(den + j), e));
      fv_store(num + j, fv_fma(e, fv_load(a + j), fv_load(num + j)));
    }
  }
  for (int64_t j = 0; j < d; j += kFmaLanes)
    fv_store(pooled + j, fv_div(fv_load(num + j), fv_load(den + j)));
}

inline void compress_row_fma(const CompressorParams& p, int64_t t) {
  const float* rows[kMaxWindow];
  for (int64_t w = 0; w < p.window; ++w) {
    const int64_t s = p.gather_slots.at(t, w);
    rows[w] = s < 0 ? nullptr : p.state.row(s) + window_channel_offset(p, w);
  }
  alignas(64) float pooled[kCompressorHeadDim];
  pool_window(rows, p.window, p.state.width, p.head_dim, pooled);
  compressor_finish_row(p, t, pooled);
}

const char* compressor_fma_unsupported(const void* params) {
  const auto& p = *static_cast<const CompressorParams*>(params);
  if (p.window > kMaxWindow) return "window longer than 128";
  if (p.head_dim % kFmaLanes != 0) return "head_dim not a multiple of the vector width";
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
