// AVX-512 element loops of the combine (see cpu/combine_loops.h): 16 floats per step. The
// multiply and the add use the explicit-rounding forms so that the compiler can never fuse them
// into an FMA (the portable loops round twice, so must these). bf16: the integer RNE of
// float_to_bf16 (NaN: high half | 0x0040); fp16: VCVTPS2PH in round-to-nearest-even, which
// matches float_to_fp16 for every non-NaN input, with NaN lanes set to sign | 0x7E00.
#include <immintrin.h>

#include "cpu/combine_loops.h"

namespace openmla {
namespace {

constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

// Lanes [0, n) of a 16-lane step, n <= 16.
inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

void scale_avx512(float w, const float* o, int64_t n, float* acc) {
  const __m512 wv = _mm512_set1_ps(w);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = lanes(n - i);
    _mm512_mask_storeu_ps(acc + i, k,
                          _mm512_mul_round_ps(wv, _mm512_maskz_loadu_ps(k, o + i), kRne));
  }
}

void add_scaled_avx512(float w, const float* o, int64_t n, float* acc) {
  const __m512 wv = _mm512_set1_ps(w);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = lanes(n - i);
    const __m512 prod = _mm512_mul_round_ps(wv, _mm512_maskz_loadu_ps(k, o + i), kRne);
    _mm512_mask_storeu_ps(acc + i, k,
                          _mm512_add_round_ps(_mm512_maskz_loadu_ps(k, acc + i), prod, kRne));
  }
}

inline __m256i to_bf16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x0040));
  return _mm512_cvtepi32_epi16(r);
}

inline __m256i to_fp16(__m512 x) {
  __m256i h = _mm512_cvtps_ph(x, kRne);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __m256i sign = _mm512_cvtepi32_epi16(
      _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(x), 16), _mm512_set1_epi32(0x8000)));
  const __m256i quiet = _mm256_or_si256(sign, _mm256_set1_epi16(0x7E00));
  return _mm256_mask_mov_epi16(h, nan, quiet);
}

void round_avx512(const float* acc, int64_t n, DType dtype, uint16_t* out) {
  const bool fp16 = dtype == DType::kF16;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = lanes(n - i);
    const __m512 x = _mm512_maskz_loadu_ps(k, acc + i);
    _mm256_mask_storeu_epi16(out + i, k, fp16 ? to_fp16(x) : to_bf16(x));
  }
}

constexpr CombineLoops kAvx512Loops = {scale_avx512, add_scaled_avx512, round_avx512};

}  // namespace

const CombineLoops& combine_loops_avx512() { return kAvx512Loops; }

}  // namespace openmla
