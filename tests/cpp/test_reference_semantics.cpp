// Semantics of the three reference kernels, checked independently of the reference itself:
// hand-computable cases (exact outputs / lse), invariances (NaN poisoning, page size, strides,
// main/extra split, FP8 vs dequantised copy, dense vs sparse, grouped heads), and a naive
// long-double oracle with FlashMLA's tolerances.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "support/test_support.h"

namespace {

using namespace openmla_test;

const float kInf = std::numeric_limits<float>::infinity();
const std::vector<int64_t> kAllPageSizes = {1, 2, 53, 61, 64, 69, 576};

// This file checks the reference kernels, so every call forces them by name.
OpResult ref_sparse_decode(const SparseDecodeCase& c, bool nc = false) {
  openmla::Options o;
  o.kernel = "sparse_decode.ref";
  return run_sparse_decode(c, nc, o);
}
OpResult ref_dense_decode(const DenseDecodeCase& c, bool nc = false) {
  openmla::Options o;
  o.kernel = "dense_decode.ref";
  return run_dense_decode(c, nc, o);
}
OpResult ref_sparse_prefill(const SparsePrefillCase& c, bool nc = false) {
  openmla::Options o;
  o.kernel = "sparse_prefill.ref";
  return run_sparse_prefill(c, nc, o);
}

int64_t dim_of(KvFormat f) { return f == KvFormat::kModel1 ? 512 : 576; }
const char* name_of(KvFormat f) { return openmla::kv_format_name(f); }

std::vector<uint16_t> rand_bf16(int64_t n, uint32_t seed, double sd = 0.1, double clamp = 1.0) {
  return Rng(seed).bf16_normal(n, sd, clamp);
}

/// Maps logical token ids to cache slots; values outside [0, n) pass through raw (invalid ones).
std::vector<int32_t> to_slots(const PagedKv& kv, const std::vector<int64_t>& logical, int64_t n,
                              int64_t request = 0) {
  std::vector<int32_t> s;
  for (int64_t v : logical)
    s.push_back(v >= 0 && v < n ? kv.slot(v, request) : static_cast<int32_t>(v));
  return s;
}

/// Key vector (floats) of `slot` in a BF16 PagedKv.
std::vector<float> key_of(const PagedKv& kv, int64_t slot, int64_t head = 0) {
  const int64_t block = slot / kv.page_size, off = slot % kv.page_size;
  const uint8_t* p = kv.bytes() + block * kv.page_stride_bytes + (off * kv.heads_kv + head) * kv.head_dim * 2;
  std::vector<float> k(kv.head_dim);
  for (int64_t i = 0; i < kv.head_dim; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    k[i] = bf(h);
  }
  return k;
}

/// What one token of `format` dequantises to, computed with the independent model.
std::vector<uint16_t> model_roundtrip(KvFormat f, const uint16_t* latent) {
  const int64_t d = dim_of(f);
  std::vector<uint16_t> out(latent, latent + d);
  if (f == KvFormat::kBF16) return out;
  std::vector<uint8_t> rec(656), sc(7);
  model_quantize_token(f, latent, rec.data(), sc.data());
  model_dequantize_token(f, rec.data(), sc.data(), out.data());
  return out;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

std::vector<float> row_floats(const std::vector<uint16_t>& v, int64_t at, int64_t n) {
  std::vector<float> f(n);
  for (int64_t i = 0; i < n; ++i) f[i] = bf(v[at + i]);
  return f;
}

void expect_lonely(const OpResult& r, int64_t row_out, int64_t row_lse) {
  for (int64_t i = 0; i < 512; ++i) ASSERT_EQ(bf(r.out[row_out * 512 + i]), 0.0f) << "element " << i;
  EXPECT_EQ(r.lse[row_lse], kInf);
}

// ================================================================ sparse decode

struct SdSetup {
  std::vector<uint16_t> tokens;  // [n, d] logical latents
  PagedKv kv;
  int64_t n;
};

SdSetup sd_setup(KvFormat f, int64_t n, int64_t page, uint32_t seed) {
  SdSetup s;
  s.n = n;
  s.tokens = rand_bf16(n * dim_of(f), seed);
  s.kv = build_paged_kv(f, dim_of(f), 1, page, {s.tokens}, seed + 1);
  return s;
}

TEST(SparseDecodeRef, SingleValidTokenGivesOutEqualToValueAndLseEqualToScaledDot) {
  for (KvFormat f : {KvFormat::kBF16, KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    SdSetup s = sd_setup(f, 5, 2, 1);
    const int64_t d = dim_of(f);
    SparseDecodeCase c;
    c.heads_q = 3;
    c.head_dim = d;
    c.topk = 4;
    c.q = rand_bf16(3 * d, 2, 1.0);
    c.kv = &s.kv;
    c.indices = to_slots(s.kv, {-1, 3, -1, -1}, s.n);
    c.scale = 0.3f;
    const OpResult r = ref_sparse_decode(c);
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    const std::vector<uint16_t> k = model_roundtrip(f, s.tokens.data() + 3 * d);
    std::vector<float> kf(d);
    for (int64_t i = 0; i < d; ++i) kf[i] = bf(k[i]);
    for (int64_t h = 0; h < 3; ++h) {
      for (int64_t i = 0; i < 512; ++i) ASSERT_EQ(r.out[h * 512 + i], k[i]) << "head " << h << " dim " << i;
      const double want = 0.3f * dot(row_floats(c.q, h * d, d), kf);
      EXPECT_NEAR(r.lse[h], want, 1e-6 * std::max(1.0, std::fabs(want))) << "head " << h;
    }
  }
}

TEST(SparseDecodeRef, ScoreGapLn3GivesSoftmaxWeightsThreeQuartersAndOneQuarter) {
  // q = e0, k1[0] = 1, k2[0] = 0, scale = ln 3 -> weights 3/4, 1/4. V1 = 4, V2 = 8 elsewhere.
  std::vector<uint16_t> tokens(2 * 576, 0);
  tokens[0] = bf16_exact(1.0f);
  for (int i = 1; i < 512; ++i) {
    tokens[i] = bf16_exact(4.0f);
    tokens[576 + i] = bf16_exact(8.0f);
  }
  PagedKv kv = build_paged_kv(KvFormat::kBF16, 576, 1, 2, {tokens}, 3);
  SparseDecodeCase c;
  c.heads_q = 1;
  c.topk = 3;
  c.q.assign(576, 0);
  c.q[0] = bf16_exact(1.0f);
  c.kv = &kv;
  c.indices = to_slots(kv, {0, -1, 1}, 2);
  c.scale = static_cast<float>(std::log(3.0));
  const OpResult r = ref_sparse_decode(c);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(bf(r.out[0]), 0.75f);
  for (int i = 1; i < 512; ++i) ASSERT_EQ(bf(r.out[i]), 5.0f) << i;
  EXPECT_NEAR(r.lse[0], std::log(4.0), 1e-6);
}

TEST(SparseDecodeRef, DuplicateIndexCountsTwiceSoLseGrowsByLn2) {
  for (KvFormat f : {KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    SdSetup s = sd_setup(f, 8, 3, 4);
    SparseDecodeCase c;
    c.heads_q = 2;
    c.head_dim = dim_of(f);
    c.topk = 3;
    c.q = rand_bf16(2 * c.head_dim, 5, 1.0);
    c.kv = &s.kv;
    c.indices = to_slots(s.kv, {5, -1, -1}, s.n);
    const OpResult single = ref_sparse_decode(c);
    c.indices = to_slots(s.kv, {5, -1, 5}, s.n);
    const OpResult twice = ref_sparse_decode(c);
    ASSERT_TRUE(single.status.ok() && twice.status.ok());
    EXPECT_TRUE(SameBits(single.out, twice.out));
    for (int h = 0; h < 2; ++h) EXPECT_NEAR(twice.lse[h] - single.lse[h], std::log(2.0), 2e-6);
    // [5, 5, 2] weighs token 5 twice: differs from [5, 2].
    c.indices = to_slots(s.kv, {5, 5, 2}, s.n);
    const OpResult dup = ref_sparse_decode(c);
    c.indices = to_slots(s.kv, {5, -1, 2}, s.n);
    const OpResult nodup = ref_sparse_decode(c);
    EXPECT_FALSE(SameBits(dup.out, nodup.out));
  }
}

TEST(SparseDecodeRef, NegativeAndOutOfRangeIndicesAreIgnored) {
  SdSetup s = sd_setup(KvFormat::kV32, 10, 4, 6);
  const int64_t slots = s.kv.num_blocks * s.kv.page_size;
  SparseDecodeCase c;
  c.heads_q = 2;
  c.topk = 9;
  c.q = rand_bf16(2 * 576, 7, 1.0);
  c.kv = &s.kv;
  c.indices = to_slots(s.kv, {1, -1, 7, -2, INT32_MIN, slots, INT32_MAX, 3, -123456}, s.n);
  const OpResult noisy = ref_sparse_decode(c);
  c.indices = to_slots(s.kv, {1, 7, 3, -1, -1, -1, -1, -1, -1}, s.n);
  const OpResult clean = ref_sparse_decode(c);
  ASSERT_TRUE(noisy.status.ok() && clean.status.ok()) << noisy.status.to_string();
  EXPECT_TRUE(SameBits(noisy.out, clean.out));
  EXPECT_TRUE(SameBits(noisy.lse, clean.lse));
}

TEST(SparseDecodeRef, PositionsAtOrBeyondTopkLengthAreIgnoredEvenWithGarbage) {
  // Token ids >= 12 are never written: their slots hold NaN latents. Positions beyond the length
  // name NaN tokens, out-of-range values and valid tokens alike.
  SdSetup s = sd_setup(KvFormat::kModel1, 12, 5, 8);
  const int32_t nan_slot = static_cast<int32_t>(s.kv.blocks[0].back() * 5 + 4);  // offset 4 of last page
  SparseDecodeCase c;
  c.batch = 2;
  c.seq_q = 2;
  c.heads_q = 2;
  c.head_dim = 512;
  c.topk = 6;
  c.q = rand_bf16(2 * 2 * 2 * 512, 9, 1.0);
  c.kv = &s.kv;
  std::vector<int32_t> garbage = to_slots(s.kv, {2, 4, 6, 0, 0, 0, 9, 1, 3, 0, 0, 0,      // b0 (len 3)
                                                 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7},     // b1 (len 0)
                                          s.n);
  for (int i : {3, 9, 12, 18}) garbage[i] = nan_slot;
  for (int i : {4, 10, 13, 19}) garbage[i] = INT32_MAX;
  c.indices = garbage;
  c.topk_length = {3, 0};
  const OpResult with_len = ref_sparse_decode(c);
  ASSERT_TRUE(with_len.status.ok()) << with_len.status.to_string();
  c.topk_length.clear();
  c.indices = to_slots(s.kv, {2, 4, 6, -1, -1, -1, 9, 1, 3, -1, -1, -1,
                              -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1}, s.n);
  const OpResult clean = ref_sparse_decode(c);
  EXPECT_TRUE(SameBits(with_len.out, clean.out));
  EXPECT_TRUE(SameBits(with_len.lse, clean.lse));
  for (int64_t row = 4; row < 8; ++row) expect_lonely(with_len, row, row);  // batch 1: all lonely
}

TEST(SparseDecodeRef, LonelyRowsGiveZeroOutAndInfiniteLseWhateverTheSink) {
  SdSetup s = sd_setup(KvFormat::kV32, 4, 2, 10);
  SparseDecodeCase c;
  c.batch = 2;
  c.heads_q = 5;
  c.topk = 3;
  c.q = rand_bf16(2 * 5 * 576, 11, 1.0);
  c.kv = &s.kv;
  c.sink = {-kInf, -1.0f, 0.0f, 5.0f, kInf};
  c.indices = to_slots(s.kv, {0, 1, 2, -1, -1, -1}, s.n);  // b0 has tokens but length 0
  c.topk_length = {0, 3};                                  // b1: all -1
  const OpResult r = ref_sparse_decode(c);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  for (int64_t row = 0; row < 10; ++row) expect_lonely(r, row, row);
}

TEST(SparseDecodeRef, SinkScalesOutByLogisticFactorAndNeverChangesLse) {
  // q = 0 makes every score 0, so one token gives lse = 0 exactly and out = V * 1/(1 + e^sink).
  std::vector<uint16_t> tok(576);
  const float vals[] = {8.0f, -12.0f, 0.5f, 1.75f, -3.0f, 0.0f};
  for (int i = 0; i < 576; ++i) tok[i] = bf16_exact(vals[i % 6]);
  PagedKv kv = build_paged_kv(KvFormat::kBF16, 576, 1, 1, {tok}, 12);
  SparseDecodeCase c;
  c.heads_q = 5;
  c.topk = 1;
  c.q.assign(5 * 576, 0);
  c.kv = &kv;
  c.indices = {kv.slot(0)};
  const float ln3 = static_cast<float>(std::log(3.0));
  c.sink = {-kInf, 0.0f, ln3, kInf, -ln3};
  const double factor[] = {1.0, 0.5, 0.25, 0.0, 0.75};
  const OpResult r = ref_sparse_decode(c);
  ASSERT_TRUE(r.status.ok());
  for (int h = 0; h < 5; ++h) {
    EXPECT_EQ(r.lse[h], 0.0f) << "lse must not include the sink, head " << h;
    for (int i = 0; i < 512; ++i)
      ASSERT_EQ(bf(r.out[h * 512 + i]), static_cast<float>(vals[i % 6] * factor[h])) << "head " << h << " dim " << i;
  }
}

/// Builds the poisoning scenario: referenced tokens 0..19 are shared; tokens 20..39 are either
/// finite (baseline) or NaN (poisoned) and are only named at positions past topk_length.
OpResult run_poison_case(KvFormat f, bool poison, PagedKv* keep) {
  const int64_t d = dim_of(f), n = 40;
  std::vector<uint16_t> tokens = rand_bf16(n * d, 13);
  if (poison) std::fill(tokens.begin() + 20 * d, tokens.end(), kBf16NaN);
  *keep = build_paged_kv(f, d, 1, 7, {tokens}, 14);
  if (poison) keep->poison_padding();
  SparseDecodeCase c;
  c.batch = 2;
  c.seq_q = 2;
  c.heads_q = 2;
  c.head_dim = d;
  c.topk = 8;
  c.q = rand_bf16(2 * 2 * 2 * d, 15, 1.0);
  c.kv = keep;
  c.topk_length = {6, 8};
  std::vector<int64_t> logical = {3, 19, -1, 0, 7, 7, 25, 39,    // b0 s0: positions 6, 7 garbage
                                  11, 12, 13, 14, 15, 16, 20, 21, // b0 s1
                                  1, 2, 3, 4, 5, 6, 8, 9,         // b1 s0
                                  19, 18, -1, 17, 10, 10, 11, 2}; // b1 s1
  c.indices = to_slots(*keep, logical, n);
  return ref_sparse_decode(c);
}

TEST(SparseDecodeRef, NaNInUnreferencedTokensScalesRopeAndPaddingNeverLeaks) {
  for (KvFormat f : {KvFormat::kBF16, KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    PagedKv a, b;
    const OpResult clean = run_poison_case(f, false, &a);
    const OpResult poisoned = run_poison_case(f, true, &b);
    ASSERT_TRUE(clean.status.ok() && poisoned.status.ok()) << poisoned.status.to_string();
    EXPECT_TRUE(SameBits(clean.out, poisoned.out));
    EXPECT_TRUE(SameBits(clean.lse, poisoned.lse));
    for (uint16_t o : poisoned.out) ASSERT_FALSE(std::isnan(bf(o)));
    for (float l : poisoned.lse) ASSERT_TRUE(std::isfinite(l));
  }
}

TEST(SparseDecodeRef, SameLogicalTokensGiveBitIdenticalOutputsForEveryPageSize) {
  for (KvFormat f : {KvFormat::kBF16, KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    const int64_t d = dim_of(f), n = 150;
    const std::vector<uint16_t> tokens = rand_bf16(n * d, 16);
    Rng rng(17);
    std::vector<int64_t> logical;
    for (int i = 0; i < 2 * 2 * 12; ++i) logical.push_back(rng.uniform_int(-1, n - 1));
    OpResult first;
    for (int64_t page : kAllPageSizes) {
      PagedKv kv = build_paged_kv(f, d, 1, page, {tokens}, static_cast<uint32_t>(18 + page));
      SparseDecodeCase c;
      c.batch = 2;
      c.seq_q = 2;
      c.heads_q = 2;
      c.head_dim = d;
      c.topk = 12;
      c.q = rand_bf16(2 * 2 * 2 * d, 19, 1.0);
      c.kv = &kv;
      c.indices = to_slots(kv, logical, n);
      const OpResult r = ref_sparse_decode(c);
      ASSERT_TRUE(r.status.ok()) << r.status.to_string();
      if (page == 1) {
        first = r;
        continue;
      }
      EXPECT_TRUE(SameBits(first.out, r.out)) << "page size " << page;
      EXPECT_TRUE(SameBits(first.lse, r.lse)) << "page size " << page;
    }
  }
}

TEST(SparseDecodeRef, NonContiguousViewsGiveBitIdenticalResults) {
  for (KvFormat f : {KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    SdSetup s = sd_setup(f, 30, 4, 20);
    SdSetup e = sd_setup(f, 12, 3, 21);
    SparseDecodeCase c;
    c.batch = 2;
    c.seq_q = 3;
    c.heads_q = 4;
    c.head_dim = dim_of(f);
    c.topk = 5;
    c.q = rand_bf16(2 * 3 * 4 * c.head_dim, 22, 1.0);
    c.kv = &s.kv;
    Rng rng(23);
    std::vector<int64_t> logical, extra;
    for (int i = 0; i < 2 * 3 * 5; ++i) logical.push_back(rng.uniform_int(-1, 29));
    for (int i = 0; i < 2 * 3 * 2; ++i) extra.push_back(rng.uniform_int(-1, 11));
    c.indices = to_slots(s.kv, logical, s.n);
    c.topk_length = {4, 5};
    c.sink = {0.5f, -kInf, kInf, -0.25f};
    c.extra = &e.kv;
    c.extra_topk = 2;
    c.extra_indices = to_slots(e.kv, extra, e.n);
    c.extra_topk_length = {2, 1};
    const OpResult contiguous = ref_sparse_decode(c, false);
    const OpResult strided = ref_sparse_decode(c, true);
    ASSERT_TRUE(contiguous.status.ok()) << contiguous.status.to_string();
    ASSERT_TRUE(strided.status.ok()) << strided.status.to_string();
    EXPECT_TRUE(SameBits(contiguous.out, strided.out));
    EXPECT_TRUE(SameBits(contiguous.lse, strided.lse));
  }
}

TEST(SparseDecodeRef, SplittingTokensBetweenMainAndExtraCacheEqualsAllInMain) {
  for (KvFormat f : {KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    const int64_t d = dim_of(f), n = 30;
    const std::vector<uint16_t> tokens = rand_bf16(n * d, 24);
    PagedKv main_kv = build_paged_kv(f, d, 1, 4, {tokens}, 25);
    PagedKv extra_kv = build_paged_kv(f, d, 1, 3, {tokens}, 26);  // own page size and placement
    SparseDecodeCase all;
    all.batch = 2;
    all.heads_q = 2;
    all.head_dim = d;
    all.topk = 8;
    all.q = rand_bf16(2 * 2 * d, 27, 1.0);
    all.kv = &main_kv;
    // b0: main part {3, 9, 17, 9}, extra part {0, 29, 5}; b1: main {1}, extra {2, 2, 28}.
    all.indices = to_slots(main_kv, {3, 9, 17, 9, 0, 29, 5, -1, 1, 2, 2, 28, -1, -1, -1, -1}, n);
    const OpResult want = ref_sparse_decode(all);
    SparseDecodeCase split = all;
    split.topk = 5;
    split.indices = to_slots(main_kv, {3, 9, 17, 9, -1, 1, -1, -1, -1, -1}, n);
    split.topk_length = {4, 5};
    split.extra = &extra_kv;
    split.extra_topk = 4;
    split.extra_indices = to_slots(extra_kv, {0, 29, 5, 11, 2, 2, 28, 7}, n);
    split.extra_topk_length = {3, 3};  // position 3 (11 / 7) is past the extra length
    const OpResult got = ref_sparse_decode(split);
    ASSERT_TRUE(want.status.ok() && got.status.ok()) << got.status.to_string();
    EXPECT_TRUE(SameBits(want.out, got.out));
    EXPECT_TRUE(SameBits(want.lse, got.lse));
  }
}

TEST(SparseDecodeRef, V32ValueExcludesRopeWhileModel1ValueIncludesIt) {
  for (KvFormat f : {KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    const int64_t d = dim_of(f), nope = d - 64;
    // Tokens A and B share the NoPE part; RoPE is all 1 in A and all 2 in B.
    std::vector<uint16_t> tokens(2 * d);
    for (int64_t i = 0; i < nope; ++i) tokens[i] = tokens[d + i] = bf16_exact(0.25f * ((i % 9) - 4));
    for (int64_t i = nope; i < d; ++i) {
      tokens[i] = bf16_exact(1.0f);
      tokens[d + i] = bf16_exact(2.0f);
    }
    PagedKv kv = build_paged_kv(f, d, 1, 2, {tokens}, 28);
    SparseDecodeCase c;
    c.heads_q = 1;
    c.head_dim = d;
    c.topk = 2;
    c.q.assign(d, 0);  // equal scores: weights 1/2, 1/2
    c.kv = &kv;
    c.indices = {kv.slot(0), kv.slot(1)};
    const OpResult ab = ref_sparse_decode(c);
    c.indices = {kv.slot(0), kv.slot(0)};
    const OpResult aa = ref_sparse_decode(c);
    ASSERT_TRUE(ab.status.ok() && aa.status.ok());
    const std::vector<uint16_t> v = model_roundtrip(f, tokens.data());
    if (f == KvFormat::kV32) {
      EXPECT_TRUE(SameBits(ab.out, aa.out)) << "V32: RoPE must not enter V";
      for (int i = 0; i < 512; ++i) ASSERT_EQ(ab.out[i], v[i]) << i;  // V = 512 NoPE values
    } else {
      for (int i = 0; i < 448; ++i) ASSERT_EQ(ab.out[i], v[i]) << i;
      for (int i = 448; i < 512; ++i) {
        ASSERT_EQ(bf(ab.out[i]), 1.5f) << "MODEL1: V includes RoPE, dim " << i;
        ASSERT_EQ(bf(aa.out[i]), 1.0f) << i;
      }
    }
    // RoPE always enters the score: a q with RoPE components changes lse between A and B.
    std::vector<uint16_t> q(d, 0);
    for (int64_t i = nope; i < d; ++i) q[i] = bf16_exact(0.125f);
    c.q = q;
    c.indices = {kv.slot(0), -1};
    const OpResult ra = ref_sparse_decode(c);
    c.indices = {kv.slot(1), -1};
    const OpResult rb = ref_sparse_decode(c);
    const float sc = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    EXPECT_NEAR(ra.lse[0], sc * 64 * 0.125, 1e-6);
    EXPECT_NEAR(rb.lse[0], sc * 64 * 0.25, 1e-6);
  }
}

TEST(SparseDecodeRef, Fp8CacheGivesBitIdenticalResultsToItsDequantisedBf16Copy) {
  for (KvFormat f : {KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    SdSetup s = sd_setup(f, 40, 6, 29);
    PagedKv bf16 = dequantized_copy(s.kv);
    SparseDecodeCase c;
    c.batch = 2;
    c.seq_q = 2;
    c.heads_q = 3;
    c.head_dim = dim_of(f);
    c.topk = 10;
    c.q = rand_bf16(2 * 2 * 3 * c.head_dim, 30, 1.0);
    c.kv = &s.kv;
    Rng rng(31);
    std::vector<int64_t> logical;
    for (int i = 0; i < 40; ++i) logical.push_back(rng.uniform_int(-1, 39));
    c.indices = to_slots(s.kv, logical, s.n);
    c.sink = {0.0f, 1.0f, -kInf};
    const OpResult fp8 = ref_sparse_decode(c);
    c.kv = &bf16;
    const OpResult ref = ref_sparse_decode(c);
    ASSERT_TRUE(fp8.status.ok() && ref.status.ok()) << ref.status.to_string();
    EXPECT_TRUE(SameBits(fp8.out, ref.out));
    EXPECT_TRUE(SameBits(fp8.lse, ref.lse));
  }
}

TEST(SparseDecodeRef, DefaultSoftmaxScaleIsInverseSqrtOfQkHeadDim) {
  for (KvFormat f : {KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    SdSetup s = sd_setup(f, 6, 2, 32);
    SparseDecodeCase c;
    c.heads_q = 2;
    c.head_dim = dim_of(f);
    c.topk = 4;
    c.q = rand_bf16(2 * c.head_dim, 33, 1.0);
    c.kv = &s.kv;
    c.indices = to_slots(s.kv, {0, 2, 4, 5}, s.n);
    c.scale = 0.0f;
    const OpResult dflt = ref_sparse_decode(c);
    c.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
    const OpResult expl = ref_sparse_decode(c);
    ASSERT_TRUE(dflt.status.ok() && expl.status.ok());
    EXPECT_TRUE(SameBits(dflt.out, expl.out));
    EXPECT_TRUE(SameBits(dflt.lse, expl.lse));
    if (f == KvFormat::kV32) {  // not 1/sqrt(d_v)
      c.scale = static_cast<float>(1.0 / std::sqrt(512.0));
      const OpResult dv = ref_sparse_decode(c);
      EXPECT_FALSE(SameBits(dflt.lse, dv.lse));
    }
  }
}

TEST(SparseDecodeRef, MatchesNaiveLongDoubleOracleWithinFlashMlaTolerances) {
  for (KvFormat f : {KvFormat::kV32, KvFormat::kModel1}) {
    SCOPED_TRACE(name_of(f));
    SdSetup s = sd_setup(f, 64, 16, 34);
    PagedKv deq = dequantized_copy(s.kv);
    SparseDecodeCase c;
    c.batch = 2;
    c.seq_q = 2;
    c.heads_q = 4;
    c.head_dim = dim_of(f);
    c.topk = 16;
    c.q = rand_bf16(2 * 2 * 4 * c.head_dim, 35, 1.0, 1.0);
    for (auto& x : c.q) x = openmla::float_to_bf16(bf(x) * 10.0f);  // spread the softmax
    c.kv = &s.kv;
    Rng rng(36);
    std::vector<int64_t> logical;
    for (int i = 0; i < 2 * 2 * 16; ++i) logical.push_back(rng.uniform_int(-1, 63));
    c.indices = to_slots(s.kv, logical, s.n);
    c.topk_length = {16, 11};
    c.sink = {0.3f, -kInf, kInf, 2.0f};
    c.scale = 0.05f;
    const OpResult r = ref_sparse_decode(c);
    ASSERT_TRUE(r.status.ok());
    std::vector<float> want_out, want_lse(r.lse.size());
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t sq = 0; sq < 2; ++sq)
        for (int64_t h = 0; h < 4; ++h) {
          std::vector<std::vector<float>> keys;
          for (int64_t p = 0; p < c.topk_length[b]; ++p) {
            const int32_t idx = c.indices[(b * 2 + sq) * 16 + p];
            if (idx >= 0) keys.push_back(key_of(deq, idx));
          }
          std::vector<double> out;
          const NaiveRow nr = naive_attention(row_floats(c.q, ((b * 2 + sq) * 4 + h) * c.head_dim, c.head_dim),
                                              keys, c.scale, 512, &c.sink[h], &out);
          for (double o : out) want_out.push_back(static_cast<float>(o));
          want_lse[(b * 4 + h) * 2 + sq] = static_cast<float>(nr.lse);
        }
    EXPECT_TRUE(AllClose(bf16_to_floats(r.out), want_out, 1e-3, 2.01 / 128, 5e-6));
    EXPECT_TRUE(AllClose(r.lse, want_lse, 1e-6, 8.01 / 65536, 1e-7));
    // The reference is much tighter than the GPU tolerances: one bf16 rounding of the output.
    for (size_t i = 0; i < want_out.size(); ++i)
      ASSERT_LE(std::fabs(bf(r.out[i]) - want_out[i]), std::fabs(want_out[i]) * (1.0 / 256) + 1e-30) << i;
  }
}

// ================================================================ dense decode

struct DdSetup {
  std::vector<std::vector<uint16_t>> requests;  // per request [L, heads_kv, d]
  PagedKv kv;
};

DdSetup dd_setup(KvFormat f, int64_t heads_kv, int64_t page, const std::vector<int64_t>& lens,
                 uint32_t seed) {
  DdSetup s;
  for (size_t r = 0; r < lens.size(); ++r)
    s.requests.push_back(rand_bf16(lens[r] * heads_kv * dim_of(f), seed + static_cast<uint32_t>(r)));
  s.kv = build_paged_kv(f, dim_of(f), heads_kv, page, s.requests, seed + 100);
  return s;
}

DenseDecodeCase dd_case(DdSetup& s, const std::vector<int64_t>& lens, int64_t seq_q, int64_t heads_q,
                        bool causal, uint32_t seed) {
  DenseDecodeCase c;
  c.batch = static_cast<int64_t>(lens.size());
  c.seq_q = seq_q;
  c.heads_q = heads_q;
  c.head_dim = s.kv.head_dim;
  c.q = rand_bf16(c.batch * seq_q * heads_q * c.head_dim, seed, 1.0);
  c.kv = &s.kv;
  c.seqlens.assign(lens.begin(), lens.end());
  int64_t most = 0;
  for (int64_t l : lens) most = std::max(most, (l + s.kv.page_size - 1) / s.kv.page_size);
  c.max_blocks = most + 2;  // unused entries hold 2147480000
  c.causal = causal;
  return c;
}

TEST(DenseDecodeRef, SingleTokenGivesOutEqualToValueAndLseEqualToScaledDot) {
  DdSetup s = dd_setup(KvFormat::kBF16, 1, 4, {1}, 40);
  DenseDecodeCase c = dd_case(s, {1}, 1, 2, false, 41);
  const OpResult r = ref_dense_decode(c);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  const std::vector<float> k = row_floats(s.requests[0], 0, 576);
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 512; ++i) ASSERT_EQ(r.out[h * 512 + i], s.requests[0][i]) << i;
    const double want = (1.0f / 24.0f) * dot(row_floats(c.q, h * 576, 576), k);
    EXPECT_NEAR(r.lse[h], want, 1e-6 * std::max(1.0, std::fabs(want)));
  }
}

TEST(DenseDecodeRef, CausalQuerySSeesLengthMinusLaterQueriesAndFullyMaskedRowsAreLonely) {
  const std::vector<int64_t> lens = {5, 2, 0};
  DdSetup s = dd_setup(KvFormat::kBF16, 1, 3, lens, 42);
  for (int64_t seq_q = 1; seq_q <= 4; ++seq_q) {
    DenseDecodeCase c = dd_case(s, lens, seq_q, 2, true, 43);
    const OpResult r = ref_dense_decode(c);
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t sq = 0; sq < seq_q; ++sq) {
        const int64_t visible = std::max<int64_t>(0, lens[b] - (seq_q - 1 - sq));
        // Same query row alone, non-causal, with the cache cut to `visible` tokens.
        DenseDecodeCase one = c;
        one.seq_q = 1;
        one.causal = false;
        one.q.assign(c.q.begin() + ((b * seq_q + sq) * 2) * 576, c.q.begin() + ((b * seq_q + sq) * 2 + 2) * 576);
        one.batch = 3;
        std::vector<uint16_t> q3(3 * 2 * 576, 0);
        std::copy(one.q.begin(), one.q.end(), q3.begin() + b * 2 * 576);
        one.q = q3;
        one.seqlens = {0, 0, 0};
        one.seqlens[b] = static_cast<int32_t>(visible);
        const OpResult alone = ref_dense_decode(one);
        ASSERT_TRUE(alone.status.ok());
        for (int64_t h = 0; h < 2; ++h) {
          const int64_t row = (b * seq_q + sq) * 2 + h;
          const std::vector<uint16_t> got(r.out.begin() + row * 512, r.out.begin() + (row + 1) * 512);
          const std::vector<uint16_t> want(alone.out.begin() + (b * 2 + h) * 512,
                                           alone.out.begin() + (b * 2 + h + 1) * 512);
          EXPECT_TRUE(SameBits(got, want)) << "b " << b << " s " << sq << " seq_q " << seq_q;
          const float lse = r.lse[(b * 2 + h) * seq_q + sq];
          EXPECT_EQ(lse, alone.lse[b * 2 + h]);
          if (visible == 0) expect_lonely(r, row, (b * 2 + h) * seq_q + sq);
        }
      }
  }
}

TEST(DenseDecodeRef, GroupedQueryHeadHUsesKvHeadHDividedByGroupSize) {
  for (int64_t heads_kv : {2, 4}) {
    SCOPED_TRACE("heads_kv " + std::to_string(heads_kv));
    const std::vector<int64_t> lens = {7, 3};
    const int64_t heads_q = 8, group = heads_q / heads_kv, d = 576;
    DdSetup s = dd_setup(KvFormat::kBF16, heads_kv, 4, lens, 44);
    DenseDecodeCase c = dd_case(s, lens, 2, heads_q, true, 45);
    const OpResult r = ref_dense_decode(c);
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    for (int64_t g = 0; g < heads_kv; ++g) {
      // A one-head cache holding kv head g only, queried by heads g*group .. g*group+group-1.
      std::vector<std::vector<uint16_t>> single;
      for (size_t b = 0; b < lens.size(); ++b) {
        std::vector<uint16_t> t;
        for (int64_t j = 0; j < lens[b]; ++j)
          t.insert(t.end(), s.requests[b].begin() + (j * heads_kv + g) * d,
                   s.requests[b].begin() + (j * heads_kv + g + 1) * d);
        single.push_back(t);
      }
      DdSetup one;
      one.kv = build_paged_kv(KvFormat::kBF16, d, 1, 4, single, 46);
      DenseDecodeCase oc = dd_case(one, lens, 2, group, true, 47);
      oc.q.clear();
      for (int64_t bs = 0; bs < 2 * 2; ++bs)
        oc.q.insert(oc.q.end(), c.q.begin() + (bs * heads_q + g * group) * d,
                    c.q.begin() + (bs * heads_q + (g + 1) * group) * d);
      const OpResult ro = ref_dense_decode(oc);
      ASSERT_TRUE(ro.status.ok());
      for (int64_t bs = 0; bs < 4; ++bs)
        for (int64_t j = 0; j < group; ++j) {
          const int64_t h = g * group + j;
          const std::vector<uint16_t> got(r.out.begin() + (bs * heads_q + h) * 512, r.out.begin() + (bs * heads_q + h + 1) * 512);
          const std::vector<uint16_t> want(ro.out.begin() + (bs * group + j) * 512, ro.out.begin() + (bs * group + j + 1) * 512);
          EXPECT_TRUE(SameBits(got, want)) << "head " << h;
          const int64_t b = bs / 2, sq = bs % 2;
          EXPECT_EQ(r.lse[(b * heads_q + h) * 2 + sq], ro.lse[(b * group + j) * 2 + sq]) << "head " << h;
        }
    }
  }
}

/// Dense decode against sparse decode over the same cache, with indices listing the visible
/// tokens in order (block-table garbage and NaN beyond each length must not matter).
void check_dense_equals_sparse(KvFormat f, int64_t page, bool causal, uint32_t seed) {
  SCOPED_TRACE(std::string(name_of(f)) + " page " + std::to_string(page) + (causal ? " causal" : ""));
  const std::vector<int64_t> lens = {9, 0, 1, 14};
  const int64_t seq_q = 3, heads_q = 2, d = dim_of(f);
  DdSetup s = dd_setup(f, 1, page, lens, seed);
  s.kv.poison_padding();
  DenseDecodeCase c = dd_case(s, lens, seq_q, heads_q, causal, seed + 1);
  const OpResult dense = ref_dense_decode(c);
  ASSERT_TRUE(dense.status.ok()) << dense.status.to_string();
  SparseDecodeCase sc;
  sc.batch = 4;
  sc.seq_q = seq_q;
  sc.heads_q = heads_q;
  sc.head_dim = d;
  sc.topk = 14;
  sc.q = c.q;
  sc.kv = &s.kv;
  for (int64_t b = 0; b < 4; ++b)
    for (int64_t sq = 0; sq < seq_q; ++sq) {
      const int64_t visible = causal ? std::max<int64_t>(0, lens[b] - (seq_q - 1 - sq)) : lens[b];
      for (int64_t p = 0; p < 14; ++p) sc.indices.push_back(p < visible ? s.kv.slot(p, b) : -1);
    }
  const OpResult sparse = ref_sparse_decode(sc);
  ASSERT_TRUE(sparse.status.ok()) << sparse.status.to_string();
  EXPECT_TRUE(SameBits(dense.out, sparse.out));
  EXPECT_TRUE(SameBits(dense.lse, sparse.lse));
  for (uint16_t o : dense.out) ASSERT_FALSE(std::isnan(bf(o)));
}

TEST(DenseDecodeRef, EqualsSparseDecodeWhenIndicesListExactlyTheVisibleTokens) {
  check_dense_equals_sparse(KvFormat::kBF16, 4, false, 50);
  check_dense_equals_sparse(KvFormat::kBF16, 4, true, 52);
  check_dense_equals_sparse(KvFormat::kV32, 5, true, 54);
  check_dense_equals_sparse(KvFormat::kModel1, 3, false, 56);
}

TEST(DenseDecodeRef, SameTokensGiveBitIdenticalOutputsForEveryPageSize) {
  const std::vector<int64_t> lens = {70, 0, 33};
  std::vector<std::vector<uint16_t>> requests;
  for (size_t r = 0; r < lens.size(); ++r) requests.push_back(rand_bf16(lens[r] * 2 * 576, 60 + static_cast<uint32_t>(r)));
  OpResult first;
  for (int64_t page : {1, 2, 61, 64, 69}) {
    DdSetup s;
    s.requests = requests;
    s.kv = build_paged_kv(KvFormat::kBF16, 576, 2, page, requests, static_cast<uint32_t>(70 + page));
    DenseDecodeCase c = dd_case(s, lens, 2, 4, true, 71);
    const OpResult r = ref_dense_decode(c);
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    if (page == 1) {
      first = r;
      continue;
    }
    EXPECT_TRUE(SameBits(first.out, r.out)) << "page " << page;
    EXPECT_TRUE(SameBits(first.lse, r.lse)) << "page " << page;
  }
}

TEST(DenseDecodeRef, NonContiguousViewsGiveBitIdenticalResults) {
  const std::vector<int64_t> lens = {6, 11};
  DdSetup s = dd_setup(KvFormat::kBF16, 2, 4, lens, 72);
  DenseDecodeCase c = dd_case(s, lens, 2, 4, true, 73);
  const OpResult a = ref_dense_decode(c, false);
  const OpResult b = ref_dense_decode(c, true);
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << b.status.to_string();
  EXPECT_TRUE(SameBits(a.out, b.out));
  EXPECT_TRUE(SameBits(a.lse, b.lse));
}

TEST(DenseDecodeRef, MatchesNaiveLongDoubleOracleWithinFlashMlaTolerances) {
  const std::vector<int64_t> lens = {20, 3, 0};
  const int64_t heads_kv = 2, heads_q = 6, seq_q = 2, d = 576;
  DdSetup s = dd_setup(KvFormat::kBF16, heads_kv, 8, lens, 74);
  DenseDecodeCase c = dd_case(s, lens, seq_q, heads_q, true, 75);
  const OpResult r = ref_dense_decode(c);
  ASSERT_TRUE(r.status.ok());
  std::vector<float> want_out, want_lse(r.lse.size());
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t sq = 0; sq < seq_q; ++sq)
      for (int64_t h = 0; h < heads_q; ++h) {
        const int64_t g = h / (heads_q / heads_kv);
        const int64_t visible = std::max<int64_t>(0, lens[b] - (seq_q - 1 - sq));
        std::vector<std::vector<float>> keys;
        for (int64_t j = 0; j < visible; ++j) keys.push_back(row_floats(s.requests[b], (j * heads_kv + g) * d, d));
        std::vector<double> out;
        const NaiveRow nr = naive_attention(row_floats(c.q, ((b * seq_q + sq) * heads_q + h) * d, d), keys,
                                            1.0 / 24.0, 512, nullptr, &out);
        for (double o : out) want_out.push_back(static_cast<float>(o));
        want_lse[(b * heads_q + h) * seq_q + sq] = static_cast<float>(nr.lse);
      }
  EXPECT_TRUE(AllClose(bf16_to_floats(r.out), want_out, 8e-4, 2.01 / 128, 5e-6));
  EXPECT_TRUE(AllClose(r.lse, want_lse, 1e-6, 8.01 / 65536, 1e-7));
}

// ================================================================ sparse prefill

SparsePrefillCase sp_case(int64_t seq_q, int64_t seq_kv, int64_t heads_q, int64_t heads_kv, int64_t d,
                          int64_t topk, uint32_t seed) {
  SparsePrefillCase c;
  c.seq_q = seq_q;
  c.seq_kv = seq_kv;
  c.heads_q = heads_q;
  c.heads_kv = heads_kv;
  c.head_dim = d;
  c.topk = topk;
  c.q = rand_bf16(seq_q * heads_q * d, seed, 1.0);
  c.kv = rand_bf16(seq_kv * heads_kv * d, seed + 1);
  Rng rng(seed + 2);
  for (int64_t i = 0; i < seq_q * heads_kv * topk; ++i)
    c.indices.push_back(static_cast<int32_t>(rng.uniform_int(0, seq_kv - 1)));
  return c;
}

TEST(SparsePrefillRef, MaxLogitsAndLseAreNaturalLogUnitsOfScaledScores) {
  for (int64_t d : {512, 576}) {
    SparsePrefillCase c = sp_case(1, 3, 1, 1, d, 4, 80);
    std::fill(c.q.begin(), c.q.end(), 0);
    std::fill(c.kv.begin(), c.kv.end(), 0);
    c.q[0] = bf16_exact(1.0f);
    c.kv[0] = bf16_exact(2.0f);
    c.kv[d] = bf16_exact(-1.0f);
    c.kv[2 * d] = bf16_exact(0.5f);
    c.indices = {0, 1, 2, -1};
    c.scale = 0.5f;  // scores 1, -0.5, 0.25
    const OpResult r = ref_sparse_prefill(c);
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    EXPECT_EQ(r.max_logits[0], 1.0f);
    const double sum = std::exp(1.0) + std::exp(-0.5) + std::exp(0.25);
    EXPECT_NEAR(r.lse[0], std::log(sum), 1e-6);
    EXPECT_NEAR(bf(r.out[0]), (2 * std::exp(1.0) - std::exp(-0.5) + 0.5 * std::exp(0.25)) / sum, 1.0 / 128);
  }
}

TEST(SparsePrefillRef, InvalidIndicesAreIgnored) {
  SparsePrefillCase c = sp_case(2, 10, 2, 1, 576, 8, 81);
  c.indices = {INT32_MIN, 3, -1, 10, 7, INT32_MAX, -123456, 2,
               114514, -1, 9, 0, 2147480000, 9, 1919810, 10};
  const OpResult noisy = ref_sparse_prefill(c);
  c.indices = {3, 7, 2, -1, -1, -1, -1, -1,
               9, 0, 9, -1, -1, -1, -1, -1};
  const OpResult clean = ref_sparse_prefill(c);
  ASSERT_TRUE(noisy.status.ok() && clean.status.ok()) << noisy.status.to_string();
  EXPECT_TRUE(SameBits(noisy.out, clean.out));
  EXPECT_TRUE(SameBits(noisy.lse, clean.lse));
  EXPECT_TRUE(SameBits(noisy.max_logits, clean.max_logits));
}

TEST(SparsePrefillRef, DuplicateIndexCountsTwice) {
  SparsePrefillCase c = sp_case(1, 6, 2, 1, 512, 2, 82);
  c.indices = {4, -1};
  const OpResult once = ref_sparse_prefill(c);
  c.indices = {4, 4};
  const OpResult twice = ref_sparse_prefill(c);
  ASSERT_TRUE(once.status.ok() && twice.status.ok());
  EXPECT_TRUE(SameBits(once.out, twice.out));
  EXPECT_TRUE(SameBits(once.max_logits, twice.max_logits));
  for (int h = 0; h < 2; ++h) EXPECT_NEAR(twice.lse[h] - once.lse[h], std::log(2.0), 2e-6);
}

TEST(SparsePrefillRef, PositionsBeyondTopkLengthAndNaNRowsNeverLeak) {
  SparsePrefillCase c = sp_case(3, 12, 2, 1, 576, 6, 83);
  c.indices = {1, 2, 3, 8, 9, 10,     // len 3: 8..10 are NaN rows
               0, 11, 4, 5, 6, 7,     // len 6: all read
               8, 9, 10, 11, 0, 1};   // len 0: lonely
  c.topk_length = {3, 6, 0};
  const OpResult clean = ref_sparse_prefill(c);
  for (int64_t row = 8; row <= 10; ++row)
    std::fill(c.kv.begin() + row * 576, c.kv.begin() + (row + 1) * 576, kBf16NaN);
  const OpResult poisoned = ref_sparse_prefill(c);
  ASSERT_TRUE(clean.status.ok() && poisoned.status.ok()) << poisoned.status.to_string();
  EXPECT_TRUE(SameBits(clean.out, poisoned.out));
  EXPECT_TRUE(SameBits(clean.lse, poisoned.lse));
  EXPECT_TRUE(SameBits(clean.max_logits, poisoned.max_logits));
  c.topk_length.clear();
  c.indices = {1, 2, 3, -1, -1, -1, 0, 11, 4, 5, 6, 7, -1, -1, -1, -1, -1, -1};
  const OpResult no_len = ref_sparse_prefill(c);
  EXPECT_TRUE(SameBits(poisoned.out, no_len.out));
  EXPECT_TRUE(SameBits(poisoned.lse, no_len.lse));
  for (int h = 0; h < 2; ++h) {  // query 2 is lonely
    EXPECT_EQ(poisoned.max_logits[4 + h], -kInf);
    expect_lonely(poisoned, 4 + h, 4 + h);
  }
}

TEST(SparsePrefillRef, LonelyRowsGiveZeroOutInfiniteLseAndMinusInfMaxLogitsWithAnySink) {
  SparsePrefillCase c = sp_case(2, 4, 4, 1, 512, 3, 84);
  c.indices = {-1, 4, INT32_MIN, 0, 1, 2};
  c.topk_length = {3, 0};
  c.sink = {-kInf, 0.0f, 3.0f, kInf};
  const OpResult r = ref_sparse_prefill(c);
  ASSERT_TRUE(r.status.ok());
  for (int64_t row = 0; row < 8; ++row) {
    EXPECT_EQ(r.max_logits[row], -kInf) << row;
    expect_lonely(r, row, row);
  }
}

TEST(SparsePrefillRef, SinkScalesOutButNotLseOrMaxLogits) {
  SparsePrefillCase c = sp_case(1, 2, 4, 1, 576, 1, 85);
  std::fill(c.q.begin(), c.q.end(), 0);  // every score 0: lse = 0, max_logits = 0
  const float vals[] = {8.0f, -12.0f, 0.5f, 1.75f};
  for (int i = 0; i < 576; ++i) c.kv[576 + i] = bf16_exact(vals[i % 4]);
  c.indices = {1};
  const float ln3 = static_cast<float>(std::log(3.0));
  c.sink = {-kInf, 0.0f, ln3, kInf};
  const double factor[] = {1.0, 0.5, 0.25, 0.0};
  const OpResult r = ref_sparse_prefill(c);
  ASSERT_TRUE(r.status.ok());
  for (int h = 0; h < 4; ++h) {
    EXPECT_EQ(r.lse[h], 0.0f);
    EXPECT_EQ(r.max_logits[h], 0.0f);
    for (int i = 0; i < 512; ++i)
      ASSERT_EQ(bf(r.out[h * 512 + i]), static_cast<float>(vals[i % 4] * factor[h])) << h << " " << i;
  }
}

TEST(SparsePrefillRef, GroupedHeadsUseTheirKvHeadAndItsIndexRow) {
  const int64_t seq_q = 3, seq_kv = 9, heads_q = 4, heads_kv = 2, d = 576, topk = 5;
  SparsePrefillCase c = sp_case(seq_q, seq_kv, heads_q, heads_kv, d, topk, 86);
  c.indices[2] = -1;
  const OpResult r = ref_sparse_prefill(c);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  const int64_t group = heads_q / heads_kv;
  for (int64_t g = 0; g < heads_kv; ++g) {
    SparsePrefillCase one = sp_case(seq_q, seq_kv, group, 1, d, topk, 87);
    one.q.clear();
    one.kv.clear();
    one.indices.clear();
    for (int64_t s = 0; s < seq_q; ++s) {
      one.q.insert(one.q.end(), c.q.begin() + (s * heads_q + g * group) * d, c.q.begin() + (s * heads_q + (g + 1) * group) * d);
      one.indices.insert(one.indices.end(), c.indices.begin() + (s * heads_kv + g) * topk,
                         c.indices.begin() + (s * heads_kv + g + 1) * topk);
    }
    for (int64_t t = 0; t < seq_kv; ++t)
      one.kv.insert(one.kv.end(), c.kv.begin() + (t * heads_kv + g) * d, c.kv.begin() + (t * heads_kv + g + 1) * d);
    const OpResult ro = ref_sparse_prefill(one);
    ASSERT_TRUE(ro.status.ok());
    for (int64_t s = 0; s < seq_q; ++s)
      for (int64_t j = 0; j < group; ++j) {
        const int64_t h = g * group + j;
        const std::vector<uint16_t> got(r.out.begin() + (s * heads_q + h) * 512, r.out.begin() + (s * heads_q + h + 1) * 512);
        const std::vector<uint16_t> want(ro.out.begin() + (s * group + j) * 512, ro.out.begin() + (s * group + j + 1) * 512);
        EXPECT_TRUE(SameBits(got, want)) << "s " << s << " head " << h;
        EXPECT_EQ(r.lse[s * heads_q + h], ro.lse[s * group + j]);
        EXPECT_EQ(r.max_logits[s * heads_q + h], ro.max_logits[s * group + j]);
      }
  }
}

TEST(SparsePrefillRef, NonContiguousViewsGiveBitIdenticalResults) {
  SparsePrefillCase c = sp_case(4, 20, 4, 2, 512, 6, 88);
  c.topk_length = {6, 2, 0, 5};
  c.sink = {0.0f, 1.0f, -kInf, kInf};
  const OpResult a = ref_sparse_prefill(c, false);
  const OpResult b = ref_sparse_prefill(c, true);
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << b.status.to_string();
  EXPECT_TRUE(SameBits(a.out, b.out));
  EXPECT_TRUE(SameBits(a.lse, b.lse));
  EXPECT_TRUE(SameBits(a.max_logits, b.max_logits));
}

TEST(SparsePrefillRef, EqualsSparseDecodeOverTheSameRowsAsABf16Cache) {
  for (int64_t d : {512, 576}) {
    SparsePrefillCase c = sp_case(3, 16, 2, 1, d, 7, 89);
    c.indices[3] = -1;
    c.indices[10] = 16;  // out of range
    c.sink = {0.7f, -kInf};
    c.scale = 0.125f;
    const OpResult pre = ref_sparse_prefill(c);
    ASSERT_TRUE(pre.status.ok());
    // The same kv rows as a one-page-per-token cache; one batch element per query token.
    std::vector<uint16_t> rows = c.kv;
    PagedKv kv = build_paged_kv(KvFormat::kBF16, d, 1, 1, {rows}, 90);
    SparseDecodeCase sd;
    sd.batch = 3;
    sd.heads_q = 2;
    sd.head_dim = d;
    sd.topk = 7;
    sd.q = c.q;
    sd.kv = &kv;
    std::vector<int64_t> logical(c.indices.begin(), c.indices.end());
    logical[10] = -1;
    sd.indices = to_slots(kv, logical, 16);
    sd.sink = c.sink;
    sd.scale = c.scale;
    const OpResult dec = ref_sparse_decode(sd);
    ASSERT_TRUE(dec.status.ok());
    EXPECT_TRUE(SameBits(pre.out, dec.out));
    EXPECT_TRUE(SameBits(pre.lse, dec.lse));  // [s, h] vs [b = s, h, 1]: same order
  }
}

TEST(SparsePrefillRef, MatchesNaiveLongDoubleOracleWithinFlashMlaTolerances) {
  const int64_t seq_q = 5, seq_kv = 40, heads_q = 4, d = 512, topk = 12;
  SparsePrefillCase c = sp_case(seq_q, seq_kv, heads_q, 1, d, topk, 91);
  for (auto& x : c.kv) x = openmla::float_to_bf16(bf(x) + 0.03f);  // per-tensor offset like upstream
  c.indices[5] = -1;
  c.indices[17] = seq_kv;
  c.topk_length = {12, 3, 0, 12, 7};
  c.sink = {0.1f, -kInf, kInf, -2.0f};
  const OpResult r = ref_sparse_prefill(c);
  ASSERT_TRUE(r.status.ok());
  std::vector<float> want_out, want_lse, want_max;
  for (int64_t s = 0; s < seq_q; ++s)
    for (int64_t h = 0; h < heads_q; ++h) {
      std::vector<std::vector<float>> keys;
      for (int64_t p = 0; p < c.topk_length[s]; ++p) {
        const int32_t idx = c.indices[s * topk + p];
        if (idx >= 0 && idx < seq_kv) keys.push_back(row_floats(c.kv, idx * d, d));
      }
      std::vector<double> out;
      const NaiveRow nr = naive_attention(row_floats(c.q, (s * heads_q + h) * d, d), keys, c.scale, 512,
                                          &c.sink[h], &out);
      for (double o : out) want_out.push_back(static_cast<float>(o));
      want_lse.push_back(static_cast<float>(nr.lse));
      want_max.push_back(static_cast<float>(nr.max_logit));
    }
  EXPECT_TRUE(AllClose(bf16_to_floats(r.out), want_out, 8e-4, 3.01 / 128, 7e-6));
  EXPECT_TRUE(AllClose(r.lse, want_lse, 1e-6, 2.01 / 65536, 1e-7));
  EXPECT_TRUE(AllClose(r.max_logits, want_max, 1e-6, 2.01 / 65536, 1e-7));
}

}  // namespace
