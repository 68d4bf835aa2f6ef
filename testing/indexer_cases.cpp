#include "indexer_cases.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <set>

#include "core/dtype.h"
#include "tensors.h"

namespace openmla::testing {
namespace {

// A finite e4m3 code of magnitude 2^-2 .. 2^1.875 with a random sign.
uint8_t random_code(std::mt19937_64& rng) {
  return static_cast<uint8_t>((rng() & 0x80) | (0x28 + rng() % 0x20));
}

constexpr float kE2M1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};

// Token s of request b decoded: 128 values and the key scale (1 for kFp4).
double decode(const IndexerCase& c, int64_t b, int64_t s, double* k) {
  const int64_t page = c.config.page_size;
  const uint8_t* pg = c.cache.data() + c.block_table[b * c.max_blocks + s / page] * c.block_stride;
  const int64_t t = s % page;
  if (c.config.format == IndexerKeyFormat::kFp8) {
    for (int d = 0; d < 128; ++d) k[d] = e4m3_to_float(pg[128 * t + d]);
    float scale;
    std::memcpy(&scale, pg + 128 * page + 4 * t, 4);
    return scale;
  }
  for (int d = 0; d < 128; ++d) {
    const uint8_t byte = pg[64 * t + d / 2];
    k[d] = kE2M1[d % 2 ? byte >> 4 : byte & 0xF] * ue8m0_to_float(pg[64 * page + 4 * t + d / 32]);
  }
  return 1.0;
}

double magnitude(const IndexerCase& c, int64_t b, int64_t j, int64_t s) {
  double k[128];
  const double scale = std::fabs(decode(c, b, s, k));
  const int64_t r = b * c.config.next_n + j, heads = c.config.heads;
  double m = 0.0;
  for (int64_t h = 0; h < heads; ++h) {
    double dot = 0.0;
    for (int d = 0; d < 128; ++d)
      dot += std::fabs(e4m3_to_float(c.q[(r * heads + h) * 128 + d]) * k[d]);
    m += std::fabs(c.weights[r * heads + h]) * dot;
  }
  return m * scale;
}

Options options(const std::string& kernel, int threads) {
  Options o;
  o.kernel = kernel.empty() ? nullptr : kernel.c_str();
  o.num_threads = threads;
  return o;
}

}  // namespace

int64_t IndexerCase::visible(int64_t b, int64_t j) const {
  return std::max<int64_t>(context_lens[b] - config.next_n + 1 + j, 0);
}

int64_t IndexerCase::scored_keys() const {
  int64_t n = 0;
  for (int64_t b = 0; b < config.batch; ++b)
    for (int64_t j = 0; j < config.next_n; ++j) n += visible(b, j);
  return n;
}

PagedMqaLogitsArgs IndexerCase::logits_args(float* logits) const {
  const IndexerConfig& g = config;
  PagedMqaLogitsArgs a;
  a.q = tensor_view(q.data(), DType::kU8, {g.batch, g.next_n, g.heads, 128});
  a.kv_cache = tensor_view(cache.data(), DType::kU8, {num_blocks, g.page_size, 1, bytes_per_token},
                           {block_stride, bytes_per_token, bytes_per_token, 1});
  a.format = g.format;
  a.weights = tensor_view(weights.data(), DType::kF32, {g.batch * g.next_n, g.heads});
  a.context_lens = tensor_view(context_lens.data(), DType::kI32, {g.batch});
  a.block_table = tensor_view(block_table.data(), DType::kI32, {g.batch, max_blocks});
  if (logits) a.logits = tensor_view(logits, DType::kF32, {g.batch * g.next_n, max_len});
  return a;
}

