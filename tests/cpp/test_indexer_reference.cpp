// The indexer's reference kernels on hand-worked cases (exact values), the unfused indexer_topk
// against a brute-force sort (ties, starts / ends, block-table slots, k > visible, empty rows),
// topk_select / topk_of_scores (nth_element and the running floor) against a full sort on
// random, few-valued, tied, NaN and -inf scores; and argument validation: each bad shape, dtype,
// stride or value gives a Status naming it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "openmla/indexer.h"
#include "ops/indexer/indexer.h"
#include "tensors.h"

namespace openmla {
namespace {
using testing::tensor_view;

constexpr float kInf = std::numeric_limits<float>::infinity();
// e4m3 codes of exact values.
constexpr uint8_t kOne = 0x38, kTwo = 0x40, kHalf = 0x30, kMinusOne = 0xB8;

Options ref_kernel(const char* name) {
  Options o;
  o.kernel = name;
  o.num_threads = 1;
  return o;
}

// Prefill: 2 heads, q0 = [1, 2, 0...], q1 = [-1, 0.5, 0...], w = [0.5, 3].
// key 0 = [1, 1] scale 2: dots 3, -0.5 -> 0.5*3*2 + 3*0*2 = 3.
// key 1 = [-1, 2] scale 0.25: dots 3, 2 -> 0.5*3*0.25 + 3*2*0.25 = 1.875.
struct TinyPrefill {
  std::vector<uint8_t> q = std::vector<uint8_t>(2 * 2 * 128, 0),
                       k = std::vector<uint8_t>(2 * 128, 0);
  std::vector<float> scale = {2.0f, 0.25f}, w = {0.5f, 3.0f, 0.5f, 3.0f},
                     logits = std::vector<float>(4, 9.0f);
  std::vector<int32_t> ks = {0, 1}, ke = {2, 2};
  TinyPrefill() {
    for (int m = 0; m < 2; ++m) {
      q[(m * 2 + 0) * 128 + 0] = kOne;
      q[(m * 2 + 0) * 128 + 1] = kTwo;
      q[(m * 2 + 1) * 128 + 0] = kMinusOne;
      q[(m * 2 + 1) * 128 + 1] = kHalf;
    }
    k[0] = kOne;
    k[1] = kOne;
    k[128] = kMinusOne;
    k[129] = kTwo;
  }
  MqaLogitsArgs args() {
    MqaLogitsArgs a;
    a.q = tensor_view(q.data(), DType::kU8, {2, 2, 128});
    a.k = tensor_view(k.data(), DType::kU8, {2, 128});
    a.k_scale = tensor_view(scale.data(), DType::kF32, {2});
    a.weights = tensor_view(w.data(), DType::kF32, {2, 2});
    a.ks = tensor_view(ks.data(), DType::kI32, {2});
    a.ke = tensor_view(ke.data(), DType::kI32, {2});
    a.logits = tensor_view(logits.data(), DType::kF32, {2, 2});
    return a;
  }
};

TEST(IndexerReference, PrefillHandWorked) {
  TinyPrefill t;
  ASSERT_TRUE(mqa_logits(t.args(), ref_kernel("mqa_logits.ref")).ok());
  EXPECT_EQ(t.logits, (std::vector<float>{3.0f, 1.875f, -kInf, 1.875f}));
}

// Paged: page size 2, FP4 and FP8 caches with two tokens in block 1 (block 0 is NaN poison).
// FP4 token 0: elements 0, 1 = codes 2 (1.0), 3 (1.5) in block scale 2 (ue8m0 128) -> 2, 3;
// element 32 = code 7 (6) in block scale 0.5 (ue8m0 126) -> 3. q0 = [1, 2, 0.., q[32] = 1]:
// dot = 2 + 6 + 3 = 11, w0 = 0.5 -> 5.5. Token 1: element 0 = code 9 (-0.5) scale 2 -> -1:
// dot = -1 -> ReLU 0 -> 0.
TEST(IndexerReference, PagedFp4HandWorked) {
  const int64_t page = 2, bpt = 68;
  std::vector<uint8_t> cache(2 * page * bpt, 0xFF);
  uint8_t* pg = cache.data() + page * bpt;
  std::memset(pg, 0, page * bpt);
  pg[0] = 0x32;             // element 0 code 2, element 1 code 3
  pg[16] = 0x07;            // element 32 code 7
  pg[64] = 0x09;            // token 1 element 0 code 9
  pg[64 * page + 0] = 128;  // token 0 scales
  pg[64 * page + 1] = 126;
  pg[64 * page + 2] = 127;
  pg[64 * page + 3] = 127;
  for (int i = 0; i < 4; ++i) pg[64 * page + 4 + i] = 128;  // token 1 scales
  std::vector<uint8_t> q(128, 0);
  q[0] = kOne;
  q[1] = kTwo;
  q[32] = kOne;
  std::vector<float> w = {0.5f}, logits(4, 9.0f);
  std::vector<int32_t> ctx = {2}, table = {1, -1};
  PagedMqaLogitsArgs a;
  a.q = tensor_view(q.data(), DType::kU8, {1, 1, 1, 128});
  a.kv_cache = tensor_view(cache.data(), DType::kU8, {2, page, 1, bpt});
  a.format = IndexerKeyFormat::kFp4;
  a.weights = tensor_view(w.data(), DType::kF32, {1, 1});
  a.context_lens = tensor_view(ctx.data(), DType::kI32, {1});
  a.block_table = tensor_view(table.data(), DType::kI32, {1, 2});
  a.logits = tensor_view(logits.data(), DType::kF32, {1, 4});
  ASSERT_TRUE(paged_mqa_logits(a, ref_kernel("paged_mqa_logits.ref")).ok());
  EXPECT_EQ(logits, (std::vector<float>{5.5f, 0.0f, -kInf, -kInf}));
  // Fused, k = 3 > visible 2: both tokens as slots of block 1, then -1.
  std::vector<int32_t> idx(3, 7), len(1, 7);
  PagedIndexerTopkArgs f;
  f.logits_args = a;
  f.indices = tensor_view(idx.data(), DType::kI32, {1, 1, 3});
  f.topk_length = tensor_view(len.data(), DType::kI32, {1, 1});
  ASSERT_TRUE(paged_indexer_topk(f, ref_kernel("paged_indexer_topk.ref")).ok());
  EXPECT_EQ(idx, (std::vector<int32_t>{2, 3, -1}));
  EXPECT_EQ(len[0], 2);
}

// FP8, next_n 2 with context_lens [B]: row 0 sees 1 token, row 1 sees 2. Token 0 = [2, ...]
// scale 0.5, token 1 = [1, ...] scale 3; q (both rows, one head) = [1, ...], w = 1:
// token 0 -> 2 * 0.5 = 1, token 1 -> 1 * 3 = 3.
TEST(IndexerReference, PagedFp8NextN) {
  const int64_t page = 64, bpt = 132;
  std::vector<uint8_t> cache(page * bpt, 0xFF);
  cache[0] = kTwo;
  std::memset(cache.data() + 1, 0, 127);
  cache[128] = kOne;
  std::memset(cache.data() + 129, 0, 127);
  const float s0 = 0.5f, s1 = 3.0f;
  std::memcpy(cache.data() + 128 * page, &s0, 4);
  std::memcpy(cache.data() + 128 * page + 4, &s1, 4);
  std::vector<uint8_t> q(2 * 128, 0);
  q[0] = kOne;
  q[128] = kOne;
  std::vector<float> w = {1.0f, 1.0f}, logits(2 * 3, 9.0f);
  std::vector<int32_t> ctx = {2}, table = {0};
  PagedMqaLogitsArgs a;
  a.q = tensor_view(q.data(), DType::kE4M3, {1, 2, 1, 128});
  a.kv_cache = tensor_view(cache.data(), DType::kU8, {1, page, 1, bpt});
  a.weights = tensor_view(w.data(), DType::kF32, {2, 1});
  a.context_lens = tensor_view(ctx.data(), DType::kI32, {1});
  a.block_table = tensor_view(table.data(), DType::kI32, {1, 1});
  a.logits = tensor_view(logits.data(), DType::kF32, {2, 3});
  ASSERT_TRUE(paged_mqa_logits(a, ref_kernel("paged_mqa_logits.ref")).ok());
  EXPECT_EQ(logits, (std::vector<float>{1.0f, -kInf, -kInf, 1.0f, 3.0f, -kInf}));
  // The same lengths given per row.
  std::vector<int32_t> ctx2 = {1, 2};
  a.context_lens = tensor_view(ctx2.data(), DType::kI32, {1, 2});
  std::fill(logits.begin(), logits.end(), 9.0f);
  ASSERT_TRUE(paged_mqa_logits(a, ref_kernel("paged_mqa_logits.ref")).ok());
  EXPECT_EQ(logits, (std::vector<float>{1.0f, -kInf, -kInf, 1.0f, 3.0f, -kInf}));
}

// ---- unfused top-k ----------------------------------------------------------------------------

std::vector<int32_t> brute_topk(const float* row, int64_t start, int64_t end, int64_t k) {
  std::vector<int64_t> pos(static_cast<size_t>(end - start));
  std::iota(pos.begin(), pos.end(), 0);
  std::stable_sort(pos.begin(), pos.end(),
                   [&](int64_t a, int64_t b) { return row[start + a] > row[start + b]; });
  pos.resize(static_cast<size_t>(std::min<int64_t>(k, end - start)));
  std::sort(pos.begin(), pos.end());
  std::vector<int32_t> out(pos.begin(), pos.end());
  out.resize(static_cast<size_t>(k), -1);
  return out;
}

TEST(IndexerTopk, HandWorkedTies) {
  std::vector<float> logits = {5, 1, 1, 1, 3, 3, -kInf, 2};
  std::vector<int32_t> ends = {8}, idx(3), len(1);
  IndexerTopkArgs a;
  a.logits = tensor_view(logits.data(), DType::kF32, {1, 8});
  a.ends = tensor_view(ends.data(), DType::kI32, {1});
  a.indices = tensor_view(idx.data(), DType::kI32, {1, 3});
  a.topk_length = tensor_view(len.data(), DType::kI32, {1});
  ASSERT_TRUE(indexer_topk(a).ok());
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 4, 5}));
  std::vector<int32_t> idx5(5);
  a.indices = tensor_view(idx5.data(), DType::kI32, {1, 5});
  ASSERT_TRUE(indexer_topk(a).ok());
  EXPECT_EQ(idx5, (std::vector<int32_t>{0, 1, 4, 5, 7}));  // 1 at position 1 wins the tie
  // Through a block table of page size 3: positions 0, 1, 4, 5, 7 -> blocks [9, 2, 4].
  std::vector<int32_t> table = {9, 2, 4};
  a.block_table = tensor_view(table.data(), DType::kI32, {1, 3});
  a.page_size = 3;
  ASSERT_TRUE(indexer_topk(a).ok());
  EXPECT_EQ(idx5, (std::vector<int32_t>{27, 28, 7, 8, 13}));
  EXPECT_EQ(len[0], 5);
}

