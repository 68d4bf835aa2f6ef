// The V4 layer decode step of demo_steps.h (spec v4-blocks.md §1.11): mhc_pre, indexer-key
// compressor, indexer top-k over the compressed entries, window write, main compressor (CSA),
// sparse decode MODEL1 with window + compressed cache + sink, mhc_post.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "demo_steps_internal.h"
#include "openmla/compressor.h"
#include "openmla/kv_cache.h"
#include "openmla/v4_blocks.h"

namespace openmla::testing {
namespace {

constexpr int64_t kRatio = 4, kWindow = 8, kSwa = 128, kDim = 512, kIndexDim = 128;

/// One compressor (main: head dim 512 into the MODEL1 extra cache; indexer keys: 128 into the
/// FP8 indexer cache): its weights, its state cache (one 8-row block per request) and its cache.
struct Compressor {
  int64_t d = 0;
  std::vector<float> ape, weight, state;
  std::vector<uint8_t> cache;
  int64_t width() const { return 2 * d; }
};

struct V4Step {
  V4StepConfig c;
  std::vector<int64_t> entries, pos;  ///< per request: entries after the step, new position
  demo::BlockTable xbt;               ///< extra cache and indexer cache (same page size)
  Compressor main, index;
  std::vector<float> cos_sin, weights, sink, hc_fn, hc_scale, hc_base;
  std::vector<uint8_t> window, q_index;
  std::vector<uint16_t> x, q, kv;     ///< residual streams, attention q, the new token's latent
  std::vector<int32_t> context_lens;  ///< the indexer's visible entries per request
  int64_t window_page_bytes = 0, extra_page_bytes = 0;

