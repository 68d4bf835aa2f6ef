// The QK^T strip of the AVX512-BF16 token-list attention, shared with the tile-GEMM probe of
// `openmla bench peak` (so the probe times this very loop). Include only from *_avx512bf16.cpp.
// S^T [32][hp] (row stride hp floats) = K [32][d_qk] (bf16 rows) . Q^T, where Q^T is packed as the
// AMX VNNI B tiles [d_qk/32][hp/16][16 pairs][16 heads][2] (cpu/token_list_core.h): each dword is
// an (even, odd) pair of the reduced dim. S^T[n][h] = sum over pairs p of K[n][2p..2p+1] .
// Q^T[p][h][0..1] with vdpbf16ps: a tile of R key rows x J head vectors of accumulators, the key
// pair broadcast as a dword, the Q^T VNNI row (16 heads x 2) as the vector; heads in chunks of 4
// vectors (6-row tiles), fewer vectors in 8-row tiles. Every element is one chain in pair order.
// Requires hp a multiple of 16 and d_qk of 32.
#pragma once

#include <immintrin.h>

#include <cstdint>

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

// 32 rows of S^T (row stride hp) = 32 K rows ks [32][d_qk] . Q^T, all head vectors.
inline void bf16_qk_strip(const uint16_t* ks, int64_t d_qk, const uint16_t* qv, int64_t hp,
                          float* st) {
  const int64_t ht = hp / 16;
  int64_t j = 0;
  for (; j + 4 <= ht; j += 4) qk_rows<4>(ks, d_qk, qv, hp, j, st);
  if (ht - j == 3) qk_rows<3>(ks, d_qk, qv, hp, j, st);
  if (ht - j == 2) qk_rows<2>(ks, d_qk, qv, hp, j, st);
  if (ht - j == 1) qk_rows<1>(ks, d_qk, qv, hp, j, st);
}

}  // namespace
}  // namespace openmla
