// Reference mHC (hc_pre, hc_head, hc_post): the oracle and last-resort kernels.
// Algorithm: per token, the flattened streams v (bf16-exact values) give the mean square and the
// projection in double; gates, Sinkhorn and the stream sums are evaluated in double exactly as
// vLLM's mhc_pre_torch / mhc_post_torch and DeepSeek V4's hc_pre / hc_post / hc_head write them,
// and each output is rounded once to bf16 (post and comb to fp32).
// Invariants: one task per token, so the result does not depend on the thread count.
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "ops/mhc/mhc.h"

namespace openmla {
namespace {

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

/// mix[r] = (fn[r] . v) / sqrt(mean(v^2) + rms_eps) over the flattened streams of token t.
void ref_mix(const MhcMixParams& p, int64_t t, std::vector<double>* mix) {
  const int64_t k_total = p.hc * p.hidden;
  std::vector<double> v(k_total);
  double sumsq = 0.0;
  for (int64_t j = 0; j < p.hc; ++j) {
    const uint16_t* row = p.x + t * p.x_stride[0] + j * p.x_stride[1];
    for (int64_t c = 0; c < p.hidden; ++c) {
      v[j * p.hidden + c] = bf16_to_float(row[c]);
      sumsq += v[j * p.hidden + c] * v[j * p.hidden + c];
    }
  }
  const double r = 1.0 / std::sqrt(sumsq / static_cast<double>(k_total) + p.rms_eps);
  mix->assign(p.rows, 0.0);
  for (int64_t r_i = 0; r_i < p.rows; ++r_i) {
    const float* f = p.fn + r_i * p.fn_stride;
    double acc = 0.0;
    for (int64_t k = 0; k < k_total; ++k) acc += static_cast<double>(f[k]) * v[k];
    (*mix)[r_i] = acc * r;
  }
}

/// Row softmax + eps, column step, then iters - 1 (row, column) steps; row-major hc x hc.
void ref_sinkhorn(const MhcMixParams& p, const double* logits, double* m) {
  const int64_t n = p.hc;
  const double eps = p.hc_eps;
  for (int64_t j = 0; j < n; ++j) {
    double mx = logits[j * n];
    for (int64_t k = 1; k < n; ++k) mx = std::fmax(mx, logits[j * n + k]);
    double sum = 0.0;
    for (int64_t k = 0; k < n; ++k) sum += std::exp(logits[j * n + k] - mx);
    for (int64_t k = 0; k < n; ++k) m[j * n + k] = std::exp(logits[j * n + k] - mx) / sum + eps;
  }
  for (int64_t it = 0; it < p.sinkhorn_iters; ++it) {
    if (it > 0) {
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0.0;
        for (int64_t k = 0; k < n; ++k) sum += m[j * n + k];
        for (int64_t k = 0; k < n; ++k) m[j * n + k] /= sum + eps;
      }
    }
    for (int64_t k = 0; k < n; ++k) {
      double sum = 0.0;
      for (int64_t j = 0; j < n; ++j) sum += m[j * n + k];
      for (int64_t j = 0; j < n; ++j) m[j * n + k] /= sum + eps;
    }
  }
}

void ref_mix_token(const MhcMixParams& p, int64_t t) {
  std::vector<double> mix;
  ref_mix(p, t, &mix);
  const int64_t n = p.hc;
  std::vector<double> pre(n);
  for (int64_t j = 0; j < n; ++j) pre[j] = sigmoid(mix[j] * p.scale[0] + p.base[j]) + p.hc_eps;
  if (!p.head) {
    for (int64_t j = 0; j < n; ++j)
      p.post[t * p.post_stride[0] + j * p.post_stride[1]] =
          static_cast<float>(2.0 * sigmoid(mix[n + j] * p.scale[1] + p.base[n + j]));
    std::vector<double> logits(n * n), comb(n * n);
    for (int64_t i = 0; i < n * n; ++i) logits[i] = mix[2 * n + i] * p.scale[2] + p.base[2 * n + i];
    ref_sinkhorn(p, logits.data(), comb.data());
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < n; ++k)
        p.comb[t * p.comb_stride[0] + j * p.comb_stride[1] + k * p.comb_stride[2]] =
            static_cast<float>(comb[j * n + k]);
  }
  for (int64_t c = 0; c < p.hidden; ++c) {
    double acc = 0.0;
    for (int64_t j = 0; j < n; ++j)
      acc += pre[j] * bf16_to_float(p.x[t * p.x_stride[0] + j * p.x_stride[1] + c]);
    p.y[t * p.y_stride + c] = float_to_bf16(static_cast<float>(acc));
  }
}

void ref_post_token(const MhcPostParams& p, int64_t t) {
  for (int64_t k = 0; k < p.hc; ++k) {
    const double post = p.post[t * p.post_stride[0] + k * p.post_stride[1]];
    uint16_t* out = p.out + t * p.out_stride[0] + k * p.out_stride[1];
    for (int64_t c = 0; c < p.hidden; ++c) {
      double acc = post * bf16_to_float(p.x[t * p.x_stride + c]);
      for (int64_t j = 0; j < p.hc; ++j)
        acc += static_cast<double>(
                   p.comb[t * p.comb_stride[0] + j * p.comb_stride[1] + k * p.comb_stride[2]]) *
               bf16_to_float(p.residual[t * p.residual_stride[0] + j * p.residual_stride[1] + c]);
      out[c] = float_to_bf16(static_cast<float>(acc));
    }
  }
}

const char* ref_unsupported(const void*) { return nullptr; }

Status ref_mix_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const MhcMixParams*>(params);
  parallel_for(p.tokens, config.num_threads, [&](int64_t t, int) { ref_mix_token(p, t); });
  return Status::Ok();
}

Status ref_post_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const MhcPostParams*>(params);
  parallel_for(p.tokens, config.num_threads, [&](int64_t t, int) { ref_post_token(p, t); });
  return Status::Ok();
}

}  // namespace

const KernelEntry kMhcPreRef = {"mhc_pre.ref",   Op::kMhcPre, Isa::kNone,
                                ref_unsupported, nullptr,     ref_mix_run};
const KernelEntry kMhcHeadRef = {"mhc_head.ref",  Op::kMhcHead, Isa::kNone,
                                 ref_unsupported, nullptr,      ref_mix_run};
const KernelEntry kMhcPostRef = {"mhc_post.ref",  Op::kMhcPost, Isa::kNone,
                                 ref_unsupported, nullptr,      ref_post_run};

}  // namespace openmla
