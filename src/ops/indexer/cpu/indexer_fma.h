// Lightning indexer, fp32-FMA kernels for CPUs without AMX, written once against the
// width-generic vector layer of cpu/fma_vec.h (include only from indexer_avx512.cpp, 16 lanes,
// or indexer_avx2.cpp, 8 lanes; each defines the three KernelEntry objects on the runs below).
// Algorithm: the MQA structure (one key, every head, every row of a request). Per task (a
// request or block of prefill rows x a chunk of keys) each row's e4m3 q is converted ONCE into
// Q^T fp32 [128][hp] (hp = heads rounded up to kFmaLanes, pad heads and weights zero) and blocks
// of kKeyBlock keys are dequantised ONCE (exact: e4m3 through F16C as value / 256 with the 256
// folded into the key scale, e2m1 through a byte shuffle times its ue8m0 block scale) into
// K fp32 [keys][128], shared by all heads and all rows of the task.
// Scores: per key block, passes over kQkVecs head vectors, each sweeping the block's keys in
// tiles of up to 6 keys x kQkVecs head vectors of accumulators (broadcast K, Q^T rows as
// vectors): acc[key][heads] = sum_d K[key][d] Q^T[d][heads] as one FMA chain in d order; then
// part[key] += w[heads] * max(0, acc) for head vectors in ascending order; the logit is a fixed
// horizontal sum of part[key] times the key scale.
// Invariants: every logit is computed from its own key and row only, in an order that depends on
// neither the tile, the chunk, the thread count nor the batch (bitwise invariant); tokens at or
// beyond a row's visible length are never read; invisible logits are -inf. The fused top-k
// selects per chunk (topk_select of indexer_select.cpp: std::nth_element on the (score desc,
// position asc) total order, compiled without ISA flags) and merges
// the chunks' candidates per row, so its result is the unique top-k set of the same fp32 logits.
// Everything has internal linkage: the header is compiled under different ISA flags.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "core/thread_pool.h"
#include "cpu/aligned_buffer.h"
#include "cpu/fma_vec.h"
#include "ops/indexer/indexer.h"
#include "ops/indexer/indexer_keys.h"

namespace openmla {
namespace {

constexpr int64_t kKeyBlock = 48;  // keys dequantised at once (24 KiB of fp32)
constexpr int kTileKeys = 6;
constexpr float kIdxNegInf = -std::numeric_limits<float>::infinity();

#if defined(__AVX512F__)
inline FmaVec ix_relu(FmaVec v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }  // NaN stays
inline float ix_hsum(FmaVec v) {
  const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps(x, x, 1)));
}
#else
inline FmaVec ix_relu(FmaVec v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }  // NaN stays
inline float ix_hsum(FmaVec v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps(x, x, 1)));
}
#endif

// ---- key dequantisation (AVX2 code in both builds: it is not the bottleneck) ---------------

/// 128 e4m3 codes -> fp32 values / 256, exact: the code's bits moved into an fp16
/// ((code & 0x7F) << 7 | sign << 15, NaN codes to an fp16 NaN) are its value times 2^-8 in fp16
/// (normal or subnormal), widened by F16C. Callers fold the 2^8 into the key scale, which
/// leaves every product and sum exactly scaled by a power of two, so results are unchanged.
constexpr float kE4m3Fp16Rescale = 256.0f;
inline void dequant_e4m3_row(const uint8_t* codes, float* out) {
  const __m256i mag_mask = _mm256_set1_epi16(0x7F);
  const __m256i sign_bit = _mm256_set1_epi16(static_cast<int16_t>(0x8000));
  const __m256i nan_bits = _mm256_set1_epi16(0x7E00);
  for (int c = 0; c < 128; c += 16) {
    const __m256i x =
        _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + c)));
    const __m256i mag = _mm256_and_si256(x, mag_mask);
    __m256i h = _mm256_or_si256(_mm256_slli_epi16(mag, 7),
                                _mm256_and_si256(_mm256_slli_epi16(x, 8), sign_bit));
    h = _mm256_or_si256(h, _mm256_and_si256(_mm256_cmpeq_epi16(mag, mag_mask), nan_bits));
    _mm256_storeu_ps(out + c, _mm256_cvtph_ps(_mm256_castsi256_si128(h)));
    _mm256_storeu_ps(out + c + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
  }
}

