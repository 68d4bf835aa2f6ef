// Attention of one query token's heads over a token list on AVX512-BF16
// (cpu/token_list_attention.h; the core of the *.avx512bf16 sparse-decode, dense-decode and
// sparse-prefill kernels, for hosts with the BF16 dot instruction and no AMX, e.g. AMD Zen 4, where
// vdpbf16ps does twice the MACs of fp32 FMA). The engine (gather, dequantisation, softmax, layouts,
// invariants) is cpu/token_list_core.h; this file supplies its two GEMMs as vdpbf16ps register
// tiles on the engine's AMX-shaped layouts (each dword of a VNNI row is a (even, odd) pair of the
// reduced dim):
// - QK: S^T[n][h] = sum over pairs p of K[n][2p..2p+1] . Q^T[p][h][0..1]: a tile of kQkRows key
//   rows x J head vectors of accumulators, the key pair broadcast as a dword, the Q^T VNNI row
//   (16 heads x 2) as the vector; heads in chunks of 4 vectors (64 heads).
// - PV: O[h][v] += sum over token pairs m of (P_hi + P_lo)[h][2m..2m+1] . V[m][v][0..1]: 4 heads x
//   kPvVecs column vectors of accumulators, the P pairs broadcast (hi then lo), the V VNNI row as
//   the vector; the tile is loaded from O (or zero on the first block) once per block and stored
//   once.
// Invariants: every output element is one vdpbf16ps chain in pair order (fixed by the list), so
// results do not depend on the tiling; hp is a multiple of 16 (pad heads have zero Q and P).
#include <immintrin.h>

#include <cstdint>

#include "cpu/token_list_core.h"

namespace openmla {
namespace {

// S^T rows [0, R) x head vectors [j0, j0 + J) of a 32-row strip.
template <int R, int J>
inline void qk_tile(const uint16_t* ks, int64_t d_qk, const uint16_t* qv, int64_t hp, int64_t j0,
                    float* st) {
  const int64_t ht = hp / 16;
  __m512 acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = _mm512_setzero_ps();
  const int32_t* k32 = reinterpret_cast<const int32_t*>(ks);
  const int64_t k_row = d_qk / 2;
  for (int64_t p = 0; p < d_qk / 2; ++p) {
    const uint16_t* qrow = qv + ((p / 16) * ht + j0) * 512 + (p % 16) * 32;
    __m512bh q[J];
    for (int j = 0; j < J; ++j) q[j] = (__m512bh)_mm512_load_si512(qrow + j * 512);
    for (int r = 0; r < R; ++r) {
      const __m512bh k = (__m512bh)_mm512_set1_epi32(k32[r * k_row + p]);
      for (int j = 0; j < J; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], k, q[j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) _mm512_store_ps(st + r * hp + (j0 + j) * 16, acc[r][j]);
}

// All 32 rows for head vectors [j0, j0 + J): 6-row tiles with 4 vectors, else 8-row tiles.
template <int J>
inline void qk_rows(const uint16_t* ks, int64_t d_qk, const uint16_t* qv, int64_t hp, int64_t j0,
                    float* st) {
  if constexpr (J == 4) {
    for (int64_t r = 0; r < 30; r += 6) qk_tile<6, 4>(ks + r * d_qk, d_qk, qv, hp, j0, st + r * hp);
    qk_tile<2, 4>(ks + 30 * d_qk, d_qk, qv, hp, j0, st + 30 * hp);
  } else {
    for (int64_t r = 0; r < 32; r += 8) qk_tile<8, J>(ks + r * d_qk, d_qk, qv, hp, j0, st + r * hp);
  }
}

// O rows [h0, h0 + 4) x column vectors [v0, v0 + V) (+)= (P_hi + P_lo) . V over n_pad tokens.
template <int V>
inline void pv_tile(const uint16_t* pb, const uint16_t* pl, int64_t ldp, int64_t n_pad,
                    const uint16_t* vv, float* acc, int64_t h0, int64_t v0, bool init) {
  constexpr int kHeads = 4;
  __m512 o[kHeads][V];
  for (int h = 0; h < kHeads; ++h)
    for (int v = 0; v < V; ++v)
      o[h][v] = init ? _mm512_setzero_ps() : _mm512_load_ps(acc + (h0 + h) * kLdO + (v0 + v) * 16);
  const int32_t* p32 = reinterpret_cast<const int32_t*>(pb + h0 * ldp);
  const int32_t* l32 = reinterpret_cast<const int32_t*>(pl + h0 * ldp);
  const int64_t p_row = ldp / 2;
  for (int64_t m = 0; m < n_pad / 2; ++m) {
    const uint16_t* vrow = vv + m * kLdV + v0 * 32;
    __m512bh x[V];
    for (int v = 0; v < V; ++v) x[v] = (__m512bh)_mm512_load_si512(vrow + v * 32);
    for (int h = 0; h < kHeads; ++h) {
      const __m512bh p = (__m512bh)_mm512_set1_epi32(p32[h * p_row + m]);
      const __m512bh q = (__m512bh)_mm512_set1_epi32(l32[h * p_row + m]);
      for (int v = 0; v < V; ++v) o[h][v] = _mm512_dpbf16_ps(o[h][v], p, x[v]);
      for (int v = 0; v < V; ++v) o[h][v] = _mm512_dpbf16_ps(o[h][v], q, x[v]);
    }
  }
  for (int h = 0; h < kHeads; ++h)
    for (int v = 0; v < V; ++v) _mm512_store_ps(acc + (h0 + h) * kLdO + (v0 + v) * 16, o[h][v]);
}

struct Bf16Kernels {
  struct Scope {};
  static void qk_strip(const uint16_t* ks, int64_t d_qk, const uint16_t* qv, int64_t hp,
                       float* st) {
    const int64_t ht = hp / 16;
    int64_t j = 0;
    for (; j + 4 <= ht; j += 4) qk_rows<4>(ks, d_qk, qv, hp, j, st);
    if (ht - j == 3) qk_rows<3>(ks, d_qk, qv, hp, j, st);
    if (ht - j == 2) qk_rows<2>(ks, d_qk, qv, hp, j, st);
    if (ht - j == 1) qk_rows<1>(ks, d_qk, qv, hp, j, st);
  }
  static void pv(const uint16_t* pb, const uint16_t* pl, int64_t hp, int64_t n_pad,
                 const uint16_t* vv, float* acc, bool init) {
    constexpr int64_t kPvVecs = 6;  // 4 heads x 6 vectors: 24 accumulators + 6 V rows
    const int64_t ldp = p_stride(n_pad);
    for (int64_t v = 0; v + kPvVecs <= kDimV / 16; v += kPvVecs)
      for (int64_t h = 0; h < hp; h += 4) pv_tile<kPvVecs>(pb, pl, ldp, n_pad, vv, acc, h, v, init);
    for (int64_t h = 0; h < hp; h += 4)
      pv_tile<2>(pb, pl, ldp, n_pad, vv, acc, h, kDimV / 16 - 2, init);
  }
};

}  // namespace

void bf16_attend_token_list(const TokenListQuery& query, TokenSource& source, HeadSink& sink) {
  attend_token_list_with<Bf16Kernels>(query, source, sink);
}

}  // namespace openmla
