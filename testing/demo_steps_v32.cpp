// The V3.2 decode step of demo_steps.h: indexer cache + V32 attention cache sharing one block
// table, fused and unfused indexer top-k, sparse decode.
#include <algorithm>

#include "demo_steps_internal.h"
#include "openmla/indexer_cache.h"
#include "openmla/kv_cache.h"

namespace openmla::testing {
namespace {

constexpr int64_t kV32Bytes = 656, kIndexBytes = 132, kV32Dim = 576;

struct V32Step {
  V32StepConfig c;
  std::vector<int64_t> lengths;
  demo::BlockTable bt;
  std::vector<uint8_t> index_cache, kv_cache, q_index;
  std::vector<float> weights;
  std::vector<int32_t> context_lens;
  std::vector<uint16_t> q;

  PagedMqaLogitsArgs logits_args() const {
    PagedMqaLogitsArgs a;
    a.q = tensor_view(q_index.data(), DType::kU8, {c.batch, 1, c.index_heads, 128});
    a.kv_cache =
        tensor_view(index_cache.data(), DType::kU8, {bt.num_blocks, c.page_size, 1, kIndexBytes});
    a.format = IndexerKeyFormat::kFp8;
    a.weights = tensor_view(weights.data(), DType::kF32, {c.batch, c.index_heads});
    a.context_lens = tensor_view(context_lens.data(), DType::kI32, {c.batch});
    a.block_table = tensor_view(bt.table.data(), DType::kI32, {c.batch, bt.max_blocks});
    return a;
  }
};

/// Writes request b's random keys and latents through the block table (both caches start as
/// 0xFF bytes: NaN codes and scales in every slot no request owns).
Status write_request(V32Step* s, int64_t b, Rng& rng) {
  const int64_t len = s->lengths[b];
  std::vector<int32_t> slots(static_cast<size_t>(len));
  for (int64_t p = 0; p < len; ++p) slots[p] = s->bt.slot(b, p);
  const std::vector<float> keys = demo::random_floats(len * 128, rng, 1.0f, 0.0f);
  const TensorView slot_view = tensor_view(slots.data(), DType::kI32, {len});
  Status st = indexer_write_keys(tensor_view(keys.data(), DType::kF32, {len, 128}), slot_view,
                                 IndexerKeyFormat::kFp8,
                                 tensor_view(s->index_cache.data(), DType::kU8,
                                             {s->bt.num_blocks, s->c.page_size, 1, kIndexBytes}));
  if (!st.ok()) return st;
  const std::vector<uint16_t> latents = demo::random_bf16(len * kV32Dim, rng, 0.1f);
  return write_kv_tokens(tensor_view(latents.data(), DType::kBF16, {len, kV32Dim}), slot_view,
                         KvFormat::kV32,
                         tensor_view(s->kv_cache.data(), DType::kU8,
                                     {s->bt.num_blocks, s->c.page_size, 1, kV32Bytes}));
}

Status build(V32Step* s, Rng& rng) {
  const V32StepConfig& c = s->c;
  for (int64_t b = 0; b < c.batch; ++b) {
    s->lengths.push_back(std::max<int64_t>(c.tokens - 1531 * b, 1));
    s->context_lens.push_back(static_cast<int32_t>(s->lengths.back()));
  }
  s->bt = demo::make_block_table(s->lengths, c.page_size, rng);
  s->index_cache.assign(static_cast<size_t>(s->bt.num_blocks * c.page_size * kIndexBytes), 0xFF);
  s->kv_cache.assign(static_cast<size_t>(s->bt.num_blocks * c.page_size * kV32Bytes), 0xFF);
  for (int64_t b = 0; b < c.batch; ++b) {
    const Status st = write_request(s, b, rng);
    if (!st.ok()) return st;
  }
  s->q_index = demo::random_e4m3(c.batch * c.index_heads * 128, rng);
  s->weights.resize(static_cast<size_t>(c.batch * c.index_heads));
  for (float& w : s->weights) w = static_cast<float>(rng.uniform() * 2.0 - 1.0);
  s->q = demo::random_bf16(c.batch * c.heads_q * kV32Dim, rng, 1.0f);
  return Status::Ok();
}

/// paged_mqa_logits (best kernel) then indexer_topk through the block table.
demo::TopkRun run_unfused(const V32Step& s) {
  const V32StepConfig& c = s.c;
  demo::TopkRun r;
  const int64_t max_len = *std::max_element(s.lengths.begin(), s.lengths.end());
  std::vector<float> logits(static_cast<size_t>(c.batch * max_len));
  PagedMqaLogitsArgs la = s.logits_args();
  la.logits = tensor_view(logits.data(), DType::kF32, {c.batch, max_len});
  Plan plan;
  r.status = plan_paged_mqa_logits(la, demo::options(nullptr, c.threads), &plan);
  if (!r.status.ok()) return r;
  r.kernel = std::string(plan.kernel_name()) + " + indexer_topk";
  const demo::Stopwatch watch;
  r.status = run_paged_mqa_logits(plan, la);
  if (!r.status.ok()) return r;
  r.indices.assign(static_cast<size_t>(c.batch * c.topk), 0);
  r.lengths.assign(static_cast<size_t>(c.batch), 0);
  IndexerTopkArgs ta;
  ta.logits = la.logits;
  ta.ends = la.context_lens;
  ta.block_table = la.block_table;
  ta.page_size = c.page_size;
  ta.indices = tensor_view(r.indices.data(), DType::kI32, {c.batch, c.topk});
  ta.topk_length = tensor_view(r.lengths.data(), DType::kI32, {c.batch});
  r.status = indexer_topk(ta, demo::options(nullptr, c.threads));
  r.ms = watch.ms();
  return r;
}

SparseDecodeArgs decode_args(const V32Step& s, const demo::TopkRun& topk) {
  const V32StepConfig& c = s.c;
  SparseDecodeArgs a;
  a.q = tensor_view(s.q.data(), DType::kBF16, {c.batch, 1, c.heads_q, kV32Dim});
  a.kv_cache =
      tensor_view(s.kv_cache.data(), DType::kU8, {s.bt.num_blocks, c.page_size, 1, kV32Bytes});
  a.indices = tensor_view(topk.indices.data(), DType::kI32, {c.batch, 1, c.topk});
  a.topk_length = tensor_view(topk.lengths.data(), DType::kI32, {c.batch});
  return a;
}

}  // namespace

StepResult run_v32_decode_step(const V32StepConfig& config) {
  StepResult result;
  result.title = "V3.2 decode step: b" + std::to_string(config.batch) + ", " +
                 std::to_string(config.tokens) + "-token context, indexer h" +
                 std::to_string(config.index_heads) + " top-" + std::to_string(config.topk) +
                 " (FP8 132 B cache), sparse decode h" + std::to_string(config.heads_q) +
                 " d576 (V32 656 B cache), page " + std::to_string(config.page_size);
  const demo::Stopwatch setup;
  V32Step s;
  s.c = config;
  Rng rng(config.seed);
  const Status built = build(&s, rng);
  result.setup_s = setup.ms() / 1e3;
  if (!built.ok()) {
    result.stages.push_back(demo::failed_stage("build caches", "", built));
    return result;
  }
  const PagedMqaLogitsArgs la = s.logits_args();
  const demo::TopkScorer scorer{&la, config.index_heads};
  const demo::TopkRun fused = demo::run_fused_topk(la, config.topk, nullptr, config.threads);
  const demo::TopkRun fused_ref =
      demo::run_fused_topk(la, config.topk, "paged_indexer_topk.ref", config.threads);
  result.stages.push_back(
      demo::check_topk("paged_indexer_topk vs .ref", fused, fused_ref, scorer, config.topk));
  const demo::TopkRun unfused = run_unfused(s);
  result.stages.push_back(
      demo::check_topk("unfused logits+topk vs fused", unfused, fused, scorer, config.topk));
  if (!fused.status.ok()) return result;
  demo::DecodeRun best;
  result.stages.push_back(demo::sparse_decode_stage("sparse_decode V32 vs .ref",
                                                    decode_args(s, fused), config.threads, &best));
  return result;
}

}  // namespace openmla::testing
