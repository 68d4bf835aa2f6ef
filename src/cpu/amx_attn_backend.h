// AMX-BF16 backend of cpu/attn_rows_engine.h (include only from *_amx.cpp).
// All tiles are 16 rows x 64 bytes (one tile config, tmm0-3 accumulators, tmm4-5 A, tmm6-7 B).
// QK: S^T[n][m] = K[n][:] . Q[m][:] with A = the key rows straight from the key buffer (16 keys x
// 32 dims, stride D) or, for tiles read in place, from the 16-bit cache (KeyTiles), and B = Q^T in
// VNNI form [D/32][Mp/16][16 pairs][16 m][2], packed once per begin() by 16x16 dword transposes;
// 2x2 (or 2x1) blocking of C tiles.
// PV: O[m][d] += P[m][n] V[n][d] with A = P packed from S^T (fp32 -> bf16 RNE, pairs of keys
// interleaved, 16x16 dword transpose) as [Mp/16][n/32][16 m][32 keys] and B = V in VNNI form
// [n/32][32][16 pairs][16 d][2] (two rows interleaved by VPERMT2W, by pack_v, called by the engine
// pair by pair during the gather while the rows are in L1); O tiles are loaded from and stored to
// the fp32 accumulator, 2x2 blocked, once per key block (kBlockN keys = 8 k-steps).
// Prefetch of the next block's records: prefetch_ticks() tells the engine how many pf.tick()
// calls the QK / P-packing / PV loops make, so the lines are spread evenly over all of them.
// Softmax: cpu/softmax_avx512.h. Token loading: cpu/fp8_convert_avx512.h (bit-exact dequant).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/attn_rows_engine.h"
#include "cpu/fp8_convert_avx512.h"
#include "cpu/softmax_avx512.h"
#include "cpu/transpose_avx512.h"

namespace openmla {
namespace {

struct AmxTileConfig16x64 {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

inline void amx_config_16x64() {
  alignas(64) AmxTileConfig16x64 cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  _tile_loadconfig(&cfg);
}

struct Interleave16 {
  __m512i lo, hi, pair;
  Interleave16() {
    alignas(64) int16_t a[32], b[32], c[32];
    for (int j = 0; j < 16; ++j) {
      a[2 * j] = static_cast<int16_t>(j);
      a[2 * j + 1] = static_cast<int16_t>(32 + j);
      b[2 * j] = static_cast<int16_t>(16 + j);
      b[2 * j + 1] = static_cast<int16_t>(48 + j);
      c[2 * j] = static_cast<int16_t>(j);
      c[2 * j + 1] = static_cast<int16_t>(16 + j);
    }
    lo = _mm512_load_si512(a);
    hi = _mm512_load_si512(b);
    pair = _mm512_load_si512(c);
  }
};

/// Pulls one 16-row tile (rows `stride` bytes apart) into L1 ahead of its tileloadd.
inline void prefetch_tile_l1(const void* tile, int64_t stride) {
  const char* p = static_cast<const char*>(tile);
  for (int i = 0; i < 16; ++i) _mm_prefetch(p + i * stride, _MM_HINT_T0);
}

class AmxAttnBackend {
 public:
  static constexpr int64_t kBlockN = 256;  ///< keys per block (8 PV k-steps)
  static constexpr int64_t kPadN = 32;     ///< key count padding (one PV k-step)

  void begin(int64_t M, int64_t Mp, int64_t D, const uint16_t* const* q_rows) {
    amx_config_16x64();
    Mp_ = Mp;
    D_ = D;
    nmb_ = Mp / 16;
    nkk_ = D / 32;
    qb_ = qb_buf_.get(nkk_ * nmb_ * 512);
    pa_ = pa_buf_.get(nmb_ * (kBlockN / 32) * 512);
    vb_ = vb_buf_.get((kBlockN / 32) * 32 * 512);
    for (int64_t mb = 0; mb < nmb_; ++mb) {
      for (int64_t kk = 0; kk < nkk_; ++kk) {
        __m512i r[16];
        for (int i = 0; i < 16; ++i) {
          const int64_t m = mb * 16 + i;
          r[i] = m < M ? _mm512_loadu_si512(q_rows[m] + kk * 32) : _mm512_setzero_si512();
        }
        transpose16x16_epi32(r);
        uint16_t* dst = qb_ + (kk * nmb_ + mb) * 512;
        for (int i = 0; i < 16; ++i) _mm512_store_si512(dst + i * 32, r[i]);
      }
    }
  }
  void end() { _tile_release(); }

