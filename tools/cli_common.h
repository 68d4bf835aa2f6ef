// Shared pieces of the `openmla` CLI: a small flag parser, running a generated case with a given
// kernel, comparing against the reference, and timing.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cases.h"
#include "compare.h"

namespace openmla::cli {

/// `--name value` and `--flag` arguments after the subcommand.
class Flags {
 public:
  Flags(int argc, char** argv, int first);
  bool has(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }
  /// Flags that were given but never read: reported as errors by the subcommands.
  std::vector<std::string> unknown() const;

 private:
  std::map<std::string, std::string> values_;
  mutable std::map<std::string, bool> read_;
  std::vector<std::string> positional_;
};

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
