// `openmla demo`: the main job. Builds DeepSeek-shaped synthetic caches (V3.2: 128 heads, d_qk
// 576, top-2048 over a 32K-token FP8 cache; V4: 64 heads, d_qk 512, a 128-token window cache plus
// a compressed cache with top-512, attention sinks), runs the best kernel the registry picks,
// checks it against the reference kernel and prints one table row per workload.
#include <cstdio>
#include <string>
#include <utility>

#include "cli_common.h"
#include "demo_steps.h"

namespace openmla::cli {
namespace {

struct Row {
  Row(std::string op_, std::string model_, std::string shape_)
      : op(std::move(op_)), model(std::move(model_)), shape(std::move(shape_)) {}
  std::string op, model, shape, kernel, check;
  double ms = 0.0, tflops = 0.0, max_err = 0.0;
};

void progress(const std::string& what) {
  std::fprintf(stderr, "  ... %s\n", what.c_str());
  std::fflush(stderr);
}

/// Times the best kernel (median of 5 runs of one plan), checks its output against the
/// reference kernel and fills the row. Returns false on failure.
template <typename Case>
bool run_row(const Case& c, double flops, const std::string& ref_name, bool prefill, Row* row) {
  progress(row->op + " " + row->model + ": best kernel");
  std::vector<std::string> kernels;
  std::vector<Timing> timings;
  const Status timed = time_case(std::vector<const Case*>{&c}, {""}, 0, 1, 5, &kernels, &timings);
  if (timed.ok()) {
    row->kernel = kernels[0];
    row->ms = timings[0].median_s * 1e3;
    row->tflops = flops / timings[0].median_s / 1e12;
  }
  const RunResult best = run_case(c, "", 0);
  if (!timed.ok() || !best.status.ok()) {
    row->check = "FAILED: " + (timed.ok() ? best.status : timed).to_string();
    return false;
  }
  if (best.kernel == ref_name) {
    row->check = "ok (reference kernel; no optimised kernel accepts this shape yet)";
    return true;
  }
  progress(row->op + " " + row->model + ": reference kernel for the check");
  const RunResult ref = run_case(c, ref_name, 0);
  const CheckResult r = prefill ? check_prefill(best, ref) : check_decode(best, ref);
  row->max_err = r.max_abs_err;
  row->check = r.ok ? "ok (matches reference)" : "FAILED: " + r.message;
  return r.ok;
}

Row v32_sparse_decode(bool* ok) {
  testing::SparseDecodeConfig c;
  c.format = KvFormat::kV32;
  c.batch = 2;
  c.heads_q = 128;
  c.topk = 2048;
  c.page_size = 64;
  c.cache_tokens = 32768;
  c.topk_length = true;
  c.sink = true;
  progress("building a V3.2 FP8 cache: 2 requests x 32768 tokens, 656 B/token");
  const testing::SparseDecodeCase sc = testing::make_sparse_decode_case(c);
  Row row{"sparse_decode", "V3.2", "b2 h128 d576 top-2048 of 32K, FP8 V32"};
  *ok &= run_row(sc, testing::sparse_decode_flops(sc), "sparse_decode.ref", false, &row);
  return row;
}

Row v4_sparse_decode(bool* ok) {
  testing::SparseDecodeConfig c;
  c.format = KvFormat::kModel1;
  c.batch = 2;
  c.heads_q = 64;
  c.topk = 128;
  c.page_size = 256;
  c.cache_tokens = 128;
  c.extra_topk = 512;
  c.extra_page_size = 64;
  c.extra_cache_tokens = 8192;
  c.extra_topk_length = true;
  c.sink = true;
  progress("building V4 FP8 caches: 128-token window + 8192-token compressed cache");
  const testing::SparseDecodeCase sc = testing::make_sparse_decode_case(c);
  Row row{"sparse_decode", "V4", "b2 h64 d512 window-128 + top-512 compressed, FP8 MODEL1"};
  *ok &= run_row(sc, testing::sparse_decode_flops(sc), "sparse_decode.ref", false, &row);
  return row;
}

Row v32_dense_decode(bool* ok) {
  testing::DenseDecodeConfig c;
  c.format = KvFormat::kBF16;
  c.batch = 1;
  c.heads_q = 128;
  c.cache_tokens = 4096;
  c.varlen = false;
  progress("building a V3.2 BF16 paged cache: 4096 tokens");
  const testing::DenseDecodeCase dc = testing::make_dense_decode_case(c);
  Row row{"dense_decode", "V3.2", "b1 h128 d576 4096 tokens, BF16"};
  *ok &= run_row(dc, testing::dense_decode_flops(dc), "dense_decode.ref", false, &row);
  return row;
}

Row v4_sparse_prefill(bool* ok) {
  testing::SparsePrefillConfig c;
  c.seq_q = 16;
  c.seq_kv = 4096;
  c.heads_q = 64;
  c.head_dim = 512;
  c.topk = 256;
  c.sink = true;
  c.softmax_scale = 0.044194173f;  // 512^-0.5
  progress("building a V4 prefill case: 16 queries, 4096 keys");
  const testing::SparsePrefillCase pc = testing::make_sparse_prefill_case(c);
  Row row{"sparse_prefill", "V4", "s16 h64 d512 top-256 of 4096, BF16"};
  *ok &= run_row(pc, testing::sparse_prefill_flops(pc), "sparse_prefill.ref", true, &row);
  return row;
}

int run_demo(const Args&) {
  std::printf("openmla %s demo: DeepSeek-shaped attention on this CPU (%s)\n", version(),
              cpu_features_string().c_str());
  bool ok = true;
  const double start = now_seconds();
  std::vector<Row> rows;
  rows.push_back(v32_sparse_decode(&ok));
  rows.push_back(v4_sparse_decode(&ok));
  rows.push_back(v32_dense_decode(&ok));
  rows.push_back(v4_sparse_prefill(&ok));
  std::printf("\n%-15s %-5s %-58s %-22s %10s %9s %11s  %s\n", "op", "model", "shape", "kernel",
              "median ms", "TFLOP/s", "max error", "check");
  for (const Row& r : rows) {
    std::printf("%-15s %-5s %-58s %-22s %10.2f %9.4f %11.3g  %s\n", r.op.c_str(), r.model.c_str(),
                r.shape.c_str(), r.kernel.c_str(), r.ms, r.tflops, r.max_err, r.check.c_str());
  }
  progress("end-to-end decode steps: V3.2 (issue 10), V4 layer (issue 13)");
  const testing::StepResult steps[] = {testing::run_v32_decode_step({}),
                                       testing::run_v4_decode_step({})};
  for (const testing::StepResult& step : steps) {
    std::printf("\n%s", testing::format_step(step).c_str());
    ok &= step.ok();
  }
  std::printf("\ndemo finished in %.1f s: %s\n", now_seconds() - start,
              ok ? "all results match the reference" : "FAILURES above");
  return ok ? 0 : 1;
}

}  // namespace

void add_demo(Command& root) {
  root.add_command("demo", "DeepSeek V3.2 / V4 shaped run of the best kernels, checked")
      .set_run(run_demo);
}

}  // namespace openmla::cli
