// FP32-FMA backend of cpu/attn_rows_engine.h for CPUs without AMX (include only from *_avx512.cpp
// or *_avx2.cpp; the vector width follows the file's flags: 16 lanes with AVX-512, 8 with AVX2).
// bf16 is widened to fp32 by a shift and multiplied with FMA (VDPBF16PS runs at half the FMA
// rate on the target core class). Layouts: Q^T fp32 [D][Mp] (packed per begin()), keys widened
// to fp32 [n][D] once per block (V = first 512 dims), S^T / P fp32 [n][Mp], O fp32 [Mp][512].
// QK: S^T[n][m] = sum_d K[n][d] Q^T[d][m] with 4 keys x (4 | 2) vectors of accumulators and
// broadcast K. PV: O[m][:] += sum_n P[n][m] V[n][:] with 2 rows x 4 vectors of accumulators.
// Softmax: cpu/softmax_avx512.h with AVX-512, an exact scalar-exp2 version otherwise (same
// update rule without lazy rescaling). Token loading: bit-exact FP8 dequant.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/attn_rows_engine.h"
#include "formats/kv_format.h"
#if defined(__AVX512F__)
#include "cpu/fp8_convert_avx512.h"
#include "cpu/softmax_avx512.h"
#else
#include "cpu/fp8_convert.h"
#endif

namespace openmla {
namespace {

#if defined(__AVX512F__)
using FmaVec = __m512;
constexpr int kFmaLanes = 16;
inline FmaVec fv_load(const float* p) { return _mm512_loadu_ps(p); }
inline void fv_store(float* p, FmaVec v) { _mm512_storeu_ps(p, v); }
inline FmaVec fv_set1(float x) { return _mm512_set1_ps(x); }
inline FmaVec fv_zero() { return _mm512_setzero_ps(); }
inline FmaVec fv_fma(FmaVec a, FmaVec b, FmaVec c) { return _mm512_fmadd_ps(a, b, c); }
constexpr int kQkVecs = 4;
#else
using FmaVec = __m256;
constexpr int kFmaLanes = 8;
inline FmaVec fv_load(const float* p) { return _mm256_loadu_ps(p); }
inline void fv_store(float* p, FmaVec v) { _mm256_storeu_ps(p, v); }
inline FmaVec fv_set1(float x) { return _mm256_set1_ps(x); }
inline FmaVec fv_zero() { return _mm256_setzero_ps(); }
inline FmaVec fv_fma(FmaVec a, FmaVec b, FmaVec c) { return _mm256_fmadd_ps(a, b, c); }
constexpr int kQkVecs = 2;

/// Exact update rule without lazy rescaling (see softmax_avx512.h for the contract).
inline bool softmax_block_portable(float* st, int64_t n_valid, int64_t n_pad, int64_t hp, float c,
                                   float* m, float* l, float* alpha) {
  bool any = false;
  for (int64_t j = 0; j < hp; ++j) {
    float bm = -std::numeric_limits<float>::infinity();
    for (int64_t n = 0; n < n_valid; ++n) bm = std::fmax(bm, st[n * hp + j] * c);
    const float m_old = m[j];
    const float m_new = bm > m_old ? bm : m_old;
    float a = 1.0f;
    if (m_new > m_old && m_old != -std::numeric_limits<float>::infinity()) {
      a = std::exp2(m_old - m_new);
      any = true;
    }
    m[j] = m_new;
    alpha[j] = a;
    float sum = 0.0f;
    for (int64_t n = 0; n < n_valid; ++n) {
      const float x = st[n * hp + j] * c;
      const float pv = (x == -std::numeric_limits<float>::infinity()) ? 0.0f : std::exp2(x - m_new);
      st[n * hp + j] = pv;
      sum += pv;
    }
    for (int64_t n = n_valid; n < n_pad; ++n) st[n * hp + j] = 0.0f;
    l[j] = l[j] * a + sum;
  }
  return any;
}

inline void dequant_token_portable(KvFormat format, int64_t head_dim, const uint8_t* rec,
                                   const uint8_t* scales, uint16_t* out) {
  if (format == KvFormat::kV32) {
    for (int tile = 0; tile < 4; ++tile) {
      const float scale = load_unaligned<float>(rec + 512 + 4 * tile);
      dequant_tile_portable(rec + 128 * tile, 128, pow2_scale_add_f32(scale), scale,
                            out + 128 * tile);
    }
    std::memcpy(out + 512, rec + 528, 128);
  } else if (format == KvFormat::kModel1) {
    for (int tile = 0; tile < 7; ++tile) {
      const uint8_t code = scales[tile];
      dequant_tile_portable(rec + 64 * tile, 64, pow2_scale_add_ue8m0(code), ue8m0_to_float(code),
                            out + 64 * tile);
    }
    std::memcpy(out + 448, rec + 448, 128);
  } else {
    std::memcpy(out, rec, head_dim * 2);
  }
}
#endif

inline void widen_bf16(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &u, 4);
  }
}

