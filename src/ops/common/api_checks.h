// Validation pieces shared by the attention ops' API files.
#pragma once

#include "core/check.h"

namespace openmla {

/// Resolves the softmax scale: 0 means head_dim^-0.5; NaN, inf and negative values are errors.
Status resolve_softmax_scale(float requested, int64_t head_dim, float* scale);

/// Checks head_dim (512 or 576) and head_dim_v (512).
Status check_head_dims(int64_t head_dim, int64_t head_dim_v);
/// The same rule as a kernel's unsupported reason (nullptr when the dims are supported), for the
/// KernelEntry::unsupported_reason functions of the CPU kernels.
const char* head_dims_unsupported(int64_t head_dim, int64_t head_dim_v);

/// Checks decode outputs: out [batch, seq_q, heads_q, head_dim_v] of dtype `out_dtype` (q's
/// dtype; last dim contiguous) and lse fp32 [batch, heads_q, seq_q] (any strides).
Status check_decode_outputs(const TensorView& out, const TensorView& lse, int64_t batch,
                            int64_t seq_q, int64_t heads_q, int64_t head_dim_v,
                            DType out_dtype = DType::kBF16);

/// Checks an optional fp32 [heads_q] sink.
Status check_sink(const TensorView& sink, int64_t heads_q);

}  // namespace openmla
