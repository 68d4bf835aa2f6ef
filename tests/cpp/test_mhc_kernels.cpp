// Every registered mHC kernel (hc_pre, hc_head, hc_post) against the double reference on a grid
// of stream counts (1..5), hidden sizes with vector tails (1..520), token counts across the chunk
// and thread-split paths (0..37), Sinkhorn iterations (1..20) and padded (non-contiguous) views;
// bitwise thread invariance (1, 2, 3 threads, which also switches between the fused and the split
// schedule); a NaN in one stream stays in its column (the vector bf16 store keeps NaN); and bad
// arguments -> a Status naming the argument (kWrongDtype for dtypes).
// Kernels the host cannot run are skipped with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "dispatch/registry.h"
#include "openmla/v4_blocks.h"
#include "support/kernel_params.h"
#include "support/test_support.h"

namespace {

using openmla::DType;
using openmla::Op;
using openmla::StatusCode;
using openmla::TensorView;
using openmla_test::find_kernel;
using openmla_test::kernel_names;
using openmla_test::Rng;
using openmla_test::test_name;

struct MhcShape {
  int64_t tokens, hc, hidden, iters;
  bool padded;  // token / stream strides larger than dense
};

const std::vector<MhcShape>& grid() {
  static const std::vector<MhcShape> shapes = {
      {1, 4, 64, 20, false}, {3, 4, 100, 20, true}, {17, 4, 256, 20, false},
      {5, 2, 33, 3, false},  {2, 1, 8, 1, true},    {37, 4, 520, 20, true},
      {4, 3, 17, 5, false},  {2, 5, 7, 2, false},   {0, 4, 64, 20, false},
  };
  return shapes;
}

/// Residual streams, projection and outputs of one problem, with optional padding.
struct MhcCase {
  MhcShape s;
  int64_t rows = 0, token_stride = 0, stream_stride = 0;
  std::vector<uint16_t> x, f, y, out;
  std::vector<float> fn, scale, base, post, comb;

