// Lightning indexer, the task structure shared by the vector kernels (fp32-FMA in indexer_fma.h,
// BF16-dot in indexer_avx512bf16.cpp), templated on a Math policy that owns the numerics:
//   Math::Key / Math::QElem   dequantised key element (Math::kKeyElems per key) / converted q
//   Math::padded_heads(h)     heads rounded up to the vector width (pad heads and weights zero)
//   Math::q_elems(hp)         QElems of one converted row
//   Math::convert_row(query, r, hp, qt, w)   q row r converted ONCE per task, weights to w
//   Math::dequant(format, codes, scales, out) one token's key -> out, returns its key scale
//   Math::score_keys(kf, scale, n, row, hp, out)  n <= kKeyBlock logits of one row
// Algorithm: the MQA structure (one key, every head, every row of a request). A task is a request
// (or a block of prefill rows) x a chunk of keys; its rows are converted once, then blocks of
// kKeyBlock keys are dequantised once and shared by all heads and rows of the task.
// Invariants: every logit is computed from its own key and row only, in an order that depends on
// neither the block, the chunk, the thread count nor the batch (bitwise invariant); tokens at or
// beyond a row's visible length are never read; invisible logits are -inf. The fused top-k
// selects per chunk (topk_select of indexer_select.cpp: std::nth_element on the (score desc,
// position asc) total order, compiled without ISA flags) and merges the chunks' candidates per
// row, so its result is the unique top-k set of the same fp32 logits.
// Everything has internal linkage: the header is compiled under different ISA flags.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "core/thread_pool.h"
#include "cpu/aligned_buffer.h"
#include "ops/indexer/indexer.h"
#include "ops/indexer/indexer_keys.h"

