// Width-generic fp32-FMA vector layer of the non-AMX kernels (include only from *_avx512.cpp or
// *_avx2.cpp): the vector type follows the file's flags, 16 lanes (__m512) with AVX-512, else 8
// lanes (__m256, AVX2 + FMA). Kernels written against FmaVec / fv_* / kFmaLanes compile once per
// width. kQkVecs is the number of head vectors a broadcast-K QK tile keeps in accumulators
// (4 x 16 lanes, 2 x 8 lanes: what the register file holds next to the broadcast rows).
// FmaTokenDequant picks the bit-exact FP8 token dequant of the same ISA: the VBMI byte-permute
// tables of fp8_convert_avx512.h, or the portable table path of fp8_convert.h. fv_exp2 is the
// exp2 of cpu/softmax_avx512.h / softmax_avx2.h (exactly 0 below -125).
// Everything has internal linkage: the header is compiled under different ISA flags.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "formats/kv_format.h"
#if defined(__AVX512F__)
#include "cpu/fp8_convert_avx512.h"
#include "cpu/softmax_avx512.h"
#else
#include "cpu/fp8_convert.h"
#include "cpu/softmax_avx2.h"
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
inline FmaVec fv_mul(FmaVec a, FmaVec b) { return _mm512_mul_ps(a, b); }
inline FmaVec fv_add(FmaVec a, FmaVec b) { return _mm512_add_ps(a, b); }
inline FmaVec fv_sub(FmaVec a, FmaVec b) { return _mm512_sub_ps(a, b); }
inline FmaVec fv_div(FmaVec a, FmaVec b) { return _mm512_div_ps(a, b); }
inline FmaVec fv_max(FmaVec a, FmaVec b) { return _mm512_max_ps(a, b); }
/// 2^x, exactly 0 below -125 (-inf included); see cpu/softmax_avx512.h.
inline FmaVec fv_exp2(FmaVec x) { return exp2_avx512(x); }
/// kFmaLanes bf16 words -> fp32 (exact: the word becomes the high half).
inline FmaVec fv_load_bf16(const uint16_t* p) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(w), 16));
}
constexpr int kQkVecs = 4;
#else
using FmaVec = __m256;
constexpr int kFmaLanes = 8;
inline FmaVec fv_load(const float* p) { return _mm256_loadu_ps(p); }
inline void fv_store(float* p, FmaVec v) { _mm256_storeu_ps(p, v); }
inline FmaVec fv_set1(float x) { return _mm256_set1_ps(x); }
inline FmaVec fv_zero() { return _mm256_setzero_ps(); }
inline FmaVec fv_fma(FmaVec a, FmaVec b, FmaVec c) { return _mm256_fmadd_ps(a, b, c); }
inline FmaVec fv_mul(FmaVec a, FmaVec b) { return _mm256_mul_ps(a, b); }
inline FmaVec fv_add(FmaVec a, FmaVec b) { return _mm256_add_ps(a, b); }
inline FmaVec fv_sub(FmaVec a, FmaVec b) { return _mm256_sub_ps(a, b); }
inline FmaVec fv_div(FmaVec a, FmaVec b) { return _mm256_div_ps(a, b); }
inline FmaVec fv_max(FmaVec a, FmaVec b) { return _mm256_max_ps(a, b); }
/// 2^x, exactly 0 below -125 (-inf included); see cpu/softmax_avx2.h.
inline FmaVec fv_exp2(FmaVec x) { return exp2_avx2(x); }
/// kFmaLanes bf16 words -> fp32 (exact: the word becomes the high half).
inline FmaVec fv_load_bf16(const uint16_t* p) {
  const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(w), 16));
}
constexpr int kQkVecs = 2;

inline void dequant_token_portable(KvFormat format, int64_t head_dim, const uint8_t* rec,
                                   const uint8_t* scales, uint16_t* out) {
  using namespace kv_layout;
  if (format == KvFormat::kV32) {
    for (int tile = 0; tile < kV32NumTiles; ++tile) {
      const float scale = load_unaligned<float>(rec + kV32ScalesOffset + 4 * tile);
      dequant_tile_portable(rec + kV32Tile * tile, kV32Tile, pow2_scale_add_f32(scale), scale,
                            out + kV32Tile * tile);
    }
    std::memcpy(out + kV32NopeDim, rec + kV32RopeOffset, kRopeBytes);
  } else if (format == KvFormat::kModel1) {
    for (int tile = 0; tile < kModel1NumTiles; ++tile) {
      const uint8_t code = scales[tile];
      dequant_tile_portable(rec + kModel1Tile * tile, kModel1Tile, pow2_scale_add_ue8m0(code),
                            ue8m0_to_float(code), out + kModel1Tile * tile);
    }
    std::memcpy(out + kModel1NopeDim, rec + kModel1RopeOffset, kRopeBytes);
  } else {
    std::memcpy(out, rec, head_dim * 2);
  }
}
#endif

/// One V32 / MODEL1 / BF16 token record -> head_dim bf16 words, bit-exact with dequantize_token
/// (`scales`: the MODEL1 scale record, else unused).
struct FmaTokenDequant {
  void operator()(KvFormat format, int64_t head_dim, const uint8_t* rec, const uint8_t* scales,
                  uint16_t* out) const {
#if defined(__AVX512F__)
    dequant_token_avx512(lut, format, head_dim, rec, scales, out);
#else
    dequant_token_portable(format, head_dim, rec, scales, out);
#endif
  }
#if defined(__AVX512F__)
  E4M3Lut lut = load_e4m3_lut();
#endif
};

}  // namespace
}  // namespace openmla