TEST(IndexerTopk, MatchesBruteForce) {
  std::mt19937 rng(3);
  const int64_t rows = 9, n = 3000;
  std::vector<float> logits(rows * n);
  for (auto& x : logits) x = static_cast<float>(rng() % 50);  // many exact ties
  std::vector<int32_t> starts(rows), ends(rows);
  for (int64_t r = 0; r < rows; ++r) {
    starts[r] = static_cast<int32_t>(rng() % 100);
    ends[r] = static_cast<int32_t>(starts[r] + rng() % (n - starts[r] + 1));
  }
  ends[0] = starts[0];      // an empty row
  ends[1] = starts[1] + 3;  // fewer than k
  for (int64_t k : {1, 7, 64, 2048}) {
    std::vector<int32_t> idx(rows * k), len(rows);
    IndexerTopkArgs a;
    a.logits = tensor_view(logits.data(), DType::kF32, {rows, n});
    a.starts = tensor_view(starts.data(), DType::kI32, {rows});
    a.ends = tensor_view(ends.data(), DType::kI32, {rows});
    a.indices = tensor_view(idx.data(), DType::kI32, {rows, k});
    a.topk_length = tensor_view(len.data(), DType::kI32, {rows});
    Options o;
    o.num_threads = 3;
    ASSERT_TRUE(indexer_topk(a, o).ok());
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<int32_t> want = brute_topk(logits.data() + r * n, starts[r], ends[r], k);
      EXPECT_EQ(std::vector<int32_t>(idx.begin() + r * k, idx.begin() + (r + 1) * k), want)
          << "row " << r << " k " << k;
      EXPECT_EQ(len[r], std::min<int64_t>(k, ends[r] - starts[r]));
    }
  }
}