  /// st[n][m] = keys[n] . q[m] for n < n_pad (n_pad a multiple of 32).
  __attribute__((noinline)) void qk(const KeyTiles& keys, int64_t n_pad, float* st,
                                    LinePrefetcher& pf) {
    const int64_t ss = Mp_ * 4;
    for (int64_t nb = 0; nb < n_pad / 16; nb += 2) {
      const uint16_t* k0 = keys.ptr[nb];
      const uint16_t* k1 = keys.ptr[nb + 1];
      const int64_t ks0 = keys.stride[nb], ks1 = keys.stride[nb + 1];
      float* s0 = st + nb * 16 * Mp_;
      float* s1 = s0 + 16 * Mp_;
      int64_t mb = 0;
      for (; mb + 2 <= nmb_; mb += 2) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t kk = 0; kk < nkk_; ++kk) {
          const uint16_t* q = qb_ + (kk * nmb_ + mb) * 512;
          pf.tick();
          _tile_loadd(4, k0 + kk * 32, ks0);
          _tile_loadd(6, q, 64);
          _tile_loadd(7, q + 512, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_loadd(5, k1 + kk * 32, ks1);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, s0 + mb * 16, ss);
        _tile_stored(1, s0 + mb * 16 + 16, ss);
        _tile_stored(2, s1 + mb * 16, ss);
        _tile_stored(3, s1 + mb * 16 + 16, ss);
      }
      if (mb < nmb_) {
        _tile_zero(0);
        _tile_zero(2);
        for (int64_t kk = 0; kk < nkk_; ++kk) {
          pf.tick();
          _tile_loadd(4, k0 + kk * 32, ks0);
          _tile_loadd(5, k1 + kk * 32, ks1);
          _tile_loadd(6, qb_ + (kk * nmb_ + mb) * 512, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(2, 5, 6);
        }
        _tile_stored(0, s0 + mb * 16, ss);
        _tile_stored(2, s1 + mb * 16, ss);
      }
    }
  }

  __attribute__((noinline)) bool softmax(float* st, int64_t n, int64_t n_pad, int64_t Mp, float c,
                                         float* m, float* l, float* alpha) {
    return softmax_block_avx512(st, n, n_pad, Mp, c, m, l, alpha);
  }

  /// pf.tick() calls per block of n_pad keys (QK, P packing and PV loops).
  int64_t prefetch_ticks(int64_t n_pad) const {
    const int64_t pairs = (nmb_ + 1) / 2, nkb = n_pad / 32;
    return nkb * pairs * nkk_ + nmb_ * nkb + 16 * pairs * nkb;
  }

  /// V rows of key pairs [p0, p1) -> B tiles [kb][db][16 pairs][16 d][2] (pair p = keys 2p, 2p+1).
  void pack_v(const KeyTiles& keys, int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const uint16_t* a = keys.row(2 * p);
      const uint16_t* b = keys.row(2 * p + 1);
      uint16_t* dst = vb_ + (p / 16) * 32 * 512 + (p % 16) * 32;
      for (int c = 0; c < 16; ++c) {
        const __m512i va = _mm512_loadu_si512(a + 32 * c);
        const __m512i vb = _mm512_loadu_si512(b + 32 * c);
        _mm512_store_si512(dst + (2 * c) * 512, _mm512_permutex2var_epi16(va, il_.lo, vb));
        _mm512_store_si512(dst + (2 * c + 1) * 512, _mm512_permutex2var_epi16(va, il_.hi, vb));
      }
    }
  }

