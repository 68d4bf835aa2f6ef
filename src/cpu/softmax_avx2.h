// Online-softmax block update, AVX2 + FMA version of softmax_avx512.h (include only from
// *_avx2.cpp). Same contract: scores [rows][hp] (hp a multiple of 8), base 2, lazy rescaling,
// exp2 of arguments below -125 (incl. -inf) is exactly 0.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <limits>

namespace openmla {
namespace {

constexpr float kLazyRescaleAvx2 = 8.0f;

inline __m256 exp2_avx2(__m256 x) {
  const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-125.0f), _CMP_GE_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-125.0f)), _mm256_set1_ps(127.0f));
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(1.5403530393381609e-4f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), live);
}

inline bool softmax_block_avx2(float* st, int64_t n_valid, int64_t n_pad, int64_t hp, float c,
                               float* m, float* l, float* alpha) {
  const __m256 cv = _mm256_set1_ps(c);
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256 one = _mm256_set1_ps(1.0f);
  bool any = false;
  for (int64_t j = 0; j < hp; j += 8) {
    __m256 bm = ninf;
    for (int64_t n = 0; n < n_valid; ++n)
      bm = _mm256_max_ps(bm, _mm256_mul_ps(_mm256_loadu_ps(st + n * hp + j), cv));
    const __m256 m_old = _mm256_loadu_ps(m + j);
    const __m256 move = _mm256_cmp_ps(bm, _mm256_add_ps(m_old, _mm256_set1_ps(kLazyRescaleAvx2)), _CMP_GT_OQ);
    const __m256 m_new = _mm256_blendv_ps(m_old, bm, move);
    const __m256 a = exp2_avx2(_mm256_sub_ps(m_old, m_new));
    const __m256 rescale = _mm256_and_ps(move, _mm256_cmp_ps(m_old, ninf, _CMP_NEQ_OQ));
    any |= _mm256_movemask_ps(rescale) != 0;
    _mm256_storeu_ps(m + j, m_new);
    const __m256 av = _mm256_blendv_ps(one, a, rescale);
    _mm256_storeu_ps(alpha + j, av);
    __m256 sum = _mm256_setzero_ps();
    int64_t n = 0;
    for (; n < n_valid; ++n) {
      const __m256 p = exp2_avx2(_mm256_fmsub_ps(_mm256_loadu_ps(st + n * hp + j), cv, m_new));
      _mm256_storeu_ps(st + n * hp + j, p);
      sum = _mm256_add_ps(sum, p);
    }
    for (; n < n_pad; ++n) _mm256_storeu_ps(st + n * hp + j, _mm256_setzero_ps());
    _mm256_storeu_ps(l + j, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(l + j), av), sum));
  }
  return any;
}

}  // namespace
}  // namespace openmla
