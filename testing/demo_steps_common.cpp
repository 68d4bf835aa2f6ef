#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "compare.h"
#include "core/dtype.h"
#include "demo_steps_internal.h"

namespace openmla::testing {

bool StepResult::ok() const {
  if (stages.empty()) return false;
  for (const StageResult& s : stages)
    if (!s.ok) return false;
  return true;
}

std::string format_step(const StepResult& step) {
  std::string text = step.title + "\n";
  char line[512];
  std::snprintf(line, sizeof line, "  %-34s %-42s %11s %11s  %s\n", "stage", "kernel",
                "ms (1 call)", "max error", "check");
  text += line;
  for (const StageResult& s : step.stages) {
    std::snprintf(line, sizeof line, "  %-34s %-42s %11.2f %11.3g  %s\n", s.stage.c_str(),
                  s.kernel.c_str(), s.ms, s.max_err, s.check.c_str());
    text += line;
  }
  std::snprintf(line, sizeof line, "  (inputs and caches built in %.2f s)\n", step.setup_s);
  return text + line;
}

namespace demo {

Options options(const char* kernel, int threads) {
  Options o;
  o.kernel = kernel;
  o.num_threads = threads;
  return o;
}

StageResult failed_stage(const std::string& stage, const std::string& kernel, const Status& s) {
  StageResult r;
  r.stage = stage;
  r.kernel = kernel;
  r.check = "FAILED: " + s.to_string();
  return r;
}

std::vector<uint8_t> random_e4m3(int64_t n, Rng& rng) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (uint8_t& x : v) {
    const uint64_t r = rng.next();
    x = static_cast<uint8_t>((r & 0x80) | (0x28 + (r >> 8) % 0x20));
  }
  return v;
}

std::vector<float> random_floats(int64_t n, Rng& rng, float scale, float shift) {
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t bits = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 4 == 0) bits = rng.next();
    const int sum = static_cast<int>(bits & 0xFF) + static_cast<int>((bits >> 8) & 0xFF) - 255;
    bits >>= 16;
    v[i] = shift + scale * static_cast<float>(sum) * (1.0f / 104.5f);
  }
  return v;
}

std::vector<uint16_t> random_bf16(int64_t n, Rng& rng, float scale) {
  const std::vector<float> f = random_floats(n, rng, scale, 0.0f);
  std::vector<uint16_t> v(f.size());
  for (size_t i = 0; i < f.size(); ++i) v[i] = float_to_bf16(f[i]);
  return v;
}

int32_t BlockTable::slot(int64_t b, int64_t pos) const {
  return static_cast<int32_t>(table[b * max_blocks + pos / page_size] * page_size +
                              pos % page_size);
}

