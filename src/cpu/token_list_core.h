// The token-list attention engine (cpu/token_list_attention.h), written once and instantiated per
// matmul ISA: token_list_attention_amx.cpp (AMX-BF16 tiles) and token_list_attention_avx512bf16.cpp
// (AVX512-BF16 vdpbf16ps) each supply the two GEMM micro-kernels as a `Kernels` class:
//   struct Scope;  // RAII set-up / tear-down around a call (AMX: tile configuration)
//   static void qk_strip(ks, d_qk, qv, hp, st);  // S^T [32][hp] = K strip [32][d_qk] . Q^T
//   static void pv(pb, pl, hp, n_pad, vv, acc, init);  // O [hp][kLdO] (+)= (P_hi + P_lo) . V
// Algorithm: blocks of up to kBlockRows tokens from the source are gathered and dequantised ONCE
// (exact bf16), 32 at a time straight into the QK strip, and shared by all heads (heads are the
// GEMMs' head dimension).
// Layouts (bf16 unless noted): K strip [32][d_qk] (L1-resident); Q^T VNNI [d_qk/32][hp/16][16
// pairs][16 heads][2], each a contiguous 1 KiB (packed once per call); V = K[:, 0:512] VNNI
// [n_pad/2][512][2]; S^T fp32 [n_pad][hp]; P hi and lo [hp][n_pad] (written transposed by the fused
// softmax pass); O fp32 [hp][512]. V and O rows are padded by 64 B (2 KiB strides alias in L1).
// Gathers prefetch kPrefetchAhead tokens. Softmax: lazy online update in base 2 (rules of
// cpu/softmax_avx512.h), L from unrounded P. P goes to PV as two bf16 planes, hi = bf16(P) and lo =
// bf16(P - hi): FlashMLA rounds P to bf16 once, which puts outputs with a few dominant keys of
// large |V| past its own tolerance (a bf16 step of P times |V|); with both planes P is carried to
// ~2^-17 for one extra PV pass. With query.raw_max set, the unscaled score max per head is tracked
// over the valid rows of every block (for sparse prefill's max_logits). Invariants: pad tokens have
// zero K/V and P = 0; the result depends only on the query and the token list (order included), so
// callers that cut lists by shape alone stay thread- and batch-invariant. Everything has internal
// linkage: this header is compiled under different ISA flags (AVX-512 BW/VBMI and AVX512-BF16 at
// least).
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/aligned_buffer.h"
#include "cpu/fp8_convert_avx512.h"
#include "cpu/softmax_avx512.h"
#include "cpu/token_list_attention.h"
#include "cpu/transpose_avx512.h"
#include "formats/kv_format.h"

#ifdef OPENMLA_SD_PROFILE  // development-only per-phase cycle counters (never in normal builds)
#include <x86intrin.h>

#include <atomic>
#include <cstdio>
namespace {
std::atomic<uint64_t> g_phase[8];
struct PhaseDump {
  ~PhaseDump() {
    const char* names[8] = {"gather+dequant", "qk", "softmax+P^T", "", "pv", "finish",
                            "pack_q",         ""};
    uint64_t total = 0;
    for (auto& v : g_phase) total += v;
    for (int i = 0; i < 7; ++i)
      if (names[i][0])
        std::printf("  %-15s %5.1f%%\n", names[i], 100.0 * g_phase[i] / (total ? total : 1));
  }
} g_phase_dump;
}  // namespace
#define SD_PHASE(i)                  \
  do {                               \
    const uint64_t now_ = __rdtsc(); \
    g_phase[i] += now_ - sd_t0_;     \
    sd_t0_ = now_;                   \
  } while (0)
#define SD_PHASE_START uint64_t sd_t0_ = __rdtsc()
#else
#define SD_PHASE(i) \
  do {              \
  } while (0)
#define SD_PHASE_START
#endif