  int32_t state_slot(int64_t b, int64_t p) const {
    return p < 0 ? -1 : static_cast<int32_t>(b * kWindow + p % kWindow);
  }
  int32_t window_slot(int64_t b, int64_t p) const {
    return static_cast<int32_t>((b + 1) * kSwa + p % kSwa);
  }
  TensorView window_view() const {
    return make_strided_tensor(const_cast<uint8_t*>(window.data()), DType::kU8,
                               {c.batch + 1, kSwa, 1, 584}, {window_page_bytes, 584, 584, 1});
  }
  TensorView cache_view(const Compressor& k, const std::vector<uint8_t>& bytes) const {
    if (k.d == kIndexDim)
      return tensor_view(bytes.data(), DType::kU8, {xbt.num_blocks, c.page_size, 1, 132});
    return make_strided_tensor(const_cast<uint8_t*>(bytes.data()), DType::kU8,
                               {xbt.num_blocks, c.page_size, 1, 584},
                               {extra_page_bytes, 584, 584, 1});
  }
  PagedMqaLogitsArgs logits_args() const {
    PagedMqaLogitsArgs a;
    a.q = tensor_view(q_index.data(), DType::kU8, {c.batch, 1, c.index_heads, 128});
    a.kv_cache = cache_view(index, index.cache);
    a.weights = tensor_view(weights.data(), DType::kF32, {c.batch, c.index_heads});
    a.context_lens = tensor_view(context_lens.data(), DType::kI32, {c.batch});
    a.block_table = tensor_view(xbt.table.data(), DType::kI32, {c.batch, xbt.max_blocks});
    return a;
  }
};

/// Saves the states (a, z random) of the tokens (req[i], positions[i]).
Status save_states(const V4Step& s, Compressor* k, const std::vector<int64_t>& req,
                   const std::vector<int64_t>& positions, Rng& rng) {
  const int64_t n = static_cast<int64_t>(positions.size());
  if (n == 0) return Status::Ok();
  const std::vector<float> a = demo::random_floats(n * k->width(), rng, 1.0f, 0.0f);
  const std::vector<float> z = demo::random_floats(n * k->width(), rng, 2.0f, 0.0f);
  std::vector<int32_t> slots(static_cast<size_t>(n)), pos32(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    slots[i] = s.state_slot(req[i], positions[i]);
    pos32[i] = static_cast<int32_t>(positions[i]);
  }
  CompressorSaveStatesArgs sa;
  sa.kv = tensor_view(a.data(), DType::kF32, {n, k->width()});
  sa.score = tensor_view(z.data(), DType::kF32, {n, k->width()});
  sa.ape = tensor_view(k->ape.data(), DType::kF32, {kRatio, k->width()});
  sa.positions = tensor_view(pos32.data(), DType::kI32, {n});
  sa.state_cache = tensor_view(k->state.data(), DType::kF32, {s.c.batch, kWindow, 2 * k->width()});
  sa.slot_mapping = tensor_view(slots.data(), DType::kI32, {n});
  return compressor_save_states(sa, demo::options(nullptr, s.c.threads));
}

void init_compressor(V4Step* s, Compressor* k, int64_t d, Rng& rng) {
  k->d = d;
  k->ape = demo::random_floats(kRatio * k->width(), rng, 0.5f, 0.0f);
  k->weight = demo::random_floats(d, rng, 0.2f, 1.0f);
  k->state.assign(static_cast<size_t>(s->c.batch * kWindow * 2 * k->width()), -12345.0f);
  const int64_t page_bytes = d == kIndexDim ? 132 * s->c.page_size : s->extra_page_bytes;
  k->cache.assign(static_cast<size_t>(s->xbt.num_blocks * page_bytes), 0xFF);
}

/// The compressed entries before this step (random) and the states of the 7 previous tokens.
Status write_history(V4Step* s, Rng& rng) {
  std::vector<int32_t> slots;
  for (int64_t b = 0; b < s->c.batch; ++b)
    for (int64_t e = 0; e + 1 < s->entries[b]; ++e) slots.push_back(s->xbt.slot(b, e));
  const int64_t n = static_cast<int64_t>(slots.size());
  const std::vector<uint16_t> latents = demo::random_bf16(n * kDim, rng, 1.0f);
  const std::vector<float> keys = demo::random_floats(n * kIndexDim, rng, 1.0f, 0.0f);
  const TensorView sv = tensor_view(slots.data(), DType::kI32, {n});
  Status st = write_kv_tokens(tensor_view(latents.data(), DType::kBF16, {n, kDim}), sv,
                              KvFormat::kModel1, s->cache_view(s->main, s->main.cache));
  if (st.ok())
    st = indexer_write_keys(tensor_view(keys.data(), DType::kF32, {n, kIndexDim}), sv,
                            IndexerKeyFormat::kFp8, s->cache_view(s->index, s->index.cache));
  std::vector<int64_t> req, positions;
  for (int64_t b = 0; b < s->c.batch; ++b)
    for (int64_t p = std::max<int64_t>(0, s->pos[b] - kWindow + 1); p < s->pos[b]; ++p) {
      req.push_back(b);
      positions.push_back(p);
    }
  if (st.ok()) st = save_states(*s, &s->main, req, positions, rng);
  if (st.ok()) st = save_states(*s, &s->index, req, positions, rng);
  return st;
}

/// The window cache holds positions p - 127 .. p - 1 (the step writes p).
Status write_window_history(V4Step* s, Rng& rng) {
  std::vector<int32_t> slots;
  for (int64_t b = 0; b < s->c.batch; ++b)
    for (int64_t p = std::max<int64_t>(0, s->pos[b] - kSwa + 1); p < s->pos[b]; ++p)
      slots.push_back(s->window_slot(b, p));
  const int64_t n = static_cast<int64_t>(slots.size());
  const std::vector<uint16_t> latents = demo::random_bf16(n * kDim, rng, 1.0f);
  return write_kv_tokens(tensor_view(latents.data(), DType::kBF16, {n, kDim}),
                         tensor_view(slots.data(), DType::kI32, {n}), KvFormat::kModel1,
                         s->window_view());
}

void init_inputs(V4Step* s, Rng& rng) {
  const V4StepConfig& c = s->c;
  const int64_t rows = (2 + c.hc) * c.hc;
  s->x = demo::random_bf16(c.batch * c.hc * c.hidden, rng, 1.0f);
  s->hc_fn = demo::random_floats(rows * c.hc * c.hidden, rng,
                                 1.0f / std::sqrt(static_cast<float>(c.hc * c.hidden)), 0.0f);
  s->hc_scale = demo::random_floats(3, rng, 0.2f, 0.5f);
  s->hc_base = demo::random_floats(rows, rng, 0.5f, 0.0f);
  s->q = demo::random_bf16(c.batch * c.heads_q * kDim, rng, 1.0f);
  s->kv = demo::random_bf16(c.batch * kDim, rng, 1.0f);
  s->q_index = demo::random_e4m3(c.batch * c.index_heads * 128, rng);
  s->weights.resize(static_cast<size_t>(c.batch * c.index_heads));
  for (float& w : s->weights) w = static_cast<float>(rng.uniform() * 2.0 - 1.0);
  s->sink = demo::random_floats(c.heads_q, rng, 1.0f, 0.0f);
}

Status build(V4Step* s, Rng& rng) {
  const V4StepConfig& c = s->c;
  for (int64_t b = 0; b < c.batch; ++b) {
    s->entries.push_back(std::max<int64_t>(c.entries - 317 * b, 1));
    s->pos.push_back(kRatio * s->entries.back() - 1);
    s->context_lens.push_back(static_cast<int32_t>(s->entries.back()));
  }
  s->xbt = demo::make_block_table(s->entries, c.page_size, rng);
  Status st = kv_page_bytes(KvFormat::kModel1, c.page_size, kDim, 1, &s->extra_page_bytes);
  if (st.ok()) st = kv_page_bytes(KvFormat::kModel1, kSwa, kDim, 1, &s->window_page_bytes);
  if (!st.ok()) return st;
  s->window.assign(static_cast<size_t>((c.batch + 1) * s->window_page_bytes), 0xFF);
  init_compressor(s, &s->main, kDim, rng);
  init_compressor(s, &s->index, kIndexDim, rng);
  s->cos_sin.resize(
      static_cast<size_t>((*std::max_element(s->pos.begin(), s->pos.end()) + 1) * 64));
  st = compressor_rope_table(160000.0, 16.0, 65536, 32.0, 1.0,
                             tensor_view(s->cos_sin.data(), DType::kF32,
                                         {static_cast<int64_t>(s->cos_sin.size() / 64), 64}));
  if (st.ok()) st = write_history(s, rng);
  if (st.ok()) st = write_window_history(s, rng);
  init_inputs(s, rng);
  return st;
}

struct MhcRun {
  Status status;
  std::string kernel;
  double ms = 0.0;
  std::vector<uint16_t> y, out;  ///< mhc_pre's y, mhc_post's out
  std::vector<float> post, comb;
};

MhcRun run_pre(const V4Step& s, const char* kernel) {
  const V4StepConfig& c = s.c;
  MhcRun r;
  r.y.assign(static_cast<size_t>(c.batch * c.hidden), 0);
  r.post.assign(static_cast<size_t>(c.batch * c.hc), 0.0f);
  r.comb.assign(static_cast<size_t>(c.batch * c.hc * c.hc), 0.0f);
  MhcPreArgs a;
  a.x = tensor_view(s.x.data(), DType::kBF16, {c.batch, c.hc, c.hidden});
  a.hc_fn = tensor_view(s.hc_fn.data(), DType::kF32, {(2 + c.hc) * c.hc, c.hc * c.hidden});
  a.hc_scale = tensor_view(s.hc_scale.data(), DType::kF32, {3});
  a.hc_base = tensor_view(s.hc_base.data(), DType::kF32, {(2 + c.hc) * c.hc});
  a.y = tensor_view(r.y.data(), DType::kBF16, {c.batch, c.hidden});
  a.post = tensor_view(r.post.data(), DType::kF32, {c.batch, c.hc});
  a.comb = tensor_view(r.comb.data(), DType::kF32, {c.batch, c.hc, c.hc});
  Plan plan;
  r.status = plan_mhc_pre(a, demo::options(kernel, c.threads), &plan);
  if (!r.status.ok()) return r;
  r.kernel = plan.kernel_name();
  const demo::Stopwatch watch;
  r.status = run_mhc_pre(plan, a);
  r.ms = watch.ms();
  return r;
}

/// mhc_post with the sublayer output f [batch, hidden] and mhc_pre's post and comb.
MhcRun run_post(const V4Step& s, const std::vector<uint16_t>& f, const MhcRun& pre,
                const char* kernel) {
  const V4StepConfig& c = s.c;
  MhcRun r;
  r.out.assign(static_cast<size_t>(c.batch * c.hc * c.hidden), 0);
  MhcPostArgs a;
  a.x = tensor_view(f.data(), DType::kBF16, {c.batch, c.hidden});
  a.residual = tensor_view(s.x.data(), DType::kBF16, {c.batch, c.hc, c.hidden});
  a.post = tensor_view(pre.post.data(), DType::kF32, {c.batch, c.hc});
  a.comb = tensor_view(pre.comb.data(), DType::kF32, {c.batch, c.hc, c.hc});
  a.out = tensor_view(r.out.data(), DType::kBF16, {c.batch, c.hc, c.hidden});
  Plan plan;
  r.status = plan_mhc_post(a, demo::options(kernel, c.threads), &plan);
  if (!r.status.ok()) return r;
  r.kernel = plan.kernel_name();
  const demo::Stopwatch watch;
  r.status = run_mhc_post(plan, a);
  r.ms = watch.ms();
  return r;
}

StageResult mhc_stage(const std::string& stage, const MhcRun& best, const MhcRun& ref) {
  if (!best.status.ok() || !ref.status.ok())
    return demo::failed_stage(stage, best.kernel, best.status.ok() ? ref.status : best.status);
  StageResult r;
  r.stage = stage;
  r.kernel = best.kernel;
  r.ms = best.ms;
  std::string message;
  const bool ok = demo::bf16_close(best.y, ref.y, 0.05, &r.max_err, &message, "y") &&
                  demo::bf16_close(best.out, ref.out, 0.05, &r.max_err, &message, "out") &&
                  demo::f32_close(best.post, ref.post, 2e-5, &r.max_err, &message, "post") &&
                  demo::f32_close(best.comb, ref.comb, 2e-5, &r.max_err, &message, "comb");
  demo::finish_stage(&r, ok, "within the mHC tolerances", message);
  return r;
}

/// compressor_store of every request's new token (position p completes entry p / 4).
Status run_store(const V4Step& s, const Compressor& k, std::vector<uint8_t>* cache,
                 const char* kernel, std::string* name, double* ms) {
  const V4StepConfig& c = s.c;
  std::vector<int32_t> gather, positions, kv_slots;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t w = 0; w < kWindow; ++w)
      gather.push_back(s.state_slot(b, s.pos[b] - kWindow + 1 + w));
    positions.push_back(static_cast<int32_t>(s.pos[b]));
    kv_slots.push_back(s.xbt.slot(b, s.entries[b] - 1));
  }
  CompressorStoreArgs a;
  a.state_cache = tensor_view(k.state.data(), DType::kF32, {c.batch, kWindow, 2 * k.width()});
  a.gather_slots = tensor_view(gather.data(), DType::kI32, {c.batch, kWindow});
  a.positions = tensor_view(positions.data(), DType::kI32, {c.batch});
  a.kv_slot_mapping = tensor_view(kv_slots.data(), DType::kI32, {c.batch});
  a.rms_norm_weight = tensor_view(k.weight.data(), DType::kF32, {k.d});
  a.cos_sin_cache =
      tensor_view(s.cos_sin.data(), DType::kF32, {static_cast<int64_t>(s.cos_sin.size() / 64), 64});
  a.kv_cache = s.cache_view(k, *cache);
  a.compress_ratio = kRatio;
  Plan plan;
  Status st = plan_compressor_store(a, demo::options(kernel, c.threads), &plan);
  if (!st.ok()) return st;
  *name = plan.kernel_name();
  const demo::Stopwatch watch;
  st = run_compressor_store(plan, a);
  *ms = watch.ms();
  return st;
}

