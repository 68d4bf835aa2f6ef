// Dense decode over a paged cache: validated parameters shared by every dense-decode kernel.
#pragma once

#include <algorithm>
#include <cstdint>

#include "dispatch/registry.h"
#include "formats/kv_format.h"

namespace openmla {

struct DenseDecodeParams {
  int64_t batch = 0, seq_q = 0, heads_q = 0, heads_kv = 1, head_dim = 0, head_dim_v = 512;
  DType dtype = DType::kBF16;  ///< q, out and a BF16-layout cache: kBF16 or kF16 (FP8: kBF16)
  const uint16_t* q = nullptr;
  int64_t q_stride[3] = {};  ///< batch, seq, head
  PagedCache kv;
  const int32_t* block_table = nullptr;
  int64_t block_table_stride[2] = {};
  int64_t max_blocks = 0;
  const int32_t* cache_seqlens = nullptr;
  int64_t seqlens_stride = 1;
  bool causal = false;
  float softmax_scale = 0.0f;
  uint16_t* out = nullptr;
  int64_t out_stride[3] = {};  ///< batch, seq, head
  float* lse = nullptr;
  int64_t lse_stride[3] = {};  ///< batch, head, seq

  /// Keys query s of request b may see: all L, or L - (seq_q - 1 - s) when causal (clamped >= 0).
  int64_t visible_length(int64_t b, int64_t s) const {
    const int64_t length = cache_seqlens[b * seqlens_stride];
    if (!causal) return length;
    return std::max<int64_t>(0, length - (seq_q - 1 - s));
  }
  /// Physical page of logical block `i` of request b (validated to be in range for i < L/P).
  int64_t page_of(int64_t b, int64_t i) const {
    return block_table[b * block_table_stride[0] + i * block_table_stride[1]];
  }
};

extern const KernelEntry kDenseDecodeAmx;
extern const KernelEntry kDenseDecodeAvx512Bf16;
extern const KernelEntry kDenseDecodeAvx512;
extern const KernelEntry kDenseDecodeAvx2;
extern const KernelEntry kDenseDecodeRef;

}  // namespace openmla