template <int J>
inline void fma_qk_block(const float* kf, int64_t D, const float* qt, int64_t Mp, float* st) {
  FmaVec acc[4][J];
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = fv_zero();
  for (int64_t d = 0; d < D; ++d) {
    FmaVec qv[J];
    for (int j = 0; j < J; ++j) qv[j] = fv_load(qt + d * Mp + kFmaLanes * j);
    for (int r = 0; r < 4; ++r) {
      const FmaVec k = fv_set1(kf[r * D + d]);
      for (int j = 0; j < J; ++j) acc[r][j] = fv_fma(k, qv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < J; ++j) fv_store(st + r * Mp + kFmaLanes * j, acc[r][j]);
}

class FmaAttnBackend {
 public:
  static constexpr int64_t kBlockN = 64;
  static constexpr int64_t kPadN = 4;

  void begin(int64_t M, int64_t Mp, int64_t D, const uint16_t* const* q_rows) {
    Mp_ = Mp;
    D_ = D;
    qt_ = qt_buf_.get(D * Mp);
    kf_ = kf_buf_.get(kBlockN * D);
    for (int64_t d = 0; d < D; ++d)
      for (int64_t m = 0; m < Mp; ++m)
        qt_[d * Mp + m] = m < M ? bf16_to_float(q_rows[m][d]) : 0.0f;
  }
  void end() {}
  void pack_v(const uint16_t*, int64_t, int64_t) {}
  int64_t prefetch_ticks(int64_t) const { return 0; }

  void qk(const uint16_t* keys, int64_t n_pad, float* st, LinePrefetcher& pf) {
    pf.flush();
    widen_bf16(keys, n_pad * D_, kf_);
    const int64_t nv = Mp_ / kFmaLanes;
    for (int64_t n = 0; n < n_pad; n += 4) {
      for (int64_t j = 0; j < nv; j += kQkVecs) {
        const float* q = qt_ + kFmaLanes * j;
        float* s = st + n * Mp_ + kFmaLanes * j;
        const float* k = kf_ + n * D_;
        switch (nv - j < kQkVecs ? nv - j : kQkVecs) {
          case 1: fma_qk_block<1>(k, D_, q, Mp_, s); break;
          case 2: fma_qk_block<2>(k, D_, q, Mp_, s); break;
          case 3: fma_qk_block<3>(k, D_, q, Mp_, s); break;
          default: fma_qk_block<kQkVecs>(k, D_, q, Mp_, s); break;
        }
      }
    }
  }

  bool softmax(float* st, int64_t n, int64_t n_pad, int64_t Mp, float c, float* m, float* l,
               float* alpha) {
#if defined(__AVX512F__)
    return softmax_block_avx512(st, n, n_pad, Mp, c, m, l, alpha);
#else
    return softmax_block_portable(st, n, n_pad, Mp, c, m, l, alpha);
#endif
  }

  void pv(const float* p, const uint16_t*, int64_t n_pad, float* o, LinePrefetcher&) {
    constexpr int kV = 4;
    constexpr int64_t kStep = kV * kFmaLanes;
    for (int64_t m = 0; m < Mp_; m += 2) {
      for (int64_t d0 = 0; d0 < kRowsDimV; d0 += kStep) {
        float* o0 = o + m * kRowsDimV + d0;
        float* o1 = o0 + kRowsDimV;
        FmaVec a0[kV], a1[kV];
        for (int v = 0; v < kV; ++v) {
          a0[v] = fv_load(o0 + v * kFmaLanes);
          a1[v] = fv_load(o1 + v * kFmaLanes);
        }
        for (int64_t n = 0; n < n_pad; ++n) {
          const FmaVec p0 = fv_set1(p[n * Mp_ + m]);
          const FmaVec p1 = fv_set1(p[n * Mp_ + m + 1]);
          const float* vr = kf_ + n * D_ + d0;
          for (int v = 0; v < kV; ++v) {
            const FmaVec x = fv_load(vr + v * kFmaLanes);
            a0[v] = fv_fma(p0, x, a0[v]);
            a1[v] = fv_fma(p1, x, a1[v]);
          }
        }
        for (int v = 0; v < kV; ++v) {
          fv_store(o0 + v * kFmaLanes, a0[v]);
          fv_store(o1 + v * kFmaLanes, a1[v]);
        }
      }
    }
  }

  void load_token(KvFormat format, int64_t D, const uint8_t* rec, const uint8_t* scales,
                  uint16_t* out) const {
#if defined(__AVX512F__)
    dequant_token_avx512(lut_, format, D, rec, scales, out);
#else
    dequant_token_portable(format, D, rec, scales, out);
#endif
  }

 private:
  int64_t Mp_ = 0, D_ = 0;
  float *qt_ = nullptr, *kf_ = nullptr;
  AlignedBuffer<float> qt_buf_, kf_buf_;
#if defined(__AVX512F__)
  E4M3Lut lut_ = load_e4m3_lut();
#endif
};

}  // namespace
}  // namespace openmla