BlockTable make_block_table(const std::vector<int64_t>& lengths, int64_t page_size, Rng& rng) {
  BlockTable t;
  t.page_size = page_size;
  int64_t pages = 0;
  for (int64_t len : lengths) {
    t.max_blocks = std::max(t.max_blocks, (len + page_size - 1) / page_size);
    pages += (len + page_size - 1) / page_size;
  }
  t.max_blocks = std::max<int64_t>(t.max_blocks, 1);
  t.num_blocks = pages + 1;
  std::vector<int32_t> pool(static_cast<size_t>(t.num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  for (int64_t i = t.num_blocks - 1; i > 0; --i) std::swap(pool[i], pool[rng.below(i + 1)]);
  t.table.assign(static_cast<size_t>(lengths.size() * t.max_blocks), -1);
  int64_t next = 0;
  for (size_t b = 0; b < lengths.size(); ++b)
    for (int64_t i = 0; i < (lengths[b] + page_size - 1) / page_size; ++i)
      t.table[b * t.max_blocks + i] = pool[next++];
  return t;
}

TopkRun run_fused_topk(const PagedMqaLogitsArgs& logits_args, int64_t topk, const char* kernel,
                       int threads) {
  TopkRun r;
  const int64_t batch = logits_args.q.shape[0];
  r.indices.assign(static_cast<size_t>(batch * topk), 0);
  r.lengths.assign(static_cast<size_t>(batch), 0);
  PagedIndexerTopkArgs a;
  a.logits_args = logits_args;
  a.indices = tensor_view(r.indices.data(), DType::kI32, {batch, 1, topk});
  a.topk_length = tensor_view(r.lengths.data(), DType::kI32, {batch, 1});
  Plan plan;
  r.status = plan_paged_indexer_topk(a, options(kernel, threads), &plan);
  if (!r.status.ok()) return r;
  r.kernel = plan.kernel_name();
  const Stopwatch watch;
  r.status = run_paged_indexer_topk(plan, a);
  r.ms = watch.ms();
  return r;
}

namespace {

/// Double-precision logit of cache slot `slot` for request b, and its magnitude M.
double score_slot(const TopkScorer& s, int64_t b, int64_t slot, double* magnitude) {
  const PagedMqaLogitsArgs& a = *s.args;
  const int64_t page = a.kv_cache.shape[1];
  const uint8_t* base =
      static_cast<const uint8_t*>(a.kv_cache.data) + (slot / page) * a.kv_cache.stride[0];
  const uint8_t* codes = base + 128 * (slot % page);
  float scale;
  std::memcpy(&scale, base + 128 * page + 4 * (slot % page), 4);
  const uint8_t* q = static_cast<const uint8_t*>(a.q.data) + b * s.heads * 128;
  const float* w = static_cast<const float*>(a.weights.data) + b * s.heads;
  double logit = 0.0, m = 0.0;
  for (int64_t h = 0; h < s.heads; ++h) {
    double dot = 0.0, mag = 0.0;
    for (int d = 0; d < 128; ++d) {
      const double p = static_cast<double>(e4m3_to_float(q[h * 128 + d])) * e4m3_to_float(codes[d]);
      dot += p;
      mag += std::fabs(p);
    }
    logit += w[h] * std::max(dot, 0.0);
    m += std::fabs(w[h]) * mag;
  }
  *magnitude = m * std::fabs(scale);
  return logit * scale;
}

/// Sorted selected slots of row b; false if an entry past the length is not -1.
bool selected(const TopkRun& r, int64_t b, int64_t topk, std::vector<int32_t>* out) {
  const int32_t* row = r.indices.data() + b * topk;
  out->assign(row, row + r.lengths[b]);
  std::sort(out->begin(), out->end());
  for (int64_t i = r.lengths[b]; i < topk; ++i)
    if (row[i] != -1) return false;
  return true;
}

/// Checks that every slot in `diff` scores within 2e-5 M of the k-th score of `want`.
bool near_ties(const TopkScorer& s, int64_t b, const std::vector<int32_t>& want,
               const std::vector<int32_t>& diff, std::string* message) {
  double kth = INFINITY, m = 0.0;
  for (int32_t slot : want) kth = std::min(kth, score_slot(s, b, slot, &m));
  for (int32_t slot : diff) {
    const double v = score_slot(s, b, slot, &m);
    if (!(std::fabs(v - kth) <= 2e-5 * m)) {
      *message = "request " + std::to_string(b) + ": slot " + std::to_string(slot) + " scores " +
                 std::to_string(v) + ", the reference's k-th " + std::to_string(kth);
      return false;
    }
  }
  return true;
}

}  // namespace

StageResult check_topk(const std::string& stage, const TopkRun& answer, const TopkRun& reference,
                       const TopkScorer& scorer, int64_t topk) {
  StageResult r;
  r.stage = stage;
  r.kernel = answer.kernel;
  r.ms = answer.ms;
  if (!answer.status.ok() || !reference.status.ok()) {
    r.check = "FAILED: " + (answer.status.ok() ? reference.status : answer.status).to_string();
    return r;
  }
  int64_t swaps = 0;
  std::string message;
  bool ok = true;
  for (int64_t b = 0; ok && b < static_cast<int64_t>(answer.lengths.size()); ++b) {
    std::vector<int32_t> got, want, diff;
    if (answer.lengths[b] != reference.lengths[b]) {
      message = "request " + std::to_string(b) + ": topk_length " +
                std::to_string(answer.lengths[b]) + ", reference " +
                std::to_string(reference.lengths[b]);
      ok = false;
    } else if (!selected(answer, b, topk, &got) || !selected(reference, b, topk, &want)) {
      message = "request " + std::to_string(b) + ": an entry past topk_length is not -1";
      ok = false;
    } else if (got != want) {
      std::set_symmetric_difference(got.begin(), got.end(), want.begin(), want.end(),
                                    std::back_inserter(diff));
      swaps += static_cast<int64_t>(diff.size()) / 2;
      ok = near_ties(scorer, b, want, diff, &message);
    }
  }
  finish_stage(&r, ok,
               swaps == 0 ? "same top-k sets"
                          : "same sets up to " + std::to_string(swaps) + " near-tie swaps",
               message);
  return r;
}

void finish_stage(StageResult* stage, bool ok, const std::string& detail,
                  const std::string& message) {
  stage->ok = ok;
  stage->check = ok ? "ok (" + detail + ")" : "FAILED: " + message;
}

namespace {

std::vector<float> bf16_floats(const std::vector<uint16_t>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = bf16_to_float(v[i]);
  return f;
}

}  // namespace

bool check_decode_outputs(const std::vector<uint16_t>& out, const std::vector<uint16_t>& ref_out,
                          const std::vector<float>& lse, const std::vector<float>& ref_lse,
                          double* max_err, std::string* message) {
  const CompareResult o = compare(bf16_floats(out), bf16_floats(ref_out), kDecodeOut);
  const CompareResult l = compare(lse, ref_lse, kDecodeLse);
  *max_err = o.max_abs_err;
  if (!o.ok) *message = "out: " + o.message;
  if (o.ok && !l.ok) *message = "lse: " + l.message;
  return o.ok && l.ok;
}

bool bf16_close(const std::vector<uint16_t>& got, const std::vector<uint16_t>& ref, double floor,
                double* max_err, std::string* message, const std::string& what) {
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = bf16_to_float(got[i]), r = bf16_to_float(ref[i]);
    *max_err = std::max(*max_err, std::fabs(g - r));
    if (!(std::fabs(g - r) <= (std::fabs(r) + floor) / 128.0)) {
      *message = what + "[" + std::to_string(i) + "] " + std::to_string(g) + " vs reference " +
                 std::to_string(r);
      return false;
    }
  }
  return true;
}

bool f32_close(const std::vector<float>& got, const std::vector<float>& ref, double tol,
               double* max_err, std::string* message, const std::string& what) {
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    *max_err = std::max(*max_err, err);
    if (!(err <= tol * (1.0 + std::fabs(ref[i])))) {
      *message = what + "[" + std::to_string(i) + "] " + std::to_string(got[i]) + " vs reference " +
                 std::to_string(ref[i]);
      return false;
    }
  }
  return true;
}

