// Reference KV compressor: the oracle and last-resort kernel, in double.
// Algorithm (DeepSeek V4 `inference/model.py` class Compressor, decode branch): for each emitting
// token gather its window's state rows (CSA: slots 0..ratio-1 give channels [0, 512) of a and z,
// slots ratio.. give channels [512, 1024); -1 slots have weight 0), per channel an exact softmax
// of z over the window and the weighted sum of a; round to bf16; RMSNorm with the weight, round to
// bf16; rotate the 32 interleaved RoPE pairs by the table's fp32 cos/sin at position k * ratio,
// round to bf16; indexer keys (head_dim 128): the normalised Walsh-Hadamard transform in double;
// round to bf16; store into the entry's slot (FlashMLA's MODEL1 quantiser, indexer_write_keys or
// bf16 verbatim).
// Invariants: only validated rows are read; each entry is written by the task of its token.
#include <cmath>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "ops/compressor/compressor.h"

namespace openmla {
namespace {

void ref_pool(const CompressorParams& p, int64_t t, double* pooled) {
  const int64_t width = p.state.width;
  for (int64_t j = 0; j < p.head_dim; ++j) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t w = 0; w < p.window; ++w) {
      const int64_t s = p.gather_slots.at(t, w);
      if (s >= 0) m = std::fmax(m, p.state.row(s)[width + window_channel_offset(p, w) + j]);
    }
    double num = 0.0, den = 0.0;
    for (int64_t w = 0; w < p.window; ++w) {
      const int64_t s = p.gather_slots.at(t, w);
      if (s < 0) continue;
      const float* r = p.state.row(s) + window_channel_offset(p, w) + j;
      const double e = std::exp(static_cast<double>(r[width]) - m);
      den += e;
      num += e * r[0];
    }
    pooled[j] = num / den;
  }
}

void ref_row(const CompressorParams& p, int64_t t) {
  const int64_t d = p.head_dim, nope = d - kCompressorRopeDim;
  std::vector<double> x(static_cast<size_t>(d));
  ref_pool(p, t, x.data());
  double sum_sq = 0.0;
  for (double& v : x) {
    v = round_to_bf16(static_cast<float>(v));
    sum_sq += v * v;
  }
  const double r = 1.0 / std::sqrt(sum_sq / static_cast<double>(d) + p.eps);
  for (int64_t j = 0; j < d; ++j)
    x[j] = round_to_bf16(static_cast<float>(p.norm_weight[j * p.norm_weight_stride] * x[j] * r));
  const float* cs = p.cos_sin + (p.positions.at(t) + 1 - p.ratio) * p.cos_sin_stride;
  constexpr int64_t kPairs = kCompressorRopeDim / 2;
  for (int64_t i = 0; i < kPairs; ++i) {
    const double a = x[nope + 2 * i], b = x[nope + 2 * i + 1], c = cs[i], s = cs[kPairs + i];
    x[nope + 2 * i] = round_to_bf16(static_cast<float>(a * c - b * s));
    x[nope + 2 * i + 1] = round_to_bf16(static_cast<float>(a * s + b * c));
  }
  if (p.hadamard) {
    walsh_hadamard(x.data(), d);
    for (double& v : x) v /= std::sqrt(static_cast<double>(d));
  }
  std::vector<uint16_t> latent(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) latent[j] = float_to_bf16(static_cast<float>(x[j]));
  compressor_store_latent(p, p.kv_slots.at(t), latent.data());
}

const char* ref_unsupported(const void*) { return nullptr; }

Status ref_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const CompressorParams*>(params);
  parallel_for(static_cast<int64_t>(p.rows.size()), config.num_threads,
               [&](int64_t i, int) { ref_row(p, p.rows[static_cast<size_t>(i)]); });
  return Status::Ok();
}

}  // namespace

const KernelEntry kCompressorRef = {"compressor.ref", Op::kCompressor, Isa::kNone,
                                    ref_unsupported,  nullptr,         ref_run};

}  // namespace openmla
