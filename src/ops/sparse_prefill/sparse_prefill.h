// Sparse prefill: validated parameters shared by every sparse-prefill kernel.
#pragma once

#include <cstdint>

#include "dispatch/registry.h"

namespace openmla {

struct SparsePrefillParams {
  int64_t seq_q = 0, seq_kv = 0, heads_q = 0, heads_kv = 1, head_dim = 0, head_dim_v = 512;
  int64_t topk = 0;
  const uint16_t* q = nullptr;
  int64_t q_stride[2] = {};  ///< seq, head
  const uint16_t* kv = nullptr;
  int64_t kv_stride[2] = {};  ///< token, head
  const int32_t* indices = nullptr;
  int64_t indices_stride[3] = {};        ///< seq, kv head, k
  const int32_t* topk_length = nullptr;  ///< [seq_q] or nullptr
  int64_t topk_length_stride = 1;
  const float* attn_sink = nullptr;
  int64_t sink_stride = 1;
  float softmax_scale = 0.0f;
  uint16_t* out = nullptr;
  int64_t out_stride[2] = {};  ///< seq, head
  float* max_logits = nullptr;
  int64_t max_logits_stride[2] = {};
  float* lse = nullptr;
  int64_t lse_stride[2] = {};

  int64_t length(int64_t s) const {
    return topk_length ? topk_length[s * topk_length_stride] : topk;
  }
  const int32_t* index_row(int64_t s, int64_t g) const {
    return indices + s * indices_stride[0] + g * indices_stride[1];
  }
};

extern const KernelEntry kSparsePrefillAmx;
extern const KernelEntry kSparsePrefillAvx512Bf16;
extern const KernelEntry kSparsePrefillAvx512;
extern const KernelEntry kSparsePrefillAvx2;
extern const KernelEntry kSparsePrefillRef;

}  // namespace openmla
