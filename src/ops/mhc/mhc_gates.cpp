// The per-token gate math of the fast mHC kernels, in fp32 (plain C++, no ISA flags, so every
// kernel width shares these bits): pre = sigmoid + eps, post = 2 sigmoid, and the Sinkhorn
// normalisation of the comb logits in the reference's order (mhc_ref.cpp has the double version).
#include <cmath>

#include "ops/mhc/mhc.h"

namespace openmla {
namespace {

float sigmoid_f32(float z) { return 1.0f / (1.0f + std::exp(-z)); }

void sinkhorn_f32(int64_t n, int64_t iters, float eps, float* m) {
  for (int64_t j = 0; j < n; ++j) {
    float* row = m + j * n;
    float mx = row[0];
    for (int64_t k = 1; k < n; ++k) mx = std::fmax(mx, row[k]);
    float sum = 0.0f;
    for (int64_t k = 0; k < n; ++k) sum += (row[k] = std::exp(row[k] - mx));
    for (int64_t k = 0; k < n; ++k) row[k] = row[k] / sum + eps;
  }
  for (int64_t it = 0; it < iters; ++it) {
    if (it > 0) {
      for (int64_t j = 0; j < n; ++j) {
        float sum = 0.0f;
        for (int64_t k = 0; k < n; ++k) sum += m[j * n + k];
        const float inv = 1.0f / (sum + eps);
        for (int64_t k = 0; k < n; ++k) m[j * n + k] *= inv;
      }
    }
    for (int64_t k = 0; k < n; ++k) {
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) sum += m[j * n + k];
      const float inv = 1.0f / (sum + eps);
      for (int64_t j = 0; j < n; ++j) m[j * n + k] *= inv;
    }
  }
}

}  // namespace

void mhc_gates_f32(const MhcMixParams& p, const float* mix, float* pre, float* post, float* comb) {
  const int64_t n = p.hc;
  for (int64_t j = 0; j < n; ++j) pre[j] = sigmoid_f32(mix[j] * p.scale[0] + p.base[j]) + p.hc_eps;
  if (p.head) return;
  for (int64_t j = 0; j < n; ++j)
    post[j] = 2.0f * sigmoid_f32(mix[n + j] * p.scale[1] + p.base[n + j]);
  for (int64_t i = 0; i < n * n; ++i) comb[i] = mix[2 * n + i] * p.scale[2] + p.base[2 * n + i];
  sinkhorn_f32(n, p.sinkhorn_iters, p.hc_eps, comb);
}

}  // namespace openmla
