// Engram: every registered gate kernel against the double reference on a grid of stream counts
// (1..4), hidden sizes with vector tails (1..300), token counts (0..19), padded views and in-place
// use (out == h); bitwise thread invariance (1, 2, 3 threads); the n-gram hash against values
// worked out by hand (look-back padding, wrapping products, negative residues, offsets) and the
// row gather; bad arguments -> a Status naming the argument (kWrongDtype for dtypes).
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
using openmla_test::find_kernel;
using openmla_test::kernel_names;
using openmla_test::Rng;
using openmla_test::test_name;

struct GateShape {
  int64_t tokens, hc, hidden;
  bool padded, in_place;
};

const std::vector<GateShape>& grid() {
  static const std::vector<GateShape> shapes = {
      {1, 4, 64, false, false}, {3, 4, 100, true, false}, {19, 4, 256, false, true},
      {5, 2, 33, true, true},   {2, 1, 1, false, false},  {7, 3, 300, false, false},
      {0, 4, 64, false, false},
  };
  return shapes;
}

struct GateCase {
  GateShape s;
  int64_t stream_stride, token_stride;
  std::vector<uint16_t> h, kv, out;
  std::vector<float> w;

  GateCase(const GateShape& shape, uint32_t seed) : s(shape) {
    Rng rng(seed);
    stream_stride = s.hidden + (s.padded ? 3 : 0);
    token_stride = s.hc * stream_stride + (s.padded ? 7 : 0);
    h = rng.bf16_normal(std::max<int64_t>(1, s.tokens * token_stride), 1.0, 4.0);
    kv = rng.bf16_normal(std::max<int64_t>(1, s.tokens * (s.hc + 1) * s.hidden), 1.0, 4.0);
    for (int64_t i = 0; i < s.hc * s.hidden; ++i) w.push_back(1.0 + 0.3 * rng.normal());
    out.assign(h.size(), 0);
  }
  openmla::EngramGateArgs args() {
    openmla::EngramGateArgs a;
    a.h = openmla::make_strided_tensor(h.data(), DType::kBF16, {s.tokens, s.hc, s.hidden},
                                       {token_stride, stream_stride, 1});
    a.kv = openmla::make_tensor(kv.data(), DType::kBF16, {s.tokens, (s.hc + 1) * s.hidden});
    a.gate_weight = openmla::make_tensor(w.data(), DType::kF32, {s.hc, s.hidden});
    a.out = a.h;
    if (!s.in_place) a.out.data = out.data();
    return a;
  }
  /// The written rows (h itself when in place), padding excluded.
  std::vector<uint16_t> result() const {
    const std::vector<uint16_t>& src = s.in_place ? h : out;
    std::vector<uint16_t> r;
    for (int64_t t = 0; t < s.tokens; ++t)
      for (int64_t i = 0; i < s.hc; ++i)
        for (int64_t c = 0; c < s.hidden; ++c)
          r.push_back(src[t * token_stride + i * stream_stride + c]);
    return r;
  }
};

openmla::Options options_for(const std::string& kernel, int threads) {
  openmla::Options o;
  o.kernel = kernel.c_str();
  o.num_threads = threads;
  return o;
}

class EngramGateKernel : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(EngramGateKernel, MatchesReferenceAndIsThreadInvariant) {
  const std::string name = std::get<0>(GetParam());
  const openmla::KernelEntry* k = find_kernel(Op::kEngramGate, name);
  ASSERT_NE(k, nullptr);
  if (!openmla::kernel_runnable(*k)) GTEST_SKIP() << name << " cannot run on this host";
  const GateShape& shape = grid()[std::get<1>(GetParam())];
  GateCase want(shape, 5), got(shape, 5);
  ASSERT_TRUE(openmla::engram_gate(want.args(), options_for("engram_gate.ref", 1)).ok());
  ASSERT_TRUE(openmla::engram_gate(got.args(), options_for(name, 1)).ok());
  const std::vector<uint16_t> w = want.result(), g = got.result();
  ASSERT_EQ(w.size(), g.size());
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double r = openmla::bf16_to_float(w[i]);
    ASSERT_NEAR(openmla::bf16_to_float(g[i]), r, (std::fabs(r) + 0.05) / 128) << i;
  }
  for (int threads : {2, 3}) {
    GateCase again(shape, 5);
    ASSERT_TRUE(openmla::engram_gate(again.args(), options_for(name, threads)).ok());
    EXPECT_EQ(again.result(), g) << threads << " threads";
  }
}

