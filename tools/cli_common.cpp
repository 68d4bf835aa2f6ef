#include "cli_common.h"

#include <chrono>

#include "core/check.h"
#include "dispatch/registry.h"

namespace openmla::cli {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

namespace {

/// Options for one run: `kernel` "" lets the registry choose (the string must outlive them).
Options make_options(const std::string& kernel, int threads) {
  Options options;
  options.num_threads = threads;
  options.kernel = kernel.empty() ? nullptr : kernel.c_str();
  return options;
}

template <typename Args, typename Fn>
RunResult run_with(Args args, bool prefill, const std::string& kernel, int threads, Fn&& op) {
  testing::Outputs o = testing::bind_outputs(&args, false);
  const Options options = make_options(kernel, threads);
  Plan plan;
  RunResult r;
  r.status = op(args, options, &plan);
  r.kernel = plan.valid() ? plan.kernel_name() : kernel;
  if (!r.status.ok()) return r;
  r.out = testing::to_float_vector(o.out.view);
  r.lse = testing::to_float_vector(o.lse.view);
  if (prefill) r.max_logits = testing::to_float_vector(o.max_logits.view);
  return r;
}

}  // namespace

RunResult run_case(const testing::SparseDecodeCase& c, const std::string& kernel, int threads) {
  return run_with(c.args(), false, kernel, threads,
                  [](const SparseDecodeArgs& a, const Options& o, Plan* p) {
                    Status s = plan_sparse_decode(a, o, p);
                    return s.ok() ? run_sparse_decode(*p, a) : s;
                  });
}

RunResult run_case(const testing::DenseDecodeCase& c, const std::string& kernel, int threads) {
  return run_with(c.args(), false, kernel, threads,
                  [](const DenseDecodeArgs& a, const Options& o, Plan* p) {
                    Status s = plan_dense_decode(a, o, p);
                    return s.ok() ? run_dense_decode(*p, a) : s;
                  });
}

RunResult run_case(const testing::SparsePrefillCase& c, const std::string& kernel, int threads) {
  return run_with(c.args(), true, kernel, threads,
                  [](const SparsePrefillArgs& a, const Options& o, Plan* p) {
                    Status s = plan_sparse_prefill(a, o, p);
                    return s.ok() ? run_sparse_prefill(*p, a) : s;
                  });
}

namespace {

template <typename Case, typename PlanFn, typename RunFn>
Status time_layers(const std::vector<const Case*>& layers, const std::vector<std::string>& kernels,
                   int threads, int warmup, int iters, PlanFn&& plan_fn, RunFn&& run_fn,
                   std::vector<std::string>* kernel_out, std::vector<Timing>* timing,
                   const std::function<void()>& probe) {
  using Args = decltype(layers[0]->args());
  std::vector<Args> args;
  std::vector<testing::Outputs> outputs;
  args.reserve(layers.size());
  outputs.reserve(layers.size());
  for (const Case* c : layers) {
    args.push_back(c->args());
    outputs.push_back(testing::bind_outputs(&args.back(), false));
  }
  std::vector<Plan> plans(kernels.size());
  kernel_out->clear();
  for (std::size_t k = 0; k < kernels.size(); ++k) {
    OPENMLA_RETURN_IF_ERROR(plan_fn(args[0], make_options(kernels[k], threads), &plans[k]));
    kernel_out->push_back(plans[k].kernel_name());
  }
  Status status;
  std::vector<std::size_t> calls(kernels.size(), 0);
  const std::size_t slots = plans.size() + (probe ? 1 : 0);
  *timing = time_runs_interleaved(warmup, iters, slots, [&](std::size_t k) {
    if (k == plans.size()) {
      probe();
      return;
    }
    const Status s = run_fn(plans[k], args[calls[k]++ % args.size()]);
    if (!s.ok()) status = s;
  });
  return status;
}

}  // namespace

Status time_case(const std::vector<const testing::SparseDecodeCase*>& layers,
                 const std::vector<std::string>& kernels, int threads, int warmup, int iters,
                 std::vector<std::string>* kernel_out, std::vector<Timing>* timing,
                 const std::function<void()>& probe) {
  return time_layers(layers, kernels, threads, warmup, iters, plan_sparse_decode, run_sparse_decode,
                     kernel_out, timing, probe);
}

Status time_case(const std::vector<const testing::DenseDecodeCase*>& layers,
                 const std::vector<std::string>& kernels, int threads, int warmup, int iters,
                 std::vector<std::string>* kernel_out, std::vector<Timing>* timing,
                 const std::function<void()>& probe) {
  return time_layers(layers, kernels, threads, warmup, iters, plan_dense_decode, run_dense_decode,
                     kernel_out, timing, probe);
}

Status time_case(const std::vector<const testing::SparsePrefillCase*>& layers,
                 const std::vector<std::string>& kernels, int threads, int warmup, int iters,
                 std::vector<std::string>* kernel_out, std::vector<Timing>* timing,
                 const std::function<void()>& probe) {
  return time_layers(layers, kernels, threads, warmup, iters, plan_sparse_prefill,
                     run_sparse_prefill, kernel_out, timing, probe);
}

namespace {

void merge(CheckResult* into, const testing::CompareResult& r, const char* what) {
  into->max_abs_err = std::max(into->max_abs_err, r.max_abs_err);
  if (!r.ok && into->ok) {
    into->ok = false;
    into->message = std::string(what) + ": " + r.message;
  }
}

CheckResult check_status(const RunResult& answer, const RunResult& reference) {
  CheckResult c;
  if (!answer.status.ok()) c.message = "kernel failed: " + answer.status.to_string();
  if (!reference.status.ok()) c.message = "reference failed: " + reference.status.to_string();
  c.ok = c.message.empty();
  return c;
}

}  // namespace

CheckResult check_decode(const RunResult& answer, const RunResult& reference,
                         const testing::Tolerance& out_tol) {
  CheckResult c = check_status(answer, reference);
  if (!c.ok) return c;
  merge(&c, testing::compare(answer.out, reference.out, out_tol), "out");
  merge(&c, testing::compare(answer.lse, reference.lse, testing::kDecodeLse), "lse");
  return c;
}

CheckResult check_prefill(const RunResult& answer, const RunResult& reference) {
  CheckResult c = check_status(answer, reference);
  if (!c.ok) return c;
  merge(&c, testing::compare(answer.out, reference.out, testing::kPrefillOut), "out");
  merge(&c, testing::compare(answer.lse, reference.lse, testing::kPrefillLogits), "lse");
  merge(&c, testing::compare(answer.max_logits, reference.max_logits, testing::kPrefillLogits),
        "max_logits");
  return c;
}

std::vector<std::string> runnable_kernels(Op op) {
  std::vector<std::string> names;
  for (const KernelEntry* k : kernels_for(op))
    if (kernel_runnable(*k)) names.push_back(k->name);
  return names;
}

}  // namespace openmla::cli
