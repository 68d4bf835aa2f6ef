// Every registered sparse-prefill kernel against the reference kernel (spec §3.3) on a grid of
// heads (1..128), heads_kv (1, 2), head_dim (512, 576), topk (0..2048), topk_length, sinks with
// +-inf, rows with every slot invalid, no query token and non-contiguous inputs, at the spec §7.2
// tolerances (out, max_logits, lse), plus bitwise thread-count (1, 2, 3) and batch invariance (a
// query token alone vs inside the sequence). Kernels the host cannot run are skipped with the
// reason.
#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cases.h"
#include "compare.h"
#include "dispatch/registry.h"
#include "support/kernel_params.h"

namespace {

using openmla::Op;
using openmla::SparsePrefillArgs;
using openmla_test::find_kernel;
using openmla_test::kernel_names;
using openmla_test::test_name;
using namespace openmla::testing;

struct GridCase {
  int64_t seq_q, seq_kv, heads_q, heads_kv, head_dim, topk;
  bool topk_length, sink, all_invalid_rows, non_contiguous;
};

const std::vector<GridCase>& grid() {
  // seq_q, seq_kv, heads_q, heads_kv, dim, topk, topk_length, sink, invalid rows, noncontig
  static const std::vector<GridCase> cases = {
      {4, 16, 1, 1, 576, 1, false, false, false, false},
      {6, 100, 8, 1, 576, 64, true, true, false, false},
      {5, 300, 16, 1, 512, 100, false, true, true, true},
      {3, 40, 16, 2, 576, 64, true, false, true, false},  // seq_kv < topk: padded slots
      {4, 257, 64, 1, 576, 128, true, true, false, true},
      {3, 200, 64, 2, 512, 129, false, false, false, false},
      {2, 4096, 128, 1, 576, 2048, false, true, false, false},
      {3, 700, 128, 1, 512, 300, true, true, true, true},
      {8, 64, 8, 8, 576, 33, true, true, false, false},
      {2, 1, 16, 1, 576, 64, false, false, false, false},
      // Zero-size problems: no query token; no slot per row (lonely, sinks included).
      {0, 64, 128, 1, 576, 64, true, true, false, false},
      {3, 64, 128, 1, 576, 0, false, true, false, false},
      {2, 64, 16, 2, 512, 0, false, false, false, true},
  };
  return cases;
}

SparsePrefillConfig config_of(const GridCase& g, uint64_t seed) {
  SparsePrefillConfig c;
  c.seq_q = g.seq_q;
  c.seq_kv = g.seq_kv;
  c.heads_q = g.heads_q;
  c.heads_kv = g.heads_kv;
  c.head_dim = g.head_dim;
  c.topk = g.topk;
  c.topk_length = g.topk_length;
  c.sink = g.sink;
  c.all_invalid_rows = g.all_invalid_rows;
  c.non_contiguous = g.non_contiguous;
  c.softmax_scale = g.head_dim == 576 ? 0.0416666f : 0.0441942f;
  c.seed = seed;
  return c;
}

struct Result {
  std::vector<float> out, max_logits, lse;
};

Result collect(const SparsePrefillArgs& a) {
  return {to_float_vector(a.out), to_float_vector(a.max_logits), to_float_vector(a.lse)};
}

Result run(const SparsePrefillCase& c, const char* kernel, int threads) {
  SparsePrefillArgs args = c.args();
  Outputs o = bind_outputs(&args, c.config.non_contiguous);
  openmla::Options options;
  options.kernel = kernel;
  options.num_threads = threads;
  const openmla::Status st = openmla::sparse_prefill(args, options);
  EXPECT_TRUE(st.ok()) << st.message();
  return collect(args);
}

struct Prepared {
  SparsePrefillCase c;
  Result ref;
};

const Prepared& prepared(size_t index) {
  static std::map<size_t, std::unique_ptr<Prepared>> cache;
  auto& slot = cache[index];
  if (!slot) {
    slot = std::make_unique<Prepared>();
    slot->c = make_sparse_prefill_case(config_of(grid()[index], 200 + index));
    slot->ref = run(slot->c, "sparse_prefill.ref", 2);
  }
  return *slot;
}

class SparsePrefillKernelTest : public ::testing::TestWithParam<std::tuple<std::string, size_t>> {};

TEST_P(SparsePrefillKernelTest, MatchesReference) {
  const std::string& name = std::get<0>(GetParam());
  const openmla::KernelEntry* k = find_kernel(Op::kSparsePrefill, name);
  ASSERT_NE(k, nullptr);
  if (!openmla::kernel_runnable(*k)) GTEST_SKIP() << name << " cannot run on this host (ISA cap)";
  const Prepared& p = prepared(std::get<1>(GetParam()));
  const Result got = run(p.c, name.c_str(), 2);
  const CompareResult out = compare(got.out, p.ref.out, kPrefillOut);
  EXPECT_TRUE(out.ok) << "out: " << out.message;
  const CompareResult mx = compare(got.max_logits, p.ref.max_logits, kPrefillLogits);
  EXPECT_TRUE(mx.ok) << "max_logits: " << mx.message;
  const CompareResult lse = compare(got.lse, p.ref.lse, kPrefillLogits);
  EXPECT_TRUE(lse.ok) << "lse: " << lse.message;
  const SparsePrefillConfig& g = p.c.config;
  ASSERT_EQ(got.lse.size(), static_cast<size_t>(g.seq_q * g.heads_q));
  if (g.topk == 0) {  // every row lonely, whatever the sink: out 0, lse +inf, max_logits -inf
    for (float v : got.out) ASSERT_EQ(v, 0.0f);
    for (float v : got.lse) ASSERT_EQ(v, std::numeric_limits<float>::infinity());
    for (float v : got.max_logits) ASSERT_EQ(v, -std::numeric_limits<float>::infinity());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Grid, SparsePrefillKernelTest,
    ::testing::Combine(::testing::ValuesIn(kernel_names(Op::kSparsePrefill)),
                       ::testing::Range<size_t>(0, grid().size())),
    [](const ::testing::TestParamInfo<SparsePrefillKernelTest::ParamType>& info) {
      const GridCase& g = grid()[std::get<1>(info.param)];
      std::ostringstream s;
      s << test_name(std::get<0>(info.param)) << "_" << std::get<1>(info.param) << "_h" << g.heads_q
        << "_hkv" << g.heads_kv << "_d" << g.head_dim << "_k" << g.topk << "_kv" << g.seq_kv
        << (g.topk_length ? "_len" : "") << (g.sink ? "_sink" : "")
        << (g.all_invalid_rows ? "_lonely" : "") << (g.non_contiguous ? "_nc" : "");
      return s.str();
    });

// ---- bitwise invariance ----

openmla::TensorView slice0(openmla::TensorView t, int64_t i) {
  t.data = static_cast<char*>(t.data) + i * t.stride[0] * openmla::dtype_size(t.dtype);
  t.shape[0] = 1;
  return t;
}

class SparsePrefillKernelInvariance : public ::testing::TestWithParam<std::string> {};

TEST_P(SparsePrefillKernelInvariance, ThreadAndBatchInvariant) {
  const openmla::KernelEntry* k = find_kernel(Op::kSparsePrefill, GetParam());
  ASSERT_NE(k, nullptr);
  if (!openmla::kernel_runnable(*k)) GTEST_SKIP() << GetParam() << " cannot run on this host";
  // 16 heads per kv head, then 128 (the AMX kernel's token-list path).
  for (const int64_t heads_q : {32, 256}) {
    SparsePrefillConfig cfg;
    cfg.seq_q = 5;
    cfg.seq_kv = 600;
    cfg.heads_q = heads_q;
    cfg.heads_kv = 2;
    cfg.topk = 300;
    cfg.topk_length = true;
    cfg.sink = true;
    cfg.softmax_scale = 0.0416666f;
    cfg.seed = 11;
    const SparsePrefillCase c = make_sparse_prefill_case(cfg);
    const Result base = run(c, GetParam().c_str(), 1);
    for (int threads : {2, 3}) {
      const Result r = run(c, GetParam().c_str(), threads);
      EXPECT_TRUE(bitwise_equal(r.out, base.out)) << "out differs at " << threads << " threads";
      EXPECT_TRUE(bitwise_equal(r.max_logits, base.max_logits)) << threads << " threads";
      EXPECT_TRUE(bitwise_equal(r.lse, base.lse)) << "lse differs at " << threads << " threads";
    }
    openmla::Options options;
    options.kernel = GetParam().c_str();
    options.num_threads = 2;
    for (int64_t s = 0; s < cfg.seq_q; ++s) {
      SparsePrefillArgs one = c.args();
      one.q = slice0(one.q, s);
      one.indices = slice0(one.indices, s);
      one.topk_length = slice0(one.topk_length, s);
      Outputs single = bind_outputs(&one);
      ASSERT_TRUE(openmla::sparse_prefill(one, options).ok());
      const Result alone = collect(one);
      const int64_t hq = cfg.heads_q;
      EXPECT_TRUE(
          bitwise_equal(alone.out, std::vector<float>(base.out.begin() + s * hq * 512,
                                                      base.out.begin() + (s + 1) * hq * 512)))
          << "out of query " << s << " depends on the batch";
      EXPECT_TRUE(bitwise_equal(alone.lse, std::vector<float>(base.lse.begin() + s * hq,
                                                              base.lse.begin() + (s + 1) * hq)))
          << "lse of query " << s << " depends on the batch";
      EXPECT_TRUE(bitwise_equal(alone.max_logits,
                                std::vector<float>(base.max_logits.begin() + s * hq,
                                                   base.max_logits.begin() + (s + 1) * hq)))
          << "max_logits of query " << s << " depends on the batch";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, SparsePrefillKernelInvariance,
                         ::testing::ValuesIn(kernel_names(Op::kSparsePrefill)),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return test_name(info.param);
                         });

}  // namespace