/// Every slot's dequantised values [slots * d] (MODEL1: bf16 widened; indexer keys: f32).
Status dequantize(const V4Step& s, const Compressor& k, const std::vector<uint8_t>& cache,
                  std::vector<float>* values) {
  const int64_t slots = s.xbt.num_blocks * s.c.page_size;
  values->assign(static_cast<size_t>(slots * k.d), 0.0f);
  if (k.d == kIndexDim)
    return indexer_dequantize_cache(
        s.cache_view(k, cache), IndexerKeyFormat::kFp8,
        tensor_view(values->data(), DType::kF32, {s.xbt.num_blocks, s.c.page_size, kIndexDim}));
  std::vector<uint16_t> bf(static_cast<size_t>(slots * k.d));
  const Status st = dequantize_kv_cache(
      s.cache_view(k, cache), KvFormat::kModel1,
      tensor_view(bf.data(), DType::kBF16, {s.xbt.num_blocks, s.c.page_size, 1, kDim}));
  for (size_t i = 0; i < bf.size(); ++i) (*values)[i] = bf16_to_float(bf[i]);
  return st;
}

/// The compressor check of demo_steps.h on the two caches' dequantised slots.
bool check_entries(const V4Step& s, const Compressor& k, const std::vector<float>& got,
                   const std::vector<float>& ref, double* max_err, std::string* message) {
  std::vector<int32_t> written;
  for (int64_t b = 0; b < s.c.batch; ++b) written.push_back(s.xbt.slot(b, s.entries[b] - 1));
  const int64_t slots = s.xbt.num_blocks * s.c.page_size;
  for (int64_t slot = 0; slot < slots; ++slot) {
    const float* g = got.data() + slot * k.d;
    const float* r = ref.data() + slot * k.d;
    if (std::find(written.begin(), written.end(), slot) == written.end()) {
      if (std::memcmp(g, r, k.d * sizeof(float)) != 0) {
        *message = "slot " + std::to_string(slot) + " changed though no entry was written there";
        return false;
      }
      continue;
    }
    double amax = 0.0;
    for (int64_t i = 0; i < k.d; ++i) amax = std::max(amax, std::fabs(static_cast<double>(r[i])));
    for (int64_t i = 0; i < k.d; ++i) {
      const double err = std::fabs(static_cast<double>(g[i]) - r[i]);
      *max_err = std::max(*max_err, err);
      if (!(err <= std::max(std::fabs(g[i]), std::fabs(r[i])) / 8.0 + amax / 1024.0)) {
        *message = "entry slot " + std::to_string(slot) + " [" + std::to_string(i) + "] " +
                   std::to_string(g[i]) + " vs reference " + std::to_string(r[i]);
        return false;
      }
    }
  }
  return true;
}

