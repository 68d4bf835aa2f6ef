// Sparse decode API: validates SparseDecodeArgs into SparseDecodeParams, plans and runs.
#include <string>

#include "ops/common/api_checks.h"
#include "ops/common/op_entry.h"
#include "ops/sparse_decode/sparse_decode.h"

namespace openmla {
namespace {

Status make_index_list(const TensorView& idx, const char* name, const TensorView& lengths,
                       const char* lengths_name, int64_t batch, int64_t seq_q, IndexList* list) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(idx, name, {DType::kI32}, 3, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(idx, name, 0, batch, "batch"));
  OPENMLA_RETURN_IF_ERROR(check_dim(idx, name, 1, seq_q, "seq_q"));
  list->data = static_cast<const int32_t*>(idx.data);
  list->stride_batch = idx.stride[0];
  list->stride_seq = idx.stride[1];
  list->stride_k = idx.stride[2];
  list->topk = idx.shape[2];
  if (lengths.present()) {
    OPENMLA_RETURN_IF_ERROR(check_lengths(lengths, lengths_name, batch, "batch", list->topk));
    list->lengths = static_cast<const int32_t*>(lengths.data);
    list->lengths_stride = lengths.stride[0];
  }
  return Status::Ok();
}

Status check_extra_args(const SparseDecodeArgs& a) {
  if (a.extra_kv_cache.present() && !a.extra_indices.present())
    return invalid_argument("extra_indices: required when extra_kv_cache is given");
  if (!a.extra_kv_cache.present() && (a.extra_indices.present() || a.extra_topk_length.present()))
    return invalid_argument("extra_indices / extra_topk_length given without extra_kv_cache");
  return Status::Ok();
}

Status validate(const SparseDecodeArgs& a, SparseDecodeParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.q, "q", {DType::kBF16}, 4, true));
  p->batch = a.q.shape[0];
  p->seq_q = a.q.shape[1];
  p->heads_q = a.q.shape[2];
  p->head_dim = a.q.shape[3];
  p->head_dim_v = a.head_dim_v;
  OPENMLA_RETURN_IF_ERROR(check_head_dims(p->head_dim, p->head_dim_v));
  if (p->heads_q < 1) return invalid_argument("q: heads_q (shape[2]) must be at least 1");
  p->q = static_cast<const uint16_t*>(a.q.data);
  for (int d = 0; d < 3; ++d) p->q_stride[d] = a.q.stride[d];
  OPENMLA_RETURN_IF_ERROR(make_paged_cache(a.kv_cache, "kv_cache", p->head_dim, &p->kv));
  if (p->kv.heads_kv != 1)
    return unsupported("kv_cache: sparse decode needs heads_kv == 1 (MQA)");
  OPENMLA_RETURN_IF_ERROR(make_index_list(a.indices, "indices", a.topk_length, "topk_length",
                                          p->batch, p->seq_q, &p->indices));
  OPENMLA_RETURN_IF_ERROR(check_extra_args(a));
  p->has_extra = a.extra_kv_cache.present();
  if (p->has_extra) {
    OPENMLA_RETURN_IF_ERROR(
        make_paged_cache(a.extra_kv_cache, "extra_kv_cache", p->head_dim, &p->extra_kv));
    if (p->extra_kv.format != p->kv.format || p->extra_kv.heads_kv != 1)
      return invalid_argument("extra_kv_cache: must have the same format as kv_cache and one head");
    OPENMLA_RETURN_IF_ERROR(make_index_list(a.extra_indices, "extra_indices", a.extra_topk_length,
                                            "extra_topk_length", p->batch, p->seq_q,
                                            &p->extra_indices));
  }
  OPENMLA_RETURN_IF_ERROR(check_sink(a.attn_sink, p->heads_q));
  if (a.attn_sink.present()) {
    p->attn_sink = static_cast<const float*>(a.attn_sink.data);
    p->sink_stride = a.attn_sink.stride[0];
  }
  OPENMLA_RETURN_IF_ERROR(resolve_softmax_scale(a.softmax_scale, p->head_dim, &p->softmax_scale));
  OPENMLA_RETURN_IF_ERROR(
      check_decode_outputs(a.out, a.lse, p->batch, p->seq_q, p->heads_q, p->head_dim_v));
  p->out = static_cast<uint16_t*>(a.out.data);
  for (int d = 0; d < 3; ++d) p->out_stride[d] = a.out.stride[d];
  p->lse = static_cast<float*>(a.lse.data);
  for (int d = 0; d < 3; ++d) p->lse_stride[d] = a.lse.stride[d];
  return Status::Ok();
}

std::vector<int64_t> signature(const SparseDecodeParams& p) {
  return {p.batch,
          p.seq_q,
          p.heads_q,
          p.head_dim,
          static_cast<int64_t>(p.kv.format),
          p.kv.page_size,
          p.indices.topk,
          p.indices.lengths != nullptr,
          p.has_extra,
          p.has_extra ? p.extra_kv.page_size : 0,
          p.has_extra ? p.extra_indices.topk : 0,
          p.extra_indices.lengths != nullptr,
          p.attn_sink != nullptr};
}

}  // namespace

Status plan_sparse_decode(const SparseDecodeArgs& args, const Options& options, Plan* plan) {
  return plan_op<SparseDecodeParams>(Op::kSparseDecode, validate, signature, args, options, plan);
}

Status run_sparse_decode(const Plan& plan, const SparseDecodeArgs& args) {
  return run_op<SparseDecodeParams>(Op::kSparseDecode, validate, signature, plan, args);
}

Status sparse_decode(const SparseDecodeArgs& args, const Options& options) {
  return plan_and_run_op<SparseDecodeParams>(Op::kSparseDecode, validate, signature, args, options);
}

}  // namespace openmla
