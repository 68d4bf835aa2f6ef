// Attention of one query token's heads over a token list on AVX512-BF16
// (cpu/token_list_attention.h; the core of the *.avx512bf16 sparse-decode, dense-decode and
// sparse-prefill kernels, for hosts with the BF16 dot instruction and no AMX, e.g. AMD Zen 4, where
// vdpbf16ps does twice the MACs of fp32 FMA). The engine (gather, dequantisation, softmax, layouts,
// invariants) is cpu/token_list_core.h; this file supplies its two GEMMs as vdpbf16ps register
// tiles on the engine's AMX-shaped layouts (each dword of a VNNI row is a (even, odd) pair of the
// reduced dim):
// - QK: cpu/bf16_qk_strip.h (shared with the tile-GEMM probe of `openmla bench peak`).
// - PV: O[h][v] += sum over token pairs m of (P_hi + P_lo)[h][2m..2m+1] . V[m][v][0..1]: 4 heads x
//   kPvVecs column vectors of accumulators, the P pairs broadcast (hi then lo), the V VNNI row as
//   the vector; the tile is loaded from O (or zero on the first block) once per block and stored
//   once.
// Invariants: every output element is one vdpbf16ps chain in pair order (fixed by the list), so
// results do not depend on the tiling; hp is a multiple of 16 (pad heads have zero Q and P).
#include <immintrin.h>

#include <cstdint>

#include "cpu/bf16_qk_strip.h"
#include "cpu/token_list_core.h"

namespace openmla {
namespace {

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
    bf16_qk_strip(ks, d_qk, qv, hp, st);
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
