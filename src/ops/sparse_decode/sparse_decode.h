// Sparse decode: validated parameters shared by every sparse-decode kernel, and the kernels'
// registry entries. See include/openmla/attention.h for the semantics.
#pragma once

#include <cstdint>

#include "dispatch/registry.h"
#include "formats/kv_format.h"

namespace openmla {

/// One index tensor [batch, seq_q, topk] with its optional per-batch lengths.
struct IndexList {
  const int32_t* data = nullptr;
  int64_t stride_batch = 0, stride_seq = 0, stride_k = 1;
  int64_t topk = 0;
  const int32_t* lengths = nullptr;  ///< [batch] or nullptr (every row has topk positions)
  int64_t lengths_stride = 1;

  int64_t length(int64_t b) const { return lengths ? lengths[b * lengths_stride] : topk; }
  const int32_t* row(int64_t b, int64_t s) const {
    return data + b * stride_batch + s * stride_seq;
  }
};

struct SparseDecodeParams {
  int64_t batch = 0, seq_q = 0, heads_q = 0, head_dim = 0, head_dim_v = 512;
  const uint16_t* q = nullptr;  ///< bf16
  int64_t q_stride[3] = {};     ///< batch, seq, head (elements); head_dim is contiguous
  PagedCache kv;
  IndexList indices;
  bool has_extra = false;
  PagedCache extra_kv;
  IndexList extra_indices;
  const float* attn_sink = nullptr;  ///< [heads_q] or nullptr
  int64_t sink_stride = 1;
  float softmax_scale = 0.0f;
  uint16_t* out = nullptr;     ///< bf16
  int64_t out_stride[3] = {};  ///< batch, seq, head
  float* lse = nullptr;
  int64_t lse_stride[3] = {};  ///< batch, head, seq
};

/// A slot is valid iff it lies below the row's length and names a token of the cache.
inline bool slot_is_valid(int32_t index, int64_t position, int64_t length, int64_t num_slots) {
  return position < length && index >= 0 && index < num_slots;
}

extern const KernelEntry kSparseDecodeAmx;
extern const KernelEntry kSparseDecodeAvx512Bf16;
extern const KernelEntry kSparseDecodeAvx512;
extern const KernelEntry kSparseDecodeAvx2;
extern const KernelEntry kSparseDecodeRef;

}  // namespace openmla
