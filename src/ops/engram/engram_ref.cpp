// Reference Engram gate: the oracle and last-resort kernel.
// Algorithm: per (token, stream), the two mean squares and the weighted dot product over hidden in
// double, d = dot * rstd(h) * rstd(K) / sqrt(hidden), g = sigmoid(copysign(sqrt(max(|d|,
// clamp)), d)), out = h + g V rounded once to bf16 (the HF DeepSeek-V4.1 `_engram_gate`).
// Invariants: one task per token; out may alias h (each row is read fully before it is written).
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "ops/engram/engram.h"

namespace openmla {
namespace {

void ref_gate_stream(const EngramGateParams& p, int64_t t, int64_t i) {
  const uint16_t* h = p.h + t * p.h_stride[0] + i * p.h_stride[1];
  const uint16_t* key = p.kv + t * p.kv_stride + i * p.hidden;
  const uint16_t* value = p.kv + t * p.kv_stride + p.hc * p.hidden;
  const float* w = p.weight + i * p.weight_stride;
  double hh = 0.0, kk = 0.0, dot = 0.0;
  for (int64_t c = 0; c < p.hidden; ++c) {
    const double hv = bf16_to_float(h[c]), kv = bf16_to_float(key[c]);
    hh += hv * hv;
    kk += kv * kv;
    dot += hv * w[c] * kv;
  }
  const double n = static_cast<double>(p.hidden);
  const double d = dot / std::sqrt(hh / n + p.eps) / std::sqrt(kk / n + p.eps) / std::sqrt(n);
  const double s = std::copysign(std::sqrt(std::fmax(std::fabs(d), p.clamp_value)), d);
  const double g = 1.0 / (1.0 + std::exp(-s));
  std::vector<uint16_t> row(p.hidden);
  for (int64_t c = 0; c < p.hidden; ++c)
    row[c] = float_to_bf16(static_cast<float>(bf16_to_float(h[c]) + g * bf16_to_float(value[c])));
  uint16_t* out = p.out + t * p.out_stride[0] + i * p.out_stride[1];
  for (int64_t c = 0; c < p.hidden; ++c) out[c] = row[c];
}

const char* ref_unsupported(const void*) { return nullptr; }

Status ref_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const EngramGateParams*>(params);
  parallel_for(p.tokens, config.num_threads, [&](int64_t t, int) {
    for (int64_t i = 0; i < p.hc; ++i) ref_gate_stream(p, t, i);
  });
  return Status::Ok();
}

}  // namespace

const KernelEntry kEngramGateRef = {"engram_gate.ref", Op::kEngramGate, Isa::kNone,
                                    ref_unsupported,   nullptr,         ref_run};

}  // namespace openmla
