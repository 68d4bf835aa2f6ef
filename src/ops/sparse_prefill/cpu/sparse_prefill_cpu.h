// Shared, ISA-free driver of the CPU sparse-prefill kernels (sparse_prefill_{amx,avx512,avx2}),
// templated on the GEMM backend of cpu/attn_rows_engine.h.
// Work item = (query token s, kv head g): the heads_q / heads_kv query heads of g are the M rows;
// the valid slots of index row (s, g) (p < topk_length[s], 0 <= index < seq_kv; duplicates kept)
// are compacted, their kv rows gathered (software prefetch kPrefetch slots ahead; V repacked pair
// by pair as it lands) in blocks shared by all rows, and attended with the online softmax. No
// key-list split: seq_q x heads_kv items already keep every thread busy, and each item's result
// depends only on its own inputs (thread- and batch-invariant). The finished row goes through the
// one combine (cpu/combine.h, 1 piece), which applies the sink; max_logits = scale x the largest
// raw score (-inf for lonely rows). Invalid slots are never dereferenced. Internal linkage only.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/attn_rows_engine.h"
#include "cpu/combine.h"
#include "ops/common/api_checks.h"
#include "ops/sparse_prefill/sparse_prefill.h"

namespace openmla {
namespace {

constexpr int64_t kPrefetch = 32;

inline const char* sp_unsupported(const void* params) {
  const auto& p = *static_cast<const SparsePrefillParams*>(params);
  return head_dims_unsupported(p.head_dim, p.head_dim_v);
}

/// Writes head h of query token s: the one combine (1 piece, applies the sink) to out / lse, and
/// max_logits.
inline void sp_emit_head(const SparsePrefillParams& p, int64_t s, int64_t h, const float* o,
                         float lse, float max_logit) {
  combine_partials(1, o, kRowsDimV, &lse, 1, kRowsDimV,
                   p.attn_sink ? p.attn_sink + h * p.sink_stride : nullptr,
                   p.out + s * p.out_stride[0] + h * p.out_stride[1],
                   p.lse + s * p.lse_stride[0] + h * p.lse_stride[1]);
  p.max_logits[s * p.max_logits_stride[0] + h * p.max_logits_stride[1]] = max_logit;
}

/// Runs run_item(s, g, valid, count) for every (query token s, kv head g) item in parallel, where
/// valid[0, count) are the row's valid slots in order (p < topk_length, 0 <= index < seq_kv).
template <class RunItem>
Status sp_run_items(const SparsePrefillParams& p, const ExecConfig& config, RunItem&& run_item) {
  parallel_for(p.seq_q * p.heads_kv, config.num_threads, [&](int64_t item, int) {
    const int64_t s = item / p.heads_kv, g = item % p.heads_kv;
    static thread_local std::vector<int32_t> valid;
    const int64_t length = p.length(s);
    const int32_t* row = p.index_row(s, g);
    valid.clear();
    for (int64_t k = 0; k < length; ++k) {
      const int32_t index = row[k * p.indices_stride[2]];
      if (index >= 0 && index < p.seq_kv) valid.push_back(index);
    }
    run_item(s, g, valid.data(), static_cast<int64_t>(valid.size()));
  });
  return Status::Ok();
}

/// The engine path: the item's heads are the M rows of cpu/attn_rows_engine.h.
template <class Backend>
void sp_engine_item(const SparsePrefillParams& p, int64_t s, int64_t g, const int32_t* valid,
                    int64_t count) {
  const int64_t group = p.heads_q / p.heads_kv;
  const int64_t D = p.head_dim;
  static thread_local RowsAttention<Backend> engine;
  static thread_local std::vector<const uint16_t*> q_rows;
  static thread_local AlignedBuffer<float> o_buf, lse_buf, max_buf;
  q_rows.resize(group);
  for (int64_t hh = 0; hh < group; ++hh)
    q_rows[hh] = p.q + s * p.q_stride[0] + (g * group + hh) * p.q_stride[1];
  engine.begin(group, D, p.softmax_scale, true, q_rows.data());
  const uint16_t* kv = p.kv + g * p.kv_stride[1];
  for (int64_t k0 = 0; k0 < count; k0 += Backend::kBlockN) {
    const int64_t n = std::min(Backend::kBlockN, count - k0);
    uint16_t* keys = engine.keys();
    for (int64_t t = 0; t < n; ++t) {
      if (k0 + t + kPrefetch < count) {
        const char* ahead =
            reinterpret_cast<const char*>(kv + valid[k0 + t + kPrefetch] * p.kv_stride[0]);
        for (int64_t byte = 0; byte < D * 2; byte += 64) __builtin_prefetch(ahead + byte);
      }
      std::memcpy(keys + t * D, kv + valid[k0 + t] * p.kv_stride[0], D * sizeof(uint16_t));
      if (t & 1) engine.stage_v((t + 1) / 2);  // V repacked while the pair is in L1
    }
    engine.step(n, nullptr);
  }
  float* o = o_buf.get(group * kRowsDimV);
  float* lse = lse_buf.get(group);
  float* mx = max_buf.get(group);
  engine.finish(o, kRowsDimV, lse, mx);
  for (int64_t hh = 0; hh < group; ++hh)
    sp_emit_head(p, s, g * group + hh, o + hh * kRowsDimV, lse[hh], mx[hh]);
}

template <class Backend>
Status sp_run(const SparsePrefillParams& p, const ExecConfig& config) {
  return sp_run_items(p, config, [&](int64_t s, int64_t g, const int32_t* valid, int64_t count) {
    sp_engine_item<Backend>(p, s, g, valid, count);
  });
}

}  // namespace
}  // namespace openmla
