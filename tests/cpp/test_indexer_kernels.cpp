// Indexer ops (mqa_logits, paged_mqa_logits, paged_indexer_topk, indexer_topk): the reference on
// hand-worked cases with exact values; every registered kernel vs the reference over a grid
// (kFp8 / kFp4 caches, page sizes 1 / 61 / 64, next_n 1 / 2, heads 1 / 32 / 64, context
// lengths 0..300 and one 40000-token request, context_lens [B] and [B, next_n]); NaN-poisoned
// unused slots, scales, page padding and unused pages, and garbage in unused block-table
// entries; top-k sets equal to the reference's (tolerance-aware at the k-th score) and exact
// ties resolved to the lower position; every finite e4m3 code (subnormals included) and fp4
// block scales 2^125 apart; k > visible and empty rows; bitwise invariance over
// 1 / 2 / 3 threads and batch composition.
// Logit tolerance: |kernel - ref| <= 1e-5 * M + 1e-30 with M = sum_h |w_h| * sum_d |q_hd k_d|
// * |k_scale| (fp32 FMA chains of 128 products then 64 heads; the random-walk error is ~1e-6 M).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "dispatch/registry.h"
#include "openmla/indexer.h"
#include "openmla/openmla.h"
#include "ops/indexer/indexer_keys.h"
#include "support/kernel_params.h"
#include "tensors.h"

