// The plan / run / one-shot entry points every op exposes, written once: validate the args into
// the op's params, then make or run a plan keyed by the params' shape signature. No exception
// crosses the public API: allocation failures become kOutOfMemory.
#pragma once

#include <new>
#include <vector>

#include "core/check.h"
#include "dispatch/registry.h"

namespace openmla {

/// Runs `body`, turning an allocation failure anywhere in it into kOutOfMemory.
template <typename Body>
Status without_exceptions(Body&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, "out of memory");
  }
}

template <typename Params, typename Args>
using ValidateFn = Status (*)(const Args&, Params*);
template <typename Params>
using SignatureFn = std::vector<int64_t> (*)(const Params&);

template <typename Params, typename Args>
Status plan_op(Op op, ValidateFn<Params, Args> validate, SignatureFn<Params> signature,
               const Args& args, const Options& options, Plan* plan) {
  return without_exceptions([&] {
    Params p;
    OPENMLA_RETURN_IF_ERROR(validate(args, &p));
    return make_plan(op, &p, signature(p), options, plan);
  });
}

template <typename Params, typename Args>
Status run_op(Op op, ValidateFn<Params, Args> validate, SignatureFn<Params> signature,
              const Plan& plan, const Args& args) {
  return without_exceptions([&] {
    Params p;
    OPENMLA_RETURN_IF_ERROR(validate(args, &p));
    return run_plan(plan, op, &p, signature(p));
  });
}

template <typename Params, typename Args>
Status plan_and_run_op(Op op, ValidateFn<Params, Args> validate, SignatureFn<Params> signature,
                       const Args& args, const Options& options) {
  return without_exceptions([&] {
    Params p;
    OPENMLA_RETURN_IF_ERROR(validate(args, &p));
    Plan plan;
    OPENMLA_RETURN_IF_ERROR(make_plan(op, &p, signature(p), options, &plan));
    return run_plan(plan, op, &p, signature(p));
  });
}

}  // namespace openmla
