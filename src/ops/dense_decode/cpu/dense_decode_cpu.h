// Shared, ISA-free driver of the CPU dense-decode kernels (dense_decode_{amx,avx512,avx2}.cpp),
// templated on the GEMM backend of cpu/attn_rows_engine.h.
// Split plan: request b's L_b cached tokens are cut into pieces = ceil(L_b / kDdMaxPiece) equal
// pieces (>= 1, so a zero-length request still has one, empty, piece). Boundaries depend only on
// L_b: results are bitwise identical whatever the batch composition or the thread count.
// Work item = (request, kv head, piece): all seq_q x (heads_q / heads_kv) query rows of that kv
// head are folded into the M dimension, the piece's tokens are streamed ONCE (gathered through
// the block table, FP8 dequantised bit-exactly; 16-bit records read in place 16 at a time when
// they are equally spaced) in blocks shared by every row; causal limits are
// per-row key limits. Each item writes normalised fp32 partials + natural-log lse; then every
// (b, s, h) row is merged by the one combine (cpu/combine.h), also for a single piece, which
// rounds out once to q's dtype. fp16 q / cache words go to the backend as they are (the engine
// tells it the dtype); only backends that read fp16 may be run on them.
// Everything has internal linkage: this header is compiled under different ISA flags.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/attn_rows_engine.h"
#include "cpu/combine.h"
#include "ops/common/api_checks.h"
#include "ops/dense_decode/dense_decode.h"

