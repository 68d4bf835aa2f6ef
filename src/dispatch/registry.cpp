#include "dispatch/registry.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "core/check.h"
#include "core/log.h"
#include "core/thread_pool.h"

namespace openmla {

bool kernel_runnable(const KernelEntry& kernel) { return kernel.isa <= effective_isa(); }

namespace {

const char* forced_kernel_name(Op op, const Options& options) {
  if (options.kernel && options.kernel[0]) return options.kernel;
  const char* env = std::getenv("OPENMLA_KERNEL");
  if (!env || !env[0]) return nullptr;
  // OPENMLA_KERNEL may list one kernel per op, comma-separated; take the one for this op.
  static thread_local std::string picked;
  const std::string prefix = std::string(op_name(op)) + ".";
  std::string list(env);
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t end = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, end - start);
    if (item.compare(0, prefix.size(), prefix) == 0) {
      picked = item;
      return picked.c_str();
    }
    start = end + 1;
  }
  return nullptr;
}

std::string why_not(const KernelEntry& kernel, const void* params) {
  if (!kernel_runnable(kernel)) {
    return std::string("needs ") + isa_name(kernel.isa) + ", host offers " +
           isa_name(effective_isa()) + (host_isa() != effective_isa() ? " (OPENMLA_MAX_ISA)" : "");
  }
  if (const char* reason = kernel.unsupported_reason(params)) return reason;
  return "";
}

}  // namespace

Status select_kernel(Op op, const void* params, const Options& options,
                     const KernelEntry** chosen) {
  const std::vector<const KernelEntry*>& list = kernels_for(op);
  if (const char* forced = forced_kernel_name(op, options)) {
    for (const KernelEntry* k : list) {
      if (std::strcmp(k->name, forced) != 0) continue;
      const std::string reason = why_not(*k, params);
      if (!reason.empty()) return unsupported(std::string("kernel ") + forced + ": " + reason);
      *chosen = k;
      if (verbose_level() >= 1)
        log_message(std::string(op_name(op)) + " -> " + k->name + " (forced)");
      return Status::Ok();
    }
    return invalid_argument(std::string("kernel ") + forced + " is not a registered " +
                            op_name(op) + " kernel (see `openmla info`)");
  }
  std::string rejected, declined;  // declined: the host could run it, the problem does not fit
  for (const KernelEntry* k : list) {
    const std::string reason = why_not(*k, params);
    if (reason.empty()) {
      *chosen = k;
      if (verbose_level() >= 2 && !rejected.empty()) log_message("rejected:" + rejected);
      if (verbose_level() >= 1) {
        std::string line = std::string(op_name(op)) + " -> " + k->name;
        if (k->isa == Isa::kNone && effective_isa() != Isa::kNone)
          line += " (reference kernel: no optimised kernel accepts this problem)";
        if (verbose_level() == 1 && !declined.empty()) line += " (declined:" + declined + ")";
        log_message(line);
      }
      return Status::Ok();
    }
    rejected += std::string(" ") + k->name + " (" + reason + ")";
    if (kernel_runnable(*k)) declined += std::string(" ") + k->name + ": " + reason;
  }
  return unsupported(std::string("no ") + op_name(op) + " kernel accepts this problem:" + rejected);
}

Status make_plan(Op op, const void* params, std::vector<int64_t> signature, const Options& options,
                 Plan* plan) {
  if (plan == nullptr) return invalid_argument("plan: output pointer is null");
  const KernelEntry* kernel = nullptr;
  OPENMLA_RETURN_IF_ERROR(select_kernel(op, params, options, &kernel));
  auto state = std::make_shared<detail::PlanState>();
  state->op = op;
  state->kernel = kernel;
  state->config.num_threads = resolve_num_threads(options.num_threads);
  state->config.num_splits =
      kernel->choose_splits ? kernel->choose_splits(params, state->config.num_threads) : 1;
  state->signature = std::move(signature);
  plan->state_ = std::move(state);
  return Status::Ok();
}

Status run_plan(const Plan& plan, Op op, const void* params,
                const std::vector<int64_t>& signature) {
  if (!plan.valid()) return invalid_argument("plan: not initialised (call plan_* first)");
  const detail::PlanState& state = *plan.state_;
  if (state.op != op) {
    return invalid_argument(std::string("plan: made for ") + op_name(state.op) + ", used for " +
                            op_name(op));
  }
  if (state.signature != signature) {
    return invalid_argument("plan: the arguments' shapes differ from those the plan was made for");
  }
  if (const char* reason = state.kernel->unsupported_reason(params)) {
    return unsupported(std::string("kernel ") + state.kernel->name + ": " + reason);
  }
  try {
    return state.kernel->run(params, state.config);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory,
                  std::string("kernel ") + state.kernel->name + ": out of memory for scratch");
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal,
                  std::string("kernel ") + state.kernel->name + ": " + e.what());
  }
}

}  // namespace openmla

namespace openmla {

Op Plan::op() const { return state_ ? state_->op : Op::kSparseDecode; }
const char* Plan::kernel_name() const { return state_ ? state_->kernel->name : ""; }
int Plan::num_threads() const { return state_ ? state_->config.num_threads : 0; }
int Plan::num_splits() const { return state_ ? state_->config.num_splits : 0; }

std::size_t list_kernels(KernelInfo* out, std::size_t capacity) {
  std::size_t n = 0;
  for (Op op : {Op::kSparseDecode, Op::kDenseDecode, Op::kSparsePrefill, Op::kMqaLogits,
                Op::kPagedMqaLogits, Op::kPagedIndexerTopk, Op::kCompressor, Op::kMhcPre,
                Op::kMhcPost, Op::kMhcHead, Op::kEngramGate}) {
    for (const KernelEntry* k : kernels_for(op)) {
      if (out && n < capacity) out[n] = {k->name, k->op, isa_name(k->isa), kernel_runnable(*k)};
      ++n;
    }
  }
  return n;
}

}  // namespace openmla
