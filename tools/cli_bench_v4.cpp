// `openmla bench compressor` and `openmla bench mhc`, V4-Flash shapes by default (spec
// v4-blocks.md §1.1: head dim 512, hc 4, hidden 4096, 20 Sinkhorn iterations), and the timing
// shared with `bench engram`. FLOP and byte formulas: testing/v4_block_cases.cpp.
#include "cli_bench_v4.h"

#include <algorithm>
#include <string>
#include <utility>

#include "probes/peak_probe.h"
#include "v4_block_cases.h"

namespace openmla::cli {

int bench_calls(const std::vector<TimedCall>& calls, std::size_t layers, const TimedCall& ref,
                const BenchCommon& k, const Limits& lim, const char* op, BenchLine* line) {
  std::vector<std::size_t> next(calls.size(), 0);
  std::vector<double> probe;
  Status status;
  // A matmul probe after every round: the peak a fraction refers to is the one measured while
  // the op ran (as bench_case does for the attention ops).
  std::vector<Timing> t = time_runs_interleaved(k.warmup, k.iters, calls.size() + 1, [&](size_t i) {
    if (i == calls.size()) {
      probe.push_back(probes::run_matmul_probe_tflops(k.threads));
      return;
    }
    const Status s = calls[i].call(next[i]++);
    if (status.ok()) status = s;
  });
  if (!status.ok()) return finish(status);
  const Limits best = limits_alongside(std::move(probe), k.warmup, lim, k.threads);
  if (ref.call) {
    const std::vector<Timing> r = time_runs_interleaved(0, 1, 1, [&](size_t) {
      const Status s = ref.call(0);
      if (status.ok()) status = s;
    });
    if (!status.ok()) return finish(status);
    line->ref_us = r[0].median_s * 1e6;
  }
  line->json << ", \"layers\": " << layers;
  if (layers > 1) line->table_shape += " x" + std::to_string(layers) + " layers";
  for (std::size_t i = 0; i < calls.size(); ++i) {
    line->kernel = calls[i].kernel;
    line->timing = t[i];
    print_line(*line, op, best, k.threads, k.json);
  }
  return 0;
}

namespace {

/// The compressor's decode step (default: --tokens sequences, each one token completing an entry
/// whose window was saved by earlier steps) or a prefill chunk (--prefill: one sequence of
/// --tokens tokens from position 0): compressor_save_states + compressor_store per call.
int bench_compressor(const Args& f, const BenchCommon& k, const Limits& lim) {
  testing::CompressorConfig c;
  c.ratio = std::stoll(f.get("ratio"));
  c.head_dim = std::stoll(f.get("head-dim"));
  const std::string cache = c.head_dim == 128 ? "bf16" : f.get("cache");
  c.format = cache == "bf16" ? KvFormat::kBF16 : KvFormat::kModel1;
  c.prefill = f.has("prefill");
  const int64_t tokens = f.get_int("tokens");
  c.seqs = c.prefill ? 1 : tokens;
  c.len = c.prefill ? tokens : (c.ratio == 4 ? 8 : c.ratio);  // CSA: the previous window too
  c.page_size = f.get_int("page-size");
  const auto layers = make_layers(c, k.layers, testing::make_compressor_case);
  BenchLine line;
  line.flops = testing::compressor_flops(layers[0]);
  line.bytes = testing::compressor_bytes(layers[0]);
  line.json << "\"ratio\": " << c.ratio << ", \"head_dim\": " << c.head_dim << ", \"cache\": \""
            << cache << "\", \"prefill\": " << (c.prefill ? "true" : "false")
            << ", \"tokens\": " << tokens << ", \"entries\": " << layers[0].entries
            << ", \"page_size\": " << c.page_size;
  line.table_shape = "r" + std::to_string(c.ratio) + " d" + std::to_string(c.head_dim) + " " +
                     cache + (c.prefill ? " prefill" : " decode") + " t" + std::to_string(tokens) +
                     " e" + std::to_string(layers[0].entries);
  return bench_planned(layers, Op::kCompressor, k, lim, "compressor", &line);
}

int bench_mhc(const Args& f, const BenchCommon& k, const Limits& lim) {
  testing::MhcConfig c;
  const std::string stage = f.get("stage");
  c.stage = stage == "pre"    ? testing::MhcStage::kPre
            : stage == "post" ? testing::MhcStage::kPost
                              : testing::MhcStage::kHead;
  c.tokens = f.get_int("tokens");
  c.hidden = f.get_int("hidden");
  c.hc = f.get_int("streams");
  c.sinkhorn_iters = f.get_int("sinkhorn-iters");
  const auto layers = make_layers(c, k.layers, testing::make_mhc_case);
  BenchLine line;
  line.flops = testing::mhc_flops(layers[0]);
  line.bytes = testing::mhc_bytes(layers[0]);
  line.json << "\"stage\": \"" << stage << "\", \"tokens\": " << c.tokens
            << ", \"hidden\": " << c.hidden << ", \"streams\": " << c.hc
            << ", \"sinkhorn_iters\": " << c.sinkhorn_iters;
  line.table_shape = stage + " t" + std::to_string(c.tokens) + " hc" + std::to_string(c.hc) + " d" +
                     std::to_string(c.hidden) +
                     (stage == "pre" ? " it" + std::to_string(c.sinkhorn_iters) : "");
  return bench_planned(layers, testing::mhc_op(c.stage), k, lim, ("mhc_" + stage).c_str(), &line);
}

constexpr int64_t kMaxTokens = int64_t{1} << 20;

}  // namespace

void add_bench_compressor(Command& bench) {
  add_bench_op(bench, "compressor",
               "V4 KV compressor: compressor_save_states + compressor_store (decode step or "
               "--prefill chunk)",
               bench_compressor)
      .add_choice("ratio", "4", {"4", "128"}, "compression ratio (4: CSA, 128: HCA)")
      .add_int("tokens", 16, "decode: sequences, one token each; --prefill: chunk length", 1,
               kMaxTokens)
      .add_choice("cache", "model1", {"model1", "bf16"}, "entry cache format")
      .add_choice("head-dim", "512", {"512", "128"},
                  "512: MODEL1 entries; 128: indexer keys (bf16)")
      .add_switch("prefill", "one sequence of --tokens tokens from position 0")
      .add_int("page-size", 64, "entries per cache page", 1, kMaxTokens);
}

void add_bench_mhc(Command& bench) {
  add_bench_op(bench, "mhc", "mHC hyper-connections: mhc_pre, mhc_post or mhc_head", bench_mhc)
      .add_choice("stage", "pre", {"pre", "post", "head"}, "which site")
      .add_int("tokens", 16, "tokens", 1, kMaxTokens)
      .add_int("hidden", 4096, "hidden size", 1, 65536)
      .add_int("streams", 4, "residual streams (hc)", 1, 64)
      .add_int("sinkhorn-iters", 20, "Sinkhorn iterations (pre)", 1, 1000);
}

}  // namespace openmla::cli
