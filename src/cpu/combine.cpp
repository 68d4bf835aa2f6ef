#include "cpu/combine.h"

#include <cmath>
#include <limits>

#include "core/dtype.h"
#include "cpu/combine_loops.h"
#include "dispatch/cpu_features.h"

namespace openmla {
namespace {

void scale_portable(float w, const float* o, int64_t n, float* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] = w * o[i];
}

void add_scaled_portable(float w, const float* o, int64_t n, float* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += w * o[i];
}

void round_portable(const float* acc, int64_t n, DType dtype, uint16_t* out) {
  if (dtype == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_fp16(acc[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(acc[i]);
  }
}

constexpr CombineLoops kPortableLoops = {scale_portable, add_scaled_portable, round_portable};

}  // namespace

const CombineLoops& combine_loops_portable() { return kPortableLoops; }

const CombineLoops& combine_loops() {
  static const CombineLoops& loops =
      host_isa() >= Isa::kAvx512 ? combine_loops_avx512() : combine_loops_portable();
  return loops;
}

void combine_partials(int64_t pieces, const float* partial_out, int64_t out_stride,
                      const float* partial_lse, int64_t lse_stride, int64_t dim, const float* sink,
                      uint16_t* out, float* lse_out, DType out_dtype) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  double mx = -kInf;
  for (int64_t k = 0; k < pieces; ++k) mx = std::fmax(mx, partial_lse[k * lse_stride]);
  if (mx == -kInf) mx = 0.0;
  double sum = 0.0;
  for (int64_t k = 0; k < pieces; ++k) sum += std::exp(partial_lse[k * lse_stride] - mx);
  const double g = sum > 0.0 ? std::log(sum) + mx : kInf;
  *lse_out = static_cast<float>(g);
  double g_sink = g;
  if (sink != nullptr && g != kInf) {
    const double x = static_cast<double>(*sink) - g;
    g_sink = x > 0.0 ? static_cast<double>(*sink) + std::log1p(std::exp(-x))  // exact for +inf
                     : g + std::log1p(std::exp(x));
  }
  if (g == kInf || g_sink == kInf) {  // lonely row or sink = +inf: out is exactly 0
    for (int64_t i = 0; i < dim; ++i) out[i] = 0;
    return;
  }
  // Single piece without a sink: weight exactly 1.
  float acc_first_weight = static_cast<float>(std::exp(partial_lse[0] - g_sink));
  if (pieces == 1 && sink == nullptr) acc_first_weight = 1.0f;
  const CombineLoops& loops = combine_loops();
  alignas(64) float acc[512];
  const int64_t chunk = 512;
  for (int64_t base = 0; base < dim; base += chunk) {
    const int64_t n = dim - base < chunk ? dim - base : chunk;
    loops.scale(acc_first_weight, partial_out + base, n, acc);
    for (int64_t k = 1; k < pieces; ++k) {
      const float w = static_cast<float>(std::exp(partial_lse[k * lse_stride] - g_sink));
      if (w == 0.0f) continue;
      loops.add_scaled(w, partial_out + k * out_stride + base, n, acc);
    }
    loops.round(acc, n, out_dtype, out + base);
  }
}

}  // namespace openmla
