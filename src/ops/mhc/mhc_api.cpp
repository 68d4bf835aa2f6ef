// mHC API: validates MhcPreArgs / MhcHeadArgs into MhcMixParams and MhcPostArgs into
// MhcPostParams, plans and runs. The small parameter vectors (hc_scale, hc_base) are copied into
// the params here, so kernels read them as values.
#include <cmath>
#include <string>

#include "openmla/v4_blocks.h"
#include "ops/common/op_entry.h"
#include "ops/mhc/mhc.h"

namespace openmla {
namespace {

/// x [tokens, hc, hidden] bf16 with hc in [1, kMhcMaxStreams] and hidden >= 1.
Status check_streams(const TensorView& x, const char* name) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(x, name, {DType::kBF16}, 3, true));
  if (x.shape[1] < 1 || x.shape[1] > kMhcMaxStreams)
    return invalid_argument(std::string(name) + ": hc (shape[1]) must be in [1, " +
                            std::to_string(kMhcMaxStreams) + "], got " + shape_string(x));
  if (x.shape[2] < 1)
    return invalid_argument(std::string(name) + ": hidden (shape[2]) must be at least 1");
  return Status::Ok();
}

Status check_eps(float value, const char* name) {
  if (!std::isfinite(value) || value < 0.0f)
    return invalid_argument(std::string(name) + ": must be finite and >= 0, got " +
                            std::to_string(value));
  return Status::Ok();
}

/// Copies a [n] fp32 vector (any stride) into `dst`, requiring finite values.
Status copy_vector(const TensorView& t, const char* name, int64_t n, float* dst) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(t, name, {DType::kF32}, 1, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 0, n, "n"));
  const float* data = static_cast<const float*>(t.data);
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = data[i * t.stride[0]];
    if (!std::isfinite(dst[i]))
      return invalid_argument(std::string(name) + "[" + std::to_string(i) + "] is not finite");
  }
  return Status::Ok();
}

/// The projection, scale and base of a mixing site with `rows` rows and `num_scales` scales.
Status read_projection(const TensorView& fn, const TensorView& scale, const TensorView& base,
                       int num_scales, MhcMixParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(fn, "hc_fn", {DType::kF32}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(fn, "hc_fn", 0, p->rows, "rows"));
  OPENMLA_RETURN_IF_ERROR(check_dim(fn, "hc_fn", 1, p->hc * p->hidden, "hc * hidden"));
  p->fn = static_cast<const float*>(fn.data);
  p->fn_stride = fn.stride[0];
  OPENMLA_RETURN_IF_ERROR(copy_vector(scale, "hc_scale", num_scales, p->scale));
  return copy_vector(base, "hc_base", p->rows, p->base);
}

Status read_streams(const TensorView& x, float rms_eps, float hc_eps, MhcMixParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_streams(x, "x"));
  p->tokens = x.shape[0];
  p->hc = x.shape[1];
  p->hidden = x.shape[2];
  p->rows = p->head ? p->hc : (2 + p->hc) * p->hc;
  p->x = static_cast<const uint16_t*>(x.data);
  p->x_stride[0] = x.stride[0];
  p->x_stride[1] = x.stride[1];
  OPENMLA_RETURN_IF_ERROR(check_eps(rms_eps, "rms_eps"));
  OPENMLA_RETURN_IF_ERROR(check_eps(hc_eps, "hc_eps"));
  p->rms_eps = rms_eps;
  p->hc_eps = hc_eps;
  return Status::Ok();
}

Status check_mix_out(const TensorView& y, const char* name, MhcMixParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(y, name, {DType::kBF16}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(y, name, 0, p->tokens, "tokens"));
  OPENMLA_RETURN_IF_ERROR(check_dim(y, name, 1, p->hidden, "hidden"));
  p->y = static_cast<uint16_t*>(y.data);
  p->y_stride = y.stride[0];
  return Status::Ok();
}

Status validate_pre(const MhcPreArgs& a, MhcMixParams* p) {
  p->head = false;
  OPENMLA_RETURN_IF_ERROR(read_streams(a.x, a.rms_eps, a.hc_eps, p));
  OPENMLA_RETURN_IF_ERROR(read_projection(a.hc_fn, a.hc_scale, a.hc_base, 3, p));
  if (a.sinkhorn_iters < 1 || a.sinkhorn_iters > 1000)
    return invalid_argument("sinkhorn_iters: must be in [1, 1000], got " +
                            std::to_string(a.sinkhorn_iters));
  p->sinkhorn_iters = a.sinkhorn_iters;
  OPENMLA_RETURN_IF_ERROR(check_mix_out(a.y, "y", p));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.post, "post", {DType::kF32}, 2, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.post, "post", 0, p->tokens, "tokens"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.post, "post", 1, p->hc, "hc"));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.comb, "comb", {DType::kF32}, 3, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.comb, "comb", 0, p->tokens, "tokens"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.comb, "comb", 1, p->hc, "hc"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.comb, "comb", 2, p->hc, "hc"));
  p->post = static_cast<float*>(a.post.data);
  p->comb = static_cast<float*>(a.comb.data);
  for (int d = 0; d < 2; ++d) p->post_stride[d] = a.post.stride[d];
  for (int d = 0; d < 3; ++d) p->comb_stride[d] = a.comb.stride[d];
  return Status::Ok();
}