// ---- validation ------------------------------------------------------------------------------

void expect_error(const Status& st, StatusCode code, const std::string& needle) {
  EXPECT_EQ(st.code(), code) << st.to_string();
  EXPECT_NE(st.message().find(needle), std::string::npos) << st.to_string();
}

TEST(IndexerApi, MqaLogitsErrorsNameTheArgument) {
  {
    TinyPrefill t;
    MqaLogitsArgs a = t.args();
    a.q.dtype = DType::kBF16;
    expect_error(mqa_logits(a), StatusCode::kWrongDtype, "q");
  }
  {
    TinyPrefill t;
    MqaLogitsArgs a = t.args();
    a.k_scale.dtype = DType::kBF16;
    expect_error(mqa_logits(a), StatusCode::kWrongDtype, "k_scale");
  }
  {
    TinyPrefill t;
    MqaLogitsArgs a = t.args();
    a.q.shape[2] = 64;
    expect_error(mqa_logits(a), StatusCode::kUnsupported, "q");
  }
  {
    TinyPrefill t;
    MqaLogitsArgs a = t.args();
    a.weights.shape[1] = 3;
    expect_error(mqa_logits(a), StatusCode::kInvalidArgument, "weights");
  }
  {
    TinyPrefill t;
    MqaLogitsArgs a = t.args();
    a.ke.shape[0] = 1;
    expect_error(mqa_logits(a), StatusCode::kInvalidArgument, "ke");
  }
  {
    TinyPrefill t;
    MqaLogitsArgs a = t.args();
    a.logits.stride[0] = 1;
    expect_error(mqa_logits(a), StatusCode::kInvalidArgument, "logits");
  }
  {
    TinyPrefill t;
    MqaLogitsArgs a = t.args();
    a.k.stride[1] = 2;
    expect_error(mqa_logits(a), StatusCode::kInvalidArgument, "k");
  }
}

