// The one split-KV combine of openmla's decode kernels (FlashMLA spec §5.7, in natural log).
//
// A key list cut into `pieces` pieces gives, per (query, head), one normalised fp32 partial
// output o_k (= O_k / L_k, all zeros for an empty piece) and one natural-log partial
// lse_k = ln L_k + max_k (-inf for an empty piece). The merge:
//   mx = max_k lse_k (0 if -inf);  G = ln(sum_k exp(lse_k - mx)) + mx (+inf if the sum is 0);
//   lse_out = G (never includes the sink);
//   G' = G + ln(1 + exp(sink - G)) with a sink (G' = G without; lonely rows: out 0);
//   out = sum_k exp(lse_k - G') * o_k, rounded once (RNE) to the output dtype, bf16 or fp16.
// One piece without a sink gives weight exactly 1, so out = round(o_0).
// Weights in double, the weighted sum in fp32 in piece order (cpu/combine_loops.h: a portable and
// an AVX-512 version with the same bits), so the result depends only on the partials
// (deterministic whatever thread or kernel produced them).
#pragma once

#include <cstdint>

#include "openmla/core.h"

namespace openmla {

/// Merges the partials of one (query, head). partial_out + k * out_stride is piece k's `dim`
/// floats; partial_lse[k * lse_stride] its lse. `sink` may be nullptr (no sink) or point to
/// the head's sink (+-inf allowed). Writes `dim` values of `out_dtype` (kBF16 or kF16) to `out`
/// and the lse to `lse_out`.
void combine_partials(int64_t pieces, const float* partial_out, int64_t out_stride,
                      const float* partial_lse, int64_t lse_stride, int64_t dim, const float* sink,
                      uint16_t* out, float* lse_out, DType out_dtype = DType::kBF16);

}  // namespace openmla