/// 64 bytes of e2m1 pairs + 4 ue8m0 scales -> 128 fp32, exact: a shuffle maps each nibble to
/// twice its value as int8, times half the block scale.
inline void dequant_e2m1_row(const uint8_t* codes, const uint8_t* scales, float* out) {
  const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  const __m128i nib = _mm_set1_epi8(0x0F);
  for (int g = 0; g < 4; ++g) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16 * g));
    const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(b, nib));
    const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(b, 4), nib));
    const __m256 scale = _mm256_set1_ps(ue8m0_to_float(scales[g]) * 0.5f);
    const __m128i e[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
    for (int i = 0; i < 2; ++i) {
      const __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(e[i]));
      const __m256 c = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(e[i], 8)));
      _mm256_storeu_ps(out + 32 * g + 16 * i, _mm256_mul_ps(a, scale));
      _mm256_storeu_ps(out + 32 * g + 16 * i + 8, _mm256_mul_ps(c, scale));
    }
  }
}

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
/// compute between two blocks is long enough for the hardware prefetcher to fall behind).
struct PagedKeys {
  const PagedMqaLogitsParams* p;
  int64_t b;
  void operator()(int64_t pos, int64_t n, int64_t limit, float* kf, float* scale) const {
    const IndexerPagedCache& c = p->cache;
    PageCursor cur(p, b, pos, limit), ahead(p, b, pos + n, limit);
    for (int64_t i = 0; i < n; ++i, cur.next()) {
      if (ahead.pos < limit) {
        const IndexerTokenBytes t = ahead.token();
        _mm_prefetch(reinterpret_cast<const char*>(t.codes), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(t.codes) + 64, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(t.scales), _MM_HINT_T0);
        ahead.next();
      }
      const IndexerTokenBytes t = cur.token();
      if (c.format == IndexerKeyFormat::kFp8) {
        dequant_e4m3_row(t.codes, kf + 128 * i);
        scale[i] = load_unaligned<float>(t.scales) * kE4m3Fp16Rescale;
      } else {
        dequant_e2m1_row(t.codes, t.scales, kf + 128 * i);
        scale[i] = 1.0f;
      }
    }
  }
};

/// Keys of mqa_logits' contiguous k / k_scale.
struct FlatKeys {
  const MqaLogitsParams* p;
  void operator()(int64_t pos, int64_t n, int64_t, float* kf, float* scale) const {
    for (int64_t i = 0; i < n; ++i) {
      dequant_e4m3_row(p->k + (pos + i) * p->k_stride, kf + 128 * i);
      scale[i] = p->k_scale[(pos + i) * p->k_scale_stride] * kE4m3Fp16Rescale;
    }
  }
};

// ---- scores ----------------------------------------------------------------------------------

/// One query row, converted: Q^T [128][hp] and weights [hp].
struct RowQ {
  const float* qt;
  const float* w;
};

inline void convert_row(const IndexerQuery& query, int64_t r, int64_t hp, float* qt, float* w) {
  const uint8_t* q = query.q_row(r);
  const float* wr = query.w_row(r);
  for (int64_t h = 0; h < hp; ++h) {
    const bool real = h < query.heads;
    w[h] = real ? wr[h * query.w_stride_head] : 0.0f;
    const uint8_t* qh = q + h * query.q_stride_head;
    for (int d = 0; d < 128; ++d) qt[d * hp + h] = real ? e4m3_to_float(qh[d]) : 0.0f;
  }
}

// part[r] += sum over head vectors [jv, jv + J) of w * ReLU(K[r] . Q^T[:, those heads]).
template <int R, int J>
inline void score_tile(const float* kf, const float* qt, const float* w, int64_t hp, int64_t jv,
                       FmaVec* part) {
  FmaVec acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = fv_zero();
  const float* q = qt + jv * kFmaLanes;
  for (int d = 0; d < 128; ++d) {
    FmaVec qv[J];
    for (int j = 0; j < J; ++j) qv[j] = fv_load(q + d * hp + kFmaLanes * j);
    for (int r = 0; r < R; ++r) {
      const FmaVec k = fv_set1(kf[r * 128 + d]);
      for (int j = 0; j < J; ++j) acc[r][j] = fv_fma(k, qv[j], acc[r][j]);
    }
  }
  for (int j = 0; j < J; ++j) {
    const FmaVec wv = fv_load(w + (jv + j) * kFmaLanes);
    for (int r = 0; r < R; ++r) part[r] = fv_fma(wv, ix_relu(acc[r][j]), part[r]);
  }
}

