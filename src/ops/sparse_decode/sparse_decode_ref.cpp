// Reference sparse decode: the oracle and last-resort kernel.
// Algorithm: for each (batch, query token) gather the valid slots of the main and extra index
// lists (duplicates kept), dequantise each token once to bf16-exact floats, then for every head
// run the exact softmax in double (ops/common/ref_attention), apply the sink, round to bf16.
// Invariants: invalid slots are never dereferenced; lonely rows give out 0 and lse +inf.
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "ops/common/ref_attention.h"
#include "ops/sparse_decode/sparse_decode.h"

namespace openmla {
namespace {

void gather_valid(const PagedCache& cache, const IndexList& list, int64_t b, int64_t s,
                  std::vector<float>* keys, std::vector<uint16_t>* scratch) {
  const int64_t length = list.length(b);
  const int32_t* row = list.row(b, s);
  for (int64_t p = 0; p < length; ++p) {
    const int32_t index = row[p * list.stride_k];
    if (!slot_is_valid(index, p, length, cache.num_slots())) continue;
    dequantize_token(cache, index / cache.page_size, index % cache.page_size, 0, scratch->data());
    const std::size_t at = keys->size();
    keys->resize(at + cache.head_dim);
    bf16_row_to_float(scratch->data(), cache.head_dim, keys->data() + at);
  }
}

void decode_one_query(const SparseDecodeParams& p, int64_t b, int64_t s) {
  std::vector<float> keys;
  std::vector<uint16_t> scratch(p.head_dim);
  gather_valid(p.kv, p.indices, b, s, &keys, &scratch);
  if (p.has_extra) gather_valid(p.extra_kv, p.extra_indices, b, s, &keys, &scratch);
  const int64_t num_keys = static_cast<int64_t>(keys.size()) / p.head_dim;
  std::vector<float> q(p.head_dim);
  std::vector<double> out(p.head_dim_v);
  for (int64_t h = 0; h < p.heads_q; ++h) {
    bf16_row_to_float(p.q + b * p.q_stride[0] + s * p.q_stride[1] + h * p.q_stride[2], p.head_dim,
                      q.data());
    const RefRowResult r = ref_attend_row(q.data(), keys.data(), num_keys, p.head_dim,
                                          p.head_dim_v, p.softmax_scale, out.data());
    if (p.attn_sink) ref_apply_sink(out.data(), p.head_dim_v, r.lse, p.attn_sink[h * p.sink_stride]);
    ref_store_bf16(p.out + b * p.out_stride[0] + s * p.out_stride[1] + h * p.out_stride[2],
                   out.data(), p.head_dim_v);
    p.lse[b * p.lse_stride[0] + h * p.lse_stride[1] + s * p.lse_stride[2]] =
        static_cast<float>(r.lse);
  }
}

const char* ref_unsupported(const void*) { return nullptr; }

Status ref_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const SparseDecodeParams*>(params);
  parallel_for(p.batch * p.seq_q, config.num_threads,
               [&](int64_t task, int) { decode_one_query(p, task / p.seq_q, task % p.seq_q); });
  return Status::Ok();
}

}  // namespace

const KernelEntry kSparseDecodeRef = {"sparse_decode.ref", Op::kSparseDecode, Isa::kNone,
                                      ref_unsupported, nullptr, ref_run};

}  // namespace openmla