struct TinyPaged {
  std::vector<uint8_t> q = std::vector<uint8_t>(2 * 2 * 4 * 128, kOne);
  std::vector<uint8_t> cache = std::vector<uint8_t>(3 * 4 * 132, 0);
  std::vector<float> w = std::vector<float>(2 * 2 * 4, 1.0f), logits = std::vector<float>(4 * 8);
  std::vector<int32_t> ctx = {5, 8}, table = {0, 1, 2, 0}, idx = std::vector<int32_t>(2 * 2 * 4);
  PagedMqaLogitsArgs args() {
    PagedMqaLogitsArgs a;
    a.q = tensor_view(q.data(), DType::kU8, {2, 2, 4, 128});
    a.kv_cache = tensor_view(cache.data(), DType::kU8, {3, 4, 1, 132});
    a.weights = tensor_view(w.data(), DType::kF32, {4, 4});
    a.context_lens = tensor_view(ctx.data(), DType::kI32, {2});
    a.block_table = tensor_view(table.data(), DType::kI32, {2, 2});
    a.logits = tensor_view(logits.data(), DType::kF32, {4, 8});
    return a;
  }
  PagedIndexerTopkArgs fused() {
    PagedIndexerTopkArgs f;
    f.logits_args = args();
    f.indices = tensor_view(idx.data(), DType::kI32, {2, 2, 4});
    return f;
  }
};