namespace openmla {
namespace {

constexpr int64_t kBlockRows = 256;  // multiple of 32
constexpr int64_t kDimV = kv_layout::kHeadDimV;
// Row strides of the V VNNI buffer (words) and of the O accumulator (floats), padded by one cache
// line so the 16 rows of a tile do not alias onto the same L1 sets (2 KiB strides do).
constexpr int64_t kLdV = 2 * kDimV + 32;
constexpr int64_t kLdO = kDimV + 16;
// Row stride (words) of P [hp][n_pad]: one cache line of padding as well.
inline int64_t p_stride(int64_t n_pad) { return n_pad + 32; }
constexpr int64_t kPrefetchAhead = 6;  // tokens the gather prefetches ahead (deeper was slower)
constexpr float kLog2e = 1.4426950408889634f;

struct Workspace {
  AlignedBuffer<uint16_t> qv, ks, vv, pb, pl;
  AlignedBuffer<float> st, acc, m, l, alpha, raw_max;
  AlignedBuffer<TokenRef> refs;
};

// Q (bf16 rows) -> VNNI B tiles [d/32][hp/16][16 pairs][16 heads][2], each a contiguous 1 KiB
// (16x16 dword transposes); pad heads zero.
void pack_q(const uint16_t* q, int64_t head_stride, int64_t heads, int64_t hp, int64_t d_qk,
            uint16_t* qv) {
  __m512 r[16];
  for (int64_t h0 = 0; h0 < hp; h0 += 16) {
    for (int64_t j0 = 0; j0 < d_qk / 2; j0 += 16) {
      for (int i = 0; i < 16; ++i)
        r[i] = h0 + i < heads ? _mm512_loadu_ps(q + (h0 + i) * head_stride + 2 * j0)
                              : _mm512_setzero_ps();
      transpose16x16_ps(r);
      uint16_t* tile = qv + ((j0 / 16) * (hp / 16) + h0 / 16) * 512;
      for (int k = 0; k < 16; ++k) _mm512_store_ps(tile + k * 32, r[k]);
    }
  }
}

// Interleaves rows a and b (512 bf16 each) into VNNI pairs: out[2v] = a[v], out[2v+1] = b[v].
inline void interleave_rows(const uint16_t* a, const uint16_t* b, uint16_t* out) {
  alignas(64) static const uint16_t kLo[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                               37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                               11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static const uint16_t kHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21,
                                               53, 22, 54, 23, 55, 24, 56, 25, 57, 26, 58,
                                               27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i lo = _mm512_load_si512(kLo), hi = _mm512_load_si512(kHi);
  for (int64_t v = 0; v < kDimV; v += 32) {
    const __m512i x = _mm512_loadu_si512(a + v), y = _mm512_loadu_si512(b + v);
    _mm512_storeu_si512(out + 2 * v, _mm512_permutex2var_epi16(x, lo, y));
    _mm512_storeu_si512(out + 2 * v + 32, _mm512_permutex2var_epi16(x, hi, y));
  }
}

// Word permutation taking [a0..a15 | b0..b15] to [a0 b0 a1 b1 ... a15 b15].
inline __m512i pair_interleave_index() {
  alignas(64) int16_t idx[32];
  for (int j = 0; j < 16; ++j) {
    idx[2 * j] = static_cast<int16_t>(j);
    idx[2 * j + 1] = static_cast<int16_t>(16 + j);
  }
  return _mm512_load_si512(idx);
}

// bf16 bits of the pair (a, b) as fp32 values: a from the low, b from the high 16 words.
inline void widen_bf16_pair(__m512i both, __m512* a, __m512* b) {
  *a = _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(both)), 16));
  *b = _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(both, 1)), 16));
}