template <int J>
inline void score_pass(const float* kf, int64_t n, const RowQ& row, int64_t hp, int64_t jv,
                       FmaVec* part) {
  int64_t i = 0;
  for (; i + kTileKeys <= n; i += kTileKeys)
    score_tile<kTileKeys, J>(kf + 128 * i, row.qt, row.w, hp, jv, part + i);
  switch (n - i) {
    case 5:
      score_tile<5, J>(kf + 128 * i, row.qt, row.w, hp, jv, part + i);
      break;
    case 4:
      score_tile<4, J>(kf + 128 * i, row.qt, row.w, hp, jv, part + i);
      break;
    case 3:
      score_tile<3, J>(kf + 128 * i, row.qt, row.w, hp, jv, part + i);
      break;
    case 2:
      score_tile<2, J>(kf + 128 * i, row.qt, row.w, hp, jv, part + i);
      break;
    case 1:
      score_tile<1, J>(kf + 128 * i, row.qt, row.w, hp, jv, part + i);
      break;
    default:
      break;
  }
}

/// out[i] = logit of key kf[i] (i < n <= kKeyBlock) for `row`. Head vectors are the outer loop
/// (a Q^T slice stays in L1 while the block's keys stream past); each key's partial sum still
/// takes the head vectors in ascending order.
inline void score_keys(const float* kf, const float* scale, int64_t n, const RowQ& row, int64_t hp,
                       float* out) {
  FmaVec part[kKeyBlock];
  for (int64_t i = 0; i < n; ++i) part[i] = fv_zero();
  const int64_t hv = hp / kFmaLanes;
  int64_t jv = 0;
  for (; jv + kQkVecs <= hv; jv += kQkVecs) score_pass<kQkVecs>(kf, n, row, hp, jv, part);
#if defined(__AVX512F__)
  for (; jv + 2 <= hv; jv += 2) score_pass<2>(kf, n, row, hp, jv, part);
#endif
  for (; jv < hv; ++jv) score_pass<1>(kf, n, row, hp, jv, part);
  for (int64_t i = 0; i < n; ++i) out[i] = ix_hsum(part[i]) * scale[i];
}

// Scratch of one thread. No std::vector in this header: its out-of-line members would be
// compiled under this file's ISA flags and could be linked into the baseline code.
struct IndexerWorkspace {
  AlignedBuffer<float> qt, w, kf, scale, scores;
  AlignedBuffer<uint64_t> keys, merged;
  AlignedBuffer<RowQ> rows;
  AlignedBuffer<int64_t> begin, end;
  AlignedBuffer<float*> out;
};

inline int64_t padded_heads(int64_t heads) {
  return (heads + kFmaLanes - 1) / kFmaLanes * kFmaLanes;
}

