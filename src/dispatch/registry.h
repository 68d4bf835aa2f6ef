// The kernel registry: per op, an ordered list of implementations (fastest first, the reference
// last). Selection walks the list and takes the first kernel whose ISA the host (capped by
// OPENMLA_MAX_ISA) has and whose `unsupported_reason` accepts the problem. OPENMLA_KERNEL or
// Options::kernel force one by name and fail instead of falling back.
#pragma once

#include <cstddef>
#include <vector>

#include "dispatch/cpu_features.h"
#include "openmla/attention.h"

namespace openmla {

/// What a kernel gets besides its op's validated params.
struct ExecConfig {
  int num_threads = 1;
  int num_splits = 1;  ///< pieces each row's key list is cut into, merged by the combine
};

struct KernelEntry {
  const char* name;  ///< "<op>.<isa or ref>", e.g. "sparse_decode.amx"
  Op op;
  Isa isa;
  /// nullptr when the kernel handles `params` (the op's params struct), else a short reason.
  const char* (*unsupported_reason)(const void* params);
  /// Chooses the split count for `params` at `num_threads`; nullptr means 1.
  int (*choose_splits)(const void* params, int num_threads);
  Status (*run)(const void* params, const ExecConfig& config);
};

/// Kernels of one op in priority order (defined by each op's <op>_kernels.cpp).
const std::vector<const KernelEntry*>& kernels_for(Op op);

/// Picks the kernel for `params` as described above, logging per OPENMLA_VERBOSE.
Status select_kernel(Op op, const void* params, const Options& options,
                     const KernelEntry** chosen);

/// Whether `kernel` may run on this host after the OPENMLA_MAX_ISA cap.
bool kernel_runnable(const KernelEntry& kernel);

namespace detail {
struct PlanState {
  Op op;
  const KernelEntry* kernel;
  ExecConfig config;
  std::vector<int64_t> signature;  ///< shapes the plan was made for; run() must match
};
}  // namespace detail

/// Builds a plan: selects the kernel, resolves threads, asks the kernel for its split count.
Status make_plan(Op op, const void* params, std::vector<int64_t> signature, const Options& options,
                 Plan* plan);
/// Checks that `plan` belongs to `op` and was made for `signature`, then runs its kernel.
Status run_plan(const Plan& plan, Op op, const void* params,
                const std::vector<int64_t>& signature);

}  // namespace openmla
