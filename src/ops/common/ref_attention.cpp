#include "ops/common/ref_attention.h"

#include <cmath>
#include <limits>

#include "core/dtype.h"

namespace openmla {

namespace {

double dot(const float* a, const float* b, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) acc[j] += static_cast<double>(a[i + j]) * b[i + j];
  for (; i < n; ++i) acc[0] += static_cast<double>(a[i]) * b[i];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

}  // namespace

RefRowResult ref_attend_row(const float* q, const float* keys, int64_t num_keys, int64_t head_dim,
                            int64_t head_dim_v, double scale, double* out) {
  for (int64_t i = 0; i < head_dim_v; ++i) out[i] = 0.0;
  if (num_keys == 0) {
    return {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()};
  }
  std::vector<double> scores(num_keys);
  double max_score = -std::numeric_limits<double>::infinity();
  for (int64_t t = 0; t < num_keys; ++t) {
    scores[t] = scale * dot(q, keys + t * head_dim, head_dim);
    max_score = std::fmax(max_score, scores[t]);
  }
  double sum = 0.0;
  for (int64_t t = 0; t < num_keys; ++t) {
    const double p = std::exp(scores[t] - max_score);
    sum += p;
    const float* v = keys + t * head_dim;
    for (int64_t i = 0; i < head_dim_v; ++i) out[i] += p * v[i];
  }
  for (int64_t i = 0; i < head_dim_v; ++i) out[i] /= sum;
  return {max_score + std::log(sum), max_score};
}

void ref_apply_sink(double* out, int64_t head_dim_v, double lse, float sink) {
  if (std::isinf(lse) && lse > 0) return;
  const double factor = 1.0 / (1.0 + std::exp(static_cast<double>(sink) - lse));
  for (int64_t i = 0; i < head_dim_v; ++i) out[i] *= factor;
}

void ref_store16(uint16_t* dst, const double* src, int64_t n, DType dtype) {
  if (dtype == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_fp16(static_cast<float>(src[i]));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(static_cast<float>(src[i]));
  }
}

void row16_to_float(const uint16_t* src, int64_t n, DType dtype, float* dst) {
  if (dtype == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_float(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
  }
}

}  // namespace openmla