namespace openmla {
namespace {

using openmla_test::find_kernel;
using openmla_test::kernel_names;
using testing::tensor_view;
constexpr float kInf = std::numeric_limits<float>::infinity();

Options opts(const std::string& kernel, int threads = 2) {
  Options o;
  o.kernel = kernel.empty() ? nullptr : kernel.c_str();
  o.num_threads = threads;
  return o;
}

// A finite e4m3 code of magnitude 2^-2 .. 2^1.875 with a random sign.
uint8_t random_code(std::mt19937& rng) {
  return static_cast<uint8_t>((rng() & 0x80) | (0x28 + rng() % 0x20));
}

// ---- paged decode cases ------------------------------------------------------------------------

struct PagedCase {
  IndexerKeyFormat format = IndexerKeyFormat::kFp8;
  int64_t page = 64, next_n = 1, heads = 64;
  std::vector<int32_t> ctx;  // [batch] or [batch * next_n]
  bool per_row = false;
  int64_t topk = 16;
  uint64_t seed = 1;
  bool ties = false;  // every key of a request identical (exact ties)
};

struct PagedData {
  PagedCase c;
  int64_t batch = 0, bpt = 0, block_stride = 0, num_blocks = 0, max_blocks = 0, max_len = 0;
  std::vector<uint8_t> q, cache;
  std::vector<float> w;
  std::vector<int32_t> ctx, table;
  int64_t visible(int64_t b, int64_t j) const {
    if (c.per_row) return ctx[b * c.next_n + j];
    return std::max<int64_t>(ctx[b] - c.next_n + 1 + j, 0);
  }
  int64_t request_visible(int64_t b) const {
    int64_t v = 0;
    for (int64_t j = 0; j < c.next_n; ++j) v = std::max(v, visible(b, j));
    return v;
  }
  const uint8_t* page_of(int64_t b, int64_t s) const {
    return cache.data() + table[b * max_blocks + s / c.page] * block_stride;
  }
  PagedMqaLogitsArgs args(float* logits) {
    PagedMqaLogitsArgs a;
    a.q = tensor_view(q.data(), DType::kU8, {batch, c.next_n, c.heads, 128});
    a.kv_cache = tensor_view(cache.data(), DType::kU8, {num_blocks, c.page, 1, bpt},
                             {block_stride, bpt, bpt, 1});
    a.format = c.format;
    a.weights = tensor_view(w.data(), DType::kF32, {batch * c.next_n, c.heads});
    a.context_lens = c.per_row ? tensor_view(ctx.data(), DType::kI32, {batch, c.next_n})
                               : tensor_view(ctx.data(), DType::kI32, {batch});
    a.block_table = tensor_view(table.data(), DType::kI32, {batch, max_blocks});
    if (logits) a.logits = tensor_view(logits, DType::kF32, {batch * c.next_n, max_len});
    return a;
  }
};

PagedData make_paged(const PagedCase& c) {
  PagedData d;
  d.c = c;
  d.ctx = c.ctx;
  d.batch = static_cast<int64_t>(c.per_row ? c.ctx.size() / c.next_n : c.ctx.size());
  d.bpt = c.format == IndexerKeyFormat::kFp8 ? 132 : 68;
  d.block_stride = c.page * d.bpt + 16;  // 16 bytes of poisoned padding per page
  std::mt19937 rng(static_cast<uint32_t>(c.seed));
  int64_t pages = 0;
  for (int64_t b = 0; b < d.batch; ++b) {
    const int64_t v = d.request_visible(b);
    d.max_len = std::max(d.max_len, v);
    const int64_t p = (v + c.page - 1) / c.page;
    d.max_blocks = std::max(d.max_blocks, p);
    pages += p;
  }
  d.max_blocks += 2;         // unused entries hold garbage
  d.num_blocks = pages + 3;  // three unused, fully poisoned pages
  d.max_len += 5;
  d.cache.assign(static_cast<size_t>(d.num_blocks * d.block_stride), 0xFF);  // NaN codes+scales
  std::vector<int32_t> perm(static_cast<size_t>(d.num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  d.table.assign(static_cast<size_t>(d.batch * d.max_blocks), 1 << 30);
  int64_t next = 0;
  for (int64_t b = 0; b < d.batch; ++b) {
    const int64_t v = d.request_visible(b);
    const int64_t p = (v + c.page - 1) / c.page;
    for (int64_t i = 0; i < p; ++i) d.table[b * d.max_blocks + i] = perm[next++];
    if (p < d.max_blocks) d.table[b * d.max_blocks + p] = -7;
    std::vector<uint8_t> tie_codes(128);
    for (auto& x : tie_codes)
      x = c.format == IndexerKeyFormat::kFp8 ? random_code(rng) : static_cast<uint8_t>(rng());
    for (int64_t s = 0; s < v; ++s) {
      uint8_t* pg = d.cache.data() + d.table[b * d.max_blocks + s / c.page] * d.block_stride;
      const int64_t off = s % c.page;
      if (c.format == IndexerKeyFormat::kFp8) {
        for (int i = 0; i < 128; ++i) pg[128 * off + i] = c.ties ? tie_codes[i] : random_code(rng);
        const float scale = c.ties ? 1.0f : 0.5f + static_cast<float>(rng() % 1000) / 700.0f;
        std::memcpy(pg + 128 * c.page + 4 * off, &scale, 4);
      } else {
        for (int i = 0; i < 64; ++i)
          pg[64 * off + i] = c.ties ? tie_codes[i] : static_cast<uint8_t>(rng());
        for (int i = 0; i < 4; ++i)
          pg[64 * c.page + 4 * off + i] = c.ties ? 127 : static_cast<uint8_t>(124 + rng() % 7);
      }
    }
  }
  d.q.resize(static_cast<size_t>(d.batch * c.next_n * c.heads * 128));
  for (auto& x : d.q) x = random_code(rng);
  d.w.resize(static_cast<size_t>(d.batch * c.next_n * c.heads));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& x : d.w) x = u(rng);
  return d;
}

// M of the tolerance for row r = (b, j) and key s.
double magnitude(const PagedData& d, int64_t b, int64_t j, int64_t s) {
  std::vector<double> k(128);
  const IndexerTokenBytes t =
      indexer_token_bytes(d.page_of(b, s), d.c.page, s % d.c.page, d.c.format);
  const double scale = std::fabs(decode_indexer_token(t, d.c.format, k.data()));
  const int64_t r = b * d.c.next_n + j;
  double m = 0.0;
  for (int64_t h = 0; h < d.c.heads; ++h) {
    double dot = 0.0;
    for (int i = 0; i < 128; ++i)
      dot += std::fabs(e4m3_to_float(d.q[(r * d.c.heads + h) * 128 + i]) * k[i]);
    m += std::fabs(d.w[r * d.c.heads + h]) * dot;
  }
  return m * scale;
}

std::vector<float> run_paged(PagedData& d, const std::string& kernel, int threads = 2) {
  std::vector<float> logits(static_cast<size_t>(d.batch * d.c.next_n * d.max_len), 12345.0f);
  const Status st = paged_mqa_logits(d.args(logits.data()), opts(kernel, threads));
  EXPECT_TRUE(st.ok()) << st.to_string();
  return logits;
}

struct TopkOut {
  std::vector<int32_t> idx, len;
};

TopkOut run_fused(PagedData& d, const std::string& kernel, int threads = 2) {
  TopkOut o;
  o.idx.assign(static_cast<size_t>(d.batch * d.c.next_n * d.c.topk), 777);
  o.len.assign(static_cast<size_t>(d.batch * d.c.next_n), 777);
  PagedIndexerTopkArgs a;
  a.logits_args = d.args(nullptr);
  a.indices = tensor_view(o.idx.data(), DType::kI32, {d.batch, d.c.next_n, d.c.topk});
  a.topk_length = tensor_view(o.len.data(), DType::kI32, {d.batch, d.c.next_n});
  const Status st = paged_indexer_topk(a, opts(kernel, threads));
  EXPECT_TRUE(st.ok()) << st.to_string();
  return o;
}

std::vector<PagedCase> paged_grid() {
  std::vector<PagedCase> g;
  uint64_t seed = 10;
  for (auto fmt : {IndexerKeyFormat::kFp8, IndexerKeyFormat::kFp4})
    for (int64_t page : {1, 61, 64})
      for (int64_t next_n : {1, 2})
        for (int64_t heads : {1, 32, 64}) {
          PagedCase c;
          c.format = fmt;
          c.page = page;
          c.next_n = next_n;
          c.heads = heads;
          c.per_row = (seed % 3 == 0) && next_n == 2;
          c.seed = seed++;
          std::mt19937 rng(static_cast<uint32_t>(c.seed));
          const int64_t batch = 1 + rng() % 3;
          for (int64_t b = 0; b < batch * (c.per_row ? next_n : 1); ++b)
            c.ctx.push_back(b == 0 ? 0 : static_cast<int32_t>(1 + rng() % 300));
          c.topk = 1 + static_cast<int64_t>(rng() % 64);
          g.push_back(c);
        }
  PagedCase big;  // one long request, next to a short one
  big.heads = 16;
  big.ctx = {40000, 3};
  big.topk = 512;
  big.seed = 99;
  g.push_back(big);
  return g;
}

class IndexerKernelTest : public ::testing::TestWithParam<std::string> {
 protected:
  const KernelEntry* kernel(Op op) {
    const std::string name = op_name(op) + std::string(".") + GetParam();
    const KernelEntry* k = find_kernel(op, name);
    return k;
  }
  std::string name(Op op) { return op_name(op) + std::string(".") + GetParam(); }
  bool skip() {
    const KernelEntry* k = kernel(Op::kPagedMqaLogits);
    return k == nullptr || !kernel_runnable(*k);
  }
};

void expect_logits_close(PagedData& d, const std::vector<float>& got, const std::vector<float>& ref,
                         const std::string& what) {
  int bad = 0;
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t j = 0; j < d.c.next_n; ++j) {
      const int64_t r = b * d.c.next_n + j, v = d.visible(b, j);
      for (int64_t s = 0; s < d.max_len; ++s) {
        const float g = got[r * d.max_len + s], e = ref[r * d.max_len + s];
        if (s >= v) {
          if (!(g == -kInf) && bad++ < 5)
            ADD_FAILURE() << what << " row " << r << " pos " << s << ": " << g << ", want -inf";
          continue;
        }
        const double tol = 1e-5 * magnitude(d, b, j, s) + 1e-30;
        if (!(std::fabs(static_cast<double>(g) - e) <= tol) && bad++ < 5)
          ADD_FAILURE() << what << " row " << r << " pos " << s << ": " << g << " vs ref " << e
                        << " (tol " << tol << ")";
      }
    }
  EXPECT_EQ(bad, 0) << what;
}

// The fused op's top-k against the reference logits: valid structure, and every disagreement
// with the reference set lies within tolerance of the reference's k-th score.
void expect_topk_ok(PagedData& d, const TopkOut& o, const std::vector<float>& ref,
                    const std::string& what) {
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t j = 0; j < d.c.next_n; ++j) {
      const int64_t r = b * d.c.next_n + j, v = d.visible(b, j), k = d.c.topk;
      const int64_t want_len = std::min(k, v);
      ASSERT_EQ(o.len[r], want_len) << what << " row " << r;
      std::vector<int64_t> order(static_cast<size_t>(v));
      std::iota(order.begin(), order.end(), 0);
      const float* row = ref.data() + r * d.max_len;
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t x, int64_t y) { return row[x] > row[y]; });
      std::set<int64_t> want(order.begin(), order.begin() + want_len);
      const float kth = want_len > 0 ? row[order[want_len - 1]] : 0.0f;
      // Physical slots back to positions through the (identity-per-page) block table.
      std::set<int64_t> got;
      for (int64_t i = 0; i < k; ++i) {
        const int32_t slot = o.idx[r * k + i];
        if (i >= want_len) {
          ASSERT_EQ(slot, -1) << what << " row " << r << " entry " << i;
          continue;
        }
        int64_t pos = -1;
        for (int64_t p = 0; p < d.max_blocks && pos < 0; ++p)
          if (d.table[b * d.max_blocks + p] == slot / d.c.page)
            pos = p * d.c.page + slot % d.c.page;
        ASSERT_GE(pos, 0) << what << " row " << r << ": slot " << slot << " not in the table";
        ASSERT_LT(pos, v);
        if (!got.empty()) {
          ASSERT_GT(pos, *got.rbegin()) << what << ": not ascending";
        }
        got.insert(pos);
      }
      for (int64_t p : got)
        if (!want.count(p)) {
          const double tol = 1e-5 * magnitude(d, b, j, p) * 2;
          EXPECT_LE(std::fabs(row[p] - kth), tol) << what << " row " << r << " extra pos " << p;
        }
      for (int64_t p : want)
        if (!got.count(p)) {
          const double tol = 1e-5 * magnitude(d, b, j, p) * 2;
          EXPECT_LE(std::fabs(row[p] - kth), tol) << what << " row " << r << " missing pos " << p;
        }
    }
}

