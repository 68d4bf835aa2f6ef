#include "v4_block_cases.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "tensors.h"

namespace openmla::testing {
namespace {

std::vector<uint16_t> bf16_normal(Rng& rng, int64_t n) {
  std::vector<uint16_t> v(static_cast<size_t>(std::max<int64_t>(n, 1)));
  for (uint16_t& h : v) h = float_to_bf16(std::clamp(rng.normal(), -4.0f, 4.0f));
  return v;
}

std::vector<float> f32_normal(Rng& rng, int64_t n, double mean, double sd) {
  std::vector<float> v(static_cast<size_t>(std::max<int64_t>(n, 1)));
  for (float& x : v) x = static_cast<float>(mean + sd * rng.normal());
  return v;
}

template <typename T>
TensorView view(const std::vector<T>& v, DType dtype, std::initializer_list<int64_t> shape) {
  return make_tensor(const_cast<T*>(v.data()), dtype, shape);
}

/// |got - ref| <= tol(ref) over two equally long arrays; the first miss goes to `message`.
template <typename T, typename ToDouble, typename Tol>
bool close_all(const std::vector<T>& got, const std::vector<T>& ref, ToDouble value, Tol tol,
               const char* what, double* max_err, std::string* message) {
  if (got.size() != ref.size()) {
    *message = std::string(what) + ": sizes differ";
    return false;
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = value(got[i]), r = value(ref[i]), err = std::fabs(g - r);
    if (std::isfinite(err)) *max_err = std::max(*max_err, err);
    if (!(err <= tol(r)) && !(std::isnan(g) && std::isnan(r))) {
      *message = std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(g) +
                 ", reference " + std::to_string(r);
      return false;
    }
  }
  return true;
}

double bf16_value(uint16_t h) { return bf16_to_float(h); }
double f32_value(float f) { return f; }
double bf16_tol(double r) { return (std::fabs(r) + 0.05) / 128; }
double f32_tol(double r) { return 2e-5 * (1.0 + std::fabs(r)); }

}  // namespace

Op mhc_op(MhcStage stage) {
  return stage == MhcStage::kPre ? Op::kMhcPre
                                 : (stage == MhcStage::kHead ? Op::kMhcHead : Op::kMhcPost);
}

MhcCase make_mhc_case(const MhcConfig& config) {
  MhcCase c;
  c.config = config;
  const int64_t tokens = config.tokens, hc = config.hc, hidden = config.hidden;
  Rng rng(config.seed);
  c.rows = config.stage == MhcStage::kHead ? hc : (2 + hc) * hc;
  c.stream_stride = hidden + (config.padded ? 5 : 0);
  c.token_stride = hc * c.stream_stride + (config.padded ? 3 : 0);
  c.x = bf16_normal(rng, tokens * c.token_stride);
  c.f = bf16_normal(rng, tokens * hidden);
  c.fn = f32_normal(rng, c.rows * hc * hidden, 0.0, 1.0 / std::sqrt(double(hc * hidden)));
  c.scale = f32_normal(rng, 3, 0.5, 0.2);
  c.base = f32_normal(rng, c.rows, 0.0, 0.5);
  c.y.assign(static_cast<size_t>(std::max<int64_t>(1, tokens * hidden)), 0);
  c.post = f32_normal(rng, tokens * hc, 0.0, 1.0);
  c.comb = f32_normal(rng, tokens * hc * hc, 0.25, 0.2);
  c.out.assign(static_cast<size_t>(std::max<int64_t>(1, tokens * hc * hidden)), 0);
  return c;
}

MhcPreArgs MhcCase::pre_args() const {
  const int64_t t = config.tokens, hc = config.hc, d = config.hidden;
  MhcPreArgs a;
  a.x = make_strided_tensor(const_cast<uint16_t*>(x.data()), DType::kBF16, {t, hc, d},
                            {token_stride, stream_stride, 1});
  a.hc_fn = view(fn, DType::kF32, {rows, hc * d});
  a.hc_scale = view(scale, DType::kF32, {3});
  a.hc_base = view(base, DType::kF32, {rows});
  a.sinkhorn_iters = config.sinkhorn_iters;
  a.y = view(y, DType::kBF16, {t, d});
  a.post = view(post, DType::kF32, {t, hc});
  a.comb = view(comb, DType::kF32, {t, hc, hc});
  return a;
}

MhcHeadArgs MhcCase::head_args() const {
  const MhcPreArgs p = pre_args();
  MhcHeadArgs a;
  a.x = p.x;
  a.hc_fn = p.hc_fn;
  a.hc_scale = view(scale, DType::kF32, {1});
  a.hc_base = p.hc_base;
  a.out = p.y;
  return a;
}

MhcPostArgs MhcCase::post_args() const {
  const int64_t t = config.tokens, hc = config.hc, d = config.hidden;
  const MhcPreArgs p = pre_args();
  MhcPostArgs a;
  a.x = view(f, DType::kBF16, {t, d});
  a.residual = p.x;
  a.post = p.post;
  a.comb = p.comb;
  a.out = view(out, DType::kBF16, {t, hc, d});
  return a;
}

Status MhcCase::plan(const Options& options, Plan* plan) const {
  if (config.stage == MhcStage::kPre) return plan_mhc_pre(pre_args(), options, plan);
  if (config.stage == MhcStage::kHead) return plan_mhc_head(head_args(), options, plan);
  return plan_mhc_post(post_args(), options, plan);
}

Status MhcCase::run(const Plan& plan) const {
  if (config.stage == MhcStage::kPre) return run_mhc_pre(plan, pre_args());
  if (config.stage == MhcStage::kHead) return run_mhc_head(plan, head_args());
  return run_mhc_post(plan, post_args());
}

// Per token, with K = hc * hidden and R projection rows ((2 + hc) hc; head: hc):
//   pre / head: 2 K (mean square) + 2 R K (projection) + 2 K (y = sum_j pre_j X_j), pre also
//   4 hc^2 sinkhorn_iters (a row and a column normalisation per iteration: sum and divide);
//   post: hc hidden (2 hc + 2) (post_k x + sum_j comb_jk X_j per output element).
double mhc_flops(const MhcCase& c) {
  const double t = c.config.tokens, hc = c.config.hc, d = c.config.hidden, k = hc * d;
  if (c.config.stage == MhcStage::kPost) return t * k * (2 * hc + 2);
  const double sinkhorn =
      c.config.stage == MhcStage::kPre ? 4 * hc * hc * c.config.sinkhorn_iters : 0.0;
  return t * (4 * k + 2 * c.rows * k + sinkhorn);
}

// Compulsory traffic of one call: the weights once (fn 4 R K, base, scale), per token X (2 K) and
// the outputs (pre: y 2 hidden, post 4 hc, comb 4 hc^2; head: out 2 hidden); post: f (2 hidden),
// residual (2 K), post and comb (4 hc + 4 hc^2), out (2 K).
double mhc_bytes(const MhcCase& c) {
  const double t = c.config.tokens, hc = c.config.hc, d = c.config.hidden, k = hc * d;
  if (c.config.stage == MhcStage::kPost) return t * (2 * d + 4 * k + 4 * hc + 4 * hc * hc);
  const double weights = 4.0 * (c.rows * k + c.rows + 3);
  const double outputs = c.config.stage == MhcStage::kPre ? 2 * d + 4 * hc + 4 * hc * hc : 2 * d;
  return weights + t * (2 * k + outputs);
}

bool check_mhc(const MhcCase& answer, const MhcCase& reference, double* max_err,
               std::string* message) {
  if (answer.config.stage == MhcStage::kPost)
    return close_all(answer.out, reference.out, bf16_value, bf16_tol, "out", max_err, message);
  const bool head = answer.config.stage == MhcStage::kHead;
  if (!close_all(answer.y, reference.y, bf16_value, bf16_tol, head ? "out" : "y", max_err, message))
    return false;
  if (head) return true;
  return close_all(answer.post, reference.post, f32_value, f32_tol, "post", max_err, message) &&
         close_all(answer.comb, reference.comb, f32_value, f32_tol, "comb", max_err, message);
}

EngramGateCase make_engram_gate_case(const EngramGateConfig& config) {
  EngramGateCase c;
  c.config = config;
  const int64_t tokens = config.tokens, hc = config.hc, hidden = config.hidden;
  Rng rng(config.seed);
  c.stream_stride = hidden + (config.padded ? 3 : 0);
  c.token_stride = hc * c.stream_stride + (config.padded ? 7 : 0);
  c.h = bf16_normal(rng, tokens * c.token_stride);
  c.kv = bf16_normal(rng, tokens * (hc + 1) * hidden);
  c.w = f32_normal(rng, hc * hidden, 1.0, 0.3);
  c.out.assign(c.h.size(), 0);
  return c;
}

EngramGateArgs EngramGateCase::args() const {
  const int64_t t = config.tokens, hc = config.hc, d = config.hidden;
  EngramGateArgs a;
  a.h = make_strided_tensor(const_cast<uint16_t*>(h.data()), DType::kBF16, {t, hc, d},
                            {token_stride, stream_stride, 1});
  a.kv = view(kv, DType::kBF16, {t, (hc + 1) * d});
  a.gate_weight = view(w, DType::kF32, {hc, d});
  a.out = a.h;
  if (!config.in_place) a.out.data = const_cast<uint16_t*>(out.data());
  return a;
}

Status EngramGateCase::plan(const Options& options, Plan* plan) const {
  return plan_engram_gate(args(), options, plan);
}

Status EngramGateCase::run(const Plan& plan) const { return run_engram_gate(plan, args()); }

std::vector<uint16_t> EngramGateCase::result() const {
  const std::vector<uint16_t>& src = config.in_place ? h : out;
  std::vector<uint16_t> r;
  for (int64_t t = 0; t < config.tokens; ++t)
    for (int64_t i = 0; i < config.hc; ++i)
      for (int64_t c = 0; c < config.hidden; ++c)
        r.push_back(src[static_cast<size_t>(t * token_stride + i * stream_stride + c)]);
  return r;
}

// Per token and stream (hidden D): the weighted dot product h w K (3 D), the two mean squares
// (2 D each) and out = h + g V (2 D): 9 D; the sigmoid and square root per stream are not counted.
double engram_gate_flops(const EngramGateCase& c) {
  return 9.0 * c.config.tokens * c.config.hc * c.config.hidden;
}

// The gate weight once (4 hc D), per token h (2 hc D), kv (2 (hc + 1) D) and out (2 hc D).
double engram_gate_bytes(const EngramGateCase& c) {
  const double hc = c.config.hc, d = c.config.hidden;
  return 4 * hc * d + c.config.tokens * d * (2 * hc + 2 * (hc + 1) + 2 * hc);
}

bool check_engram_gate(const EngramGateCase& answer, const EngramGateCase& reference,
                       double* max_err, std::string* message) {
  return close_all(answer.result(), reference.result(), bf16_value, bf16_tol, "out", max_err,
                   message);
}

}  // namespace openmla::testing
