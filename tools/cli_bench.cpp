// `openmla bench`: median / min microseconds over repeated runs of one op on a generated case,
// TFLOP/s and GB/s from FlashMLA's FLOP and byte formulas, and the machine's limits measured in
// the same process: peak_tflops is the median of short matmul probes run between the timed calls
// (peak_tflops_best: the best-of-N probe of `bench peak` before and after them; peak_isa: the
// instruction the probes run, the best this host has), peak_gbps the
// larger of the stream probes before and after the timed runs.
// frac_of_peak is tflops / peak_tflops for sparse decode, and for the other ops the larger of
// tflops / peak_tflops and gbps / peak_gbps (the roofline fraction; "bound" says which). Both
// fractions are always printed. Threads are pinned. Human table by default, one JSON object per
// line with --json, rates and fractions to 6 significant digits (a fixed number of decimals
// would leave a reference kernel's 0.0025 too coarse to check against its own ratio).
#include "cli_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>

#include "cli_bench_v4.h"
#include "core/thread_pool.h"
#include "indexer_cases.h"
#include "probes/peak_probe.h"

namespace openmla::cli {

using namespace probes;

Limits measure_limits(int threads) {
  return {measure_matmul_peak_tflops(threads), measure_stream_bandwidth_gbps(threads)};
}

Limits limits_alongside(std::vector<double> probe_tflops, int warmup, const Limits& before,
                        int threads) {
  const std::size_t dropped = std::min<std::size_t>(probe_tflops.size(), warmup);
  probe_tflops.erase(probe_tflops.begin(), probe_tflops.begin() + dropped);
  std::sort(probe_tflops.begin(), probe_tflops.end());
  const Limits after = measure_limits(threads);
  Limits best;
  best.tflops = probe_tflops.empty() ? 0.0 : probe_tflops[probe_tflops.size() / 2];
  best.tflops_best = std::max(before.tflops, after.tflops);
  best.gbps = std::max(before.gbps, after.gbps);
  return best;
}

namespace {

/// `bench peak --json`: the limits, the clock and the probe against its documented rate.
void print_peak_json(const Limits& lim, int threads) {
  const TileGemmCeiling gemm = measure_tile_gemm_ceiling(threads);
  const double ghz = measure_clock_ghz(threads);
  const double doc = best_matmul_probe().documented_flops_per_cycle;
  const double doc_tflops = doc * ghz * threads * 1e-3;
  std::printf(
      "{\"op\": \"peak\", \"threads\": %d, \"peak_isa\": \"%s\", \"peak_tflops\": %.6g, "
      "\"peak_gbps\": %.6g, \"clock_ghz\": %.6g, \"documented_flops_per_cycle\": %.6g, "
      "\"peak_vs_documented\": %.6g, \"tile_gemm_tflops\": %.6g, \"tile_gemm_frac_of_peak\": "
      "%.6g}\n",
      threads, lim.isa, lim.tflops, lim.gbps, ghz, doc,
      doc_tflops > 0 ? lim.tflops / doc_tflops : 0.0, gemm.tflops, gemm.frac_of_peak);
}

}  // namespace

void print_line(const BenchLine& l, const char* op, const Limits& lim, int threads, bool json) {
  const double tflops = l.flops / l.timing.median_s / 1e12;
  const double gbps = l.bytes / l.timing.median_s / 1e9;
  // Sparse decode is judged against the matmul peak. Dense decode and prefill are judged against
  // their roofline: the larger of the two fractions is the limit that binds.
  const double frac_matmul = tflops / lim.tflops, frac_bandwidth = gbps / lim.gbps;
  const bool memory_bound = std::string(op) != "sparse_decode" && frac_bandwidth > frac_matmul;
  const double frac = memory_bound ? frac_bandwidth : frac_matmul;
  const double us = l.timing.median_s * 1e6;
  if (json) {
    std::printf(
        "{\"op\": \"%s\", \"kernel\": \"%s\", %s, \"threads\": %d, \"us\": %.2f, \"us_min\": "
        "%.2f, \"tflops\": %.6g, \"gbps\": %.6g, \"peak_isa\": \"%s\", \"peak_tflops\": %.6g, "
        "\"peak_gbps\": %.6g, \"bound\": \"%s\", \"frac_of_peak\": %.6g, "
        "\"frac_of_matmul_peak\": %.6g, \"frac_of_bandwidth\": %.6g",
        op, l.kernel.c_str(), l.json.str().c_str(), threads, us, l.timing.min_s * 1e6, tflops, gbps,
        lim.isa, lim.tflops, lim.gbps, memory_bound ? "memory" : "compute", frac, frac_matmul,
        frac_bandwidth);
    if (lim.tflops_best > 0) std::printf(", \"peak_tflops_best\": %.6g", lim.tflops_best);
    if (l.ref_us > 0)
      std::printf(", \"ref_us\": %.1f, \"speedup_vs_ref\": %.2f", l.ref_us, l.ref_us / us);
    std::printf("}\n");
    return;
  }
  std::printf(
      "%-15s %-22s %-46s %10.1f us (min %.1f)  %7.3f TFLOP/s  %7.2f GB/s  %5.1f%% of %s peak", op,
      l.kernel.c_str(), l.table_shape.c_str(), us, l.timing.min_s * 1e6, tflops, gbps, 100.0 * frac,
      memory_bound ? "bandwidth" : "matmul");
  if (l.ref_us > 0) std::printf("  %.1fx vs ref", l.ref_us / us);
  std::printf("\n");
}

int finish(const Status& s) {
  if (s.ok()) return 0;
  std::fprintf(stderr, "openmla bench: %s\n", s.to_string().c_str());
  return 1;
}

namespace {

/// Upper bound of the shape flags: keeps products of them far from int64 overflow.
constexpr int64_t kMaxShape = int64_t{1} << 24;

/// Splits "a,b,c" into its names ("" gives {""}).
std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = list.find(',', start);
    out.push_back(
        list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

/// Mean of fn(case) over the layers (FLOPs and bytes per call).
template <typename Case, typename Fn>
double mean_over(const std::vector<Case>& layers, Fn fn) {
  double sum = 0.0;
  for (const Case& c : layers) sum += fn(c);
  return sum / static_cast<double>(layers.size());
}

/// Times the layers (call i on layer i mod L) with every kernel of k.impls, interleaved, and
/// prints one line per kernel.
template <typename Case>
Status bench_case(const std::vector<Case>& layers, const BenchCommon& k,
                  const std::string& ref_name, const char* op, const Limits& lim, BenchLine* line) {
  std::vector<const Case*> views;
  for (const Case& c : layers) views.push_back(&c);
  std::vector<std::string> kernels;
  std::vector<Timing> timings;
  // A ~1 ms matmul probe runs after every round of kernel calls: this VM's AMX unit switches
  // between full and half speed every few seconds, so the peak a fraction refers to is the median
  // rate the probe measured while the op ran (the op and its probe see the same mode).
  std::vector<double> probe_tflops;
  Status s = time_case(views, k.impls, k.threads, k.warmup, k.iters, &kernels, &timings,
                       [&] { probe_tflops.push_back(run_matmul_probe_tflops(k.threads)); });
  if (!s.ok()) return s;
  timings.pop_back();
  const Limits best = limits_alongside(std::move(probe_tflops), k.warmup, lim, k.threads);
  if (k.vs_ref) {
    std::vector<std::string> ref_kernel;
    std::vector<Timing> ref_timing;
    s = time_case({views[0]}, {ref_name}, k.threads, 0, 1, &ref_kernel, &ref_timing);
    if (!s.ok()) return s;
    line->ref_us = ref_timing[0].median_s * 1e6;
  }
  line->json << ", \"layers\": " << layers.size();
  if (layers.size() > 1) line->table_shape += " x" + std::to_string(layers.size()) + " layers";
  for (std::size_t i = 0; i < kernels.size(); ++i) {
    line->kernel = kernels[i];
    line->timing = timings[i];
    print_line(*line, op, best, k.threads, k.json);
  }
  return s;
}

/// The parser only lets through the names of the --model / --format choices.
KvFormat parse_format(const std::string& name) {
  return name == "v32" ? KvFormat::kV32 : name == "model1" ? KvFormat::kModel1 : KvFormat::kBF16;
}

int bench_sparse_decode(const Args& f, const BenchCommon& k, const Limits& lim) {
  testing::SparseDecodeConfig c;
  const std::string model = f.get("model");
  c.format = parse_format(model);
  c.head_dim = f.get_int("d-qk");
  c.batch = f.get_int("batch");
  c.seq_q = f.get_int("seq-q");
  c.heads_q = f.get_int("heads", c.format == KvFormat::kModel1 ? 64 : 128);
  c.topk = f.get_int("topk", c.format == KvFormat::kModel1 ? 128 : 2048);
  c.extra_topk = f.get_int("extra-topk");
  c.page_size = f.get_int("page-size", c.format == KvFormat::kModel1 ? 256 : 64);
  c.extra_page_size = f.get_int("extra-page-size");
  c.cache_tokens = f.get_int("cache-tokens", c.format == KvFormat::kModel1 ? 16384 : 32768);
  c.extra_cache_tokens = f.get_int("extra-cache-tokens");
  c.sink = f.has("sink");
  c.odd_invalid = false;
  c.nan_poison = false;
  const auto layers = make_layers(c, k.layers, testing::make_sparse_decode_case);
  BenchLine line;
  line.flops = mean_over(layers, testing::sparse_decode_flops);
  line.bytes = mean_over(layers, testing::sparse_decode_bytes);
  line.json << "\"model\": \"" << model << "\", \"batch\": " << c.batch
            << ", \"seq_q\": " << c.seq_q << ", \"heads_q\": " << c.heads_q
            << ", \"topk\": " << c.topk << ", \"extra_topk\": " << c.extra_topk
            << ", \"page_size\": " << c.page_size << ", \"cache_tokens\": " << c.cache_tokens;
  line.table_shape = model + " b" + std::to_string(c.batch) + " s" + std::to_string(c.seq_q) +
                     " h" + std::to_string(c.heads_q) + " topk" + std::to_string(c.topk) +
                     (c.extra_topk ? "+" + std::to_string(c.extra_topk) : "") + " page" +
                     std::to_string(c.page_size);
  const Status s = bench_case(layers, k, "sparse_decode.ref", "sparse_decode", lim, &line);
  return finish(s);
}

int bench_dense_decode(const Args& f, const BenchCommon& k, const Limits& lim) {
  testing::DenseDecodeConfig c;
  const std::string format = f.get("format");
  c.format = parse_format(format);  // fp16: the BF16 layout holding fp16, with fp16 q and out
  c.dtype = format == "fp16" ? DType::kF16 : DType::kBF16;
  c.head_dim = f.get_int("d-qk");
  c.batch = f.get_int("batch");
  c.seq_q = f.get_int("seq-q");
  c.heads_q = f.get_int("heads");
  c.heads_kv = f.get_int("heads-kv");
  c.page_size = f.get_int("page-size");
  c.cache_tokens = f.get_int("cache-tokens");
  c.varlen = false;
  c.causal = f.has("causal");
  const auto layers = make_layers(c, k.layers, testing::make_dense_decode_case);
  BenchLine line;
  line.flops = mean_over(layers, testing::dense_decode_flops);
  line.bytes = mean_over(layers, testing::dense_decode_bytes);
  line.json << "\"format\": \"" << format << "\", \"batch\": " << c.batch
            << ", \"seq_q\": " << c.seq_q << ", \"heads_q\": " << c.heads_q
            << ", \"heads_kv\": " << c.heads_kv << ", \"cache_tokens\": " << c.cache_tokens
            << ", \"page_size\": " << c.page_size << ", \"topk\": 0";
  line.table_shape = format + " b" + std::to_string(c.batch) + " s" + std::to_string(c.seq_q) +
                     " h" + std::to_string(c.heads_q) + "/" + std::to_string(c.heads_kv) + " n" +
                     std::to_string(c.cache_tokens);
  const Status s = bench_case(layers, k, "dense_decode.ref", "dense_decode", lim, &line);
  return finish(s);
}

int bench_sparse_prefill(const Args& f, const BenchCommon& k, const Limits& lim) {
  testing::SparsePrefillConfig c;
  c.seq_q = f.get_int("seq-q");
  c.seq_kv = f.get_int("seq-kv");
  c.heads_q = f.get_int("heads");
  c.heads_kv = f.get_int("heads-kv");
  c.topk = f.get_int("topk");
  c.head_dim = f.get_int("d-qk");
  c.sink = f.has("sink");
  c.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  const auto layers = make_layers(c, k.layers, testing::make_sparse_prefill_case);
  BenchLine line;
  line.flops = mean_over(layers, testing::sparse_prefill_flops);
  line.bytes = mean_over(layers, testing::sparse_prefill_bytes);
  line.json << "\"format\": \"bf16\", \"batch\": 1, \"seq_q\": " << c.seq_q
            << ", \"heads_q\": " << c.heads_q << ", \"heads_kv\": " << c.heads_kv
            << ", \"seq_kv\": " << c.seq_kv << ", \"topk\": " << c.topk
            << ", \"d_qk\": " << c.head_dim;
  line.table_shape = "s" + std::to_string(c.seq_q) + " kv" + std::to_string(c.seq_kv) + " h" +
                     std::to_string(c.heads_q) + " topk" + std::to_string(c.topk) + " d" +
                     std::to_string(c.head_dim);
  const Status s = bench_case(layers, k, "sparse_prefill.ref", "sparse_prefill", lim, &line);
  return finish(s);
}

int run_peak(const Args&, const BenchCommon& k, const Limits& lim) {
  if (k.json) {
    print_peak_json(lim, k.threads);
  } else {
    const TileGemmCeiling gemm = measure_tile_gemm_ceiling(k.threads);
    std::printf("matmul peak %.3f TFLOP/s (%s), stream bandwidth %.2f GB/s (%d threads)\n",
                lim.tflops, lim.isa, lim.gbps, k.threads);
    if (gemm.tflops > 0)
      std::printf(
          "2x2-blocked AMX tile GEMM, MLA QK^T shape, operands in L1/L2: %.3f TFLOP/s, %.0f%% "
          "of the register-only rate measured alongside\n",
          gemm.tflops, 100.0 * gemm.frac_of_peak);
  }
  return 0;
}

/// The indexer at decode: --fused times paged_indexer_topk, else the separate pipeline
/// (paged_mqa_logits, then indexer_topk over its logits through the block table). FLOPs: 2 *
/// heads * 128 per scored key; bytes: the cache records read (+ the logits written, separate).
int bench_indexer(const Args& f, const BenchCommon& k, const Limits& lim) {
  testing::IndexerConfig c;
  const std::string model = f.get("model");
  c.format = model == "v4" ? IndexerKeyFormat::kFp4 : IndexerKeyFormat::kFp8;
  c.batch = f.get_int("batch");
  c.next_n = f.get_int("next-n");
  c.heads = f.get_int("heads");
  c.tokens = f.get_int("tokens");
  c.page_size = f.get_int("page-size");
  c.topk = f.get_int("topk", model == "v4" ? 512 : 2048);
  const bool fused = f.has("fused");
  const testing::IndexerCase ic = testing::make_indexer_case(c);
  std::vector<float> logits(static_cast<size_t>(c.batch * c.next_n * ic.max_len));
  std::vector<int32_t> indices(static_cast<size_t>(c.batch * c.next_n * c.topk)),
      lengths(static_cast<size_t>(c.batch * c.next_n)), ends(lengths.size());
  for (int64_t r = 0; r < c.batch * c.next_n; ++r)
    ends[r] = static_cast<int32_t>(ic.visible(r / c.next_n, r % c.next_n));
  auto tensor = [](void* data, DType dtype, std::initializer_list<int64_t> shape) {
    return make_tensor(data, dtype, shape);
  };
  PagedIndexerTopkArgs fa;
  fa.logits_args = ic.logits_args(nullptr);
  fa.indices = tensor(indices.data(), DType::kI32, {c.batch, c.next_n, c.topk});
  fa.topk_length = tensor(lengths.data(), DType::kI32, {c.batch, c.next_n});
  const PagedMqaLogitsArgs la = ic.logits_args(logits.data());
  IndexerTopkArgs ta;
  ta.logits = la.logits;
  ta.ends = tensor(ends.data(), DType::kI32, {c.batch * c.next_n});
  ta.block_table = la.block_table;
  ta.page_size = c.page_size;
  ta.next_n = c.next_n;
  ta.indices = tensor(indices.data(), DType::kI32, {c.batch * c.next_n, c.topk});
  ta.topk_length = tensor(lengths.data(), DType::kI32, {c.batch * c.next_n});
  BenchLine line;
  line.flops = testing::indexer_flops(ic);
  line.bytes = testing::indexer_bytes(ic, !fused);
  line.json << "\"model\": \"" << model << "\", \"fused\": " << (fused ? "true" : "false")
            << ", \"batch\": " << c.batch << ", \"next_n\": " << c.next_n
            << ", \"heads\": " << c.heads << ", \"dim\": 128, \"tokens\": " << c.tokens
            << ", \"topk\": " << c.topk << ", \"page_size\": " << c.page_size;
  line.table_shape = model + (fused ? " fused" : " separate") + " b" + std::to_string(c.batch) +
                     " n" + std::to_string(c.next_n) + " h" + std::to_string(c.heads) + " t" +
                     std::to_string(c.tokens) + " topk" + std::to_string(c.topk);
  std::vector<double> probe;
  Status status;
  for (const std::string& impl : k.impls) {
    Options o;
    o.num_threads = k.threads;
    const std::string kernel_name =
        impl.empty() || impl.find('.') != std::string::npos
            ? impl
            : std::string(fused ? "paged_indexer_topk." : "paged_mqa_logits.") + impl;
    o.kernel = kernel_name.empty() ? nullptr : kernel_name.c_str();
    Plan plan;
    status = fused ? plan_paged_indexer_topk(fa, o, &plan) : plan_paged_mqa_logits(la, o, &plan);
    if (!status.ok()) return finish(status);
    Options topk_options;
    topk_options.num_threads = k.threads;
    const std::vector<Timing> t = time_runs_interleaved(k.warmup, k.iters, 2, [&](std::size_t i) {
      if (i == 1) {
        probe.push_back(run_matmul_probe_tflops(k.threads));
        return;
      }
      if (fused) {
        status = run_paged_indexer_topk(plan, fa);
      } else {
        status = run_paged_mqa_logits(plan, la);
        if (status.ok()) status = indexer_topk(ta, topk_options);
      }
    });
    if (!status.ok()) return finish(status);
    const Limits best = limits_alongside(std::move(probe), k.warmup, lim, k.threads);
    line.kernel = std::string(plan.kernel_name()) + (fused ? "" : "+indexer_topk");
    line.timing = t[0];
    print_line(line, fused ? "indexer_fused" : "indexer", best, k.threads, k.json);
  }
  return 0;
}

}  // namespace

Command& add_bench_op(Command& bench, const std::string& name, const std::string& summary,
                      BenchRun run) {
  Command& c = bench.add_command(name, summary);
  c.add_int("threads", std::nullopt, "worker threads", 0, 4096, "OPENMLA_NUM_THREADS or all cores")
      .add_switch("json", "one JSON object per line instead of the table")
      .add_string("impl", "", "kernels to time, comma-separated (several: calls alternate)",
                  "KERNEL[,KERNEL...]")
      .add_int("iters", 10, "timed calls per kernel", 1)
      .add_int("warmup", 2, "untimed calls per kernel first", 0)
      .add_int("layers", 1, "caches of the same shapes; call i runs on cache i mod L", 1, 4096)
      .add_switch("vs-ref", "also time the reference kernel")
      .set_run([run](const Args& f) {
        BenchCommon k;
        k.threads = resolve_num_threads(static_cast<int>(f.get_int("threads", 0)));
        k.warmup = static_cast<int>(f.get_int("warmup"));
        k.iters = static_cast<int>(f.get_int("iters"));
        k.layers = static_cast<int>(f.get_int("layers"));
        k.json = f.has("json");
        k.vs_ref = f.has("vs-ref");
        k.impls = split_names(f.get("impl"));
        pin_threads(true);
        return run(f, k, measure_limits(k.threads));
      });
  return c;
}

void add_bench_peak(Command& bench) {
  add_bench_op(bench, "peak", "matmul peak, tile-GEMM ceiling, memory bandwidth", run_peak);
}

void add_bench_sparse_decode(Command& bench) {
  add_bench_op(bench, "sparse-decode", "flash_mla_with_kvcache with indices", bench_sparse_decode)
      .add_choice("model", "v32", {"v32", "model1", "bf16"}, "cache format")
      .add_int("d-qk", 576, "head dim of q and k", 1)
      .add_int("batch", 4, "requests", 0)
      .add_int("seq-q", 1, "query tokens per request", 1)
      .add_int("heads", std::nullopt, "query heads", 1, 4096, "128; model1: 64")
      .add_int("topk", std::nullopt, "indices per query", 0, kMaxShape, "2048; model1: 128")
      .add_int("extra-topk", 0, "indices into the extra cache (0: none)", 0, kMaxShape)
      .add_int("page-size", std::nullopt, "tokens per page", 1, kMaxShape, "64; model1: 256")
      .add_int("extra-page-size", 64, "tokens per page of the extra cache", 1, kMaxShape)
      .add_int("cache-tokens", std::nullopt, "tokens per request", 1, kMaxShape,
               "32768; model1: 16384")
      .add_int("extra-cache-tokens", 16384, "tokens per request in the extra cache", 1, kMaxShape)
      .add_switch("sink", "with attention sinks");
}

void add_bench_dense_decode(Command& bench) {
  add_bench_op(bench, "dense-decode", "flash_mla_with_kvcache without indices", bench_dense_decode)
      .add_choice("format", "bf16", {"bf16", "fp16", "v32", "model1"},
                  "cache format (fp16: fp16 q, cache and out)")
      .add_int("d-qk", 576, "head dim of q and k", 1)
      .add_int("batch", 4, "requests", 0)
      .add_int("seq-q", 1, "query tokens per request", 1)
      .add_int("heads", 128, "query heads", 1, 4096)
      .add_int("heads-kv", 1, "kv heads (dividing --heads)", 1, 4096)
      .add_int("page-size", 64, "tokens per page", 1, kMaxShape)
      .add_int("cache-tokens", 4096, "tokens per request", 0, kMaxShape)
      .add_switch("causal", "causal mask over the query tokens");
}

void add_bench_sparse_prefill(Command& bench) {
  add_bench_op(bench, "sparse-prefill", "flash_mla_sparse_fwd", bench_sparse_prefill)
      .add_int("seq-q", 256, "query tokens", 0, kMaxShape)
      .add_int("seq-kv", 8192, "key tokens", 1, kMaxShape)
      .add_int("heads", 128, "query heads", 1, 4096)
      .add_int("heads-kv", 1, "kv heads (dividing --heads)", 1, 4096)
      .add_int("topk", 2048, "indices per query token", 0, kMaxShape)
      .add_int("d-qk", 576, "head dim of q and k", 1)
      .add_switch("sink", "with attention sinks");
}

void add_bench_indexer(Command& bench) {
  add_bench_op(bench, "indexer",
               "lightning indexer at decode: paged_mqa_logits + indexer_topk (--fused: one call)",
               bench_indexer)
      .add_choice("model", "v32", {"v32", "v4"}, "key format (v32: fp8, v4: fp4)")
      .add_int("batch", 4, "requests", 1)
      .add_int("next-n", 1, "query tokens per request", 1)
      .add_int("heads", 64, "indexer heads", 1, 4096)
      .add_int("dim", 128, "head dim (128 only)", 128, 128)
      .add_int("tokens", 32768, "tokens per request", 0, kMaxShape)
      .add_int("page-size", 64, "tokens per page", 1, kMaxShape)
      .add_int("topk", std::nullopt, "indices per query token", 1, kMaxShape, "2048; v4: 512")
      .add_switch("fused", "time paged_indexer_topk (else paged_mqa_logits, then indexer_topk)");
}

Command& add_bench(Command& root) {
  Command& bench = root.add_command("bench", "time one op: us, TFLOP/s, GB/s, fraction of peak");
  add_bench_peak(bench);
  add_bench_sparse_decode(bench);
  add_bench_dense_decode(bench);
  add_bench_sparse_prefill(bench);
  add_bench_indexer(bench);
  add_bench_compressor(bench);
  add_bench_mhc(bench);
  add_bench_engram(bench);
  return bench;
}

}  // namespace openmla::cli