/// Scores keys [lo, hi) for `nrows` rows: row i sees [begin[i], end[i]) and writes key s at
/// out[i][s - lo]; keys no row sees in a block are not read.
template <typename Source>
void score_range(const Source& source, int64_t lo, int64_t hi, int nrows, const RowQ* rows,
                 const int64_t* begin, const int64_t* end, float* const* out, int64_t hp,
                 IndexerWorkspace* ws) {
  int64_t lo_all = hi, hi_all = lo;
  for (int i = 0; i < nrows; ++i) {
    if (std::max(begin[i], lo) < std::min(end[i], hi)) {
      lo_all = std::min(lo_all, std::max(begin[i], lo));
      hi_all = std::max(hi_all, std::min(end[i], hi));
    }
  }
  float* kf = ws->kf.get(kKeyBlock * 128);
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
        score_keys(kf + 128 * (a - need_lo), scale + (a - need_lo), e - a, rows[i], hp,
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

Status mqa_fma_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const MqaLogitsParams*>(params);
  const int64_t hp = padded_heads(p.query.heads);
  const int64_t row_blocks = (p.rows + kPrefillRows - 1) / kPrefillRows;
  const int64_t chunk = chunk_keys(p.keys, row_blocks, config.num_threads);
  const int64_t chunks = std::max<int64_t>((p.keys + chunk - 1) / chunk, 1);
  const FlatKeys source{&p};
  parallel_for(row_blocks * chunks, config.num_threads, [&](int64_t task, int) {
    static thread_local IndexerWorkspace ws;
    const int64_t m0 = (task / chunks) * kPrefillRows;
    const int64_t lo = (task % chunks) * chunk, hi = std::min(lo + chunk, p.keys);
    const int nrows = static_cast<int>(std::min<int64_t>(kPrefillRows, p.rows - m0));
    float* qt = ws.qt.get(kPrefillRows * 128 * hp);
    float* w = ws.w.get(kPrefillRows * hp);
    RowQ rows[kPrefillRows];
    int64_t begin[kPrefillRows], end[kPrefillRows];
    float* out[kPrefillRows];
    for (int i = 0; i < nrows; ++i) {
      const int64_t m = m0 + i;
      begin[i] = p.begin(m);
      end[i] = p.end(m);
      out[i] = p.logits + m * p.logits_stride + lo;
      rows[i] = {qt + i * 128 * hp, w + i * hp};
      if (std::max(begin[i], lo) < std::min(end[i], hi))
        convert_row(p.query, m, hp, qt + i * 128 * hp, w + i * hp);
      for (int64_t s = lo; s < hi; ++s)
        if (s < begin[i] || s >= end[i]) out[i][s - lo] = kIdxNegInf;
    }
    score_range(source, lo, hi, nrows, rows, begin, end, out, hp, &ws);
  });
  return Status::Ok();
}

// ---- paged logits and the fused top-k --------------------------------------------------------

/// Converts the rows of request b that see keys at or past `lo`; fills rows/begin/end.
inline int setup_request_rows(const PagedMqaLogitsParams& p, int64_t b, int64_t lo, int64_t hp,
                              IndexerWorkspace* ws, RowQ* rows, int64_t* begin, int64_t* end) {
  const int n = static_cast<int>(p.next_n);
  float* qt = ws->qt.get(p.next_n * 128 * hp);
  float* w = ws->w.get(p.next_n * hp);
  for (int j = 0; j < n; ++j) {
    begin[j] = 0;
    end[j] = p.visible(b, j);
    rows[j] = {qt + j * 128 * hp, w + j * hp};
    if (end[j] > lo) convert_row(p.query, b * p.next_n + j, hp, qt + j * 128 * hp, w + j * hp);
  }
  return n;
}

Status paged_fma_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const PagedMqaLogitsParams*>(params);
  const int64_t hp = padded_heads(p.query.heads);
  const int64_t chunk = chunk_keys(p.max_len, p.batch, config.num_threads);
  const int64_t chunks = std::max<int64_t>((p.max_len + chunk - 1) / chunk, 1);
  parallel_for(p.batch * chunks, config.num_threads, [&](int64_t task, int) {
    static thread_local IndexerWorkspace ws;
    RowQ* rows = ws.rows.get(p.next_n);
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
    score_range(PagedKeys{&p, b}, lo, hi, n, rows, begin, end, out, hp, &ws);
  });
  return Status::Ok();
}

Status fused_fma_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const PagedIndexerTopkParams*>(params);
  const PagedMqaLogitsParams& lp = p.lp;
  const int64_t hp = padded_heads(lp.query.heads);
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
    static thread_local IndexerWorkspace ws;
    RowQ* rows = ws.rows.get(lp.next_n);
    int64_t* begin = ws.begin.get(lp.next_n);
    int64_t* end = ws.end.get(lp.next_n);
    float** out = ws.out.get(lp.next_n);
    const int64_t b = task / chunks, c = task % chunks;
    const int64_t lo = c * chunk, hi = std::min(lo + chunk, lp.request_visible(b));
    if (lo >= hi) return;
    const int n = setup_request_rows(lp, b, lo, hp, &ws, rows, begin, end);
    float* scores = ws.scores.get(lp.next_n * chunk);
    for (int j = 0; j < n; ++j) out[j] = scores + j * chunk;
    score_range(PagedKeys{&lp, b}, lo, hi, n, rows, begin, end, out, hp, &ws);
    uint64_t* keys = ws.keys.get(chunk);
    for (int j = 0; j < n; ++j) {
      const int64_t r = b * lp.next_n + j;
      const int64_t seen = std::max<int64_t>(std::min(end[j], hi) - lo, 0);
      const int64_t kept = topk_of_scores(out[j], seen, lo, p.topk, keys);
      std::copy(keys, keys + kept, cand + (r * chunks + c) * per_chunk);
      count[r * chunks + c] = kept;
    }
  });
  parallel_for(rows_total, config.num_threads, [&](int64_t r, int) {
    static thread_local IndexerWorkspace ws;
    int64_t total = 0;
    for (int64_t c = 0; c < chunks; ++c) total += count[r * chunks + c];
    uint64_t* merged = ws.merged.get(std::max<int64_t>(total, 1));
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
  return Status::Ok();
}

const char* indexer_fma_unsupported(const void*) { return nullptr; }

}  // namespace
}  // namespace openmla
