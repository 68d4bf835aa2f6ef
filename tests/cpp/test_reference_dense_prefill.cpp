// Semantics of the dense-decode and sparse-prefill reference kernels, checked independently of
// the references: hand-computable cases, causal masking, grouped heads, invariances (page size,
// strides, dense vs sparse) and a naive long-double oracle with FlashMLA's tolerances.
#include "support/reference_helpers.h"

namespace {

using namespace openmla_test;

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