// Online-softmax update of one block fused with the transpose: S^T fp32 [n_pad][hp] (raw scores)
// -> P as two bf16 planes [hp][n_pad], hi = bf16(P) (round to nearest even) and lo = bf16(P -
// hi), so that hi + lo carries P to ~2^-17 relative (rows >= n_valid give P = 0). Same update
// rule as softmax_block_avx512 (lazy rescale, base 2, L from unrounded P); alpha[h] is the
// accumulator factor (1 = untouched). Returns whether any head with a non-empty accumulator needs
// rescaling.
bool softmax_to_p(const float* st, int64_t n_valid, int64_t n_pad, int64_t hp, float c, float* m,
                  float* l, float* alpha, uint16_t* pb, uint16_t* pl) {
  const __m512 cv = _mm512_set1_ps(c);
  const __m512i pair = pair_interleave_index();
  bool any = false;
  __m512i r[16], rl[16];
  for (int64_t j = 0; j < hp; j += 16) {
    const HeadMaxStep step = running_max_step(st, n_valid, hp, j, cv, m, alpha);
    const __m512 m_new = step.m_new;
    any |= step.rescale != 0;
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    for (int64_t n0 = 0; n0 < n_pad; n0 += 32) {
      for (int i = 0; i < 16; ++i) {
        const int64_t n = n0 + 2 * i;
        const __m512 e0 =
            n < n_valid ? exp2_avx512(_mm512_fmsub_ps(_mm512_load_ps(st + n * hp + j), cv, m_new))
                        : _mm512_setzero_ps();
        const __m512 e1 =
            n + 1 < n_valid
                ? exp2_avx512(_mm512_fmsub_ps(_mm512_load_ps(st + (n + 1) * hp + j), cv, m_new))
                : _mm512_setzero_ps();
        sum0 = _mm512_add_ps(sum0, e0);
        sum1 = _mm512_add_ps(sum1, e1);
        // dword h = (bf16 P[n][h], bf16 P[n + 1][h]): one 16x16 dword transpose then gives each
        // head's 32 keys in order (half the shuffles of transposing fp32 and converting after).
        const __m512bh both = _mm512_cvtne2ps_pbh(e1, e0);
        __m512 hi0, hi1;
        widen_bf16_pair(reinterpret_cast<const __m512i&>(both), &hi0, &hi1);
        const __m512bh rest = _mm512_cvtne2ps_pbh(_mm512_sub_ps(e1, hi1), _mm512_sub_ps(e0, hi0));
        r[i] = _mm512_permutexvar_epi16(pair, reinterpret_cast<const __m512i&>(both));
        rl[i] = _mm512_permutexvar_epi16(pair, reinterpret_cast<const __m512i&>(rest));
      }
      transpose16x16_epi32(r);
      for (int i = 0; i < 16; ++i) _mm512_storeu_si512(pb + (j + i) * p_stride(n_pad) + n0, r[i]);
      transpose16x16_epi32(rl);
      for (int i = 0; i < 16; ++i) _mm512_storeu_si512(pl + (j + i) * p_stride(n_pad) + n0, rl[i]);
    }
    running_sum_step(l, j, step, sum0, sum1);
  }
  return any;
}

// raw_max[h] = max(raw_max[h], S^T[n][h] for n < n_valid): the unscaled scores, as the rows
// engine tracks them for max_logits.
void track_raw_max(const float* st, int64_t n_valid, int64_t hp, float* raw_max) {
  for (int64_t j = 0; j < hp; j += 16) {
    __m512 mx = _mm512_loadu_ps(raw_max + j);
    for (int64_t n = 0; n < n_valid; ++n) mx = _mm512_max_ps(mx, _mm512_load_ps(st + n * hp + j));
    _mm512_storeu_ps(raw_max + j, mx);
  }
}

// Prefetches every cache line of a token record (`span` bytes) and its MODEL1 scale record.
inline void prefetch_token(const TokenRef& t, int64_t span) {
  const uintptr_t rec = reinterpret_cast<uintptr_t>(t.rec);
  for (uintptr_t line = rec & ~uintptr_t{63}; line < rec + span; line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T0);
  if (t.scales) _mm_prefetch(reinterpret_cast<const char*>(t.scales), _MM_HINT_T0);
}

// Bytes of one token record.
inline int64_t record_span(KvFormat format, int64_t d_qk) {
  return format == KvFormat::kV32      ? kv_layout::kV32RecordBytes
         : format == KvFormat::kModel1 ? kv_layout::kModel1RecordBytes
                                       : 2 * d_qk;
}

inline void prefetch_head(const TokenRef* refs, int64_t n, int64_t span) {
  for (int64_t t = 0; t < kPrefetchAhead && t < n; ++t) prefetch_token(refs[t], span);
}

