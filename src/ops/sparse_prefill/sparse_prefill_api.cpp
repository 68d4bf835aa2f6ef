// Sparse prefill API: validates SparsePrefillArgs into SparsePrefillParams, plans and runs.
#include <string>

#include "ops/common/api_checks.h"
#include "ops/common/op_entry.h"
#include "ops/sparse_prefill/sparse_prefill.h"

namespace openmla {
namespace {

Status check_inputs(const SparsePrefillArgs& a, SparsePrefillParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.q, "q", {DType::kBF16}, 3, true));
  p->seq_q = a.q.shape[0];
  p->heads_q = a.q.shape[1];
  p->head_dim = a.q.shape[2];
  p->head_dim_v = a.head_dim_v;
  OPENMLA_RETURN_IF_ERROR(check_head_dims(p->head_dim, p->head_dim_v));
  if (p->heads_q < 1) return invalid_argument("q: heads_q (shape[1]) must be at least 1");
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.kv, "kv", {DType::kBF16}, 3, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.kv, "kv", 2, p->head_dim, "head_dim"));
  p->seq_kv = a.kv.shape[0];
  p->heads_kv = a.kv.shape[1];
  if (p->heads_kv < 1 || p->heads_q % p->heads_kv != 0) {
    return invalid_argument("kv: heads_kv (" + std::to_string(p->heads_kv) +
                            ") must be at least 1 and divide heads_q (" +
                            std::to_string(p->heads_q) + ")");
  }
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.indices, "indices", {DType::kI32}, 3, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.indices, "indices", 0, p->seq_q, "seq_q"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.indices, "indices", 1, p->heads_kv, "heads_kv"));
  p->topk = a.indices.shape[2];
  if (a.topk_length.present()) {
    OPENMLA_RETURN_IF_ERROR(check_lengths(a.topk_length, "topk_length", p->seq_q, "seq_q", p->topk));
    p->topk_length = static_cast<const int32_t*>(a.topk_length.data);
    p->topk_length_stride = a.topk_length.stride[0];
  }
  OPENMLA_RETURN_IF_ERROR(check_sink(a.attn_sink, p->heads_q));
  if (a.attn_sink.present()) {
    p->attn_sink = static_cast<const float*>(a.attn_sink.data);
    p->sink_stride = a.attn_sink.stride[0];
  }
  if (a.softmax_scale == 0.0f)
    return invalid_argument("softmax_scale: required for sparse prefill (FlashMLA sm_scale)");
  return resolve_softmax_scale(a.softmax_scale, p->head_dim, &p->softmax_scale);
}

Status check_output_2d(const TensorView& t, const char* name, const SparsePrefillParams& p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(t, name, {DType::kF32}, 2, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 0, p.seq_q, "seq_q"));
  return check_dim(t, name, 1, p.heads_q, "heads_q");
}

Status validate(const SparsePrefillArgs& a, SparsePrefillParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_inputs(a, p));
  p->q = static_cast<const uint16_t*>(a.q.data);
  p->q_stride[0] = a.q.stride[0];
  p->q_stride[1] = a.q.stride[1];
  p->kv = static_cast<const uint16_t*>(a.kv.data);
  p->kv_stride[0] = a.kv.stride[0];
  p->kv_stride[1] = a.kv.stride[1];
  p->indices = static_cast<const int32_t*>(a.indices.data);
  for (int d = 0; d < 3; ++d) p->indices_stride[d] = a.indices.stride[d];
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.out, "out", {DType::kBF16}, 3, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.out, "out", 0, p->seq_q, "seq_q"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.out, "out", 1, p->heads_q, "heads_q"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.out, "out", 2, p->head_dim_v, "head_dim_v"));
  OPENMLA_RETURN_IF_ERROR(check_output_2d(a.max_logits, "max_logits", *p));
  OPENMLA_RETURN_IF_ERROR(check_output_2d(a.lse, "lse", *p));
  p->out = static_cast<uint16_t*>(a.out.data);
  p->out_stride[0] = a.out.stride[0];
  p->out_stride[1] = a.out.stride[1];
  p->max_logits = static_cast<float*>(a.max_logits.data);
  p->max_logits_stride[0] = a.max_logits.stride[0];
  p->max_logits_stride[1] = a.max_logits.stride[1];
  p->lse = static_cast<float*>(a.lse.data);
  p->lse_stride[0] = a.lse.stride[0];
  p->lse_stride[1] = a.lse.stride[1];
  return Status::Ok();
}

std::vector<int64_t> signature(const SparsePrefillParams& p) {
  return {p.seq_q, p.seq_kv, p.heads_q, p.heads_kv, p.head_dim, p.topk,
          p.topk_length != nullptr, p.attn_sink != nullptr};
}

}  // namespace

Status plan_sparse_prefill(const SparsePrefillArgs& args, const Options& options, Plan* plan) {
  return plan_op<SparsePrefillParams>(Op::kSparsePrefill, validate, signature, args, options, plan);
}

Status run_sparse_prefill(const Plan& plan, const SparsePrefillArgs& args) {
  return run_op<SparsePrefillParams>(Op::kSparsePrefill, validate, signature, plan, args);
}

Status sparse_prefill(const SparsePrefillArgs& args, const Options& options) {
  return plan_and_run_op<SparsePrefillParams>(Op::kSparsePrefill, validate, signature, args, options);
}

}  // namespace openmla