namespace openmla {
namespace {

constexpr int64_t kKeyBlock = 48;  // keys dequantised at once
constexpr float kIdxNegInf = -std::numeric_limits<float>::infinity();

/// Walks the tokens of request b from position `pos` (no division per token; the block table
/// is read only for positions below `limit`).
struct PageCursor {
  const PagedMqaLogitsParams* p;
  int64_t b, pos, limit, offset;
  const uint8_t* page;
  PageCursor(const PagedMqaLogitsParams* params, int64_t request, int64_t first, int64_t end)
      : p(params),
        b(request),
        pos(first),
        limit(end),
        offset(first % params->cache.page_size),
        page(first < end ? params->page(request, first) : nullptr) {}
  IndexerTokenBytes token() const {
    return indexer_token_bytes(page, p->cache.page_size, offset, p->cache.format);
  }
  void next() {
    ++pos;
    if (++offset == p->cache.page_size) {
      offset = 0;
      page = pos < limit ? p->page(b, pos) : nullptr;
    }
  }
};

/// Keys of the paged cache of request b. Dequantising keys [pos, pos + n) also prefetches the
/// next n keys below `limit` (a token's codes and scale sit far apart in its page, and the
/// compute between two blocks is long enough for the hardware prefetcher to fall behind) into L2:
/// the block's scoring sweeps a q row and the key block through L1 and would evict them there
/// (T1 instead of T0: 0.68 -> 0.73 of the BF16 peak per CPU-second on Zen 4, fused b4 h64 32K).
template <typename Math>
struct PagedKeys {
  const PagedMqaLogitsParams* p;
  int64_t b;
  void operator()(int64_t pos, int64_t n, int64_t limit, typename Math::Key* kf,
                  float* scale) const {
    PageCursor cur(p, b, pos, limit), ahead(p, b, pos + n, limit);
    for (int64_t i = 0; i < n; ++i, cur.next()) {
      if (ahead.pos < limit) {
        const IndexerTokenBytes t = ahead.token();
        _mm_prefetch(reinterpret_cast<const char*>(t.codes), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(t.codes) + 64, _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(t.scales), _MM_HINT_T1);
        ahead.next();
      }
      const IndexerTokenBytes t = cur.token();
      scale[i] = Math::dequant(p->cache.format, t.codes, t.scales, kf + Math::kKeyElems * i);
    }
  }
};

/// Keys of mqa_logits' contiguous k / k_scale.
template <typename Math>
struct FlatKeys {
  const MqaLogitsParams* p;
  void operator()(int64_t pos, int64_t n, int64_t, typename Math::Key* kf, float* scale) const {
    for (int64_t i = 0; i < n; ++i) {
      const float* s = p->k_scale + (pos + i) * p->k_scale_stride;
      scale[i] = Math::dequant(IndexerKeyFormat::kFp8, p->k + (pos + i) * p->k_stride,
                               reinterpret_cast<const uint8_t*>(s), kf + Math::kKeyElems * i);
    }
  }
};

/// One query row, converted: q in the Math's layout and weights [hp].
template <typename QElem>
struct RowQ {
  const QElem* qt;
  const float* w;
};

// Scratch of one thread. No std::vector in this header: its out-of-line members would be
// compiled under this file's ISA flags and could be linked into the baseline code.
template <typename Math>
struct IndexerWorkspace {
  AlignedBuffer<typename Math::QElem> qt;
  AlignedBuffer<typename Math::Key> kf;
  AlignedBuffer<float> w, scale, scores;
  AlignedBuffer<uint64_t> keys;
  AlignedBuffer<RowQ<typename Math::QElem>> rows;
  AlignedBuffer<int64_t> begin, end;
  AlignedBuffer<float*> out;
};

/// Scores keys [lo, hi) for `nrows` rows: row i sees [begin[i], end[i]) and writes key s at
/// out[i][s - lo]; keys no row sees in a block are not read.
template <typename Math, typename Source>
void score_range(const Source& source, int64_t lo, int64_t hi, int nrows,
                 const RowQ<typename Math::QElem>* rows, const int64_t* begin, const int64_t* end,
                 float* const* out, int64_t hp, IndexerWorkspace<Math>* ws) {
  int64_t lo_all = hi, hi_all = lo;
  for (int i = 0; i < nrows; ++i) {
    if (std::max(begin[i], lo) < std::min(end[i], hi)) {
      lo_all = std::min(lo_all, std::max(begin[i], lo));
      hi_all = std::max(hi_all, std::min(end[i], hi));
    }
  }
  constexpr int64_t kElems = Math::kKeyElems;
  typename Math::Key* kf = ws->kf.get(kKeyBlock * kElems);
  float* scale = ws->scale.get(kKeyBlock);
  for (int64_t kb = lo_all; kb < hi_all; kb += kKeyBlock) {
    const int64_t ke = std::min(kb + kKeyBlock, hi_all);
    int64_t need_lo = ke, need_hi = kb;  // the rows' hull inside this block
    for (int i = 0; i < nrows; ++i) {
      const int64_t a = std::max(begin[i], kb), e = std::min(end[i], ke);
      if (a < e) {
        need_lo = std::min(need_lo, a);
        need_hi = std::max(need_hi, e);
      }
    }
    if (need_lo >= need_hi) continue;
    source(need_lo, need_hi - need_lo, hi_all, kf, scale);
    for (int i = 0; i < nrows; ++i) {
      const int64_t a = std::max(begin[i], need_lo), e = std::min(end[i], need_hi);
      if (a < e)
        Math::score_keys(kf + kElems * (a - need_lo), scale + (a - need_lo), e - a, rows[i], hp,
                         out[i] + (a - lo));
    }
  }
}

/// Key chunk length: about 8 tasks per thread, at least 256 keys, a multiple of 64.
inline int64_t chunk_keys(int64_t total_keys, int64_t groups, int num_threads) {
  const int64_t target = std::max<int64_t>(8 * num_threads / std::max<int64_t>(groups, 1), 1);
  const int64_t per = (total_keys + target - 1) / target;
  return std::min<int64_t>(std::max<int64_t>((per + 63) / 64 * 64, 256), 16384);
}

// ---- mqa_logits (prefill) --------------------------------------------------------------------

constexpr int kPrefillRows = 4;  // query rows sharing one dequantised key block

template <typename Math>
Status indexer_mqa_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const MqaLogitsParams*>(params);
  const int64_t hp = Math::padded_heads(p.query.heads), qe = Math::q_elems(hp);
  const int64_t row_blocks = (p.rows + kPrefillRows - 1) / kPrefillRows;
  const int64_t chunk = chunk_keys(p.keys, row_blocks, config.num_threads);
  const int64_t chunks = std::max<int64_t>((p.keys + chunk - 1) / chunk, 1);
  const FlatKeys<Math> source{&p};
  parallel_for(row_blocks * chunks, config.num_threads, [&](int64_t task, int) {
    static thread_local IndexerWorkspace<Math> ws;
    const int64_t m0 = (task / chunks) * kPrefillRows;
    const int64_t lo = (task % chunks) * chunk, hi = std::min(lo + chunk, p.keys);
    const int nrows = static_cast<int>(std::min<int64_t>(kPrefillRows, p.rows - m0));
    typename Math::QElem* qt = ws.qt.get(kPrefillRows * qe);
    float* w = ws.w.get(kPrefillRows * hp);
    RowQ<typename Math::QElem> rows[kPrefillRows];
    int64_t begin[kPrefillRows], end[kPrefillRows];
    float* out[kPrefillRows];
    for (int i = 0; i < nrows; ++i) {
      const int64_t m = m0 + i;
      begin[i] = p.begin(m);
      end[i] = p.end(m);
      out[i] = p.logits + m * p.logits_stride + lo;
      rows[i] = {qt + i * qe, w + i * hp};
      if (std::max(begin[i], lo) < std::min(end[i], hi))
        Math::convert_row(p.query, m, hp, qt + i * qe, w + i * hp);
      for (int64_t s = lo; s < hi; ++s)
        if (s < begin[i] || s >= end[i]) out[i][s - lo] = kIdxNegInf;
    }
    score_range(source, lo, hi, nrows, rows, begin, end, out, hp, &ws);
  });
  return Status::Ok();
}

// ---- paged logits and the fused top-k --------------------------------------------------------

/// Converts the rows of request b that see keys at or past `lo`; fills rows/begin/end.
template <typename Math>
int setup_request_rows(const PagedMqaLogitsParams& p, int64_t b, int64_t lo, int64_t hp,
                       IndexerWorkspace<Math>* ws, RowQ<typename Math::QElem>* rows, int64_t* begin,
                       int64_t* end) {
  const int n = static_cast<int>(p.next_n);
  const int64_t qe = Math::q_elems(hp);
  typename Math::QElem* qt = ws->qt.get(p.next_n * qe);
  float* w = ws->w.get(p.next_n * hp);
  for (int j = 0; j < n; ++j) {
    begin[j] = 0;
    end[j] = p.visible(b, j);
    rows[j] = {qt + j * qe, w + j * hp};
    if (end[j] > lo) Math::convert_row(p.query, b * p.next_n + j, hp, qt + j * qe, w + j * hp);
  }
  return n;
}

template <typename Math>
Status indexer_paged_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const PagedMqaLogitsParams*>(params);
  const int64_t hp = Math::padded_heads(p.query.heads);
  const int64_t chunk = chunk_keys(p.max_len, p.batch, config.num_threads);
  const int64_t chunks = std::max<int64_t>((p.max_len + chunk - 1) / chunk, 1);
  parallel_for(p.batch * chunks, config.num_threads, [&](int64_t task, int) {
    static thread_local IndexerWorkspace<Math> ws;
    RowQ<typename Math::QElem>* rows = ws.rows.get(p.next_n);
    int64_t* begin = ws.begin.get(p.next_n);
    int64_t* end = ws.end.get(p.next_n);
    float** out = ws.out.get(p.next_n);
    const int64_t b = task / chunks;
    const int64_t lo = (task % chunks) * chunk, hi = std::min(lo + chunk, p.max_len);
    const int n = setup_request_rows(p, b, lo, hp, &ws, rows, begin, end);
    for (int j = 0; j < n; ++j) {
      out[j] = p.logits + (b * p.next_n + j) * p.logits_stride + lo;
      for (int64_t s = std::max(lo, end[j]); s < hi; ++s) out[j][s - lo] = kIdxNegInf;
    }
    score_range(PagedKeys<Math>{&p, b}, lo, hi, n, rows, begin, end, out, hp, &ws);
  });
  return Status::Ok();
}