TEST(IndexerApi, PagedErrorsNameTheArgument) {
  {
    TinyPaged t;
    ASSERT_TRUE(paged_mqa_logits(t.args()).ok());
    ASSERT_TRUE(paged_indexer_topk(t.fused()).ok());
  }
  {
    TinyPaged t;
    t.table[2] = 3;  // request 1, page 0: outside the 3 blocks
    expect_error(paged_mqa_logits(t.args()), StatusCode::kInvalidArgument, "block_table[1, 0] = 3");
    expect_error(paged_indexer_topk(t.fused()), StatusCode::kInvalidArgument,
                 "block_table[1, 0] = 3");
  }
  {
    TinyPaged t;
    t.ctx[0] = 9;  // more than logits' max_len and the table's 2 blocks of 4
    expect_error(paged_mqa_logits(t.args()), StatusCode::kInvalidArgument, "context_lens[0]");
    expect_error(paged_indexer_topk(t.fused()), StatusCode::kInvalidArgument, "block_table");
  }
  {
    TinyPaged t;
    t.ctx[1] = -1;
    expect_error(paged_mqa_logits(t.args()), StatusCode::kInvalidArgument, "context_lens[1]");
  }
  {
    TinyPaged t;
    PagedMqaLogitsArgs a = t.args();
    a.kv_cache.shape[3] = 68;
    expect_error(paged_mqa_logits(a), StatusCode::kInvalidArgument, "kv_cache");
    a = t.args();
    a.kv_cache.dtype = DType::kF32;
    expect_error(paged_mqa_logits(a), StatusCode::kWrongDtype, "kv_cache");
    a = t.args();
    a.format = static_cast<IndexerKeyFormat>(7);
    expect_error(paged_mqa_logits(a), StatusCode::kInvalidArgument, "format");
    a = t.args();
    a.context_lens.dtype = DType::kI64;
    expect_error(paged_mqa_logits(a), StatusCode::kWrongDtype, "context_lens");
    a = t.args();
    a.block_table.shape[0] = 1;
    expect_error(paged_mqa_logits(a), StatusCode::kInvalidArgument, "block_table");
    a = t.args();
    a.weights.dtype = DType::kBF16;
    expect_error(paged_mqa_logits(a), StatusCode::kWrongDtype, "weights");
    a = t.args();
    a.logits.shape[0] = 2;
    expect_error(paged_mqa_logits(a), StatusCode::kInvalidArgument, "logits");
    a = t.args();
    a.kv_cache.stride[1] = 133;
    expect_error(paged_mqa_logits(a), StatusCode::kInvalidArgument, "kv_cache");
  }
  {
    TinyPaged t;
    PagedIndexerTopkArgs f = t.fused();
    f.indices.shape[2] = 0;
    expect_error(paged_indexer_topk(f), StatusCode::kInvalidArgument, "indices");
    f = t.fused();
    f.indices.dtype = DType::kI64;
    expect_error(paged_indexer_topk(f), StatusCode::kWrongDtype, "indices");
    f = t.fused();
    f.out_page_size = -2;
    expect_error(paged_indexer_topk(f), StatusCode::kInvalidArgument, "out_page_size");
    std::vector<int32_t> obt = {0, -4, 1, 2};
    f = t.fused();
    f.out_block_table = tensor_view(obt.data(), DType::kI32, {2, 2});
    expect_error(paged_indexer_topk(f), StatusCode::kInvalidArgument, "out_block_table[0, 1] = -4");
  }
}

