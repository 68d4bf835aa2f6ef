// `openmla bench`: what every bench op shares. An op registers itself with add_bench_op, which
// declares the common flags (--threads, --json, --impl, --iters, --warmup, --layers, --vs-ref),
// measures the machine's limits and calls the op's run callback; the op declares its own shape
// flags on the returned Command and prints its lines with print_line.
#pragma once

#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "cli_common.h"
#include "probes/peak_probe.h"

namespace openmla::cli {

/// The machine's limits measured in the same process as the op.
struct Limits {
  double tflops = 0.0, gbps = 0.0;
  double tflops_best = 0.0;  ///< best-of-N probe before / after the runs (0: not measured)
  const char* isa = probes::best_matmul_probe().isa;  ///< the matmul instruction of the probes
};
Limits measure_limits(int threads);

/// The limits a run's fractions refer to. The matmul peak is the median of the probes taken
/// between the timed rounds (the first `warmup` readings dropped): on a VM whose matmul unit
/// changes speed every few seconds, the op and its probe then see the same speed. The bandwidth is
/// measured again now and the larger of the two readings kept (a probe that ran during a
/// co-tenant's burst would otherwise inflate every memory-bound fraction); the best-of probe the
/// same way.
Limits limits_alongside(std::vector<double> probe_tflops, int warmup, const Limits& before,
                        int threads);

/// `count` cases of one config with seeds 1, 2, ...: the layers of a model (same shapes, different
/// data); seed 1 alone is the default single-layer case.
template <typename Config, typename Make>
auto make_layers(Config config, int count, Make make) {
  std::vector<decltype(make(config))> layers;
  for (int i = 0; i < (count > 1 ? count : 1); ++i) {
    config.seed = static_cast<uint64_t>(i) + 1;
    layers.push_back(make(config));
  }
  return layers;
}

/// The common flags, parsed.
struct BenchCommon {
  int threads = 0, warmup = 0, iters = 0, layers = 1;
  bool json = false, vs_ref = false;
  std::vector<std::string> impls;  ///< {""} = the registry's choice; several alternate call by call
};

/// One output line: the op's own "key": value pairs and table shape, plus the timing.
struct BenchLine {
  std::ostringstream json;  // "key": value pairs specific to the op
  std::string table_shape;  // for the human table
  std::string kernel;
  Timing timing;
  double flops = 0.0, bytes = 0.0, ref_us = 0.0;
};
void print_line(const BenchLine& l, const char* op, const Limits& lim, int threads, bool json);
/// Exit code of an op: 0, or 1 after printing the failed status.
int finish(const Status& s);

using BenchRun = std::function<int(const Args&, const BenchCommon&, const Limits&)>;
/// `openmla bench <name>` with the common flags; add the op's own flags to the result.
Command& add_bench_op(Command& bench, const std::string& name, const std::string& summary,
                      BenchRun run);

void add_bench_peak(Command& bench);
void add_bench_sparse_decode(Command& bench);
void add_bench_dense_decode(Command& bench);
void add_bench_sparse_prefill(Command& bench);
void add_bench_indexer(Command& bench);

}  // namespace openmla::cli