  /// o[m][0..512) += sum_n p[n][m] * V[n][0..512) (V already in vb_ via pack_v).
  void pv(const float* p, int64_t n_pad, float* o, LinePrefetcher& pf) {
    const int64_t nkb = n_pad / 32;
    // P^T fp32 [n][Mp] -> A tiles [mb][kb][16 m][32 keys] bf16.
    for (int64_t mb = 0; mb < nmb_; ++mb) {
      for (int64_t kb = 0; kb < nkb; ++kb) {
        __m512i r[16];
        for (int i = 0; i < 16; ++i) {
          const float* a = p + (kb * 32 + 2 * i) * Mp_ + mb * 16;
          const __m512bh both = _mm512_cvtne2ps_pbh(_mm512_load_ps(a + Mp_), _mm512_load_ps(a));
          r[i] = _mm512_permutexvar_epi16(il_.pair, reinterpret_cast<const __m512i&>(both));
        }
        pf.tick();
        transpose16x16_epi32(r);
        uint16_t* dst = pa_ + (mb * (kBlockN / 32) + kb) * 512;
        for (int i = 0; i < 16; ++i) _mm512_store_si512(dst + i * 32, r[i]);
      }
    }
    constexpr int64_t os = kRowsDimV * 4;
    for (int64_t db = 0; db < 32; db += 2) {
      int64_t mb = 0;
      for (; mb + 2 <= nmb_; mb += 2) {
        float* c0 = o + mb * 16 * kRowsDimV + db * 16;
        float* c1 = c0 + 16 * kRowsDimV;
        _tile_loadd(0, c0, os);
        _tile_loadd(1, c0 + 16, os);
        _tile_loadd(2, c1, os);
        _tile_loadd(3, c1 + 16, os);
        for (int64_t kb = 0; kb < nkb; ++kb) {
          const uint16_t* v = vb_ + (kb * 32 + db) * 512;
          pf.tick();
          _tile_loadd(4, pa_ + (mb * (kBlockN / 32) + kb) * 512, 64);
          _tile_loadd(6, v, 64);
          _tile_loadd(7, v + 512, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_loadd(5, pa_ + ((mb + 1) * (kBlockN / 32) + kb) * 512, 64);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c0, os);
        _tile_stored(1, c0 + 16, os);
        _tile_stored(2, c1, os);
        _tile_stored(3, c1 + 16, os);
      }
      if (mb < nmb_) {
        float* c0 = o + mb * 16 * kRowsDimV + db * 16;
        _tile_loadd(0, c0, os);
        _tile_loadd(1, c0 + 16, os);
        for (int64_t kb = 0; kb < nkb; ++kb) {
          const uint16_t* v = vb_ + (kb * 32 + db) * 512;
          pf.tick();
          _tile_loadd(4, pa_ + (mb * (kBlockN / 32) + kb) * 512, 64);
          _tile_loadd(6, v, 64);
          _tile_loadd(7, v + 512, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
        }
        _tile_stored(0, c0, os);
        _tile_stored(1, c0 + 16, os);
      }
    }
  }

  /// One cache token -> D bf16 words (bit-exact with dequantize_token).
  void load_token(KvFormat format, int64_t D, const uint8_t* rec, const uint8_t* scales,
                  uint16_t* out) const {
    dequant_token_avx512(lut_, format, D, rec, scales, out);
  }

 private:
  int64_t Mp_ = 0, D_ = 0, nmb_ = 0, nkk_ = 0;
  uint16_t *qb_ = nullptr, *pa_ = nullptr, *vb_ = nullptr;
  AlignedBuffer<uint16_t> qb_buf_, pa_buf_, vb_buf_;
  Interleave16 il_;
  E4M3Lut lut_ = load_e4m3_lut();
};

}  // namespace
}  // namespace openmla