TEST(IndexerApi, TopkErrorsNameTheArgument) {
  std::vector<float> logits(2 * 6, 1.0f);
  std::vector<int32_t> starts = {0, 2}, ends = {6, 7}, idx(2 * 3), table = {0, 1};
  IndexerTopkArgs a;
  a.logits = tensor_view(logits.data(), DType::kF32, {2, 6});
  a.starts = tensor_view(starts.data(), DType::kI32, {2});
  a.ends = tensor_view(ends.data(), DType::kI32, {2});
  a.indices = tensor_view(idx.data(), DType::kI32, {2, 3});
  expect_error(indexer_topk(a), StatusCode::kInvalidArgument, "ends[1] = 7");
  ends[1] = 1;
  expect_error(indexer_topk(a), StatusCode::kInvalidArgument, "ends[1] = 1");
  ends[1] = 6;
  starts[0] = -1;
  expect_error(indexer_topk(a), StatusCode::kInvalidArgument, "starts[0] = -1");
  starts[0] = 0;
  ASSERT_TRUE(indexer_topk(a).ok());
  a.block_table = tensor_view(table.data(), DType::kI32, {1, 2});
  a.page_size = 4;
  expect_error(indexer_topk(a), StatusCode::kInvalidArgument, "block_table");  // 1 * next_n 1 != 2
  a.next_n = 2;
  table[1] = -3;
  expect_error(indexer_topk(a), StatusCode::kInvalidArgument, "block_table[0, 1] = -3");
  a.logits.dtype = DType::kF16;
  expect_error(indexer_topk(a), StatusCode::kWrongDtype, "logits");
}

// The kept keys are exactly the k largest (keys are distinct, so the set is unique).
TEST(IndexerSelect, RadixSelectAndFloorKeepTheLargestKeys) {
  std::mt19937 rng(3);
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kNegInf = -std::numeric_limits<float>::infinity();
  for (int trial = 0; trial < 120; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % (trial < 60 ? 300 : 20000));
    const int64_t k = 1 + static_cast<int64_t>(rng() % (n + 5));
    std::vector<float> scores(static_cast<size_t>(n));
    for (auto& x : scores) {
      switch (trial % 5) {
        case 0:
          x = std::uniform_real_distribution<float>(-100.0f, 100.0f)(rng);
          break;
        case 1:
          x = static_cast<float>(rng() % 3);
          break;  // few values: long ties
        case 2:
          x = 1.5f;
          break;  // all tied
        case 3:
          x = rng() % 4 == 0 ? kNan : (rng() % 4 == 0 ? kNegInf : static_cast<float>(rng() % 50));
          break;
        default:
          x = static_cast<float>(n - (&x - scores.data()));
          break;  // descending
      }
    }
    const int64_t first = static_cast<int64_t>(rng() % 1000);
    std::vector<uint64_t> want(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) want[i] = topk_key(scores[i], first + i);
    std::sort(want.begin(), want.end(), std::greater<uint64_t>());
    want.resize(static_cast<size_t>(std::min(k, n)));
    std::sort(want.begin(), want.end());
    std::vector<uint64_t> keys(static_cast<size_t>(n));
    const int64_t kept = topk_of_scores(scores.data(), n, first, k, keys.data());
    std::vector<uint64_t> got(keys.begin(), keys.begin() + kept);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << "trial " << trial << " n " << n << " k " << k;
    for (int64_t i = 0; i < n; ++i) keys[i] = topk_key(scores[i], first + i);
    std::shuffle(keys.begin(), keys.end(), rng);
    const int64_t kept2 = topk_select(keys.data(), n, k);
    got.assign(keys.begin(), keys.begin() + kept2);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << "select, trial " << trial;
  }
}

}  // namespace
}  // namespace openmla