/// Per row: merges the chunks' candidates, selects the top k and writes the index row.
inline void merge_topk_rows(const PagedIndexerTopkParams& p, int64_t chunks, int64_t per_chunk,
                            const uint64_t* cand, const int64_t* count, const ExecConfig& config) {
  const PagedMqaLogitsParams& lp = p.lp;
  parallel_for(lp.batch * lp.next_n, config.num_threads, [&](int64_t r, int) {
    static thread_local AlignedBuffer<uint64_t> merged_buffer;
    int64_t total = 0;
    for (int64_t c = 0; c < chunks; ++c) total += count[r * chunks + c];
    uint64_t* merged = merged_buffer.get(std::max<int64_t>(total, 1));
    int64_t at = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const uint64_t* first = cand + (r * chunks + c) * per_chunk;
      std::copy(first, first + count[r * chunks + c], merged + at);
      at += count[r * chunks + c];
    }
    const int64_t kept = topk_select(merged, total, p.topk);
    const int64_t b = r / lp.next_n, j = r % lp.next_n;
    topk_write_row(
        merged, kept, p.topk, p.slot_map(b), p.indices + b * p.idx_stride[0] + j * p.idx_stride[1],
        p.idx_stride[2],
        p.topk_length ? p.topk_length + b * p.tl_stride[0] + j * p.tl_stride[1] : nullptr);
  });
}

