// openmla public API: the MLA attention operations (FlashMLA semantics).
//
// Each op has an args struct, `plan_<op>` (chooses the kernel and thread partition; reusable while
// shapes and length values stay the same, e.g. across the layers of one decode step) and
// `run_<op>`. `<op>(args, options)` plans and runs in one call.
//
// Shared conventions: lse is the natural log of the sum of exp(scaled scores); a (query, head)
// with nothing to attend ("lonely") gets out = 0 and lse = +inf (max_logits = -inf); the
// attention sink scales the output by 1 / (1 + exp(sink - lse)) and never enters lse; V is the
// first head_dim_v (512) dims of K (for MODEL1 this includes the 64 RoPE dims); an index that
// does not name a token of the cache is invalid and ignored; cache slots that no valid index
// names are never read into the result, so NaN there cannot leak.
#pragma once

#include <memory>

#include "openmla/core.h"

namespace openmla {

namespace detail {
struct PlanState;
}

/// What plan_* decided: the kernel, the thread count and the split of the work. Cheap to copy.
class Plan {
 public:
  bool valid() const { return state_ != nullptr; }
  Op op() const;  ///< Op::kSparseDecode for an empty plan
  const char* kernel_name() const;
  int num_threads() const;
  int num_splits() const;  ///< pieces each row's key list is cut into (1 = no split)

  std::shared_ptr<const detail::PlanState> state_;
};

/// Sparse decode (FlashMLA `flash_mla_with_kvcache` with `indices`).
struct SparseDecodeArgs {
  TensorView q;                  ///< [batch, seq_q, heads_q, head_dim] bf16, last dim contiguous
  TensorView kv_cache;           ///< FP8 view (V32 / MODEL1) or bf16 [blocks, page, 1, head_dim]
  TensorView indices;            ///< [batch, seq_q, topk] int32, flat slot = block*page_size+off
  TensorView topk_length;        ///< optional [batch] int32, 0 <= value <= topk
  TensorView attn_sink;          ///< optional [heads_q] fp32, +-inf allowed
  TensorView extra_kv_cache;     ///< optional second cache (its own page size, same format)
  TensorView extra_indices;      ///< [batch, seq_q, extra_topk] int32, required with extra cache
  TensorView extra_topk_length;  ///< optional [batch] int32
  float softmax_scale = 0.0f;    ///< 0: head_dim^-0.5
  int64_t head_dim_v = 512;
  TensorView out;  ///< [batch, seq_q, heads_q, head_dim_v] bf16 (written)
  TensorView lse;  ///< [batch, heads_q, seq_q] fp32 (written; any strides)
};
Status plan_sparse_decode(const SparseDecodeArgs& args, const Options& options, Plan* plan);
Status run_sparse_decode(const Plan& plan, const SparseDecodeArgs& args);
Status sparse_decode(const SparseDecodeArgs& args, const Options& options = {});

/// Dense decode over a paged cache (FlashMLA `flash_mla_with_kvcache` without `indices`).
struct DenseDecodeArgs {
  TensorView q;              ///< [batch, seq_q, heads_q, head_dim] bf16 or fp16
  TensorView kv_cache;       ///< q's dtype [blocks, page, heads_kv, head_dim] or FP8 (bf16 q only)
  TensorView block_table;    ///< [batch, max_blocks] int32
  TensorView cache_seqlens;  ///< [batch] int32
  float softmax_scale = 0.0f;  ///< 0: head_dim^-0.5
  bool causal = false;         ///< query s sees keys j < len - (seq_q - 1 - s)
  int64_t head_dim_v = 512;
  TensorView out;  ///< [batch, seq_q, heads_q, head_dim_v] in q's dtype
  TensorView lse;  ///< [batch, heads_q, seq_q] fp32
};
Status plan_dense_decode(const DenseDecodeArgs& args, const Options& options, Plan* plan);
Status run_dense_decode(const Plan& plan, const DenseDecodeArgs& args);
Status dense_decode(const DenseDecodeArgs& args, const Options& options = {});

/// Sparse prefill (FlashMLA `flash_mla_sparse_fwd`). Query head h uses kv head
/// h / (heads_q / heads_kv) and that head's index row.
struct SparsePrefillArgs {
  TensorView q;                ///< [seq_q, heads_q, head_dim] bf16
  TensorView kv;               ///< [seq_kv, heads_kv, head_dim] bf16
  TensorView indices;          ///< [seq_q, heads_kv, topk] int32; valid iff 0 <= idx < seq_kv
  TensorView topk_length;      ///< optional [seq_q] int32
  TensorView attn_sink;        ///< optional [heads_q] fp32
  float softmax_scale = 0.0f;  ///< required (> 0) as in FlashMLA; 0 is rejected
  int64_t head_dim_v = 512;
  TensorView out;         ///< [seq_q, heads_q, head_dim_v] bf16
  TensorView max_logits;  ///< [seq_q, heads_q] fp32
  TensorView lse;         ///< [seq_q, heads_q] fp32
};
Status plan_sparse_prefill(const SparsePrefillArgs& args, const Options& options, Plan* plan);
Status run_sparse_prefill(const Plan& plan, const SparsePrefillArgs& args);
Status sparse_prefill(const SparsePrefillArgs& args, const Options& options = {});

}  // namespace openmla