  MhcCase(const MhcShape& shape, bool head, uint32_t seed) : s(shape) {
    Rng rng(seed);
    rows = head ? s.hc : (2 + s.hc) * s.hc;
    stream_stride = s.hidden + (s.padded ? 5 : 0);
    token_stride = s.hc * stream_stride + (s.padded ? 3 : 0);
    x = rng.bf16_normal(std::max<int64_t>(1, s.tokens * token_stride), 1.0, 4.0);
    f = rng.bf16_normal(std::max<int64_t>(1, s.tokens * s.hidden), 1.0, 4.0);
    const double sd = 1.0 / std::sqrt(static_cast<double>(s.hc * s.hidden));
    for (int64_t i = 0; i < rows * s.hc * s.hidden; ++i) fn.push_back(rng.normal() * sd);
    for (int i = 0; i < 3; ++i) scale.push_back(0.5 + rng.normal() * 0.2);
    for (int64_t i = 0; i < rows; ++i) base.push_back(rng.normal() * 0.5);
    y.assign(std::max<int64_t>(1, s.tokens * s.hidden), 0);
    post.assign(std::max<int64_t>(1, s.tokens * s.hc), 0.0f);
    for (int64_t i = 0; i < s.tokens * s.hc; ++i) post[i] = static_cast<float>(rng.normal());
    comb.assign(std::max<int64_t>(1, s.tokens * s.hc * s.hc), 0.0f);
    for (int64_t i = 0; i < s.tokens * s.hc * s.hc; ++i)
      comb[i] = static_cast<float>(0.25 + 0.2 * rng.normal());
    out.assign(std::max<int64_t>(1, s.tokens * s.hc * s.hidden), 0);
  }
  TensorView x_view() {
    return openmla::make_strided_tensor(x.data(), DType::kBF16, {s.tokens, s.hc, s.hidden},
                                        {token_stride, stream_stride, 1});
  }
  openmla::MhcPreArgs pre_args() {
    openmla::MhcPreArgs a;
    a.x = x_view();
    a.hc_fn = openmla::make_tensor(fn.data(), DType::kF32, {rows, s.hc * s.hidden});
    a.hc_scale = openmla::make_tensor(scale.data(), DType::kF32, {3});
    a.hc_base = openmla::make_tensor(base.data(), DType::kF32, {rows});
    a.sinkhorn_iters = s.iters;
    a.y = openmla::make_tensor(y.data(), DType::kBF16, {s.tokens, s.hidden});
    a.post = openmla::make_tensor(post.data(), DType::kF32, {s.tokens, s.hc});
    a.comb = openmla::make_tensor(comb.data(), DType::kF32, {s.tokens, s.hc, s.hc});
    return a;
  }
  openmla::MhcHeadArgs head_args() {
    openmla::MhcHeadArgs a;
    a.x = x_view();
    a.hc_fn = openmla::make_tensor(fn.data(), DType::kF32, {rows, s.hc * s.hidden});
    a.hc_scale = openmla::make_tensor(scale.data(), DType::kF32, {1});
    a.hc_base = openmla::make_tensor(base.data(), DType::kF32, {rows});
    a.out = openmla::make_tensor(y.data(), DType::kBF16, {s.tokens, s.hidden});
    return a;
  }
  openmla::MhcPostArgs post_args() {
    openmla::MhcPostArgs a;
    a.x = openmla::make_tensor(f.data(), DType::kBF16, {s.tokens, s.hidden});
    a.residual = x_view();
    a.post = openmla::make_tensor(post.data(), DType::kF32, {s.tokens, s.hc});
    a.comb = openmla::make_tensor(comb.data(), DType::kF32, {s.tokens, s.hc, s.hc});
    a.out = openmla::make_tensor(out.data(), DType::kBF16, {s.tokens, s.hc, s.hidden});
    return a;
  }
};

openmla::Options options_for(const std::string& kernel, int threads) {
  openmla::Options o;
  o.kernel = kernel.c_str();
  o.num_threads = threads;
  return o;
}

/// bf16 outputs agree within `ulps` units of the reference's bf16 spacing (relative to the row's
/// magnitude, since fp32 vs double sums may flip a rounding).
void expect_bf16_close(const std::vector<uint16_t>& got, const std::vector<uint16_t>& ref,
                       double scale_floor, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = openmla::bf16_to_float(got[i]), r = openmla::bf16_to_float(ref[i]);
    ASSERT_NEAR(g, r, (std::fabs(r) + scale_floor) * (1.0 / 128)) << what << " at " << i;
  }
}

void expect_f32_close(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                      const std::string& what) {
  ASSERT_EQ(got.size(), ref.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], ref[i], tol * (1.0 + std::fabs(ref[i]))) << what << " at " << i;
}

class MhcKernel : public ::testing::TestWithParam<std::tuple<std::string, int>> {
 protected:
  void SetUp() override {
    const openmla::KernelEntry* k = find_kernel(op(), std::get<0>(GetParam()));
    ASSERT_NE(k, nullptr);
    if (!openmla::kernel_runnable(*k)) GTEST_SKIP() << k->name << " cannot run on this host";
  }
  Op op() const {
    const std::string& n = std::get<0>(GetParam());
    return n.rfind("mhc_pre", 0) == 0 ? Op::kMhcPre
                                      : (n.rfind("mhc_head", 0) == 0 ? Op::kMhcHead : Op::kMhcPost);
  }
  const MhcShape& shape() const { return grid()[std::get<1>(GetParam())]; }
};

