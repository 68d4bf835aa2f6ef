// Every registered dense-decode kernel against the reference kernel on a FlashMLA-style grid
// (heads 1..128, page sizes 1/2/61/64/69, lengths 0/1/63/64/65/4097, causal with seq_q 1-4,
// BF16 / V32 / MODEL1, heads_kv > 1, non-contiguous inputs, batch 0) at the spec §7.2 tolerances,
// plus bitwise thread-count (1, 2, 3) and batch invariance (request alone vs inside a batch). fp16
// (q, cache and out): the reference against a naive oracle, every kernel that accepts fp16 against
// the reference within one fp16 step (so reading or rounding anything as bf16 fails), the kernels
// that decline it (AMX) say why and are not selected. Kernels the host cannot run (OPENMLA_MAX_ISA
// cap, missing ISA) are skipped with the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cases.h"
#include "compare.h"
#include "core/dtype.h"
#include "dispatch/registry.h"
#include "ops/dense_decode/dense_decode.h"
#include "support/kernel_params.h"

namespace {

using openmla::DenseDecodeArgs;
using openmla::DType;
using openmla::KvFormat;
using openmla::Op;
using openmla_test::find_kernel;
using openmla_test::kernel_names;
using openmla_test::test_name;
using namespace openmla::testing;

struct GridCase {
  KvFormat format;
  int64_t head_dim, batch, seq_q, heads_q, heads_kv, page_size, tokens;
  bool varlen, zero_lengths, causal, non_contiguous;
};

const std::vector<GridCase>& grid() {
  const KvFormat bf = KvFormat::kBF16, v32 = KvFormat::kV32, m1 = KvFormat::kModel1;
  // format, dim, batch, seq_q, heads_q, heads_kv, page, tokens, varlen, zero, causal, noncontig
  static const std::vector<GridCase> cases = {
      {bf, 576, 2, 1, 1, 1, 1, 1, false, false, false, false},
      {bf, 576, 2, 2, 8, 1, 2, 63, false, false, true, false},
      {bf, 576, 2, 3, 16, 1, 61, 64, false, false, true, true},
      {bf, 576, 2, 1, 64, 1, 64, 65, false, false, false, false},
      {bf, 576, 1, 4, 128, 1, 69, 65, false, false, true, false},
      {bf, 576, 1, 1, 128, 1, 64, 4097, false, false, false, false},
      {bf, 576, 2, 2, 16, 1, 64, 4097, false, false, true, true},
      {bf, 576, 2, 1, 16, 1, 64, 0, false, false, false, false},
      {bf, 576, 3, 2, 8, 1, 61, 65, true, true, true, false},
      {bf, 576, 2, 2, 16, 2, 61, 65, false, false, true, false},
      {bf, 576, 2, 1, 64, 4, 2, 63, false, false, false, true},
      {bf, 576, 3, 1, 8, 8, 64, 200, true, false, false, false},
      {bf, 576, 1, 4, 8, 1, 64, 1, false, false, true, false},  // lonely causal rows
      {bf, 512, 2, 1, 16, 1, 64, 65, false, false, false, false},
      {v32, 576, 2, 1, 1, 1, 1, 63, false, false, false, false},
      {v32, 576, 2, 3, 16, 1, 61, 65, false, false, true, false},
      {v32, 576, 1, 1, 64, 1, 64, 4097, false, false, false, false},
      {v32, 576, 2, 1, 128, 1, 69, 64, false, false, false, true},
      {v32, 576, 3, 2, 8, 1, 2, 64, true, true, true, true},
      {m1, 512, 2, 1, 8, 1, 2, 64, false, false, false, false},
      {m1, 512, 1, 1, 16, 1, 69, 4097, false, false, false, false},
      {m1, 512, 2, 2, 128, 1, 64, 65, false, false, true, true},
      {m1, 512, 2, 1, 16, 1, 61, 0, false, false, false, false},
      {m1, 512, 2, 4, 64, 1, 1, 63, false, false, true, false},
      // One query token, >= 64 heads per kv head (dense_decode.amx's token-list path):
      {m1, 512, 3, 1, 64, 1, 61, 300, true, true, false, false},
      {bf, 576, 2, 1, 128, 2, 64, 200, false, false, true, true},
      {v32, 576, 3, 1, 64, 1, 2, 65, true, true, false, false},
      // No request at all.
      {bf, 576, 0, 1, 128, 1, 64, 65, false, false, false, false},
      {m1, 512, 0, 2, 16, 1, 61, 65, false, false, true, false},
  };
  return cases;
}

DenseDecodeConfig config_of(const GridCase& g, uint64_t seed) {
  DenseDecodeConfig c;
  c.format = g.format;
  c.head_dim = g.head_dim;
  c.batch = g.batch;
  c.seq_q = g.seq_q;
  c.heads_q = g.heads_q;
  c.heads_kv = g.heads_kv;
  c.page_size = g.page_size;
  c.cache_tokens = g.tokens;
  c.varlen = g.varlen;
  c.zero_lengths = g.zero_lengths;
  c.causal = g.causal;
  c.non_contiguous = g.non_contiguous;
  c.seed = seed;
  return c;
}

struct Result {
  std::vector<float> out, lse;
};

Result run(const DenseDecodeCase& c, const char* kernel, int threads) {
  DenseDecodeArgs args = c.args();
  Outputs o = bind_outputs(&args, c.config.non_contiguous);
  openmla::Options options;
  options.kernel = kernel;
  options.num_threads = threads;
  const openmla::Status st = openmla::dense_decode(args, options);
  EXPECT_TRUE(st.ok()) << st.message();
  return {to_float_vector(args.out), to_float_vector(args.lse)};
}

struct Prepared {
  DenseDecodeCase c;
  Result ref;
};

const Prepared& prepared(size_t index) {
  static std::map<size_t, std::unique_ptr<Prepared>> cache;
  auto& slot = cache[index];
  if (!slot) {
    slot = std::make_unique<Prepared>();
    slot->c = make_dense_decode_case(config_of(grid()[index], 100 + index));
    slot->ref = run(slot->c, "dense_decode.ref", 2);
  }
  return *slot;
}

/// Whether `k` takes a 576-dim BF16-layout problem with q / cache / out in `dtype`.
bool accepts(const openmla::KernelEntry& k, DType dtype, const char** reason = nullptr) {
  openmla::DenseDecodeParams p;
  p.head_dim = 576;
  p.dtype = dtype;
  const char* why = k.unsupported_reason(&p);
  if (reason != nullptr) *reason = why;
  return why == nullptr;
}

class DenseDecodeKernelTest : public ::testing::TestWithParam<std::tuple<std::string, size_t>> {};

TEST_P(DenseDecodeKernelTest, MatchesReference) {
  const std::string& name = std::get<0>(GetParam());
  const openmla::KernelEntry* k = find_kernel(Op::kDenseDecode, name);
  ASSERT_NE(k, nullptr);
  if (!openmla::kernel_runnable(*k)) GTEST_SKIP() << name << " cannot run on this host (ISA cap)";
  const Prepared& p = prepared(std::get<1>(GetParam()));
  const Result got = run(p.c, name.c_str(), 2);
  const CompareResult out = compare(got.out, p.ref.out, kDenseDecodeOut);
  EXPECT_TRUE(out.ok) << "out: " << out.message;
  const CompareResult lse = compare(got.lse, p.ref.lse, kDecodeLse);
  EXPECT_TRUE(lse.ok) << "lse: " << lse.message;
}

INSTANTIATE_TEST_SUITE_P(
    Grid, DenseDecodeKernelTest,
    ::testing::Combine(::testing::ValuesIn(kernel_names(Op::kDenseDecode)),
                       ::testing::Range<size_t>(0, grid().size())),
    [](const ::testing::TestParamInfo<DenseDecodeKernelTest::ParamType>& info) {
      const GridCase& g = grid()[std::get<1>(info.param)];
      std::ostringstream s;
      s << test_name(std::get<0>(info.param)) << "_" << std::get<1>(info.param) << "_"
        << (g.format == KvFormat::kBF16  ? "bf16"
            : g.format == KvFormat::kV32 ? "v32"
                                         : "model1")
        << "_h" << g.heads_q << "_hkv" << g.heads_kv << "_p" << g.page_size << "_L" << g.tokens
        << "_s" << g.seq_q << (g.causal ? "_causal" : "") << (g.non_contiguous ? "_nc" : "");
      return s.str();
    });

// ---- bitwise invariance ----

openmla::TensorView slice0(openmla::TensorView t, int64_t i) {
  t.data = static_cast<char*>(t.data) + i * t.stride[0] * openmla::dtype_size(t.dtype);
  t.shape[0] = 1;
  return t;
}

class DenseDecodeKernelInvariance : public ::testing::TestWithParam<std::string> {};

TEST_P(DenseDecodeKernelInvariance, ThreadAndBatchInvariant) {
  const openmla::KernelEntry* k = find_kernel(Op::kDenseDecode, GetParam());
  ASSERT_NE(k, nullptr);
  if (!openmla::kernel_runnable(*k)) GTEST_SKIP() << GetParam() << " cannot run on this host";
  // The last case is one query token with 128 heads: the AMX kernel's token-list path.
  const KvFormat formats[4] = {KvFormat::kBF16, KvFormat::kV32, KvFormat::kBF16, KvFormat::kModel1};
  for (int f = 0; f < 4; ++f) {
    const DType dtype = f == 2 ? DType::kF16 : DType::kBF16;
    if (!accepts(*k, dtype)) continue;
    DenseDecodeConfig cfg;
    cfg.format = formats[f];
    cfg.dtype = dtype;
    cfg.batch = 3;
    cfg.seq_q = f == 3 ? 1 : 2;
    cfg.heads_q = f == 3 ? 128 : f == 1 ? 64 : 16;
    cfg.page_size = 61;
    cfg.cache_tokens = 3000;  // varlen: several split pieces per request
    cfg.causal = true;
    cfg.seed = 7 + f;
    const DenseDecodeCase c = make_dense_decode_case(cfg);
    const Result base = run(c, GetParam().c_str(), 1);
    for (int threads : {2, 3}) {
      const Result r = run(c, GetParam().c_str(), threads);
      EXPECT_TRUE(bitwise_equal(r.out, base.out)) << "out differs at " << threads << " threads";
      EXPECT_TRUE(bitwise_equal(r.lse, base.lse)) << "lse differs at " << threads << " threads";
    }
    // Request b alone (batch of one) vs inside the batch.
    DenseDecodeArgs full = c.args();
    Outputs full_out = bind_outputs(&full);
    openmla::Options options;
    options.kernel = GetParam().c_str();
    options.num_threads = 2;
    ASSERT_TRUE(openmla::dense_decode(full, options).ok());
    for (int64_t b = 0; b < cfg.batch; ++b) {
      DenseDecodeArgs one = c.args();
      one.q = slice0(one.q, b);
      one.block_table = slice0(one.block_table, b);
      one.cache_seqlens = slice0(one.cache_seqlens, b);
      Outputs single = bind_outputs(&one);
      ASSERT_TRUE(openmla::dense_decode(one, options).ok());
      EXPECT_TRUE(bitwise_equal(to_float_vector(one.out), to_float_vector(slice0(full.out, b))))
          << "out of request " << b << " depends on the batch";
      EXPECT_TRUE(bitwise_equal(to_float_vector(one.lse), to_float_vector(slice0(full.lse, b))))
          << "lse of request " << b << " depends on the batch";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, DenseDecodeKernelInvariance,
                         ::testing::ValuesIn(kernel_names(Op::kDenseDecode)),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return test_name(info.param);
                         });

// ---- fp16 (FlashMLA: q and the 16-bit cache in fp16, out fp16) ----

/// The fp16 grid: 16-bit cache layout (KvFormat::kBF16) holding fp16, with fp16 q and out.
const std::vector<GridCase>& fp16_grid() {
  const KvFormat bf = KvFormat::kBF16;
  // format, dim, batch, seq_q, heads_q, heads_kv, page, tokens, varlen, zero, causal, noncontig
  static const std::vector<GridCase> cases = {
      {bf, 576, 2, 1, 16, 1, 64, 65, false, false, false, false},
      {bf, 576, 2, 2, 16, 1, 61, 200, true, false, true, true},
      {bf, 576, 2, 2, 128, 1, 64, 130, false, false, true, true},
      {bf, 576, 1, 1, 128, 1, 61, 4097, false, false, false, false},  // several split pieces
      {bf, 576, 3, 2, 16, 2, 61, 65, true, false, true, false},
      {bf, 512, 2, 1, 16, 1, 64, 63, false, false, false, true},
      {bf, 576, 1, 3, 16, 1, 64, 1, false, false, true, false},  // lonely causal rows
  };
  return cases;
}

DenseDecodeCase make_fp16_case(size_t index) {
  DenseDecodeConfig c = config_of(fp16_grid()[index], 500 + index);
  c.dtype = DType::kF16;
  return make_dense_decode_case(c);
}

double fp16_at(const OwnedTensor& t, std::initializer_list<int64_t> index) {
  return openmla::fp16_to_float(t.at<uint16_t>(index));
}

/// Independent naive oracle of the fp16 case: exact fp16 inputs, double softmax, out rounded
/// once to fp16. Layouts as to_float_vector gives them: out [b][s][h][512], lse [b][h][s].
Result naive_fp16(const DenseDecodeCase& c) {
  const DenseDecodeConfig& g = c.config;
  const int64_t D = c.head_dim, group = g.heads_q / g.heads_kv, P = g.page_size;
  const double scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  Result r;
  r.lse.resize(g.batch * g.heads_q * g.seq_q);
  for (int64_t b = 0; b < g.batch; ++b)
    for (int64_t s = 0; s < g.seq_q; ++s)
      for (int64_t h = 0; h < g.heads_q; ++h) {
        const int64_t len = c.cache_seqlens.at<int32_t>({b});
        const int64_t visible = g.causal ? std::max<int64_t>(0, len - (g.seq_q - 1 - s)) : len;
        std::vector<double> score(visible), out(512, 0.0);
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < visible; ++j) {
          const int64_t page = c.block_table.at<int32_t>({b, j / P});
          double dot = 0.0;
          for (int64_t i = 0; i < D; ++i)
            dot += fp16_at(c.q, {b, s, h, i}) * fp16_at(c.kv.latents, {page, j % P, h / group, i});
          score[j] = scale * dot;
          mx = std::max(mx, score[j]);
        }
        for (int64_t j = 0; j < visible; ++j) {
          const int64_t page = c.block_table.at<int32_t>({b, j / P});
          const double w = std::exp(score[j] - mx);
          sum += w;
          for (int64_t i = 0; i < 512; ++i)
            out[i] += w * fp16_at(c.kv.latents, {page, j % P, h / group, i});
        }
        for (int64_t i = 0; i < 512; ++i) {
          const float o = visible > 0 ? static_cast<float>(out[i] / sum) : 0.0f;
          r.out.push_back(openmla::fp16_to_float(openmla::float_to_fp16(o)));
        }
        r.lse[(b * g.heads_q + h) * g.seq_q + s] =
            visible > 0 ? static_cast<float>(mx + std::log(sum)) : INFINITY;
      }
  return r;
}

const Prepared& prepared_fp16(size_t index) {
  static std::map<size_t, std::unique_ptr<Prepared>> cache;
  auto& slot = cache[index];
  if (!slot) {
    slot = std::make_unique<Prepared>();
    slot->c = make_fp16_case(index);
    slot->ref = run(slot->c, "dense_decode.ref", 2);
  }
  return *slot;
}

TEST(DenseDecodeFp16, ReferenceMatchesNaiveFp16Oracle) {
  for (size_t i : {size_t{0}, size_t{1}, size_t{4}, size_t{5}, size_t{6}}) {
    SCOPED_TRACE("fp16 case " + std::to_string(i));
    const Prepared& p = prepared_fp16(i);
    const Result want = naive_fp16(p.c);
    const CompareResult out = compare(p.ref.out, want.out, kFp16OutStep);
    EXPECT_TRUE(out.ok) << "out: " << out.message;
    const CompareResult lse = compare(p.ref.lse, want.lse, kDecodeLse);
    EXPECT_TRUE(lse.ok) << "lse: " << lse.message;
  }
}

/// Rounds every fp16 word of `t`'s storage to the nearest bf16 value (kept as fp16).
void round_storage_to_bf16(OwnedTensor* t) {
  uint16_t* w = reinterpret_cast<uint16_t*>(t->storage.data());
  for (size_t i = 0; i < t->storage.size() * 4; ++i)
    w[i] = openmla::float_to_fp16(openmla::round_to_bf16(openmla::fp16_to_float(w[i])));
}

bool passes_fp16_checks(const Result& got, const Result& ref) {
  return compare(got.out, ref.out, kFp16OutStep).ok && compare(got.lse, ref.lse, kDecodeLse).ok;
}

TEST(DenseDecodeFp16, Bf16RoundingAnywhereFailsTheKernelChecks) {
  // A kernel that rounded out, the keys or q to bf16 must fail MatchesReferenceWithinOneFp16Step:
  // emulate each with the reference and apply the same checks. q enters only through the scores;
  // the single-token rows of case 6 expose it in lse.
  const Prepared& p = prepared_fp16(0);
  Result out_as_bf16 = p.ref;
  for (float& v : out_as_bf16.out) v = openmla::round_to_bf16(v);
  EXPECT_FALSE(passes_fp16_checks(out_as_bf16, p.ref));
  for (size_t index : {size_t{0}, size_t{6}}) {
    DenseDecodeCase keys = make_fp16_case(index);
    round_storage_to_bf16(&keys.kv.cache);
    EXPECT_FALSE(passes_fp16_checks(run(keys, "dense_decode.ref", 2), prepared_fp16(index).ref))
        << "keys rounded to bf16, case " << index;
  }
  DenseDecodeCase q = make_fp16_case(6);
  round_storage_to_bf16(&q.q);
  EXPECT_FALSE(passes_fp16_checks(run(q, "dense_decode.ref", 2), prepared_fp16(6).ref));
}

class DenseDecodeFp16Test : public ::testing::TestWithParam<std::tuple<std::string, size_t>> {};

TEST_P(DenseDecodeFp16Test, MatchesReferenceWithinOneFp16Step) {
  const std::string& name = std::get<0>(GetParam());
  const openmla::KernelEntry* k = find_kernel(Op::kDenseDecode, name);
  ASSERT_NE(k, nullptr);
  if (!openmla::kernel_runnable(*k)) GTEST_SKIP() << name << " cannot run on this host (ISA cap)";
  const Prepared& p = prepared_fp16(std::get<1>(GetParam()));
  const char* reason = nullptr;
  if (!accepts(*k, DType::kF16, &reason)) {
    // Only the bf16-dot kernels (AMX-BF16, AVX512-BF16) may decline fp16, and they must say so
    // rather than round to bf16.
    EXPECT_TRUE(k->isa == openmla::Isa::kAmx || k->isa == openmla::Isa::kAvx512Bf16) << name;
    EXPECT_NE(std::string(reason).find("fp16"), std::string::npos) << reason;
    DenseDecodeArgs args = p.c.args();
    Outputs o = bind_outputs(&args);
    openmla::Options options;
    options.kernel = name.c_str();
    const openmla::Status st = openmla::dense_decode(args, options);
    EXPECT_EQ(st.code(), openmla::StatusCode::kUnsupported) << st.to_string();
    GTEST_SKIP() << name << ": " << reason;
  }
  const Result got = run(p.c, name.c_str(), 2);
  const CompareResult out = compare(got.out, p.ref.out, kDenseDecodeOut);
  EXPECT_TRUE(out.ok) << "out: " << out.message;
  const CompareResult step = compare(got.out, p.ref.out, kFp16OutStep);
  EXPECT_TRUE(step.ok) << "out (one fp16 step): " << step.message;
  const CompareResult lse = compare(got.lse, p.ref.lse, kDecodeLse);
  EXPECT_TRUE(lse.ok) << "lse: " << lse.message;
}

INSTANTIATE_TEST_SUITE_P(Fp16, DenseDecodeFp16Test,
                         ::testing::Combine(::testing::ValuesIn(kernel_names(Op::kDenseDecode)),
                                            ::testing::Range<size_t>(0, fp16_grid().size())),
                         [](const ::testing::TestParamInfo<DenseDecodeFp16Test::ParamType>& info) {
                           const GridCase& g = fp16_grid()[std::get<1>(info.param)];
                           std::ostringstream s;
                           s << test_name(std::get<0>(info.param)) << "_" << std::get<1>(info.param)
                             << "_fp16_d" << g.head_dim << "_h" << g.heads_q << "_hkv" << g.heads_kv
                             << "_p" << g.page_size << "_L" << g.tokens << "_s" << g.seq_q
                             << (g.causal ? "_causal" : "") << (g.non_contiguous ? "_nc" : "");
                           return s.str();
                         });

TEST(DenseDecodeFp16, SelectionSkipsKernelsThatDeclineFp16) {
  const Prepared& p = prepared_fp16(0);
  DenseDecodeArgs args = p.c.args();
  Outputs o = bind_outputs(&args);
  openmla::Plan plan;
  const openmla::Status st = openmla::plan_dense_decode(args, {}, &plan);
  ASSERT_TRUE(st.ok()) << st.to_string();
  const openmla::KernelEntry* chosen = find_kernel(Op::kDenseDecode, plan.kernel_name());
  ASSERT_NE(chosen, nullptr);
  EXPECT_TRUE(accepts(*chosen, DType::kF16)) << plan.kernel_name();
  for (const openmla::KernelEntry* k : openmla::kernels_for(Op::kDenseDecode)) {
    if (k == chosen) break;  // every faster kernel the host can run declined fp16
    EXPECT_TRUE(!openmla::kernel_runnable(*k) || !accepts(*k, DType::kF16)) << k->name;
  }
  // A plan made for bf16 must not serve fp16 arguments of the same shapes (it may be AMX).
  DenseDecodeConfig bf = p.c.config;
  bf.dtype = DType::kBF16;
  const DenseDecodeCase bf_case = make_dense_decode_case(bf);
  DenseDecodeArgs bf_args = bf_case.args();
  Outputs bf_out = bind_outputs(&bf_args);
  openmla::Plan bf_plan;
  ASSERT_TRUE(openmla::plan_dense_decode(bf_args, {}, &bf_plan).ok());
  EXPECT_FALSE(openmla::run_dense_decode(bf_plan, args).ok());
}

}  // namespace