DecodeRun run_decode(SparseDecodeArgs args, const char* kernel, int threads) {
  DecodeRun r;
  const int64_t batch = args.q.shape[0], heads = args.q.shape[2];
  r.out.assign(static_cast<size_t>(batch * heads * args.head_dim_v), 0);
  r.lse.assign(static_cast<size_t>(batch * heads), 0.0f);
  args.out = tensor_view(r.out.data(), DType::kBF16, {batch, 1, heads, args.head_dim_v});
  args.lse = tensor_view(r.lse.data(), DType::kF32, {batch, heads, 1});
  Plan plan;
  r.status = plan_sparse_decode(args, options(kernel, threads), &plan);
  if (!r.status.ok()) return r;
  r.kernel = plan.kernel_name();
  const Stopwatch watch;
  r.status = run_sparse_decode(plan, args);
  r.ms = watch.ms();
  return r;
}

StageResult sparse_decode_stage(const std::string& stage, const SparseDecodeArgs& args, int threads,
                                DecodeRun* best) {
  *best = run_decode(args, nullptr, threads);
  if (!best->status.ok()) return failed_stage(stage, best->kernel, best->status);
  const DecodeRun ref = run_decode(args, "sparse_decode.ref", threads);
  if (!ref.status.ok()) return failed_stage(stage, best->kernel, ref.status);
  StageResult r;
  r.stage = stage;
  r.kernel = best->kernel;
  r.ms = best->ms;
  std::string message;
  const bool ok =
      check_decode_outputs(best->out, ref.out, best->lse, ref.lse, &r.max_err, &message);
  finish_stage(&r, ok, "out, lse within the decode tolerances", message);
  return r;
}

}  // namespace demo
}  // namespace openmla::testing