template <typename Math>
Status indexer_fused_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const PagedIndexerTopkParams*>(params);
  const PagedMqaLogitsParams& lp = p.lp;
  const int64_t hp = Math::padded_heads(lp.query.heads);
  int64_t longest = 0;
  for (int64_t b = 0; b < lp.batch; ++b) longest = std::max(longest, lp.request_visible(b));
  const int64_t chunk = chunk_keys(longest, lp.batch, config.num_threads);
  const int64_t chunks = std::max<int64_t>((longest + chunk - 1) / chunk, 1);
  const int64_t per_chunk = std::min(chunk, p.topk);  // candidates a chunk keeps per row
  const int64_t rows_total = lp.batch * lp.next_n;
  AlignedBuffer<uint64_t> cand_buffer;
  AlignedBuffer<int64_t> count_buffer;
  uint64_t* cand = cand_buffer.get(std::max<int64_t>(rows_total * chunks * per_chunk, 1));
  int64_t* count = count_buffer.get(std::max<int64_t>(rows_total * chunks, 1));
  std::fill(count, count + rows_total * chunks, 0);
  parallel_for(lp.batch * chunks, config.num_threads, [&](int64_t task, int) {
    static thread_local IndexerWorkspace<Math> ws;
    RowQ<typename Math::QElem>* rows = ws.rows.get(lp.next_n);
    int64_t* begin = ws.begin.get(lp.next_n);
    int64_t* end = ws.end.get(lp.next_n);
    float** out = ws.out.get(lp.next_n);
    const int64_t b = task / chunks, c = task % chunks;
    const int64_t lo = c * chunk, hi = std::min(lo + chunk, lp.request_visible(b));
    if (lo >= hi) return;
    const int n = setup_request_rows(lp, b, lo, hp, &ws, rows, begin, end);
    float* scores = ws.scores.get(lp.next_n * chunk);
    for (int j = 0; j < n; ++j) out[j] = scores + j * chunk;
    score_range(PagedKeys<Math>{&lp, b}, lo, hi, n, rows, begin, end, out, hp, &ws);
    uint64_t* keys = ws.keys.get(chunk);
    for (int j = 0; j < n; ++j) {
      const int64_t r = b * lp.next_n + j;
      const int64_t seen = std::max<int64_t>(std::min(end[j], hi) - lo, 0);
      const int64_t kept = topk_of_scores(out[j], seen, lo, p.topk, keys);
      std::copy(keys, keys + kept, cand + (r * chunks + c) * per_chunk);
      count[r * chunks + c] = kept;
    }
  });
  merge_topk_rows(p, chunks, per_chunk, cand, count, config);
  return Status::Ok();
}

/// The vector kernels take every problem the op accepts.
inline const char* indexer_any_problem(const void*) { return nullptr; }

}  // namespace
}  // namespace openmla