TEST_P(MhcKernel, MatchesReferenceAndIsThreadInvariant) {
  const std::string name = std::get<0>(GetParam());
  const std::string ref = std::string(openmla::op_name(op())) + ".ref";
  MhcCase want(shape(), op() == Op::kMhcHead, 7), got(shape(), op() == Op::kMhcHead, 7);
  auto run = [&](MhcCase& c, const std::string& kernel, int threads) {
    const openmla::Options o = options_for(kernel, threads);
    if (op() == Op::kMhcPre) return openmla::mhc_pre(c.pre_args(), o);
    if (op() == Op::kMhcHead) return openmla::mhc_head(c.head_args(), o);
    return openmla::mhc_post(c.post_args(), o);
  };
  ASSERT_TRUE(run(want, ref, 2).ok());
  ASSERT_TRUE(run(got, name, 1).ok());
  if (op() == Op::kMhcPost) {
    expect_bf16_close(got.out, want.out, 0.05, name + " out");
  } else {
    expect_bf16_close(got.y, want.y, 0.05, name + " y");
    expect_f32_close(got.post, want.post, 2e-5, name + " post");
    expect_f32_close(got.comb, want.comb, 2e-5, name + " comb");
  }
  for (int threads : {2, 3}) {
    MhcCase again(shape(), op() == Op::kMhcHead, 7);
    ASSERT_TRUE(run(again, name, threads).ok());
    EXPECT_EQ(again.y, got.y) << threads << " threads";
    EXPECT_EQ(again.out, got.out) << threads << " threads";
    EXPECT_EQ(again.post, got.post) << threads << " threads";
    EXPECT_EQ(again.comb, got.comb) << threads << " threads";
  }
}

std::vector<std::tuple<std::string, int>> params() {
  std::vector<std::tuple<std::string, int>> all;
  for (Op op : {Op::kMhcPre, Op::kMhcHead, Op::kMhcPost})
    for (const std::string& k : kernel_names(op))
      for (int i = 0; i < static_cast<int>(grid().size()); ++i) all.emplace_back(k, i);
  return all;
}