Status validate_head(const MhcHeadArgs& a, MhcMixParams* p) {
  p->head = true;
  OPENMLA_RETURN_IF_ERROR(read_streams(a.x, a.rms_eps, a.hc_eps, p));
  OPENMLA_RETURN_IF_ERROR(read_projection(a.hc_fn, a.hc_scale, a.hc_base, 1, p));
  return check_mix_out(a.out, "out", p);
}

Status check_post_tensor(const TensorView& t, const char* name, const MhcPostParams& p, int ndim) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(t, name, {DType::kF32}, ndim, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 0, p.tokens, "tokens"));
  for (int d = 1; d < ndim; ++d) OPENMLA_RETURN_IF_ERROR(check_dim(t, name, d, p.hc, "hc"));
  return Status::Ok();
}

Status validate_post(const MhcPostArgs& a, MhcPostParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_streams(a.residual, "residual"));
  p->tokens = a.residual.shape[0];
  p->hc = a.residual.shape[1];
  p->hidden = a.residual.shape[2];
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.x, "x", {DType::kBF16}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.x, "x", 0, p->tokens, "tokens"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.x, "x", 1, p->hidden, "hidden"));
  OPENMLA_RETURN_IF_ERROR(check_post_tensor(a.post, "post", *p, 2));
  OPENMLA_RETURN_IF_ERROR(check_post_tensor(a.comb, "comb", *p, 3));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.out, "out", {DType::kBF16}, 3, true));
  for (int d = 0; d < 3; ++d) {
    static const char* const kDims[] = {"tokens", "hc", "hidden"};
    OPENMLA_RETURN_IF_ERROR(check_dim(a.out, "out", d, a.residual.shape[d], kDims[d]));
  }
  p->x = static_cast<const uint16_t*>(a.x.data);
  p->x_stride = a.x.stride[0];
  p->residual = static_cast<const uint16_t*>(a.residual.data);
  p->post = static_cast<const float*>(a.post.data);
  p->comb = static_cast<const float*>(a.comb.data);
  p->out = static_cast<uint16_t*>(a.out.data);
  for (int d = 0; d < 2; ++d) {
    p->residual_stride[d] = a.residual.stride[d];
    p->post_stride[d] = a.post.stride[d];
    p->out_stride[d] = a.out.stride[d];
  }
  for (int d = 0; d < 3; ++d) p->comb_stride[d] = a.comb.stride[d];
  return Status::Ok();
}

std::vector<int64_t> mix_signature(const MhcMixParams& p) {
  return {p.head, p.tokens, p.hc, p.hidden, p.sinkhorn_iters};
}

std::vector<int64_t> post_signature(const MhcPostParams& p) { return {p.tokens, p.hc, p.hidden}; }

}  // namespace

Status plan_mhc_pre(const MhcPreArgs& args, const Options& options, Plan* plan) {
  return plan_op<MhcMixParams>(Op::kMhcPre, validate_pre, mix_signature, args, options, plan);
}
Status run_mhc_pre(const Plan& plan, const MhcPreArgs& args) {
  return run_op<MhcMixParams>(Op::kMhcPre, validate_pre, mix_signature, plan, args);
}
Status mhc_pre(const MhcPreArgs& args, const Options& options) {
  return plan_and_run_op<MhcMixParams>(Op::kMhcPre, validate_pre, mix_signature, args, options);
}

Status plan_mhc_head(const MhcHeadArgs& args, const Options& options, Plan* plan) {
  return plan_op<MhcMixParams>(Op::kMhcHead, validate_head, mix_signature, args, options, plan);
}
Status run_mhc_head(const Plan& plan, const MhcHeadArgs& args) {
  return run_op<MhcMixParams>(Op::kMhcHead, validate_head, mix_signature, plan, args);
}
Status mhc_head(const MhcHeadArgs& args, const Options& options) {
  return plan_and_run_op<MhcMixParams>(Op::kMhcHead, validate_head, mix_signature, args, options);
}

Status plan_mhc_post(const MhcPostArgs& args, const Options& options, Plan* plan) {
  return plan_op<MhcPostParams>(Op::kMhcPost, validate_post, post_signature, args, options, plan);
}
Status run_mhc_post(const Plan& plan, const MhcPostArgs& args) {
  return run_op<MhcPostParams>(Op::kMhcPost, validate_post, post_signature, plan, args);
}
Status mhc_post(const MhcPostArgs& args, const Options& options) {
  return plan_and_run_op<MhcPostParams>(Op::kMhcPost, validate_post, post_signature, args, options);
}

}  // namespace openmla
