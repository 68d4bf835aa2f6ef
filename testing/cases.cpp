#include "cases.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/dtype.h"
#include "formats/kv_format.h"
#include "openmla/kv_cache.h"

namespace openmla::testing {
namespace {

constexpr uint16_t kBf16NaN = 0x7FC0;  // also a NaN as fp16 (exponent all ones, mantissa != 0)

int64_t fp8_page_bytes(KvFormat format, int64_t page_size) {
  return format == KvFormat::kV32 ? (page_size + 1) * 656 : (584 * page_size + 575) / 576 * 576;
}

/// Re-poisons bytes no kernel may read: page padding and MODEL1's scale pad byte.
void poison_fp8_padding(const CacheBundle& c, int64_t page_bytes) {
  uint8_t* base = c.cache.data<uint8_t>();
  const int64_t used = c.page_size * (c.format == KvFormat::kV32 ? 656 : 584);
  for (int64_t b = 0; b < c.num_blocks; ++b) {
    uint8_t* page = base + b * page_bytes;
    std::memset(page + used, 0xFF, page_bytes - used);
    if (c.format == KvFormat::kModel1)
      for (int64_t t = 0; t < c.page_size; ++t) page[576 * c.page_size + 8 * t + 7] = 0xFF;
  }
}

/// Random paged layout: each request gets ceil(tokens / page) pages from a shuffled pool.
struct PagedLayout {
  int64_t num_blocks = 0, blocks_per_request = 0;
  std::vector<int32_t> table;  ///< [batch][blocks_per_request]
};

PagedLayout make_layout(int64_t batch, int64_t tokens, int64_t page_size, Rng& rng) {
  PagedLayout l;
  l.blocks_per_request = std::max<int64_t>(1, (tokens + page_size - 1) / page_size);
  l.num_blocks = batch * l.blocks_per_request + 1;  // one spare page nobody references
  std::vector<int32_t> pool(l.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  for (int64_t i = l.num_blocks - 1; i > 0; --i) std::swap(pool[i], pool[rng.below(i + 1)]);
  l.table.assign(pool.begin(), pool.begin() + batch * l.blocks_per_request);
  return l;
}

/// `count` distinct positions of [0, range) in random order, padded with invalid values.
std::vector<int64_t> random_positions(int64_t count, int64_t range, Rng& rng) {
  std::vector<int64_t> all(range);
  std::iota(all.begin(), all.end(), 0);
  const int64_t take = std::min(count, range);
  for (int64_t i = 0; i < take; ++i) std::swap(all[i], all[i + rng.below(range - i)]);
  all.resize(take);
  all.resize(count, -1);
  return all;
}

int32_t invalid_index(bool odd, int64_t num_slots, Rng& rng) {
  if (!odd) return -1;
  const int64_t choices[4] = {-1, -7, num_slots, INT32_MAX};
  return static_cast<int32_t>(choices[rng.below(4)]);
}

struct IndexBuild {
  OwnedTensor indices, lengths;
  std::vector<char> referenced;  ///< per cache slot
  int64_t attended = 0;
};

IndexBuild make_indices(const SparseDecodeConfig& c, int64_t topk, int64_t tokens,
                        int64_t page_size, bool with_lengths, const PagedLayout& layout, Rng& rng) {
  IndexBuild r;
  const int64_t num_slots = layout.num_blocks * page_size;
  r.referenced.assign(num_slots, 0);
  r.indices = make_owned(DType::kI32, {c.batch, c.seq_q, topk}, c.non_contiguous);
  std::vector<int64_t> length(c.batch, topk);
  if (with_lengths) {
    r.lengths = make_owned(DType::kI32, {c.batch}, false);
    for (int64_t b = 0; b < c.batch; ++b) {
      length[b] = (c.zero_lengths && rng.uniform() < 0.5) ? 0 : rng.below(topk + 1);
      r.lengths.at<int32_t>({b}) = static_cast<int32_t>(length[b]);
    }
  }
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t s = 0; s < c.seq_q; ++s) {
      const std::vector<int64_t> pos = random_positions(topk, tokens, rng);
      for (int64_t p = 0; p < topk; ++p) {
        int32_t value = invalid_index(c.odd_invalid, num_slots, rng);
        if (!c.all_invalid && pos[p] >= 0) {
          value = static_cast<int32_t>(
              layout.table[b * layout.blocks_per_request + pos[p] / page_size] * page_size +
              pos[p] % page_size);
          if (p < length[b]) {
            r.referenced[value] = 1;
            ++r.attended;
          }
        }
        r.indices.at<int32_t>({b, s, p}) = value;
      }
    }
  return r;
}

OwnedTensor make_latents(int64_t blocks, int64_t page, int64_t heads, int64_t dim, Rng& rng,
                         DType dtype = DType::kBF16) {
  OwnedTensor t = make_owned(dtype, {blocks, page, heads, dim}, false);
  fill_normal(t, rng, 0.1f, 0.0f, 1.0f);
  return t;
}

void poison_token(const OwnedTensor& latents, int64_t block, int64_t offset) {
  for (int64_t h = 0; h < latents.view.shape[2]; ++h)
    for (int64_t i = 0; i < latents.view.shape[3]; ++i)
      latents.at<uint16_t>({block, offset, h, i}) = kBf16NaN;
}

/// Builds the latents of one sparse cache, poisons unreferenced slots, quantises.
CacheBundle finish_sparse_cache(const SparseDecodeConfig& c, int64_t head_dim, int64_t page,
                                const PagedLayout& layout, const IndexBuild& idx, Rng& rng) {
  OwnedTensor latents = make_latents(layout.num_blocks, page, 1, head_dim, rng);
  if (c.nan_poison) {
    for (int64_t slot = 0; slot < layout.num_blocks * page; ++slot)
      if (!idx.referenced[slot]) poison_token(latents, slot / page, slot % page);
  }
  return make_cache(c.format, std::move(latents), head_dim);
}

}  // namespace

CacheBundle make_cache(KvFormat format, OwnedTensor latents, int64_t head_dim) {
  CacheBundle c;
  c.format = format;
  c.num_blocks = latents.view.shape[0];
  c.page_size = latents.view.shape[1];
  c.heads_kv = latents.view.shape[2];
  c.head_dim = head_dim;
  if (format == KvFormat::kBF16) {
    c.cache = latents;
    c.cache.view.data = c.cache.storage.data();
  } else {
    const int64_t page_bytes = fp8_page_bytes(format, c.page_size);
    const int64_t bpt = format == KvFormat::kV32 ? 656 : 584;
    c.cache = make_owned_strided(DType::kU8, {c.num_blocks, c.page_size, 1, bpt},
                                 {page_bytes, bpt, bpt, 1}, c.num_blocks * page_bytes);
    quantize_kv_cache(latents.view, format, c.cache.view);
    poison_fp8_padding(c, page_bytes);
  }
  c.latents = std::move(latents);
  c.latents.view.data = c.latents.storage.data();
  return c;
}

SparseDecodeArgs SparseDecodeCase::args() const {
  SparseDecodeArgs a;
  a.q = q.view;
  a.kv_cache = kv.cache.view;
  a.indices = indices.view;
  a.topk_length = topk_length.view;
  a.attn_sink = sink.view;
  if (config.extra_topk > 0) {
    a.extra_kv_cache = extra_kv.cache.view;
    a.extra_indices = extra_indices.view;
    a.extra_topk_length = extra_topk_length.view;
  }
  a.softmax_scale = config.softmax_scale;
  return a;
}

SparseDecodeCase make_sparse_decode_case(const SparseDecodeConfig& c) {
  SparseDecodeCase r;
  r.config = c;
  Rng rng(c.seed);
  r.head_dim = format_geometry(c.format, c.head_dim).head_dim;
  r.q = make_owned(DType::kBF16, {c.batch, c.seq_q, c.heads_q, r.head_dim}, c.non_contiguous);
  fill_normal(r.q, rng, 1.0f, 0.0f, 1.0f);
  const PagedLayout layout = make_layout(c.batch, c.cache_tokens, c.page_size, rng);
  IndexBuild main =
      make_indices(c, c.topk, c.cache_tokens, c.page_size, c.topk_length, layout, rng);
  r.kv = finish_sparse_cache(c, r.head_dim, c.page_size, layout, main, rng);
  r.indices = std::move(main.indices);
  r.topk_length = std::move(main.lengths);
  r.attended = main.attended;
  r.unique_tokens = std::count(main.referenced.begin(), main.referenced.end(), 1);
  if (c.extra_topk > 0) {
    const PagedLayout extra_layout =
        make_layout(c.batch, c.extra_cache_tokens, c.extra_page_size, rng);
    IndexBuild extra = make_indices(c, c.extra_topk, c.extra_cache_tokens, c.extra_page_size,
                                    c.extra_topk_length, extra_layout, rng);
    r.extra_kv = finish_sparse_cache(c, r.head_dim, c.extra_page_size, extra_layout, extra, rng);
    r.extra_indices = std::move(extra.indices);
    r.extra_topk_length = std::move(extra.lengths);
    r.attended += extra.attended;
    r.unique_tokens += std::count(extra.referenced.begin(), extra.referenced.end(), 1);
  }
  if (c.sink) {
    r.sink = make_owned(DType::kF32, {c.heads_q}, false);
    fill_sink(r.sink, rng);
  }
  return r;
}

DenseDecodeArgs DenseDecodeCase::args() const {
  DenseDecodeArgs a;
  a.q = q.view;
  a.kv_cache = kv.cache.view;
  a.block_table = block_table.view;
  a.cache_seqlens = cache_seqlens.view;
  a.causal = config.causal;
  return a;
}

DenseDecodeCase make_dense_decode_case(const DenseDecodeConfig& c) {
  DenseDecodeCase r;
  r.config = c;
  Rng rng(c.seed);
  r.head_dim = format_geometry(c.format, c.head_dim).head_dim;
  r.q = make_owned(c.dtype, {c.batch, c.seq_q, c.heads_q, r.head_dim}, c.non_contiguous);
  fill_normal(r.q, rng, 0.1f, 0.0f, 1.0f);
  std::vector<int64_t> length(c.batch);
  int64_t max_blocks = 1, total_blocks = 1;
  for (int64_t b = 0; b < c.batch; ++b) {
    const double drawn = c.varlen ? c.cache_tokens + rng.normal() * c.cache_tokens / 2.0
                                  : static_cast<double>(c.cache_tokens);
    length[b] = std::max<int64_t>(0, std::llround(drawn));
    if (c.zero_lengths && rng.uniform() < 0.5) length[b] = 0;
    const int64_t blocks = (length[b] + c.page_size - 1) / c.page_size;
    max_blocks = std::max(max_blocks, blocks + 1);
    total_blocks += blocks;
    r.total_tokens += length[b];
  }
  OwnedTensor latents =
      make_latents(total_blocks, c.page_size, c.heads_kv, r.head_dim, rng, c.dtype);
  std::vector<int32_t> pool(total_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  for (int64_t i = total_blocks - 1; i > 0; --i) std::swap(pool[i], pool[rng.below(i + 1)]);
  r.block_table = make_owned(DType::kI32, {c.batch, max_blocks}, c.non_contiguous);
  r.cache_seqlens = make_owned(DType::kI32, {c.batch}, false);
  std::vector<char> used(total_blocks * c.page_size, 0);
  int64_t next = 0;
  for (int64_t b = 0; b < c.batch; ++b) {
    r.cache_seqlens.at<int32_t>({b}) = static_cast<int32_t>(length[b]);
    for (int64_t i = 0; i < max_blocks; ++i) {
      const bool live = i * c.page_size < length[b];
      const int32_t page = live ? pool[next++] : 2147480000;
      r.block_table.at<int32_t>({b, i}) = page;
      for (int64_t t = 0; live && t < c.page_size && i * c.page_size + t < length[b]; ++t)
        used[page * c.page_size + t] = 1;
    }
  }
  for (int64_t slot = 0; slot < total_blocks * c.page_size; ++slot)
    if (!used[slot]) poison_token(latents, slot / c.page_size, slot % c.page_size);
  r.kv = make_cache(c.format, std::move(latents), r.head_dim);
  return r;
}

SparsePrefillArgs SparsePrefillCase::args() const {
  SparsePrefillArgs a;
  a.q = q.view;
  a.kv = kv.view;
  a.indices = indices.view;
  a.topk_length = topk_length.view;
  a.attn_sink = sink.view;
  a.softmax_scale = config.softmax_scale;
  return a;
}

SparsePrefillCase make_sparse_prefill_case(const SparsePrefillConfig& c) {
  SparsePrefillCase r;
  r.config = c;
  Rng rng(c.seed);
  r.q = make_owned(DType::kBF16, {c.seq_q, c.heads_q, c.head_dim}, c.non_contiguous);
  fill_normal(r.q, rng, 0.1f, static_cast<float>(rng.uniform() * 0.1 - 0.05), 10.0f);
  r.kv = make_owned(DType::kBF16, {c.seq_kv, c.heads_kv, c.head_dim}, c.non_contiguous);
  fill_normal(r.kv, rng, 0.1f, static_cast<float>(rng.uniform() * 0.1 - 0.05), 10.0f);
  r.indices = make_owned(DType::kI32, {c.seq_q, c.heads_kv, c.topk}, c.non_contiguous);
  const int64_t invalid[8] = {INT32_MIN, -123456, -1,         c.seq_kv,
                              114514,    1919810, 2147480000, INT32_MAX};
  std::vector<int64_t> length(c.seq_q, c.topk);
  if (c.topk_length) {
    r.topk_length = make_owned(DType::kI32, {c.seq_q}, false);
    for (int64_t s = 0; s < c.seq_q; ++s) {
      length[s] = rng.below(c.topk + 1);
      r.topk_length.at<int32_t>({s}) = static_cast<int32_t>(length[s]);
    }
  }
  std::vector<char> referenced(c.seq_kv * c.heads_kv, 0);
  for (int64_t s = 0; s < c.seq_q; ++s)
    for (int64_t g = 0; g < c.heads_kv; ++g) {
      const bool lonely = c.all_invalid_rows && rng.uniform() < 0.1;
      const std::vector<int64_t> pos = random_positions(c.topk, c.seq_kv, rng);
      for (int64_t k = 0; k < c.topk; ++k) {
        const bool valid = !lonely && pos[k] >= 0;
        const int64_t value = valid ? pos[k] : invalid[rng.below(8)];
        r.indices.at<int32_t>({s, g, k}) = static_cast<int32_t>(value);
        if (valid && k < length[s]) {
          referenced[pos[k] * c.heads_kv + g] = 1;
          ++r.attended;
        }
      }
    }
  for (int64_t t = 0; t < c.seq_kv; ++t)
    for (int64_t g = 0; g < c.heads_kv; ++g)
      if (!referenced[t * c.heads_kv + g])
        for (int64_t i = 0; i < c.head_dim; ++i) r.kv.at<uint16_t>({t, g, i}) = kBf16NaN;
  if (c.sink) {
    r.sink = make_owned(DType::kF32, {c.heads_q}, false);
    fill_sink(r.sink, rng);
  }
  return r;
}

namespace {

Outputs decode_outputs(int64_t batch, int64_t seq_q, int64_t heads_q, bool non_contiguous,
                       DType out_dtype = DType::kBF16) {
  Outputs o;
  o.out = make_owned(out_dtype, {batch, seq_q, heads_q, 512}, non_contiguous);
  std::fill_n(reinterpret_cast<uint16_t*>(o.out.storage.data()), o.out.storage.size() * 4,
              kBf16NaN);
  o.lse = make_owned(DType::kF32, {batch, seq_q, heads_q}, false);
  std::fill_n(reinterpret_cast<float*>(o.lse.storage.data()), o.lse.storage.size() * 2, NAN);
  o.lse.view.shape[1] = heads_q;
  o.lse.view.shape[2] = seq_q;
  o.lse.view.stride[1] = 1;
  o.lse.view.stride[2] = heads_q;
  return o;
}

}  // namespace

Outputs bind_outputs(SparseDecodeArgs* args, bool non_contiguous) {
  Outputs o = decode_outputs(args->q.shape[0], args->q.shape[1], args->q.shape[2], non_contiguous);
  args->out = o.out.view;
  args->lse = o.lse.view;
  return o;
}

Outputs bind_outputs(DenseDecodeArgs* args, bool non_contiguous) {
  Outputs o = decode_outputs(args->q.shape[0], args->q.shape[1], args->q.shape[2], non_contiguous,
                             args->q.dtype);
  args->out = o.out.view;
  args->lse = o.lse.view;
  return o;
}

Outputs bind_outputs(SparsePrefillArgs* args, bool non_contiguous) {
  Outputs o;
  const int64_t seq_q = args->q.shape[0], heads_q = args->q.shape[1];
  o.out = make_owned(DType::kBF16, {seq_q, heads_q, 512}, non_contiguous);
  std::fill_n(reinterpret_cast<uint16_t*>(o.out.storage.data()), o.out.storage.size() * 4,
              kBf16NaN);
  o.max_logits = make_owned(DType::kF32, {seq_q, heads_q}, non_contiguous);
  o.lse = make_owned(DType::kF32, {seq_q, heads_q}, non_contiguous);
  args->out = o.out.view;
  args->max_logits = o.max_logits.view;
  args->lse = o.lse.view;
  return o;
}

double sparse_decode_flops(const SparseDecodeCase& c) {
  return 2.0 * c.config.heads_q * c.attended * (c.head_dim + 512);
}
double dense_decode_flops(const DenseDecodeCase& c) {
  return 2.0 * c.config.heads_q * c.config.seq_q * c.total_tokens * (c.head_dim + 512);
}
double sparse_prefill_flops(const SparsePrefillCase& c) {
  return 2.0 * c.config.heads_q / c.config.heads_kv * c.attended * (c.config.head_dim + 512);
}

double sparse_decode_bytes(const SparseDecodeCase& c) {
  const double token_bytes = c.config.format == KvFormat::kV32      ? 656.0
                             : c.config.format == KvFormat::kModel1 ? 576.0
                                                                    : 2.0 * c.head_dim;
  const double rows = static_cast<double>(c.config.batch) * c.config.seq_q * c.config.heads_q;
  return rows * 2.0 * (c.head_dim + 512) + c.unique_tokens * token_bytes;
}
double dense_decode_bytes(const DenseDecodeCase& c) {
  const double token_bytes = c.config.format == KvFormat::kV32 ? 656.0
                             : c.config.format == KvFormat::kModel1
                                 ? 576.0
                                 : 2.0 * c.head_dim * c.config.heads_kv;
  const double rows = static_cast<double>(c.config.batch) * c.config.seq_q * c.config.heads_q;
  return rows * 2.0 * (c.head_dim + 512) + c.total_tokens * token_bytes;
}
double sparse_prefill_bytes(const SparsePrefillCase& c) {
  const double rows = static_cast<double>(c.config.seq_q) * c.config.heads_q;
  return rows * 2.0 * (c.config.head_dim + 512) + c.attended * 2.0 * c.config.head_dim;
}

}  // namespace openmla::testing