/// save_states of the new tokens, then compressor_store with the best kernel into k's cache and
/// with compressor.ref into a copy; checks the two caches.
StageResult compressor_stage(const std::string& stage, V4Step* s, Compressor* k, Rng& rng) {
  std::vector<int64_t> req;
  for (int64_t b = 0; b < s->c.batch; ++b) req.push_back(b);
  Status st = save_states(*s, k, req, s->pos, rng);
  if (!st.ok()) return demo::failed_stage(stage, "", st);
  std::vector<uint8_t> ref_cache = k->cache;
  StageResult r;
  r.stage = stage;
  std::string ref_name;
  double ref_ms = 0.0;
  st = run_store(*s, *k, &k->cache, nullptr, &r.kernel, &r.ms);
  if (st.ok()) st = run_store(*s, *k, &ref_cache, "compressor.ref", &ref_name, &ref_ms);
  if (!st.ok()) return demo::failed_stage(stage, r.kernel, st);
  std::vector<float> got, want;
  st = dequantize(*s, *k, k->cache, &got);
  if (st.ok()) st = dequantize(*s, *k, ref_cache, &want);
  if (!st.ok()) return demo::failed_stage(stage, r.kernel, st);
  std::string message;
  const bool ok = check_entries(*s, *k, got, want, &r.max_err, &message);
  demo::finish_stage(&r, ok,
                     k->cache == ref_cache ? "cache bytes identical"
                                           : "new entries within one e4m3 step, rest identical",
                     message);
  return r;
}