std::vector<std::tuple<std::string, int>> params() {
  std::vector<std::tuple<std::string, int>> all;
  for (const std::string& k : kernel_names(Op::kEngramGate))
    for (int i = 0; i < static_cast<int>(grid().size()); ++i) all.emplace_back(k, i);
  return all;
}

INSTANTIATE_TEST_SUITE_P(Grid, EngramGateKernel, ::testing::ValuesIn(params()),
                         [](const ::testing::TestParamInfo<std::tuple<std::string, int>>& info) {
                           return test_name(std::get<0>(info.param)) + "_" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(EngramGateReference, SmallCaseByHand) {
  // hc 1, hidden 1: h = 2, K = 1, V = 4, w = 1, eps 0: rstd(h) = 1/2, rstd(K) = 1, d = 2 * 1/2 = 1,
  // g = sigmoid(1); out = 2 + 4 sigmoid(1) = 4.924... -> bf16 4.9375.
  std::vector<uint16_t> h = {openmla::float_to_bf16(2.0f)}, out(1);
  std::vector<uint16_t> kv = {openmla::float_to_bf16(1.0f), openmla::float_to_bf16(4.0f)};
  std::vector<float> w = {1.0f};
  openmla::EngramGateArgs a;
  a.h = openmla::make_tensor(h.data(), DType::kBF16, {1, 1, 1});
  a.kv = openmla::make_tensor(kv.data(), DType::kBF16, {1, 2});
  a.gate_weight = openmla::make_tensor(w.data(), DType::kF32, {1, 1});
  a.eps = 0.0f;
  a.out = openmla::make_tensor(out.data(), DType::kBF16, {1, 1, 1});
  for (const std::string& k : kernel_names(Op::kEngramGate)) {
    if (!openmla::kernel_runnable(*find_kernel(Op::kEngramGate, k))) continue;
    ASSERT_TRUE(openmla::engram_gate(a, options_for(k, 1)).ok()) << k;
    EXPECT_EQ(openmla::bf16_to_float(out[0]), 4.9375f) << k;
  }
}

void expect_error(const openmla::Status& s, StatusCode code, const std::string& name) {
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_NE(s.message().find(name), std::string::npos) << s.to_string();
}

TEST(EngramGateApi, BadArgumentsNameTheArgument) {
  GateCase c({2, 4, 16, false, false}, 3);
  auto with = [&](auto edit) {
    openmla::EngramGateArgs a = c.args();
    edit(a);
    return openmla::engram_gate(a);
  };
  expect_error(with([](auto& a) { a.h.dtype = DType::kF32; }), StatusCode::kWrongDtype, "h");
  expect_error(with([](auto& a) { a.kv.shape[1] = 64; }), StatusCode::kInvalidArgument, "kv");
  expect_error(with([](auto& a) { a.gate_weight.dtype = DType::kBF16; }), StatusCode::kWrongDtype,
               "gate_weight");
  expect_error(with([](auto& a) { a.gate_weight.shape[0] = 3; }), StatusCode::kInvalidArgument,
               "gate_weight");
  expect_error(with([](auto& a) { a.out.shape[0] = 3; }), StatusCode::kInvalidArgument, "out");
  expect_error(with([](auto& a) { a.eps = -1.0f; }), StatusCode::kInvalidArgument, "eps");
  expect_error(with([](auto& a) { a.clamp_value = NAN; }), StatusCode::kInvalidArgument,
               "clamp_value");
  expect_error(with([&](auto& a) {
                 a.out = a.h;
                 a.out.stride[1] += 1;
               }),
               StatusCode::kInvalidArgument, "out");
}

TEST(EngramHash, MatchesHandComputedValues) {
  // One sequence [5, 7, 9], max_ngram 3, 2 heads per order, pad 2, multipliers (3, 5, -7).
  std::vector<int64_t> ids = {5, 7, 9}, mult = {3, 5, -7}, primes = {11, 13, 17, 19};
  std::vector<int32_t> out(3 * 4, -1);
  ASSERT_TRUE(openmla::engram_hash(openmla::make_tensor(ids.data(), DType::kI64, {1, 3}),
                                   openmla::make_tensor(mult.data(), DType::kI64, {3}),
                                   openmla::make_tensor(primes.data(), DType::kI64, {2, 2}), 2,
                                   openmla::make_tensor(out.data(), DType::kI32, {1, 3, 4}))
                  .ok());
  const int64_t offsets[4] = {0, 11, 24, 41};
  for (int64_t t = 0; t < 3; ++t) {
    const int64_t x1 = t >= 1 ? ids[t - 1] : 2, x2 = t >= 2 ? ids[t - 2] : 2;
    const int64_t bigram = (ids[t] * 3) ^ (x1 * 5), trigram = bigram ^ (x2 * -7);
    const int64_t mixes[4] = {bigram, bigram, trigram, trigram};
    for (int c = 0; c < 4; ++c) {
      const int64_t p = primes[c], want = ((mixes[c] % p) + p) % p + offsets[c];
      EXPECT_EQ(out[t * 4 + c], want) << t << ", " << c;
    }
  }
}

TEST(EngramHash, WrapsLikeNumpyInt64AndChecksArguments) {
  std::vector<int64_t> ids = {INT64_MAX / 3, -12345}, mult = {7, INT64_MAX - 4};
  std::vector<int64_t> primes = {1000003};
  std::vector<int64_t> out(2);
  ASSERT_TRUE(openmla::engram_hash(openmla::make_tensor(ids.data(), DType::kI64, {1, 2}),
                                   openmla::make_tensor(mult.data(), DType::kI64, {2}),
                                   openmla::make_tensor(primes.data(), DType::kI64, {1, 1}), 2,
                                   openmla::make_tensor(out.data(), DType::kI64, {1, 2, 1}))
                  .ok());
  for (int t = 0; t < 2; ++t) {
    const uint64_t prev = static_cast<uint64_t>(t ? ids[0] : 2);
    const int64_t mix = static_cast<int64_t>((static_cast<uint64_t>(ids[t]) * 7u) ^
                                             (prev * static_cast<uint64_t>(mult[1])));
    EXPECT_EQ(out[t], ((mix % 1000003) + 1000003) % 1000003);
  }
  auto hash = [&](std::vector<int64_t> p, DType out_dtype, int64_t cols) {
    return openmla::engram_hash(
        openmla::make_tensor(ids.data(), DType::kI64, {1, 2}),
        openmla::make_tensor(mult.data(), DType::kI64, {2}),
        openmla::make_tensor(p.data(), DType::kI64, {1, static_cast<int64_t>(p.size())}), 2,
        openmla::make_tensor(out.data(), out_dtype, {1, 2, cols}));
  };
  expect_error(hash({0}, DType::kI64, 1), StatusCode::kInvalidArgument, "primes[0, 0]");
  expect_error(hash({5}, DType::kF32, 1), StatusCode::kWrongDtype, "out");
  expect_error(hash({5}, DType::kI64, 2), StatusCode::kInvalidArgument, "out");
  expect_error(hash({INT64_MAX / 2}, DType::kI32, 1), StatusCode::kInvalidArgument, "out");
}

TEST(EngramEmbed, GathersRowsAndRejectsBadIndices) {
  std::vector<float> table = {0, 1, 10, 11, 20, 21};  // 3 rows of 2
  std::vector<int32_t> ids = {2, 0, 1, 1};            // 2 tokens x 2 columns
  std::vector<float> out(8, -1.0f);
  const auto tv = openmla::make_tensor(table.data(), DType::kF32, {3, 2});
  ASSERT_TRUE(openmla::engram_embed(tv, openmla::make_tensor(ids.data(), DType::kI32, {2, 2}),
                                    openmla::make_tensor(out.data(), DType::kF32, {2, 4}))
                  .ok());
  EXPECT_EQ(out, (std::vector<float>{20, 21, 0, 1, 10, 11, 10, 11}));
  ids[3] = 3;
  expect_error(openmla::engram_embed(tv, openmla::make_tensor(ids.data(), DType::kI32, {2, 2}),
                                     openmla::make_tensor(out.data(), DType::kF32, {2, 4})),
               StatusCode::kInvalidArgument, "hash_ids[1, 1]");
  expect_error(openmla::engram_embed(tv, openmla::make_tensor(ids.data(), DType::kI32, {2, 2}),
                                     openmla::make_tensor(out.data(), DType::kBF16, {2, 4})),
               StatusCode::kWrongDtype, "out");
}

}  // namespace