TEST_P(IndexerKernelTest, PagedLogitsAndTopkMatchReference) {
  if (skip()) GTEST_SKIP() << GetParam() << " not runnable here";
  for (const PagedCase& c : paged_grid()) {
    PagedData d = make_paged(c);
    const std::string what = std::string(c.format == IndexerKeyFormat::kFp8 ? "fp8" : "fp4") +
                             " page " + std::to_string(c.page) + " next_n " +
                             std::to_string(c.next_n) + " heads " + std::to_string(c.heads) +
                             " seed " + std::to_string(c.seed);
    const std::vector<float> ref = run_paged(d, "paged_mqa_logits.ref");
    if (GetParam() != "ref")
      expect_logits_close(d, run_paged(d, name(Op::kPagedMqaLogits)), ref, what);
    expect_topk_ok(d, run_fused(d, name(Op::kPagedIndexerTopk)), ref, what);
    for (float x : ref) ASSERT_FALSE(std::isnan(x)) << what << ": poison reached the reference";
  }
}

// The n-th finite e4m3 code (cycling through all 254: subnormals, zeros, both signs, +-448), or
// the n-th of the 14 non-zero subnormal codes.
uint8_t finite_code(int64_t n) {
  const int64_t c = n % 254;
  return static_cast<uint8_t>(c >= 0x7F ? c + 1 : c);
}
uint8_t subnormal_code(int64_t n) { return static_cast<uint8_t>((n % 2) << 7 | (1 + n / 2 % 7)); }

