// Shared pieces of the `openmla` CLI: the subcommands, running a generated case with a given
// kernel, comparing against the reference, and timing.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cases.h"
#include "cli_args.h"
#include "compare.h"

namespace openmla::cli {

/// The subcommands; each declares its flags on a Command of the parser (cli_args.h). A new
/// command is one such function in its own file plus one line in tools/openmla.cpp.
void add_info(Command& root);
void add_demo(Command& root);
void add_verify(Command& root);
/// `openmla bench` and its ops (cli_bench.h declares add_bench_op for new ones).
Command& add_bench(Command& root);

/// One run of an op on a generated case: status, chosen kernel and outputs as flat floats.
struct RunResult {
  Status status;
  std::string kernel;
  std::vector<float> out, lse, max_logits;
};

/// kernel == "" picks the best kernel (the registry's choice).
RunResult run_case(const testing::SparseDecodeCase& c, const std::string& kernel, int threads);
RunResult run_case(const testing::DenseDecodeCase& c, const std::string& kernel, int threads);
RunResult run_case(const testing::SparsePrefillCase& c, const std::string& kernel, int threads);

/// Median and minimum seconds of one op over repeated runs.
struct Timing {
  double median_s = 0.0, min_s = 0.0;
};

/// Plans once per kernel (kernel "" = the registry's choice), then times `iters` run_* calls of
/// each after `warmup` calls, as an engine reuses one plan across layers: call i of a kernel runs
/// on layers[i % layers.size()] (same shapes, different data: several layers make every call read
/// a cache the previous calls did not warm). With several kernels the calls alternate (k0, k1,
/// ..., k0, k1, ...) so that a noisy machine affects all alike. `kernel_out` gets the chosen
/// kernels, `timing` one entry per kernel. `probe` (optional) is called and timed once per round
/// after the kernels (a machine-limit probe taken alongside the op); its Timing comes last.
Status time_case(const std::vector<const testing::SparseDecodeCase*>& layers,
                 const std::vector<std::string>& kernels, int threads, int warmup, int iters,
                 std::vector<std::string>* kernel_out, std::vector<Timing>* timing,
                 const std::function<void()>& probe = {});
Status time_case(const std::vector<const testing::DenseDecodeCase*>& layers,
                 const std::vector<std::string>& kernels, int threads, int warmup, int iters,
                 std::vector<std::string>* kernel_out, std::vector<Timing>* timing,
                 const std::function<void()>& probe = {});
Status time_case(const std::vector<const testing::SparsePrefillCase*>& layers,
                 const std::vector<std::string>& kernels, int threads, int warmup, int iters,
                 std::vector<std::string>* kernel_out, std::vector<Timing>* timing,
                 const std::function<void()>& probe = {});

/// Compares every output with the spec §7.2 tolerances of the op; message empty when ok.
struct CheckResult {
  bool ok = true;
  double max_abs_err = 0.0;
  std::string message;
};
/// `out_tol`: kDecodeOut (sparse decode) or kDenseDecodeOut.
CheckResult check_decode(const RunResult& answer, const RunResult& reference,
                         const testing::Tolerance& out_tol = testing::kDecodeOut);
CheckResult check_prefill(const RunResult& answer, const RunResult& reference);

/// Names of the registered kernels of `op` that can run here.
std::vector<std::string> runnable_kernels(Op op);

/// Median and minimum seconds of each of `count` functions fn(k) over `iters` rounds (after
/// `warmup` rounds); every round calls fn(0) ... fn(count - 1) once.
template <typename Fn>
std::vector<Timing> time_runs_interleaved(int warmup, int iters, std::size_t count, Fn&& fn);

double now_seconds();

}  // namespace openmla::cli

#include "cli_timing.inl"
