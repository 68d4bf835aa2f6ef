// The reference attention row shared by the three reference kernels: exact softmax attention of
// one query row over a gathered key list, accumulated in double. This is the oracle's math; fast
// kernels must not call it.
#pragma once

#include <cstdint>
#include <vector>

#include "openmla/core.h"

namespace openmla {

struct RefRowResult {
  double lse;        ///< natural log of sum exp(score); +inf when there are no keys
  double max_logit;  ///< max score; -inf when there are no keys
};

/// scores = scale * q . keys[t] (keys: [num_keys, head_dim] floats, V = first head_dim_v dims);
/// out[0..head_dim_v) = softmax-weighted sum of V, or zeros when num_keys == 0.
RefRowResult ref_attend_row(const float* q, const float* keys, int64_t num_keys, int64_t head_dim,
                            int64_t head_dim_v, double scale, double* out);

/// FlashMLA's sink: out *= 1 / (1 + exp(sink - lse)); sink -inf leaves out, +inf zeroes it.
/// Lonely rows (lse = +inf) stay zero. Never changes lse.
void ref_apply_sink(double* out, int64_t head_dim_v, double lse, float sink);

/// Rounds the row to `dtype` (kBF16 or kF16, round-to-nearest-even) and stores it with unit
/// stride. Going through float first is still one correct rounding: float's 24 bits are at least
/// 2p + 2 for both targets (p = 8, 11), so the double rounding is innocuous.
void ref_store16(uint16_t* dst, const double* src, int64_t n, DType dtype);
inline void ref_store_bf16(uint16_t* dst, const double* src, int64_t n) {
  ref_store16(dst, src, n, DType::kBF16);
}

/// Converts `n` bf16 or fp16 (`dtype`) values to float, exactly.
void row16_to_float(const uint16_t* src, int64_t n, DType dtype, float* dst);
inline void bf16_row_to_float(const uint16_t* src, int64_t n, float* dst) {
  row16_to_float(src, n, DType::kBF16, dst);
}

}  // namespace openmla