// Every finite e4m3 code in q and fp8 keys, against only subnormal keys (request 0) or only
// subnormal q (request 1), so a subnormal error cannot hide below the tolerance of large values;
// fp4 tokens whose four ue8m0 block scales lie far apart (2^-125 .. 2^3: a group far below the
// largest is negligible), and (request 1) whose largest-scale group holds only zero codes, so the
// others, 2^125 below it, are the whole logit.
TEST_P(IndexerKernelTest, AllCodesAndDistantFp4ScalesMatchReference) {
  if (skip()) GTEST_SKIP() << GetParam() << " not runnable here";
  const uint8_t fp4_scales[4] = {5, 130, 127, 60};
  const uint8_t zero_top_scales[4] = {130, 5, 4, 3};  // request 1: the 2^3 group's codes are 0
  for (auto fmt : {IndexerKeyFormat::kFp8, IndexerKeyFormat::kFp4}) {
    PagedCase c;
    c.format = fmt;
    c.heads = 32;
    c.ctx = {300, 77};
    c.topk = 40;
    c.seed = 21;
    PagedData d = make_paged(c);
    const size_t per_request = d.q.size() / 2;
    for (size_t i = 0; i < d.q.size(); ++i) {
      const int64_t n = static_cast<int64_t>(i) * 7 + 3;
      d.q[i] = i < per_request ? finite_code(n) : subnormal_code(n);
    }
    for (int64_t b = 0; b < d.batch; ++b)
      for (int64_t s = 0; s < d.visible(b, 0); ++s) {
        uint8_t* pg = d.cache.data() + (d.page_of(b, s) - d.cache.data());
        const int64_t off = s % c.page;
        if (fmt == IndexerKeyFormat::kFp8) {
          for (int i = 0; i < 128; ++i)
            pg[128 * off + i] = b == 0 ? subnormal_code(s * 131 + i) : finite_code(s * 131 + i * 5);
        } else {
          const uint8_t* sc = b == 0 ? fp4_scales : zero_top_scales;
          for (int i = 0; i < 4; ++i) pg[64 * c.page + 4 * off + i] = sc[(i + s) % 4];
          if (b == 1) std::memset(pg + 64 * off + 16 * ((4 - s % 4) % 4), 0, 16);
        }
      }
    const std::string what = fmt == IndexerKeyFormat::kFp8 ? "fp8 all codes" : "fp4 far scales";
    const std::vector<float> ref = run_paged(d, "paged_mqa_logits.ref");
    if (GetParam() != "ref")
      expect_logits_close(d, run_paged(d, name(Op::kPagedMqaLogits)), ref, what);
    expect_topk_ok(d, run_fused(d, name(Op::kPagedIndexerTopk)), ref, what);
  }
}

