// Reference sparse prefill: the oracle and last-resort kernel.
// Algorithm: for each query token and kv head, gather the rows named by valid slots
// (p < topk_length, 0 <= index < seq_kv; duplicates kept), then for each query head of the group
// run the exact softmax in double and apply the sink. Outputs out, max_logits and lse (natural
// log). Lonely rows: out 0, lse +inf, max_logits -inf. Invalid slots are never dereferenced.
#include <vector>

#include "core/thread_pool.h"
#include "ops/common/ref_attention.h"
#include "ops/sparse_prefill/sparse_prefill.h"

namespace openmla {
namespace {

void prefill_one_query(const SparsePrefillParams& p, int64_t s) {
  const int64_t group = p.heads_q / p.heads_kv;
  const int64_t length = p.length(s);
  std::vector<float> keys;
  std::vector<float> q(p.head_dim);
  std::vector<double> out(p.head_dim_v);
  for (int64_t g = 0; g < p.heads_kv; ++g) {
    keys.clear();
    const int32_t* row = p.index_row(s, g);
    for (int64_t k = 0; k < length; ++k) {
      const int32_t index = row[k * p.indices_stride[2]];
      if (index < 0 || index >= p.seq_kv) continue;
      const std::size_t at = keys.size();
      keys.resize(at + p.head_dim);
      bf16_row_to_float(p.kv + index * p.kv_stride[0] + g * p.kv_stride[1], p.head_dim,
                        keys.data() + at);
    }
    const int64_t num_keys = static_cast<int64_t>(keys.size()) / p.head_dim;
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      bf16_row_to_float(p.q + s * p.q_stride[0] + h * p.q_stride[1], p.head_dim, q.data());
      const RefRowResult r = ref_attend_row(q.data(), keys.data(), num_keys, p.head_dim,
                                            p.head_dim_v, p.softmax_scale, out.data());
      if (p.attn_sink) ref_apply_sink(out.data(), p.head_dim_v, r.lse, p.attn_sink[h * p.sink_stride]);
      ref_store_bf16(p.out + s * p.out_stride[0] + h * p.out_stride[1], out.data(), p.head_dim_v);
      p.lse[s * p.lse_stride[0] + h * p.lse_stride[1]] = static_cast<float>(r.lse);
      p.max_logits[s * p.max_logits_stride[0] + h * p.max_logits_stride[1]] =
          static_cast<float>(r.max_logit);
    }
  }
}

const char* ref_unsupported(const void*) { return nullptr; }

Status ref_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const SparsePrefillParams*>(params);
  parallel_for(p.seq_q, config.num_threads, [&](int64_t s, int) { prefill_one_query(p, s); });
  return Status::Ok();
}

}  // namespace

const KernelEntry kSparsePrefillRef = {"sparse_prefill.ref", Op::kSparsePrefill, Isa::kNone,
                                       ref_unsupported, nullptr, ref_run};

}  // namespace openmla
