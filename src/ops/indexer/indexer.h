// The lightning indexer: validated parameters shared by every indexer kernel, the top-k
// selection routine every kernel (and the unfused indexer_topk) uses, and the registry entries.
// See include/openmla/indexer.h for the semantics.
#pragma once

#include <algorithm>
#include <cstdint>

#include "dispatch/registry.h"
#include "openmla/indexer.h"

namespace openmla {

/// e4m3 queries and fp32 weights [rows][heads]; query row r is q[r / group][r % group] (group:
/// next_n for decode, 1 for prefill).
struct IndexerQuery {
  int64_t heads = 0, group = 1;
  const uint8_t* q = nullptr;
  int64_t q_stride_group = 0, q_stride_row = 0, q_stride_head = 0;
  const float* w = nullptr;
  int64_t w_stride_row = 0, w_stride_head = 0;
  const uint8_t* q_row(int64_t r) const {
    return q + (r / group) * q_stride_group + (r % group) * q_stride_row;
  }
  const float* w_row(int64_t r) const { return w + r * w_stride_row; }
};

struct MqaLogitsParams {
  int64_t rows = 0, keys = 0;
  IndexerQuery query;
  const uint8_t* k = nullptr;  ///< [keys][128] e4m3, row stride k_stride
  int64_t k_stride = 128;
  const float* k_scale = nullptr;
  int64_t k_scale_stride = 1;
  const int32_t* ks = nullptr;
  const int32_t* ke = nullptr;
  int64_t ks_stride = 1, ke_stride = 1;
  float* logits = nullptr;
  int64_t logits_stride = 0;  ///< row stride; the key dim is contiguous

  /// Visible key range [begin, end) of row m, clamped as the public header says.
  int64_t begin(int64_t m) const { return std::min<int64_t>(std::max(ks[m * ks_stride], 0), keys); }
  int64_t end(int64_t m) const {
    return std::min<int64_t>(std::max<int64_t>(ke[m * ke_stride], begin(m)), keys);
  }
};

/// The paged indexer key cache (page-major pages of page_size tokens).
struct IndexerPagedCache {
  const uint8_t* data = nullptr;
  IndexerKeyFormat format = IndexerKeyFormat::kFp8;
  int64_t num_blocks = 0, page_size = 0, block_stride = 0;  ///< block_stride in bytes
};

struct PagedMqaLogitsParams {
  int64_t batch = 0, next_n = 0;
  IndexerQuery query;  ///< row r = b * next_n + j
  IndexerPagedCache cache;
  const int32_t* context_lens = nullptr;
  int64_t ctx_stride[2] = {1, 0};
  bool ctx_per_row = false;  ///< context_lens [batch, next_n]
  const int32_t* block_table = nullptr;
  int64_t bt_stride[2] = {0, 1};
  int64_t max_blocks = 0;
  float* logits = nullptr;  ///< nullptr for the fused op
  int64_t logits_stride = 0, max_len = 0;

  /// Tokens row (b, j) sees.
  int64_t visible(int64_t b, int64_t j) const {
    if (ctx_per_row) return context_lens[b * ctx_stride[0] + j * ctx_stride[1]];
    return std::max<int64_t>(context_lens[b * ctx_stride[0]] - next_n + 1 + j, 0);
  }
  /// The most tokens any row of request b sees (the cache prefix the request reads).
  int64_t request_visible(int64_t b) const {
    int64_t v = 0;
    for (int64_t j = 0; j < next_n; ++j) v = std::max(v, visible(b, j));
    return v;
  }
  /// Page of token `pos` of request b.
  const uint8_t* page(int64_t b, int64_t pos) const {
    const int32_t block = block_table[b * bt_stride[0] + (pos / cache.page_size) * bt_stride[1]];
    return cache.data + block * cache.block_stride;
  }
};

/// Maps a selected position p (relative to the row's first key) to its output index: p itself,
/// or block_table[p / page_size] * page_size + p % page_size.
struct TopkSlotMap {
  const int32_t* block_row = nullptr;  ///< nullptr: positions are the output
  int64_t bt_stride = 1, page_size = 1;
  int32_t operator()(int64_t p) const {
    if (!block_row) return static_cast<int32_t>(p);
    return static_cast<int32_t>(block_row[(p / page_size) * bt_stride] * page_size + p % page_size);
  }
};

struct PagedIndexerTopkParams {
  PagedMqaLogitsParams lp;  ///< lp.logits == nullptr
  int64_t topk = 0;
  const int32_t* out_block_table = nullptr;
  int64_t obt_stride[2] = {0, 1};
  int64_t out_page_size = 0;
  int32_t* indices = nullptr;
  int64_t idx_stride[3] = {};
  int32_t* topk_length = nullptr;
  int64_t tl_stride[2] = {};

  TopkSlotMap slot_map(int64_t b) const {
    return {out_block_table + b * obt_stride[0], obt_stride[1], out_page_size};
  }
};

// ---- Top-k selection (indexer_select.cpp; plain C++, shared by every kernel). -------------
// Candidates are 64-bit keys ordered like (score desc, position asc), a strict total order, so
// the selected set is unique: it does not depend on how the keys were chunked or merged. NaN
// scores rank below -inf.

/// The selection key of (score, position); a larger key ranks higher.
inline uint64_t topk_key(float score, int64_t pos) {
  uint32_t u;
  __builtin_memcpy(&u, &score, 4);
  uint32_t ordered;
  if ((u & 0x7FFFFFFFu) > 0x7F800000u)
    ordered = 0;  // NaN: below everything
  else
    ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(pos));
}
inline int64_t topk_key_pos(uint64_t key) {
  return static_cast<int64_t>(0xFFFFFFFFu - static_cast<uint32_t>(key & 0xFFFFFFFFu));
}

/// Keeps the min(k, n) highest keys of keys[0, n) in keys[0, min(k, n)) (any order); returns
/// that count.
int64_t topk_select(uint64_t* keys, int64_t n, int64_t k);

/// Appends the keys of scores[0, n) (positions first_pos + i) and selects the top k of them in
/// place (keys must hold n); returns the count kept.
int64_t topk_of_scores(const float* scores, int64_t n, int64_t first_pos, int64_t k,
                       uint64_t* keys);

/// Writes keys[0, count) (count <= k) as ascending positions mapped through `map` into
/// out[0, k) (stride out_stride), -1 after them, and count into *length when given. Sorts keys.
void topk_write_row(uint64_t* keys, int64_t count, int64_t k, const TopkSlotMap& map, int32_t* out,
                    int64_t out_stride, int32_t* length);

extern const KernelEntry kMqaLogitsAvx512Bf16;
extern const KernelEntry kMqaLogitsAvx512;
extern const KernelEntry kMqaLogitsAvx2;
extern const KernelEntry kMqaLogitsRef;
extern const KernelEntry kPagedMqaLogitsAvx512Bf16;
extern const KernelEntry kPagedMqaLogitsAvx512;
extern const KernelEntry kPagedMqaLogitsAvx2;
extern const KernelEntry kPagedMqaLogitsRef;
extern const KernelEntry kPagedIndexerTopkAvx512Bf16;
extern const KernelEntry kPagedIndexerTopkAvx512;
extern const KernelEntry kPagedIndexerTopkAvx2;
extern const KernelEntry kPagedIndexerTopkRef;

}  // namespace openmla
