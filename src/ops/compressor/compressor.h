// KV compressor (CSA / HCA): validated parameters shared by every compressor kernel, the
// per-row steps every kernel shares after pooling (bf16 rounding, RMSNorm, RoPE, store), and the
// kernels' registry entries. See include/openmla/compressor.h for the semantics.
#pragma once

#include <cstdint>
#include <vector>

#include "dispatch/registry.h"
#include "formats/kv_format.h"
#include "openmla/compressor.h"
#include "openmla/indexer_cache.h"

namespace openmla {

constexpr int64_t kCompressorHeadDim = 512;  ///< the main compressor; the indexer's is 128
constexpr int64_t kCompressorRopeDim = 64;

/// A validated [n] (or [n, k]) int32 / int64 tensor.
struct IntView {
  const void* data = nullptr;
  bool is64 = false;
  int64_t stride0 = 1, stride1 = 1;
  int64_t at(int64_t i, int64_t j = 0) const {
    const int64_t off = i * stride0 + j * stride1;
    return is64 ? static_cast<const int64_t*>(data)[off] : static_cast<const int32_t*>(data)[off];
  }
};

/// The fp32 state cache: row of slot s at base + (s / block_size) * block_stride +
/// (s % block_size) * row_stride (floats); a then z, `width` each.
struct StateCache {
  float* base = nullptr;
  int64_t num_blocks = 0, block_size = 0, block_stride = 0, row_stride = 0, width = 0;
  int64_t num_slots() const { return num_blocks * block_size; }
  float* row(int64_t slot) const {
    return base + (slot / block_size) * block_stride + (slot % block_size) * row_stride;
  }
};

struct CompressorParams {
  int64_t num_tokens = 0, ratio = 4, coff = 2, window = 8;
  int64_t head_dim = kCompressorHeadDim;  ///< 512 (MODEL1 entries) or 128 (indexer keys)
  bool hadamard = false;                  ///< head_dim 128: normalised 128-point WHT after RoPE
  StateCache state;
  IntView gather_slots, positions, kv_slots;
  std::vector<int64_t> rows;  ///< tokens that emit an entry (boundary position, kv slot >= 0)
  const float* norm_weight = nullptr;
  int64_t norm_weight_stride = 1;
  float eps = 1e-6f;
  const float* cos_sin = nullptr;
  int64_t cos_sin_stride = 64;
  PagedCache kv;  ///< MODEL1 or BF16 (written); for an FP8 / FP4 indexer cache only the geometry
  bool indexer_cache = false;  ///< head_dim 128 keys into `indexer_view` via indexer_write_keys
  IndexerKeyFormat indexer_format = IndexerKeyFormat::kFp8;
  TensorView indexer_view;
};

/// Channel offset inside a state row's a (or z) of window slot `w`.
inline int64_t window_channel_offset(const CompressorParams& p, int64_t w) {
  return (p.coff == 2 && w >= p.ratio) ? p.head_dim : 0;
}

/// Rounds the pooled fp32 `c` to bf16, RMSNorms it (fp32, weight), rotates the RoPE dims at the
/// entry's position (then the Hadamard rotation if asked) and writes the entry of `row` into the
/// cache (shared by the fast kernels; the reference has its own double version).
void compressor_finish_row(const CompressorParams& p, int64_t row, const float* pooled);

/// Writes one bf16 latent [head_dim] into the cache slot `slot`: MODEL1 by FlashMLA's quantiser,
/// bf16 verbatim, an indexer cache by indexer_write_keys.
void compressor_store_latent(const CompressorParams& p, int64_t slot, const uint16_t* latent);

/// In-place unnormalised Walsh-Hadamard transform of `n` (a power of two) values.
template <typename T>
void walsh_hadamard(T* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const T a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
}

extern const KernelEntry kCompressorAvx512;
extern const KernelEntry kCompressorAvx2;
extern const KernelEntry kCompressorRef;

}  // namespace openmla
