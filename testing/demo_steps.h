// End-to-end decode steps for `openmla demo` and the C++ tests: the ops chained as an engine runs
// them for one new token per request, each stage run with the registry's best kernel and checked
// against its reference kernel (Options::kernel = "<op>.ref") on the same inputs.
//
// V3.2 (issue 10): random keys -> indexer_write_keys into the FP8 132-B indexer cache, e4m3 q and
// head weights -> paged_indexer_topk (physical slots of the V32 656-B cache, same block table and
// page size) -> sparse_decode; plus the unfused paged_mqa_logits + indexer_topk path.
// V4 (issue 13, spec v4-blocks.md §1.11): mhc_pre on the residual streams -> (q, kv, a, z random:
// the projections are outside these ops) indexer-key compressor into the FP8 indexer cache ->
// paged_indexer_topk over the compressed entries -> window write -> main compressor (CSA, ratio
// 4) into the MODEL1 extra cache -> sparse_decode MODEL1 (window + compressed cache + sink) ->
// mhc_post (its sublayer input a fixed fold of the attention output: the o-projection is outside
// these ops).
//
// Checks (the stage's best kernel against its reference kernel on identical inputs):
//   top-k: same topk_length and the same set of slots, except that a slot may be swapped for one
//     whose double-precision score lies within 2e-5 * M of the reference's k-th score (M = sum_h
//     |w_h| sum_d |q_hd k_d|, the logit tolerance of tests/cpp/test_indexer_kernels.cpp);
//   sparse_decode: out within kDecodeOut, lse within kDecodeLse (compare.h, spec §7.2);
//   compressor: every other slot dequantises bitwise as the reference run's; the new entries agree
//     within one e4m3 step (|a - b| <= max(|a|, |b|) / 8 + 2^-10 max|entry|: the latents agree
//     within 2 bf16 ulps, which may flip an FP8 code or its power-of-two scale);
//   mhc_pre / mhc_post: bf16 values within (|ref| + 0.05) / 128, post and comb within
//     2e-5 (1 + |ref|) (tests/cpp/test_mhc_kernels.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace openmla::testing {

/// One stage of a step: the best kernel, its time and the check against the reference kernel.
struct StageResult {
  std::string stage;   ///< e.g. "paged_indexer_topk"
  std::string kernel;  ///< the best kernel the registry chose
  double ms = 0.0;     ///< one call of the best kernel
  double max_err = 0.0;
  bool ok = false;
  std::string check;  ///< "ok (...)" or "FAILED: ..."
};

struct StepResult {
  std::string title;
  std::vector<StageResult> stages;
  double setup_s = 0.0;  ///< building the caches and histories (not a stage)
  bool ok() const;
};

struct V32StepConfig {
  int64_t batch = 2, tokens = 32768, page_size = 64;  ///< request b has tokens - 1531 b tokens
  int64_t heads_q = 128, index_heads = 64, topk = 2048;
  int threads = 0;
  uint64_t seed = 1;
};

struct V4StepConfig {
  int64_t batch = 2, entries = 2048;  ///< request b's new token completes entry entries - 317 b
  int64_t hidden = 4096, hc = 4, heads_q = 64, index_heads = 64, topk = 512, page_size = 64;
  int threads = 0;
  uint64_t seed = 2;
};

StepResult run_v32_decode_step(const V32StepConfig& config);
StepResult run_v4_decode_step(const V4StepConfig& config);

/// The step as text: its title, then one line per stage (stage, kernel, ms, max error, check).
std::string format_step(const StepResult& step);

}  // namespace openmla::testing