INSTANTIATE_TEST_SUITE_P(Grid, MhcKernel, ::testing::ValuesIn(params()),
                         [](const ::testing::TestParamInfo<std::tuple<std::string, int>>& info) {
                           return test_name(std::get<0>(info.param)) + "_" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(MhcReference, CombIsDoublyStochasticAndGatesAreInRange) {
  MhcCase c({3, 4, 64, 20, false}, false, 11);
  ASSERT_TRUE(openmla::mhc_pre(c.pre_args(), options_for("mhc_pre.ref", 1)).ok());
  for (int64_t t = 0; t < 3; ++t) {
    for (int64_t k = 0; k < 4; ++k) {
      double col = 0.0, row = 0.0;
      for (int64_t j = 0; j < 4; ++j) {
        col += c.comb[t * 16 + j * 4 + k];
        row += c.comb[t * 16 + k * 4 + j];
      }
      EXPECT_NEAR(col, 1.0, 1e-5);
      EXPECT_NEAR(row, 1.0, 1e-3);
      EXPECT_GT(c.post[t * 4 + k], 0.0f);
      EXPECT_LT(c.post[t * 4 + k], 2.0f);
    }
  }
}

TEST(MhcKernels, NaNInAStreamGivesNaNOnlyInItsColumn) {
  for (const std::string& name : kernel_names(Op::kMhcPost)) {
    if (!openmla::kernel_runnable(*find_kernel(Op::kMhcPost, name))) continue;
    MhcCase c({2, 4, 40, 20, false}, false, 9);
    for (float& w : c.comb) w = 0.25f;
    c.x[1 * c.token_stride + 2 * c.stream_stride + 13] = openmla_test::kBf16NaN;
    ASSERT_TRUE(openmla::mhc_post(c.post_args(), options_for(name, 1)).ok());
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t k = 0; k < 4; ++k)
        for (int64_t col = 0; col < 40; ++col)
          EXPECT_EQ(std::isnan(openmla::bf16_to_float(c.out[(t * 4 + k) * 40 + col])),
                    t == 1 && col == 13)
              << name << " token " << t << " stream " << k << " column " << col;
  }
}

void expect_error(const openmla::Status& s, StatusCode code, const std::string& name) {
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_NE(s.message().find(name), std::string::npos) << s.to_string();
}

TEST(MhcApi, BadPreArgumentsNameTheArgument) {
  MhcCase c({2, 4, 16, 20, false}, false, 3);
  auto with = [&](auto edit) {
    openmla::MhcPreArgs a = c.pre_args();
    edit(a);
    return openmla::mhc_pre(a);
  };
  expect_error(with([](auto& a) { a.x.dtype = DType::kF16; }), StatusCode::kWrongDtype, "x");
  expect_error(with([](auto& a) { a.x.shape[1] = 9; }), StatusCode::kInvalidArgument, "x");
  expect_error(with([](auto& a) { a.hc_fn.shape[0] = 23; }), StatusCode::kInvalidArgument, "hc_fn");
  expect_error(with([](auto& a) { a.hc_fn.dtype = DType::kBF16; }), StatusCode::kWrongDtype,
               "hc_fn");
  expect_error(with([](auto& a) { a.hc_scale.shape[0] = 2; }), StatusCode::kInvalidArgument,
               "hc_scale");
  expect_error(with([](auto& a) { a.hc_base.shape[0] = 4; }), StatusCode::kInvalidArgument,
               "hc_base");
  expect_error(with([](auto& a) { a.sinkhorn_iters = 0; }), StatusCode::kInvalidArgument,
               "sinkhorn_iters");
  expect_error(with([](auto& a) { a.rms_eps = NAN; }), StatusCode::kInvalidArgument, "rms_eps");
  expect_error(with([](auto& a) { a.hc_eps = -1.0f; }), StatusCode::kInvalidArgument, "hc_eps");
  expect_error(with([](auto& a) { a.y.shape[1] = 15; }), StatusCode::kInvalidArgument, "y");
  expect_error(with([](auto& a) { a.post.dtype = DType::kBF16; }), StatusCode::kWrongDtype, "post");
  expect_error(with([](auto& a) { a.comb.shape[2] = 3; }), StatusCode::kInvalidArgument, "comb");
  c.base[5] = INFINITY;
  expect_error(with([](auto&) {}), StatusCode::kInvalidArgument, "hc_base[5]");
}

TEST(MhcApi, BadHeadAndPostArgumentsNameTheArgument) {
  MhcCase h({2, 4, 16, 20, false}, true, 3);
  openmla::MhcHeadArgs ha = h.head_args();
  ha.hc_scale.shape[0] = 3;
  expect_error(openmla::mhc_head(ha), StatusCode::kInvalidArgument, "hc_scale");
  ha = h.head_args();
  ha.out.dtype = DType::kF32;
  expect_error(openmla::mhc_head(ha), StatusCode::kWrongDtype, "out");
  MhcCase p({2, 4, 16, 20, false}, false, 3);
  auto with = [&](auto edit) {
    openmla::MhcPostArgs a = p.post_args();
    edit(a);
    return openmla::mhc_post(a);
  };
  expect_error(with([](auto& a) { a.residual.dtype = DType::kF32; }), StatusCode::kWrongDtype,
               "residual");
  expect_error(with([](auto& a) { a.x.shape[0] = 3; }), StatusCode::kInvalidArgument, "x");
  expect_error(with([](auto& a) { a.post.shape[1] = 3; }), StatusCode::kInvalidArgument, "post");
  expect_error(with([](auto& a) { a.comb.ndim = 2; }), StatusCode::kInvalidArgument, "comb");
  expect_error(with([](auto& a) { a.out.shape[2] = 8; }), StatusCode::kInvalidArgument, "out");
}

TEST(MhcApi, PlanIsReusableAndChecksShapes) {
  MhcCase c({3, 4, 32, 20, false}, false, 5);
  openmla::Plan plan;
  ASSERT_TRUE(openmla::plan_mhc_pre(c.pre_args(), {}, &plan).ok());
  EXPECT_EQ(plan.op(), Op::kMhcPre);
  ASSERT_TRUE(openmla::run_mhc_pre(plan, c.pre_args()).ok());
  MhcCase other({4, 4, 32, 20, false}, false, 5);
  EXPECT_FALSE(openmla::run_mhc_pre(plan, other.pre_args()).ok());
}

}  // namespace
