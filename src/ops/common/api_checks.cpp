#include "ops/common/api_checks.h"

#include <cmath>
#include <string>

namespace openmla {

Status resolve_softmax_scale(float requested, int64_t head_dim, float* scale) {
  if (std::isnan(requested) || std::isinf(requested) || requested < 0.0f) {
    return invalid_argument("softmax_scale must be a finite value >= 0 (0 = head_dim^-0.5), got " +
                            std::to_string(requested));
  }
  *scale = requested == 0.0f ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)))
                             : requested;
  return Status::Ok();
}

Status check_head_dims(int64_t head_dim, int64_t head_dim_v) {
  if (head_dim != 576 && head_dim != 512) {
    return unsupported("q: head_dim (last dimension) must be 576 (V3.2) or 512 (V4), got " +
                       std::to_string(head_dim));
  }
  if (head_dim_v != 512)
    return unsupported("head_dim_v must be 512, got " + std::to_string(head_dim_v));
  return Status::Ok();
}

const char* head_dims_unsupported(int64_t head_dim, int64_t head_dim_v) {
  return check_head_dims(head_dim, head_dim_v).ok()
             ? nullptr
             : "head_dim must be 576 or 512 and head_dim_v 512";
}

Status check_decode_outputs(const TensorView& out, const TensorView& lse, int64_t batch,
                            int64_t seq_q, int64_t heads_q, int64_t head_dim_v, DType out_dtype) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(out, "out", {out_dtype}, 4, true));
  const int64_t out_shape[4] = {batch, seq_q, heads_q, head_dim_v};
  const char* out_names[4] = {"batch", "seq_q", "heads_q", "head_dim_v"};
  for (int d = 0; d < 4; ++d)
    OPENMLA_RETURN_IF_ERROR(check_dim(out, "out", d, out_shape[d], out_names[d]));
  OPENMLA_RETURN_IF_ERROR(check_tensor(lse, "lse", {DType::kF32}, 3, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(lse, "lse", 0, batch, "batch"));
  OPENMLA_RETURN_IF_ERROR(check_dim(lse, "lse", 1, heads_q, "heads_q"));
  return check_dim(lse, "lse", 2, seq_q, "seq_q");
}

Status check_sink(const TensorView& sink, int64_t heads_q) {
  if (!sink.present()) return Status::Ok();
  OPENMLA_RETURN_IF_ERROR(check_tensor(sink, "attn_sink", {DType::kF32}, 1, false));
  return check_dim(sink, "attn_sink", 0, heads_q, "heads_q");
}

}  // namespace openmla
