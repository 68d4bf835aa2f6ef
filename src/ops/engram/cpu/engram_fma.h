// Engram gate fast kernel, written once over the width-generic fp32 vector layer (cpu/fma_vec.h)
// and instantiated by engram_avx2.cpp (8 lanes) and engram_avx512.cpp (16 lanes).
// Algorithm, per (token, stream i): one pass over hidden keeps three vector accumulators,
// sum h^2, sum K^2 and sum h w K (h and K bf16, w fp32); the gate is computed once in fp32
// (engram_gate_value_f32); a second pass writes out = h + g V (bf16, round to nearest even).
// Layout: h / out [tokens, hc, hidden], kv [tokens, (hc + 1) * hidden] (keys then the value),
// hidden contiguous everywhere. Tasks are tokens; each (token, stream) is reduced in a fixed
// order, so the result is bitwise thread-invariant. out may be h: pass 2 reads h[c] just before
// writing out[c] and nothing after it.
#pragma once

#include <cmath>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "cpu/fma_vec_ops.h"
#include "ops/engram/engram.h"

namespace openmla {
namespace {

struct GateSums {
  float hh, kk, dot;
};

inline GateSums gate_sums(const uint16_t* h, const uint16_t* key, const float* w, int64_t n) {
  FmaVec hh = fv_zero(), kk = fv_zero(), dot = fv_zero();
  const int64_t vec_end = n - n % kFmaLanes;
  for (int64_t c = 0; c < vec_end; c += kFmaLanes) {
    const FmaVec hv = fv_load_bf16(h + c), kv = fv_load_bf16(key + c);
    hh = fv_fma(hv, hv, hh);
    kk = fv_fma(kv, kv, kk);
    dot = fv_fma(fv_mul(hv, fv_load(w + c)), kv, dot);
  }
  GateSums s{fv_hsum(hh), fv_hsum(kk), fv_hsum(dot)};
  for (int64_t c = vec_end; c < n; ++c) {
    const float hv = bf16_to_float(h[c]), kv = bf16_to_float(key[c]);
    s.hh = std::fma(hv, hv, s.hh);
    s.kk = std::fma(kv, kv, s.kk);
    s.dot = std::fma(hv * w[c], kv, s.dot);
  }
  return s;
}

inline void gate_apply(const uint16_t* h, const uint16_t* value, float g, int64_t n,
                       uint16_t* out) {
  const FmaVec gv = fv_set1(g);
  const int64_t vec_end = n - n % kFmaLanes;
  for (int64_t c = 0; c < vec_end; c += kFmaLanes)
    fv_store_bf16(out + c, fv_fma(gv, fv_load_bf16(value + c), fv_load_bf16(h + c)));
  for (int64_t c = vec_end; c < n; ++c)
    out[c] = float_to_bf16(std::fma(g, bf16_to_float(value[c]), bf16_to_float(h[c])));
}

inline void gate_token(const EngramGateParams& p, int64_t t) {
  const float n = static_cast<float>(p.hidden);
  const uint16_t* value = p.kv + t * p.kv_stride + p.hc * p.hidden;
  for (int64_t i = 0; i < p.hc; ++i) {
    const uint16_t* h = p.h + t * p.h_stride[0] + i * p.h_stride[1];
    const GateSums s = gate_sums(h, p.kv + t * p.kv_stride + i * p.hidden,
                                 p.weight + i * p.weight_stride, p.hidden);
    const float rstd = 1.0f / std::sqrt(s.hh / n + p.eps) / std::sqrt(s.kk / n + p.eps);
    const float d = s.dot * rstd / std::sqrt(n);
    gate_apply(h, value, engram_gate_value_f32(d, p.clamp_value), p.hidden,
               p.out + t * p.out_stride[0] + i * p.out_stride[1]);
  }
}

const char* engram_fma_unsupported(const void*) { return nullptr; }

Status engram_gate_fma_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const EngramGateParams*>(params);
  parallel_for(p.tokens, config.num_threads, [&](int64_t t, int) { gate_token(p, t); });
  return Status::Ok();
}

}  // namespace
}  // namespace openmla