TEST_P(IndexerKernelTest, ExactTiesGoToLowerPositions) {
  if (skip()) GTEST_SKIP() << GetParam() << " not runnable here";
  for (auto fmt : {IndexerKeyFormat::kFp8, IndexerKeyFormat::kFp4}) {
    PagedCase c;
    c.format = fmt;
    c.page = 61;
    c.ctx = {200, 50, 5};
    c.topk = 20;
    c.ties = true;
    PagedData d = make_paged(c);
    const TopkOut o = run_fused(d, name(Op::kPagedIndexerTopk));
    for (int64_t b = 0; b < d.batch; ++b) {
      const int64_t len = std::min<int64_t>(c.topk, d.visible(b, 0));
      ASSERT_EQ(o.len[b], len);
      for (int64_t i = 0; i < c.topk; ++i) {
        const int32_t want =
            i < len ? d.table[b * d.max_blocks + i / c.page] * c.page + i % c.page : -1;
        ASSERT_EQ(o.idx[b * c.topk + i], want) << "request " << b << " entry " << i;
      }
    }
  }
}

TEST_P(IndexerKernelTest, ThreadAndBatchInvariant) {
  if (skip()) GTEST_SKIP() << GetParam() << " not runnable here";
  PagedCase c;
  c.next_n = 2;
  c.ctx = {3000, 17, 1200};
  if (GetParam() == "ref") c.ctx = {400, 17, 300};  // the double reference is slow
  c.topk = 64;
  c.page = 61;
  c.seed = 5;
  PagedData d = make_paged(c);
  const std::vector<float> base = run_paged(d, name(Op::kPagedMqaLogits), 1);
  const TopkOut tbase = run_fused(d, name(Op::kPagedIndexerTopk), 1);
  for (int threads : {2, 3}) {
    EXPECT_EQ(0, std::memcmp(base.data(), run_paged(d, name(Op::kPagedMqaLogits), threads).data(),
                             base.size() * 4))
        << threads << " threads";
    EXPECT_EQ(tbase.idx, run_fused(d, name(Op::kPagedIndexerTopk), threads).idx) << threads;
  }
  // Request 2 alone: its rows must equal the batched rows bitwise.
  PagedData one = d;
  one.batch = 1;
  one.ctx = {d.ctx[2]};
  one.q.assign(d.q.begin() + 2 * c.next_n * c.heads * 128, d.q.end());
  one.w.assign(d.w.begin() + 2 * c.next_n * c.heads, d.w.end());
  one.table.assign(d.table.begin() + 2 * d.max_blocks, d.table.end());
  const std::vector<float> alone = run_paged(one, name(Op::kPagedMqaLogits), 3);
  EXPECT_EQ(0, std::memcmp(alone.data(), base.data() + 2 * c.next_n * d.max_len, alone.size() * 4));
}

