// Engram gate API: validates EngramGateArgs into EngramGateParams, plans and runs.
#include <cmath>
#include <string>

#include "openmla/v4_blocks.h"
#include "ops/common/op_entry.h"
#include "ops/engram/engram.h"

namespace openmla {
namespace {

Status check_nonneg(float value, const char* name) {
  if (!std::isfinite(value) || value < 0.0f)
    return invalid_argument(std::string(name) + ": must be finite and >= 0, got " +
                            std::to_string(value));
  return Status::Ok();
}

Status validate(const EngramGateArgs& a, EngramGateParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.h, "h", {DType::kBF16}, 3, true));
  p->tokens = a.h.shape[0];
  p->hc = a.h.shape[1];
  p->hidden = a.h.shape[2];
  if (p->hc < 1) return invalid_argument("h: hc (shape[1]) must be at least 1");
  if (p->hidden < 1) return invalid_argument("h: hidden (shape[2]) must be at least 1");
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.kv, "kv", {DType::kBF16}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.kv, "kv", 0, p->tokens, "tokens"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.kv, "kv", 1, (p->hc + 1) * p->hidden, "(hc + 1) * hidden"));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.gate_weight, "gate_weight", {DType::kF32}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.gate_weight, "gate_weight", 0, p->hc, "hc"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.gate_weight, "gate_weight", 1, p->hidden, "hidden"));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.out, "out", {DType::kBF16}, 3, true));
  for (int d = 0; d < 3; ++d) {
    static const char* const kDims[] = {"tokens", "hc", "hidden"};
    OPENMLA_RETURN_IF_ERROR(check_dim(a.out, "out", d, a.h.shape[d], kDims[d]));
  }
  if (a.out.data == a.h.data &&
      (a.out.stride[0] != a.h.stride[0] || a.out.stride[1] != a.h.stride[1]))
    return invalid_argument("out: in-place use needs the strides of h");
  OPENMLA_RETURN_IF_ERROR(check_nonneg(a.eps, "eps"));
  OPENMLA_RETURN_IF_ERROR(check_nonneg(a.clamp_value, "clamp_value"));
  p->eps = a.eps;
  p->clamp_value = a.clamp_value;
  p->h = static_cast<const uint16_t*>(a.h.data);
  p->kv = static_cast<const uint16_t*>(a.kv.data);
  p->kv_stride = a.kv.stride[0];
  p->weight = static_cast<const float*>(a.gate_weight.data);
  p->weight_stride = a.gate_weight.stride[0];
  p->out = static_cast<uint16_t*>(a.out.data);
  for (int d = 0; d < 2; ++d) {
    p->h_stride[d] = a.h.stride[d];
    p->out_stride[d] = a.out.stride[d];
  }
  return Status::Ok();
}

std::vector<int64_t> signature(const EngramGateParams& p) { return {p.tokens, p.hc, p.hidden}; }

}  // namespace

float engram_gate_value_f32(float d, float clamp_value) {
  const float s = std::copysign(std::sqrt(std::fmax(std::fabs(d), clamp_value)), d);
  return 1.0f / (1.0f + std::exp(-s));
}

Status plan_engram_gate(const EngramGateArgs& args, const Options& options, Plan* plan) {
  return plan_op<EngramGateParams>(Op::kEngramGate, validate, signature, args, options, plan);
}
Status run_engram_gate(const Plan& plan, const EngramGateArgs& args) {
  return run_op<EngramGateParams>(Op::kEngramGate, validate, signature, plan, args);
}
Status engram_gate(const EngramGateArgs& args, const Options& options) {
  return plan_and_run_op<EngramGateParams>(Op::kEngramGate, validate, signature, args, options);
}

}  // namespace openmla