// Gathers + dequantises tokens [r, r + 32) of a block of n (first kPrefetchAhead prefetched by
// prefetch_head) into the K strip ks [32][d_qk] (rows >= n zero) and their first 512 columns into
// the V VNNI rows vv [r/2 .. r/2 + 16) (row stride kLdV).
void dequant_strip(const E4M3Lut& lut, KvFormat format, int64_t d_qk, int64_t span,
                   const TokenRef* refs, int64_t n, int64_t r, uint16_t* ks, uint16_t* vv) {
  for (int64_t t = 0; t < 32; t += 2) {
    uint16_t* r0 = ks + t * d_qk;
    for (int64_t i = t; i < t + 2; ++i) {
      const int64_t u = r + i;
      if (u < n) {
        if (u + kPrefetchAhead < n) prefetch_token(refs[u + kPrefetchAhead], span);
        dequant_token_avx512(lut, format, d_qk, refs[u].rec, refs[u].scales, ks + i * d_qk);
      } else {
        std::memset(ks + i * d_qk, 0, sizeof(uint16_t) * d_qk);
      }
    }
    interleave_rows(r0, r0 + d_qk, vv + (r + t) / 2 * kLdV);
  }
}

template <class Kernels>
void attend_token_list_with(const TokenListQuery& query, TokenSource& source, HeadSink& sink) {
  static thread_local Workspace ws;
  const int64_t d_qk = query.head_dim, heads = query.heads;
  const int64_t hp = (heads + 15) / 16 * 16;
  uint16_t* qv = ws.qv.get(d_qk * hp);
  uint16_t* ks = ws.ks.get(32 * d_qk);
  uint16_t* vv = ws.vv.get(kBlockRows / 2 * kLdV);
  uint16_t* pb = ws.pb.get(hp * p_stride(kBlockRows));
  uint16_t* pl = ws.pl.get(hp * p_stride(kBlockRows));
  float* st = ws.st.get(kBlockRows * hp);
  float* acc = ws.acc.get(hp * kLdO);
  float* m = ws.m.get(hp);
  float* l = ws.l.get(hp);
  float* alpha = ws.alpha.get(hp);
  float* raw_max = ws.raw_max.get(hp);
  TokenRef* refs = ws.refs.get(2 * kBlockRows);
  SD_PHASE_START;
  pack_q(query.q, query.head_stride, heads, hp, d_qk, qv);
  for (int64_t h = 0; h < hp; ++h) {
    m[h] = -std::numeric_limits<float>::infinity();
    l[h] = 0.0f;
    raw_max[h] = -std::numeric_limits<float>::infinity();
  }
  const E4M3Lut lut = load_e4m3_lut();
  const KvFormat format = query.format;
  const int64_t span = record_span(format, d_qk);
  const float c = query.softmax_scale * kLog2e;
  [[maybe_unused]] typename Kernels::Scope scope;
  int64_t cur = 0, n = source.next(refs, kBlockRows);
  bool first = true;
  prefetch_head(refs, n, span);
  SD_PHASE(6);
  while (n > 0) {
    const TokenRef* blk = refs + cur * kBlockRows;
    TokenRef* nxt = refs + (1 - cur) * kBlockRows;
    const int64_t n_pad = (n + 31) / 32 * 32;
    for (int64_t r = 0; r < n_pad; r += 32) {
      dequant_strip(lut, format, d_qk, span, blk, n, r, ks, vv);
      SD_PHASE(0);
      Kernels::qk_strip(ks, d_qk, qv, hp, st + r * hp);
      SD_PHASE(1);
    }
    if (query.raw_max != nullptr) track_raw_max(st, n, hp, raw_max);
    const int64_t n_next = source.next(nxt, kBlockRows);
    prefetch_head(nxt, n_next, span);
    if (softmax_to_p(st, n, n_pad, hp, c, m, l, alpha, pb, pl)) {
      for (int64_t h = 0; h < heads; ++h) {
        if (alpha[h] == 1.0f) continue;
        const __m512 a = _mm512_set1_ps(alpha[h]);
        for (int64_t v = 0; v < kDimV; v += 16)
          _mm512_store_ps(acc + h * kLdO + v, _mm512_mul_ps(a, _mm512_load_ps(acc + h * kLdO + v)));
      }
    }
    SD_PHASE(2);
    Kernels::pv(pb, pl, hp, n_pad, vv, acc, first);
    first = false;
    SD_PHASE(4);
    n = n_next;
    cur = 1 - cur;
  }
  if (query.raw_max != nullptr) std::memcpy(query.raw_max, raw_max, heads * sizeof(float));
  finish_heads(heads, m, l, acc, kLdO,
               [&](int64_t h, const float* o, float lse) { sink.emit(h, o, lse); });
  SD_PHASE(5);
}

}  // namespace
}  // namespace openmla