/// Writes the new token's latent into window slot p mod 128.
Status write_window_token(const V4Step& s) {
  std::vector<int32_t> slots;
  for (int64_t b = 0; b < s.c.batch; ++b) slots.push_back(s.window_slot(b, s.pos[b]));
  return write_kv_tokens(tensor_view(s.kv.data(), DType::kBF16, {s.c.batch, kDim}),
                         tensor_view(slots.data(), DType::kI32, {s.c.batch}), KvFormat::kModel1,
                         s.window_view());
}

/// Window indices (positions max(0, p - 127) .. p, -1 padded) and their lengths.
void window_indices(const V4Step& s, std::vector<int32_t>* idx, std::vector<int32_t>* len) {
  for (int64_t b = 0; b < s.c.batch; ++b) {
    const int64_t n = std::min<int64_t>(kSwa, s.pos[b] + 1);
    for (int64_t i = 0; i < kSwa; ++i)
      idx->push_back(i < n ? s.window_slot(b, s.pos[b] - n + 1 + i) : -1);
    len->push_back(static_cast<int32_t>(n));
  }
}

SparseDecodeArgs decode_args(const V4Step& s, const std::vector<int32_t>& idx,
                             const std::vector<int32_t>& len, const demo::TopkRun& topk) {
  const V4StepConfig& c = s.c;
  SparseDecodeArgs a;
  a.q = tensor_view(s.q.data(), DType::kBF16, {c.batch, 1, c.heads_q, kDim});
  a.kv_cache = s.window_view();
  a.indices = tensor_view(idx.data(), DType::kI32, {c.batch, 1, kSwa});
  a.topk_length = tensor_view(len.data(), DType::kI32, {c.batch});
  a.attn_sink = tensor_view(s.sink.data(), DType::kF32, {c.heads_q});
  a.extra_kv_cache = s.cache_view(s.main, s.main.cache);
  a.extra_indices = tensor_view(topk.indices.data(), DType::kI32, {c.batch, 1, c.topk});
  a.extra_topk_length = tensor_view(topk.lengths.data(), DType::kI32, {c.batch});
  return a;
}