TEST_P(IndexerKernelTest, PrefillLogitsMatchReference) {
  if (skip()) GTEST_SKIP() << GetParam() << " not runnable here";
  std::mt19937 rng(7);
  for (int64_t heads : {1, 32, 64}) {
    const int64_t rows = 7, keys = 517;
    std::vector<uint8_t> q(rows * heads * 128), k(keys * 128);
    for (auto& x : q) x = random_code(rng);
    for (auto& x : k) x = random_code(rng);
    std::vector<float> scale(keys), w(rows * heads);
    for (auto& x : scale) x = 0.25f + static_cast<float>(rng() % 100) / 50.0f;
    for (auto& x : w) x = static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 1000.0f;
    std::vector<int32_t> ks = {0, 5, 100, 300, 516, 0, -3}, ke = {517, 5, 400, 299, 517, 1, 9000};
    auto run = [&](const std::string& kernel, int threads) {
      std::vector<float> out(rows * keys, 5.0f);
      MqaLogitsArgs a;
      a.q = tensor_view(q.data(), DType::kE4M3, {rows, heads, 128});
      a.k = tensor_view(k.data(), DType::kU8, {keys, 128});
      a.k_scale = tensor_view(scale.data(), DType::kF32, {keys});
      a.weights = tensor_view(w.data(), DType::kF32, {rows, heads});
      a.ks = tensor_view(ks.data(), DType::kI32, {rows});
      a.ke = tensor_view(ke.data(), DType::kI32, {rows});
      a.logits = tensor_view(out.data(), DType::kF32, {rows, keys});
      const Status st = mqa_logits(a, opts(kernel, threads));
      EXPECT_TRUE(st.ok()) << st.to_string();
      return out;
    };
    const std::vector<float> ref = run("mqa_logits.ref", 2), got = run(name(Op::kMqaLogits), 2);
    EXPECT_EQ(0, std::memcmp(got.data(), run(name(Op::kMqaLogits), 3).data(), got.size() * 4));
    for (int64_t m = 0; m < rows; ++m) {
      const int64_t b = std::clamp<int64_t>(ks[m], 0, keys),
                    e = std::clamp<int64_t>(ke[m], b, keys);
      for (int64_t s = 0; s < keys; ++s) {
        const float g = got[m * keys + s];
        if (s < b || s >= e) {
          ASSERT_EQ(g, -kInf) << m << " " << s;
          continue;
        }
        double mag = 0.0;
        for (int64_t h = 0; h < heads; ++h) {
          double dot = 0.0;
          for (int i = 0; i < 128; ++i)
            dot += std::fabs(e4m3_to_float(q[(m * heads + h) * 128 + i]) *
                             e4m3_to_float(k[s * 128 + i]));
          mag += std::fabs(w[m * heads + h]) * dot;
        }
        ASSERT_LE(std::fabs(static_cast<double>(g) - ref[m * keys + s]), 1e-5 * mag * scale[s])
            << "heads " << heads << " row " << m << " key " << s;
      }
    }
  }
}

