// Every registered dense-decode kernel against the reference kernel on a FlashMLA-style grid
// (heads 1..128, page sizes 1/2/61/64/69, lengths 0/1/63/64/65/4097, causal with seq_q 1-4,
// BF16 / V32 / MODEL1, heads_kv > 1, non-contiguous inputs) at the spec §7.2 tolerances, plus
// bitwise thread-count (1, 2, 3) and batch invariance (request alone vs inside a batch).
// Kernels the host cannot run (OPENMLA_MAX_ISA cap, missing ISA) are skipped with the reason.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cases.h"
#include "compare.h"
#include "dispatch/registry.h"

namespace {

using openmla::DenseDecodeArgs;
using openmla::KvFormat;
using openmla::Op;
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

std::vector<std::string> kernel_names() {
  std::vector<std::string> names;
  for (const openmla::KernelEntry* k : openmla::kernels_for(Op::kDenseDecode))
    names.push_back(k->name);
  return names;
}

const openmla::KernelEntry* entry(const std::string& name) {
  for (const openmla::KernelEntry* k : openmla::kernels_for(Op::kDenseDecode))
    if (name == k->name) return k;
  return nullptr;
}

std::string safe(std::string s) {
  for (char& ch : s)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

class DenseDecodeKernelTest
    : public ::testing::TestWithParam<std::tuple<std::string, size_t>> {};

TEST_P(DenseDecodeKernelTest, MatchesReference) {
  const std::string& name = std::get<0>(GetParam());
  const openmla::KernelEntry* k = entry(name);
  ASSERT_NE(k, nullptr);
  if (!openmla::kernel_runnable(*k)) GTEST_SKIP() << name << " cannot run on this host (ISA cap)";
  const Prepared& p = prepared(std::get<1>(GetParam()));
  const Result got = run(p.c, name.c_str(), 2);
  const CompareResult out = compare(got.out, p.ref.out, kDecodeOut);
  EXPECT_TRUE(out.ok) << "out: " << out.message;
  const CompareResult lse = compare(got.lse, p.ref.lse, kDecodeLse);
  EXPECT_TRUE(lse.ok) << "lse: " << lse.message;
}

INSTANTIATE_TEST_SUITE_P(
    Grid, DenseDecodeKernelTest,
    ::testing::Combine(::testing::ValuesIn(kernel_names()),
                       ::testing::Range<size_t>(0, grid().size())),
    [](const ::testing::TestParamInfo<DenseDecodeKernelTest::ParamType>& info) {
      const GridCase& g = grid()[std::get<1>(info.param)];
      std::ostringstream s;
      s << safe(std::get<0>(info.param)) << "_" << std::get<1>(info.param) << "_"
        << (g.format == KvFormat::kBF16 ? "bf16" : g.format == KvFormat::kV32 ? "v32" : "model1")
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
  const openmla::KernelEntry* k = entry(GetParam());
  ASSERT_NE(k, nullptr);
  if (!openmla::kernel_runnable(*k)) GTEST_SKIP() << GetParam() << " cannot run on this host";
  const KvFormat formats[2] = {KvFormat::kBF16, KvFormat::kV32};
  for (int f = 0; f < 2; ++f) {
    DenseDecodeConfig cfg;
    cfg.format = formats[f];
    cfg.batch = 3;
    cfg.seq_q = 2;
    cfg.heads_q = f == 0 ? 16 : 64;
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
                         ::testing::ValuesIn(kernel_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return safe(info.param);
                         });

}  // namespace