namespace openmla {
namespace {

constexpr int64_t kDdMaxPiece = 2048;  ///< tokens per piece at most

inline int64_t dd_length(const DenseDecodeParams& p, int64_t b) {
  return p.cache_seqlens[b * p.seqlens_stride];
}
inline int64_t dd_pieces(int64_t length) {
  return std::max<int64_t>(1, (length + kDdMaxPiece - 1) / kDdMaxPiece);
}

inline int dd_choose_splits(const void* params, int) {
  const auto& p = *static_cast<const DenseDecodeParams*>(params);
  int64_t most = 1;
  for (int64_t b = 0; b < p.batch; ++b) most = std::max(most, dd_pieces(dd_length(p, b)));
  return static_cast<int>(most);
}

inline const char* dd_unsupported(const void* params) {
  const auto& p = *static_cast<const DenseDecodeParams*>(params);
  return head_dims_unsupported(p.head_dim, p.head_dim_v);
}

/// Reads key tile i (16 rows) of the block in place when its 16 records are equally spaced in
/// the 16-bit cache (one page, or pages laid out back to back): no copy into the key buffer.
template <class Engine>
bool tile_in_place(Engine& engine, const uint8_t* const* recs, int64_t i) {
  const int64_t stride = recs[1] - recs[0];
  if (stride <= 0) return false;
  for (int64_t j = 2; j < 16; ++j)
    if (recs[j] - recs[0] != j * stride) return false;
  engine.key_tile_in_place(i, reinterpret_cast<const uint16_t*>(recs[0]), stride);
  return true;
}

/// The V packing reads the first 1 KiB of a row read in place; pull the rest (the RoPE dims only
/// QK reads) into L1 now rather than stalling the tile loads on it.
inline void touch_past_v(const uint8_t* rec, int64_t bytes) {
  for (int64_t off = 2 * kRowsDimV; off < bytes; off += 64) __builtin_prefetch(rec + off, 0, 3);
  if (bytes > 2 * kRowsDimV) __builtin_prefetch(rec + bytes - 1, 0, 3);
}

/// Calls fn(i, rec, scales) for tokens j0 + i, i < n, of request b and kv head g in cache order
/// (rec: the token's record; scales: its MODEL1 scale record, else nullptr).
template <class Fn>
void for_each_request_token(const DenseDecodeParams& p, int64_t b, int64_t g, int64_t j0, int64_t n,
                            Fn&& fn) {
  const int64_t ps = p.kv.page_size;
  const bool model1 = p.kv.format == KvFormat::kModel1;
  int64_t j = j0;
  while (j < j0 + n) {
    const int64_t page = p.page_of(b, j / ps);
    int64_t off = j % ps;
    const int64_t run = std::min(ps - off, j0 + n - j);
    for (int64_t t = 0; t < run; ++t, ++off, ++j)
      fn(j - j0, p.kv.token_record(page, off, g), model1 ? p.kv.model1_scales(page, off) : nullptr);
  }
}

/// One work item: kv head g of request b, tokens [begin, end). Its M = seq_q x group query rows
/// (row r = s * group + hh) write 512 normalised floats each to o_part + r * kRowsDimV and the
/// natural-log lse to lse_part[r].
struct DdItem {
  int64_t b, g, begin, end;
  float* o_part;
  float* lse_part;
};

/// Cuts every request into pieces, runs run_item(const DdItem&) on each (in parallel), then merges
/// every (b, s, h) row's pieces with the one combine.
template <class RunItem>
Status dd_run_items(const DenseDecodeParams& p, const ExecConfig& config, RunItem&& run_item) {
  const int64_t group = p.heads_q / p.heads_kv;
  const int64_t M = p.seq_q * group;
  std::vector<int64_t> first(p.batch + 1, 0), pieces(p.batch);
  for (int64_t b = 0; b < p.batch; ++b) {
    pieces[b] = dd_pieces(dd_length(p, b));
    first[b + 1] = first[b] + p.heads_kv * pieces[b];
  }
  const int64_t items = first[p.batch];
  if (items == 0) return Status::Ok();
  static thread_local AlignedBuffer<float> part_out_buf, part_lse_buf;
  float* part_out = part_out_buf.get(items * M * kRowsDimV);
  float* part_lse = part_lse_buf.get(items * M);
  parallel_for(items, config.num_threads, [&](int64_t item, int) {
    const int64_t b = std::upper_bound(first.begin(), first.end(), item) - first.begin() - 1;
    const int64_t local = item - first[b];
    const int64_t k = local % pieces[b];
    const int64_t length = dd_length(p, b);
    const int64_t piece_len = (length + pieces[b] - 1) / pieces[b];
    DdItem it;
    it.b = b;
    it.g = local / pieces[b];
    it.begin = std::min(length, k * piece_len);
    it.end = std::min(length, it.begin + piece_len);
    it.o_part = part_out + item * M * kRowsDimV;
    it.lse_part = part_lse + item * M;
    run_item(it);
  });

  const int64_t rows = p.batch * p.seq_q * p.heads_q;
  parallel_for(rows, config.num_threads, [&](int64_t row, int) {
    const int64_t h = row % p.heads_q;
    const int64_t s = (row / p.heads_q) % p.seq_q;
    const int64_t b = row / (p.heads_q * p.seq_q);
    const int64_t g = h / group, hh = h % group;
    const int64_t r = s * group + hh;
    const int64_t base = first[b] + g * pieces[b];
    uint16_t* out = p.out + b * p.out_stride[0] + s * p.out_stride[1] + h * p.out_stride[2];
    float* lse = p.lse + b * p.lse_stride[0] + h * p.lse_stride[1] + s * p.lse_stride[2];
    combine_partials(pieces[b], part_out + (base * M + r) * kRowsDimV, M * kRowsDimV,
                     part_lse + base * M + r, M, kRowsDimV, nullptr, out, lse, p.dtype);
  });
  return Status::Ok();
}

/// The engine path: all M rows of the item share every gathered block (cpu/attn_rows_engine.h).
template <class Backend>
void dd_engine_item(const DenseDecodeParams& p, const DdItem& it) {
  const int64_t group = p.heads_q / p.heads_kv;
  const int64_t M = p.seq_q * group;
  const int64_t D = p.head_dim;
  const int64_t b = it.b, g = it.g, begin = it.begin, end = it.end;
  const bool mask_rows = p.causal && p.seq_q > 1;
  static thread_local RowsAttention<Backend> engine;
  static thread_local std::vector<const uint16_t*> q_rows;
  static thread_local std::vector<int64_t> visible, limit;
  q_rows.resize(M);
  visible.resize(M);
  limit.resize(M);
  int64_t max_visible = 0;
  for (int64_t s = 0; s < p.seq_q; ++s) {
    const int64_t vis = p.visible_length(b, s);
    max_visible = std::max(max_visible, vis);
    for (int64_t hh = 0; hh < group; ++hh) {
      const int64_t r = s * group + hh;
      q_rows[r] = p.q + b * p.q_stride[0] + s * p.q_stride[1] + (g * group + hh) * p.q_stride[2];
      visible[r] = vis;
    }
  }
  engine.begin(M, D, p.softmax_scale, false, q_rows.data(), p.dtype);
  const int64_t stop = std::min(end, max_visible);
  const int64_t ps = p.kv.page_size;
  // Record addresses of block i (cur) and i + 1 (next, prefetched while block i computes).
  static thread_local std::vector<const uint8_t*> recs[2], scales[2];
  auto collect = [&](int64_t j0, int64_t n, int which) {
    recs[which].resize(n);
    scales[which].resize(n);
    for_each_request_token(p, b, g, j0, n, [&](int64_t i, const uint8_t* rec, const uint8_t* sc) {
      recs[which][i] = rec;
      scales[which][i] = sc;
    });
  };
  const int64_t record_bytes = p.kv.format == KvFormat::kBF16 ? D * 2 : p.kv.geometry.record_bytes;
  // Pages of >= 4 KiB are streamed by the hardware prefetchers, and software prefetches of the
  // next block only take fill buffers from the current block's tile loads (measured: 5-9 %
  // slower with them); short pages are random jumps the hardware cannot follow.
  const bool software_prefetch = ps * p.kv.token_stride < 4096;
  const bool sixteen_bit = p.kv.format == KvFormat::kBF16;  // bf16 or fp16 words: no dequant
  int cur = 0;
  if (begin < stop) collect(begin, std::min(Backend::kBlockN, stop - begin), cur);
  for (int64_t j0 = begin; j0 < stop; j0 += Backend::kBlockN) {
    const int64_t n = std::min(Backend::kBlockN, stop - j0);
    const int64_t j1 = j0 + n;
    LinePrefetcher pf;
    if (j1 < stop) {
      collect(j1, std::min(Backend::kBlockN, stop - j1), 1 - cur);
      if (software_prefetch) {
        pf.records = recs[1 - cur].data();
        pf.count = static_cast<int64_t>(recs[1 - cur].size());
        pf.bytes = record_bytes;
      }
    }
    uint16_t* keys = engine.keys();
    bool in_place = false;
    for (int64_t t = 0; t < n; ++t) {
      if (t % 16 == 0) {
        in_place = sixteen_bit && t + 16 <= n && tile_in_place(engine, &recs[cur][t], t / 16);
      }
      if (in_place) {
        touch_past_v(recs[cur][t], record_bytes);
      } else {
        engine.backend().load_token(p.kv.format, D, recs[cur][t], scales[cur][t], keys + t * D);
      }
      if (t & 1) engine.stage_v((t + 1) / 2);
    }
    if (mask_rows) {
      for (int64_t r = 0; r < M; ++r) limit[r] = visible[r] - j0;
    }
    engine.step(n, mask_rows ? limit.data() : nullptr, &pf);
    cur = 1 - cur;
  }
  engine.finish(it.o_part, kRowsDimV, it.lse_part, nullptr);
}

template <class Backend>
Status dd_run(const DenseDecodeParams& p, const ExecConfig& config) {
  return dd_run_items(p, config, [&](const DdItem& it) { dd_engine_item<Backend>(p, it); });
}

}  // namespace
}  // namespace openmla