// Keys no row sees are never read: NaN codes and scales outside [100, 260) stay out of every
// logit, and the visible ones match the reference run on a clean copy.
TEST_P(IndexerKernelTest, PrefillNeverReadsUnseenKeys) {
  if (skip()) GTEST_SKIP() << GetParam() << " not runnable here";
  std::mt19937 rng(11);
  const int64_t rows = 5, heads = 64, keys = 400;
  std::vector<uint8_t> q(rows * heads * 128), k(keys * 128);
  for (auto& x : q) x = random_code(rng);
  for (auto& x : k) x = random_code(rng);
  std::vector<float> scale(keys, 1.0f), w(rows * heads, 0.5f);
  std::vector<int32_t> ks = {100, 120, 100, 259, 200}, ke = {260, 130, 101, 260, 200};
  std::vector<uint8_t> poisoned = k;
  std::vector<float> poisoned_scale = scale;
  for (int64_t s = 0; s < keys; ++s)
    if (s < 100 || s >= 260) {
      std::fill(poisoned.begin() + s * 128, poisoned.begin() + (s + 1) * 128, 0x7F);
      poisoned_scale[s] = std::nanf("");
    }
  auto run = [&](const std::string& kernel, std::vector<uint8_t>& kk, std::vector<float>& sc) {
    std::vector<float> out(rows * keys, 5.0f);
    MqaLogitsArgs a;
    a.q = tensor_view(q.data(), DType::kU8, {rows, heads, 128});
    a.k = tensor_view(kk.data(), DType::kU8, {keys, 128});
    a.k_scale = tensor_view(sc.data(), DType::kF32, {keys});
    a.weights = tensor_view(w.data(), DType::kF32, {rows, heads});
    a.ks = tensor_view(ks.data(), DType::kI32, {rows});
    a.ke = tensor_view(ke.data(), DType::kI32, {rows});
    a.logits = tensor_view(out.data(), DType::kF32, {rows, keys});
    const Status st = mqa_logits(a, opts(kernel, 2));
    EXPECT_TRUE(st.ok()) << st.to_string();
    return out;
  };
  const std::vector<float> clean = run(name(Op::kMqaLogits), k, scale);
  const std::vector<float> got = run(name(Op::kMqaLogits), poisoned, poisoned_scale);
  EXPECT_EQ(0, std::memcmp(clean.data(), got.data(), got.size() * 4));
  for (float x : got) ASSERT_FALSE(std::isnan(x));
}

std::vector<std::string> suffixes() {
  std::vector<std::string> s;
  for (const std::string& n : kernel_names(Op::kPagedMqaLogits))
    s.push_back(n.substr(n.find('.') + 1));
  return s;
}

INSTANTIATE_TEST_SUITE_P(Kernels, IndexerKernelTest, ::testing::ValuesIn(suffixes()),
                         [](const auto& info) { return openmla_test::test_name(info.param); });

}  // namespace
}  // namespace openmla
