// Reference indexer kernels: the oracles and last-resort kernels of mqa_logits,
// paged_mqa_logits and paged_indexer_topk.
// Algorithm: per query row, decode q and every visible key exactly, then
// logit = sum_h w_h * max(0, q_h . k) * k_scale with every product and sum in double, rounded
// to fp32 once. The fused op computes the same fp32 row and selects with the shared routine.
// Invariants: only tokens below a row's visible length are read; invisible logits are -inf.
#include <cmath>
#include <limits>
#include <vector>

#include "core/thread_pool.h"
#include "ops/indexer/indexer.h"
#include "ops/indexer/indexer_keys.h"

namespace openmla {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct RefRow {
  std::vector<double> q, w, k;
  RefRow(const IndexerQuery& query, int64_t r) : q(query.heads * 128), w(query.heads), k(128) {
    for (int64_t h = 0; h < query.heads; ++h) {
      const uint8_t* qh = query.q_row(r) + h * query.q_stride_head;
      for (int d = 0; d < 128; ++d) q[h * 128 + d] = e4m3_to_float(qh[d]);
      w[h] = query.w_row(r)[h * query.w_stride_head];
    }
  }
  /// The logit of the key in `k` with key scale `scale`.
  float score(double scale) const {
    double sum = 0.0;
    for (size_t h = 0; h < w.size(); ++h) {
      double dot = 0.0;
      for (int d = 0; d < 128; ++d) dot += q[h * 128 + d] * k[d];
      sum += w[h] * std::max(dot, 0.0) * scale;
    }
    return static_cast<float>(sum);
  }
};

const char* ref_unsupported(const void*) { return nullptr; }

Status mqa_ref_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const MqaLogitsParams*>(params);
  parallel_for(p.rows, config.num_threads, [&](int64_t m, int) {
    RefRow row(p.query, m);
    float* out = p.logits + m * p.logits_stride;
    const int64_t begin = p.begin(m), end = p.end(m);
    for (int64_t s = 0; s < p.keys; ++s) {
      if (s < begin || s >= end) {
        out[s] = kNegInf;
        continue;
      }
      for (int d = 0; d < 128; ++d) row.k[d] = e4m3_to_float(p.k[s * p.k_stride + d]);
      out[s] = row.score(p.k_scale[s * p.k_scale_stride]);
    }
  });
  return Status::Ok();
}

// Logits of the visible tokens of row (b, j) into out[0, visible).
void paged_row_ref(const PagedMqaLogitsParams& p, int64_t b, int64_t j, float* out) {
  RefRow row(p.query, b * p.next_n + j);
  const int64_t visible = p.visible(b, j);
  for (int64_t s = 0; s < visible; ++s) {
    const IndexerTokenBytes t =
        indexer_token_bytes(p.page(b, s), p.cache.page_size, s % p.cache.page_size, p.cache.format);
    const double scale = decode_indexer_token(t, p.cache.format, row.k.data());
    out[s] = row.score(scale);
  }
}

Status paged_ref_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const PagedMqaLogitsParams*>(params);
  parallel_for(p.batch * p.next_n, config.num_threads, [&](int64_t r, int) {
    float* out = p.logits + r * p.logits_stride;
    paged_row_ref(p, r / p.next_n, r % p.next_n, out);
    for (int64_t s = p.visible(r / p.next_n, r % p.next_n); s < p.max_len; ++s) out[s] = kNegInf;
  });
  return Status::Ok();
}

Status fused_ref_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const PagedIndexerTopkParams*>(params);
  const int64_t next_n = p.lp.next_n;
  parallel_for(p.lp.batch * next_n, config.num_threads, [&](int64_t r, int) {
    const int64_t b = r / next_n, j = r % next_n;
    const int64_t visible = p.lp.visible(b, j);
    std::vector<float> logits(static_cast<size_t>(visible));
    paged_row_ref(p.lp, b, j, logits.data());
    std::vector<uint64_t> keys(static_cast<size_t>(std::max<int64_t>(visible, 1)));
    const int64_t count = topk_of_scores(logits.data(), visible, 0, p.topk, keys.data());
    topk_write_row(
        keys.data(), count, p.topk, p.slot_map(b),
        p.indices + b * p.idx_stride[0] + j * p.idx_stride[1], p.idx_stride[2],
        p.topk_length ? p.topk_length + b * p.tl_stride[0] + j * p.tl_stride[1] : nullptr);
  });
  return Status::Ok();
}

}  // namespace

const KernelEntry kMqaLogitsRef = {"mqa_logits.ref", Op::kMqaLogits, Isa::kNone,
                                   ref_unsupported,  nullptr,        mqa_ref_run};
const KernelEntry kPagedMqaLogitsRef = {
    "paged_mqa_logits.ref", Op::kPagedMqaLogits, Isa::kNone, ref_unsupported, nullptr,
    paged_ref_run};
const KernelEntry kPagedIndexerTopkRef = {"paged_indexer_topk.ref",
                                          Op::kPagedIndexerTopk,
                                          Isa::kNone,
                                          ref_unsupported,
                                          nullptr,
                                          fused_ref_run};

}  // namespace openmla
