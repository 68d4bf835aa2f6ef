// Semantics of the sparse-decode reference kernel, checked independently of the reference itself:
// hand-computable cases (exact outputs / lse), invariances (NaN poisoning, page size, strides,
// main/extra split, FP8 vs dequantised copy) and a naive long-double oracle with FlashMLA's
// tolerances.
#include "support/reference_helpers.h"

namespace {

using namespace openmla_test;


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

}  // namespace