/// Stand-in for the o-projection: f[j] = sum of the attention output's values i = j mod hidden.
std::vector<uint16_t> fold_output(const V4Step& s, const std::vector<uint16_t>& out) {
  const int64_t per = s.c.heads_q * kDim;
  std::vector<float> acc(static_cast<size_t>(s.c.batch * s.c.hidden), 0.0f);
  for (int64_t b = 0; b < s.c.batch; ++b)
    for (int64_t i = 0; i < per; ++i)
      acc[b * s.c.hidden + i % s.c.hidden] += bf16_to_float(out[b * per + i]);
  std::vector<uint16_t> f(acc.size());
  for (size_t i = 0; i < acc.size(); ++i) f[i] = float_to_bf16(acc[i]);
  return f;
}

/// Stages 3-6: indexer top-k, window write, main compressor, sparse decode.
void attention_stages(V4Step* s, Rng& rng, StepResult* result, demo::DecodeRun* decoded) {
  const V4StepConfig& c = s->c;
  const PagedMqaLogitsArgs la = s->logits_args();
  const demo::TopkScorer scorer{&la, c.index_heads};
  const demo::TopkRun fused = demo::run_fused_topk(la, c.topk, nullptr, c.threads);
  const demo::TopkRun fused_ref =
      demo::run_fused_topk(la, c.topk, "paged_indexer_topk.ref", c.threads);
  result->stages.push_back(
      demo::check_topk("paged_indexer_topk vs .ref", fused, fused_ref, scorer, c.topk));
  const Status st = write_window_token(*s);
  if (!st.ok()) result->stages.push_back(demo::failed_stage("window write", "", st));
  result->stages.push_back(compressor_stage("compressor_store CSA vs .ref", s, &s->main, rng));
  if (!fused.status.ok() || !st.ok()) return;
  std::vector<int32_t> idx, len;
  window_indices(*s, &idx, &len);
  result->stages.push_back(demo::sparse_decode_stage(
      "sparse_decode MODEL1 vs .ref", decode_args(*s, idx, len, fused), c.threads, decoded));
}

}  // namespace

StepResult run_v4_decode_step(const V4StepConfig& config) {
  StepResult result;
  result.title = "V4 layer decode step: b" + std::to_string(config.batch) + ", mHC " +
                 std::to_string(config.hc) + "x" + std::to_string(config.hidden) +
                 ", CSA ratio 4 (" + std::to_string(config.entries) +
                 " compressed entries), indexer h" + std::to_string(config.index_heads) + " top-" +
                 std::to_string(config.topk) + " (FP8 132 B), sparse decode h" +
                 std::to_string(config.heads_q) + " d512 window-128 + compressed (MODEL1) + sink";
  const demo::Stopwatch setup;
  V4Step s;
  s.c = config;
  Rng rng(config.seed);
  const Status built = build(&s, rng);
  result.setup_s = setup.ms() / 1e3;
  if (!built.ok()) {
    result.stages.push_back(demo::failed_stage("build caches", "", built));
    return result;
  }
  const MhcRun pre = run_pre(s, nullptr);
  result.stages.push_back(mhc_stage("mhc_pre vs .ref", pre, run_pre(s, "mhc_pre.ref")));
  result.stages.push_back(compressor_stage("compressor_store idx keys vs .ref", &s, &s.index, rng));
  demo::DecodeRun decoded;
  attention_stages(&s, rng, &result, &decoded);
  if (!pre.status.ok() || !decoded.status.ok() || decoded.out.empty()) return result;
  const std::vector<uint16_t> f = fold_output(s, decoded.out);
  result.stages.push_back(mhc_stage("mhc_post vs .ref", run_post(s, f, pre, nullptr),
                                    run_post(s, f, pre, "mhc_post.ref")));
  return result;
}

}  // namespace openmla::testing
