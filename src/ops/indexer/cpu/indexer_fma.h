// Lightning indexer, fp32-FMA numerics for CPUs without AMX or the BF16 dot, written once against
// the width-generic vector layer of cpu/fma_vec.h (include only from indexer_avx512.cpp, 16
// lanes, or indexer_avx2.cpp, 8 lanes; each defines the three KernelEntry objects on the runs of
// indexer_driver.h instantiated with FmaMath). The task structure, key walk, chunking, fused
// top-k and the invariants are in indexer_driver.h.
// Layouts: each task's rows are converted ONCE into Q^T fp32 [128][hp] (hp = heads rounded up to
// kFmaLanes, pad heads and weights zero); blocks of kKeyBlock keys are dequantised ONCE (exact:
// e4m3 through F16C as value / 256 with the 256 folded into the key scale, e2m1 through a byte
// shuffle times its ue8m0 block scale) into K fp32 [keys][128], shared by all heads and rows.
// Tiling: per key block, passes over kQkVecs head vectors, each sweeping the block's keys in
// tiles of up to 6 keys x kQkVecs head vectors of accumulators (broadcast K, Q^T rows as
// vectors): acc[key][heads] = sum_d K[key][d] Q^T[d][heads] as one FMA chain in d order; then
// part[key] += w[heads] * max(0, acc) for head vectors in ascending order; the logit is a fixed
// horizontal sum of part[key] times the key scale.
// Everything has internal linkage: the header is compiled under different ISA flags.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "cpu/fma_vec.h"
#include "ops/indexer/cpu/indexer_driver.h"

namespace openmla {
namespace {

constexpr int kTileKeys = 6;

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

// ---- scores ----------------------------------------------------------------------------------

inline void convert_row_fma(const IndexerQuery& query, int64_t r, int64_t hp, float* qt, float* w) {
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
inline void score_pass(const float* kf, int64_t n, const RowQ<float>& row, int64_t hp, int64_t jv,
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
inline void score_keys_fma(const float* kf, const float* scale, int64_t n, const RowQ<float>& row,
                           int64_t hp, float* out) {
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

struct FmaMath {
  using Key = float;
  using QElem = float;
  static constexpr int64_t kKeyElems = 128;
  static int64_t padded_heads(int64_t heads) {
    return (heads + kFmaLanes - 1) / kFmaLanes * kFmaLanes;
  }
  static int64_t q_elems(int64_t hp) { return 128 * hp; }
  static void convert_row(const IndexerQuery& query, int64_t r, int64_t hp, float* qt, float* w) {
    convert_row_fma(query, r, hp, qt, w);
  }
  static float dequant(IndexerKeyFormat format, const uint8_t* codes, const uint8_t* scales,
                       float* out) {
    if (format == IndexerKeyFormat::kFp8) {
      dequant_e4m3_row(codes, out);
      return load_unaligned<float>(scales) * kE4m3Fp16Rescale;
    }
    dequant_e2m1_row(codes, scales, out);
    return 1.0f;
  }
  static void score_keys(const float* kf, const float* scale, int64_t n, const RowQ<float>& row,
                         int64_t hp, float* out) {
    score_keys_fma(kf, scale, n, row, hp, out);
  }
};

}  // namespace
}  // namespace openmla