IndexerCase make_indexer_case(const IndexerConfig& config) {
  IndexerCase c;
  c.config = config;
  const int64_t page = config.page_size;
  std::mt19937_64 rng(config.seed);
  c.bytes_per_token = config.format == IndexerKeyFormat::kFp8 ? 132 : 68;
  c.block_stride = page * c.bytes_per_token;
  for (int64_t b = 0; b < config.batch; ++b)
    c.context_lens.push_back(
        static_cast<int32_t>(config.random_lengths ? rng() % (config.tokens + 1) : config.tokens));
  int64_t pages = 0;
  for (int32_t len : c.context_lens) {
    c.max_len = std::max<int64_t>(c.max_len, len);
    c.max_blocks = std::max<int64_t>(c.max_blocks, (len + page - 1) / page);
    pages += (len + page - 1) / page;
  }
  c.max_blocks = std::max<int64_t>(c.max_blocks, 1);
  c.max_len = std::max<int64_t>(c.max_len, 1);
  c.num_blocks = pages + 1;  // one page nobody uses
  c.cache.assign(static_cast<size_t>(c.num_blocks * c.block_stride), 0xFF);
  std::vector<int32_t> perm(static_cast<size_t>(c.num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  c.block_table.assign(static_cast<size_t>(config.batch * c.max_blocks), -1);
  int64_t next = 0;
  for (int64_t b = 0; b < config.batch; ++b) {
    const int64_t len = c.context_lens[b];
    for (int64_t i = 0; i < (len + page - 1) / page; ++i)
      c.block_table[b * c.max_blocks + i] = perm[next++];
    for (int64_t s = 0; s < len; ++s) {
      uint8_t* pg = c.cache.data() + c.block_table[b * c.max_blocks + s / page] * c.block_stride;
      const int64_t t = s % page;
      if (config.format == IndexerKeyFormat::kFp8) {
        for (int d = 0; d < 128; ++d) pg[128 * t + d] = random_code(rng);
        const float scale = 0.5f + static_cast<float>(rng() % 1024) / 1024.0f;
        std::memcpy(pg + 128 * page + 4 * t, &scale, 4);
      } else {
        for (int d = 0; d < 64; ++d) pg[64 * t + d] = static_cast<uint8_t>(rng());
        for (int i = 0; i < 4; ++i)
          pg[64 * page + 4 * t + i] = static_cast<uint8_t>(124 + rng() % 7);
      }
    }
  }
  c.q.resize(static_cast<size_t>(config.batch * config.next_n * config.heads * 128));
  for (uint8_t& x : c.q) x = random_code(rng);
  c.weights.resize(static_cast<size_t>(config.batch * config.next_n * config.heads));
  for (float& w : c.weights)
    w = static_cast<float>(static_cast<int64_t>(rng() % 2001) - 1000) / 1000.0f;
  return c;
}

double indexer_flops(const IndexerCase& c) {
  return 2.0 * static_cast<double>(c.scored_keys()) * static_cast<double>(c.config.heads) * 128.0;
}

double indexer_bytes(const IndexerCase& c, bool logits) {
  double bytes = static_cast<double>(c.q.size() + 4 * c.weights.size());
  for (int32_t len : c.context_lens) bytes += static_cast<double>(len) * c.bytes_per_token;
  if (logits) bytes += 4.0 * static_cast<double>(c.config.batch * c.config.next_n * c.max_len);
  return bytes;
}

IndexerRun run_indexer_logits(const IndexerCase& c, const std::string& kernel, int threads) {
  IndexerRun r;
  r.logits.assign(static_cast<size_t>(c.config.batch * c.config.next_n * c.max_len), 0.0f);
  Plan plan;
  r.status = plan_paged_mqa_logits(c.logits_args(r.logits.data()), options(kernel, threads), &plan);
  if (!r.status.ok()) return r;
  r.kernel = plan.kernel_name();
  r.status = run_paged_mqa_logits(plan, c.logits_args(r.logits.data()));
  return r;
}

IndexerRun run_indexer_topk(const IndexerCase& c, const std::string& kernel, int threads) {
  IndexerRun r;
  const IndexerConfig& g = c.config;
  r.indices.assign(static_cast<size_t>(g.batch * g.next_n * g.topk), 0);
  r.lengths.assign(static_cast<size_t>(g.batch * g.next_n), 0);
  PagedIndexerTopkArgs a;
  a.logits_args = c.logits_args(nullptr);
  a.indices = tensor_view(r.indices.data(), DType::kI32, {g.batch, g.next_n, g.topk});
  a.topk_length = tensor_view(r.lengths.data(), DType::kI32, {g.batch, g.next_n});
  Plan plan;
  r.status = plan_paged_indexer_topk(a, options(kernel, threads), &plan);
  if (!r.status.ok()) return r;
  r.kernel = plan.kernel_name();
  r.status = run_paged_indexer_topk(plan, a);
  return r;
}

bool check_indexer_logits(const IndexerCase& c, const IndexerRun& answer,
                          const IndexerRun& reference, double* max_err, std::string* message) {
  *max_err = 0.0;
  if (!answer.status.ok()) {
    *message = answer.status.to_string();
    return false;
  }
  for (int64_t b = 0; b < c.config.batch; ++b)
    for (int64_t j = 0; j < c.config.next_n; ++j) {
      const int64_t r = b * c.config.next_n + j, v = c.visible(b, j);
      for (int64_t s = 0; s < c.max_len; ++s) {
        const float got = answer.logits[r * c.max_len + s],
                    want = reference.logits[r * c.max_len + s];
        if (s >= v) {
          if (!(got == -INFINITY)) {
            *message = "row " + std::to_string(r) + " position " + std::to_string(s) +
                       " past the length is " + std::to_string(got) + ", not -inf";
            return false;
          }
          continue;
        }
        const double err = std::fabs(static_cast<double>(got) - want);
        *max_err = std::max(*max_err, err);
        if (!(err <= 1e-5 * magnitude(c, b, j, s))) {
          *message = "row " + std::to_string(r) + " position " + std::to_string(s) + ": " +
                     std::to_string(got) + " vs reference " + std::to_string(want);
          return false;
        }
      }
    }
  return true;
}

bool check_indexer_topk(const IndexerCase& c, const IndexerRun& answer,
                        const IndexerRun& reference_logits, std::string* message) {
  if (!answer.status.ok()) {
    *message = answer.status.to_string();
    return false;
  }
  const IndexerConfig& g = c.config;
  const int64_t page = g.page_size;
  for (int64_t b = 0; b < g.batch; ++b) {
    std::vector<int64_t> pos_of_block(static_cast<size_t>(c.num_blocks), -1);
    for (int64_t i = 0; i < c.max_blocks; ++i)
      if (c.block_table[b * c.max_blocks + i] >= 0)
        pos_of_block[c.block_table[b * c.max_blocks + i]] = i;
    for (int64_t j = 0; j < g.next_n; ++j) {
      const int64_t r = b * g.next_n + j, v = c.visible(b, j), len = std::min(g.topk, v);
      const std::string where = "row " + std::to_string(r);
      if (answer.lengths[r] != len) {
        *message = where + ": topk_length " + std::to_string(answer.lengths[r]) + ", want " +
                   std::to_string(len);
        return false;
      }
      const float* row = reference_logits.logits.data() + r * c.max_len;
      std::vector<int64_t> order(static_cast<size_t>(v));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t x, int64_t y) { return row[x] > row[y]; });
      const std::set<int64_t> want(order.begin(), order.begin() + len);
      const double kth = len > 0 ? row[order[len - 1]] : 0.0;
      std::set<int64_t> got;
      int64_t prev = -1;
      for (int64_t i = 0; i < g.topk; ++i) {
        const int32_t slot = answer.indices[r * g.topk + i];
        if (i >= len) {
          if (slot != -1) {
            *message = where + ": entry " + std::to_string(i) + " past the length is not -1";
            return false;
          }
          continue;
        }
        const int64_t block = slot / page;
        const int64_t pos = slot < 0 || block >= c.num_blocks || pos_of_block[block] < 0
                                ? -1
                                : pos_of_block[block] * page + slot % page;
        if (pos < 0 || pos >= v || pos <= prev) {
          *message = where + ": slot " + std::to_string(slot) +
                     " is not a visible token in ascending order";
          return false;
        }
        prev = pos;
        got.insert(pos);
      }
      for (int64_t p : got)
        if (!want.count(p) && !(std::fabs(row[p] - kth) <= 2e-5 * magnitude(c, b, j, p))) {
          *message = where + ": selected position " + std::to_string(p) + " scores " +
                     std::to_string(row[p]) + ", below the reference's k-th " + std::to_string(kth);
          return false;
        }
      for (int64_t p : want)
        if (!got.count(p) && !(std::fabs(row[p] - kth) <= 2e-5 * magnitude(c, b, j, p))) {
          *message = where + ": missed position " + std::to_string(p) + " scoring " +
                     std::to_string(row[p]);
          return false;
        }
    }
  }
  return true;
}

}  // namespace openmla::testing
