// The QK^T strip of the AMX sparse-decode kernel, shared with the tile-GEMM probe of
// `openmla bench peak` (so the probe times this very loop). Include only from *_amx.cpp.
// S^T [32][hp] (row stride hp floats) = K [32][d_qk] (bf16 rows, the A tiles) . Q^T, where Q^T is
// packed as VNNI B tiles [d_qk/32][hp/16][16 pairs][16 heads][2], each a contiguous 1 KiB.
// Tiling: 2x2 C tiles (2 key tiles x 2 head tiles) over d_qk/32 k-steps, then 2x1 for an odd head
// tile. Requires the 16x64-B tile configuration (AmxTileScope) and hp a multiple of 16.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace openmla {
namespace {

// 32 rows of S^T (row stride hp) = 32 K rows ks [32][d_qk] . Q^T, all head tiles.
inline void qk_strip(const uint16_t* ks, int64_t d_qk, const uint16_t* qv, int64_t hp, float* st) {
  const int64_t ht = hp / 16, ksteps = d_qk / 32;
  const int64_t ldk = d_qk * 2, lds = hp * 4;
  const uint16_t* k1 = ks + 16 * d_qk;
  int64_t j = 0;
  for (; j + 2 <= ht; j += 2) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t k = 0; k < ksteps; ++k) {
      const uint16_t* q = qv + (k * ht + j) * 512;
      _tile_loadd(4, ks + k * 32, ldk);
      _tile_loadd(6, q, 64);
      _tile_loadd(7, q + 512, 64);
      _tile_loadd(5, k1 + k * 32, ldk);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, st + j * 16, lds);
    _tile_stored(1, st + j * 16 + 16, lds);
    _tile_stored(2, st + 16 * hp + j * 16, lds);
    _tile_stored(3, st + 16 * hp + j * 16 + 16, lds);
  }
  if (j < ht) {
    _tile_zero(0);
    _tile_zero(2);
    for (int64_t k = 0; k < ksteps; ++k) {
      _tile_loadd(4, ks + k * 32, ldk);
      _tile_loadd(6, qv + (k * ht + j) * 512, 64);
      _tile_loadd(5, k1 + k * 32, ldk);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(2, 5, 6);
    }
    _tile_stored(0, st + j * 16, lds);
    _tile_stored(2, st + 16 * hp + j * 16, lds);
  }
}

}  // namespace
}  // namespace openmla
