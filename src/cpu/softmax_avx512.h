// Online-softmax block update over a score block in [rows][heads] layout, AVX-512 (include only
// from *_avx512.cpp / *_amx.cpp). Scores x = s * c with c = softmax_scale * log2(e) (base 2).
// Lazy rescaling: a head's running max m moves only when the block max exceeds it by more than
// kLazyRescale (so unnormalised P <= 2^kLazyRescale); the final O / L is exact either way.
// exp2: round-to-nearest split, degree-6 polynomial, vscalefps; arguments below -125 (incl.
// -inf) give exactly 0, so no denormal is produced.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <limits>

namespace openmla {
namespace {

constexpr float kLazyRescale = 8.0f;

inline __m512 exp2_avx512(__m512 x) {
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-125.0f), _CMP_GE_OQ);
  x = _mm512_min_ps(x, _mm512_set1_ps(127.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_maskz_sub_ps(live, x, n);
  __m512 p = _mm512_set1_ps(1.5403530393381609e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(live, p, _mm512_maskz_mov_ps(live, n));
}

/// The running-max step of one 16-head vector (heads j .. j + 15) of a block.
struct HeadMaxStep {
  __m512 m_new;       ///< the head's max after the block (log2 units)
  __m512 a;           ///< exp2(m_old - m_new)
  __mmask16 rescale;  ///< heads whose non-empty accumulator must be multiplied by a
};

/// Block max of c * st[n][j..j+15] over n < n_valid, then the lazy update of m[j..j+15]; writes
/// m and alpha (a where rescale, else 1).
inline HeadMaxStep running_max_step(const float* st, int64_t n_valid, int64_t hp, int64_t j,
                                    __m512 cv, float* m, float* alpha) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 bm = ninf;
  for (int64_t n = 0; n < n_valid; ++n)
    bm = _mm512_max_ps(bm, _mm512_mul_ps(_mm512_load_ps(st + n * hp + j), cv));
  const __m512 m_old = _mm512_loadu_ps(m + j);
  const __mmask16 move =
      _mm512_cmp_ps_mask(bm, _mm512_add_ps(m_old, _mm512_set1_ps(kLazyRescale)), _CMP_GT_OQ);
  HeadMaxStep step;
  step.m_new = _mm512_mask_mov_ps(m_old, move, bm);
  step.a = exp2_avx512(_mm512_sub_ps(m_old, step.m_new));
  step.rescale = move & _mm512_cmp_ps_mask(m_old, ninf, _CMP_NEQ_OQ);
  _mm512_storeu_ps(m + j, step.m_new);
  _mm512_storeu_ps(alpha + j, _mm512_mask_blend_ps(step.rescale, _mm512_set1_ps(1.0f), step.a));
  return step;
}

/// l[j..j+15] = l * a (where rescaled) + sum0 + sum1 (the block's unrounded P sums).
inline void running_sum_step(float* l, int64_t j, const HeadMaxStep& step, __m512 sum0,
                             __m512 sum1) {
  const __m512 l_old = _mm512_loadu_ps(l + j);
  const __m512 l_scaled = _mm512_mask_mul_ps(l_old, step.rescale, l_old, step.a);
  _mm512_storeu_ps(l + j, _mm512_add_ps(l_scaled, _mm512_add_ps(sum0, sum1)));
}

/// st: [n_pad][hp] raw scores (hp a multiple of 16); rows >= n_valid get P = 0. On return st
/// holds P (fp32, unrounded), l is updated with the unrounded sum, and alpha[h] is the factor
/// the head's accumulator must be multiplied by (1 = untouched). Returns whether any head with
/// a non-empty accumulator needs rescaling.
inline bool softmax_block_avx512(float* st, int64_t n_valid, int64_t n_pad, int64_t hp, float c,
                                 float* m, float* l, float* alpha) {
  const __m512 cv = _mm512_set1_ps(c);
  bool any = false;
  for (int64_t j = 0; j < hp; j += 16) {
    const HeadMaxStep step = running_max_step(st, n_valid, hp, j, cv, m, alpha);
    any |= step.rescale != 0;
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    int64_t n = 0;
    for (; n + 2 <= n_valid; n += 2) {
      const __m512 p0 =
          exp2_avx512(_mm512_fmsub_ps(_mm512_load_ps(st + n * hp + j), cv, step.m_new));
      const __m512 p1 =
          exp2_avx512(_mm512_fmsub_ps(_mm512_load_ps(st + (n + 1) * hp + j), cv, step.m_new));
      _mm512_store_ps(st + n * hp + j, p0);
      _mm512_store_ps(st + (n + 1) * hp + j, p1);
      sum0 = _mm512_add_ps(sum0, p0);
      sum1 = _mm512_add_ps(sum1, p1);
    }
    for (; n < n_valid; ++n) {
      const __m512 p0 =
          exp2_avx512(_mm512_fmsub_ps(_mm512_load_ps(st + n * hp + j), cv, step.m_new));
      _mm512_store_ps(st + n * hp + j, p0);
      sum0 = _mm512_add_ps(sum0, p0);
    }
    for (; n < n_pad; ++n) _mm512_store_ps(st + n * hp + j, _mm512_setzero_ps());
    running_sum_step(l, j, step, sum0, sum1);
  }
  return any;
}

}  // namespace
}  // namespace openmla
