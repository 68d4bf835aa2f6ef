// FP32-FMA backend of cpu/attn_rows_engine.h for CPUs without AMX (include only from *_avx512.cpp
// or *_avx2.cpp; the vector width follows the file's flags via cpu/fma_vec.h: 16 lanes with
// AVX-512, 8 with AVX2).
// bf16 is widened to fp32 by a shift (fp16, after set_fp16(true), by F16C; both exact) and
// multiplied with FMA (VDPBF16PS runs at half the FMA rate on the target core class). Layouts:
// Q^T fp32 [D][Mp] (packed per begin()), keys widened to fp32 [n][D] once per block (V = first
// 512 dims), S^T / P fp32 [n][Mp], O fp32 [Mp][512].
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
#include "cpu/fma_vec.h"
#include "formats/kv_format.h"
#if defined(__AVX512F__)
#include "cpu/softmax_avx512.h"
#endif

namespace openmla {
namespace {

#if !defined(__AVX512F__)
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
  static constexpr bool kReadsFp16 = true;

  /// Q rows and keys are fp16 (true) or bf16 (false) until the next call.
  void set_fp16(bool fp16) { fp16_ = fp16; }

  void begin(int64_t M, int64_t Mp, int64_t D, const uint16_t* const* q_rows) {
    Mp_ = Mp;
    D_ = D;
    qt_ = qt_buf_.get(D * Mp);
    kf_ = kf_buf_.get(kBlockN * D);
    for (int64_t d = 0; d < D; ++d)
      for (int64_t m = 0; m < Mp; ++m)
        qt_[d * Mp + m] = m >= M  ? 0.0f
                          : fp16_ ? _cvtsh_ss(q_rows[m][d])
                                  : bf16_to_float(q_rows[m][d]);
  }
  void end() {}
  void pack_v(const KeyTiles&, int64_t, int64_t) {}
  int64_t prefetch_ticks(int64_t) const { return 0; }

  void qk(const KeyTiles& keys, int64_t n_pad, float* st, LinePrefetcher& pf) {
    pf.flush();
    for (int64_t t = 0; t < n_pad; ++t) {
      if (fp16_) {
        widen_fp16(keys.row(t), D_, kf_ + t * D_);
      } else {
        widen_bf16(keys.row(t), D_, kf_ + t * D_);
      }
    }
    const int64_t nv = Mp_ / kFmaLanes;
    for (int64_t n = 0; n < n_pad; n += 4) {
      for (int64_t j = 0; j < nv; j += kQkVecs) {
        const float* q = qt_ + kFmaLanes * j;
        float* s = st + n * Mp_ + kFmaLanes * j;
        const float* k = kf_ + n * D_;
        switch (nv - j < kQkVecs ? nv - j : kQkVecs) {
          case 1:
            fma_qk_block<1>(k, D_, q, Mp_, s);
            break;
          case 2:
            fma_qk_block<2>(k, D_, q, Mp_, s);
            break;
          case 3:
            fma_qk_block<3>(k, D_, q, Mp_, s);
            break;
          default:
            fma_qk_block<kQkVecs>(k, D_, q, Mp_, s);
            break;
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

  void pv(const float* p, int64_t n_pad, float* o, LinePrefetcher&) {
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
    dequant_(format, D, rec, scales, out);
  }

 private:
  /// n fp16 words -> fp32 with F16C (exact).
  static void widen_fp16(const uint16_t* src, int64_t n, float* dst) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
    }
#endif
    for (; i + 8 <= n; i += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
  }

  bool fp16_ = false;
  int64_t Mp_ = 0, D_ = 0;
  float *qt_ = nullptr, *kf_ = nullptr;
  AlignedBuffer<float> qt_buf_, kf_buf_;
  FmaTokenDequant dequant_;
};

}  // namespace
}  // namespace openmla
