// Reference dense decode: the oracle and last-resort kernel.
// Algorithm: for each (batch, query token, kv head) dequantise the visible tokens of that head
// (block table lookup per token) to exact floats (bf16, or fp16 for an fp16 cache and q), then
// for each query head of the group run the exact softmax in double and round out once to q's
// dtype (bf16 or fp16, RNE). Query head h uses kv head h / (heads_q / heads_kv).
// Invariants: tokens at or past the visible length are never read; lonely rows give out 0 and
// lse +inf.
#include <vector>

#include "core/thread_pool.h"
#include "ops/common/ref_attention.h"
#include "ops/dense_decode/dense_decode.h"

namespace openmla {
namespace {

void decode_one_query(const DenseDecodeParams& p, int64_t b, int64_t s) {
  const int64_t visible = p.visible_length(b, s);
  const int64_t group = p.heads_q / p.heads_kv;
  std::vector<float> keys(visible * p.head_dim);
  std::vector<uint16_t> scratch(p.head_dim);
  std::vector<float> q(p.head_dim);
  std::vector<double> out(p.head_dim_v);
  for (int64_t g = 0; g < p.heads_kv; ++g) {
    for (int64_t j = 0; j < visible; ++j) {
      dequantize_token(p.kv, p.page_of(b, j / p.kv.page_size), j % p.kv.page_size, g,
                       scratch.data());
      row16_to_float(scratch.data(), p.head_dim, p.kv.dtype, keys.data() + j * p.head_dim);
    }
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      row16_to_float(p.q + b * p.q_stride[0] + s * p.q_stride[1] + h * p.q_stride[2], p.head_dim,
                     p.dtype, q.data());
      const RefRowResult r = ref_attend_row(q.data(), keys.data(), visible, p.head_dim,
                                            p.head_dim_v, p.softmax_scale, out.data());
      ref_store16(p.out + b * p.out_stride[0] + s * p.out_stride[1] + h * p.out_stride[2],
                  out.data(), p.head_dim_v, p.dtype);
      p.lse[b * p.lse_stride[0] + h * p.lse_stride[1] + s * p.lse_stride[2]] =
          static_cast<float>(r.lse);
    }
  }
}

const char* ref_unsupported(const void*) { return nullptr; }

Status ref_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const DenseDecodeParams*>(params);
  parallel_for(p.batch * p.seq_q, config.num_threads,
               [&](int64_t task, int) { decode_one_query(p, task / p.seq_q, task % p.seq_q); });
  return Status::Ok();
}

}  // namespace

const KernelEntry kDenseDecodeRef = {"dense_decode.ref", Op::kDenseDecode, Isa::kNone,
                                     ref_unsupported,    nullptr,          ref_run};

}  // namespace openmla
