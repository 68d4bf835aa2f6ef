// Exact e4m3fn -> bf16 with AVX-512 VBMI byte-permute tables (include only from *_avx512.cpp /
// *_amx.cpp). 64 codes per step: two VPERMI2B lookups give the high and low byte of the bf16
// magnitude for the 7-bit magnitude code (subnormals and NaN included: it is a full table),
// the sign byte is OR-ed in, the bytes are interleaved into words (the codes are pre-permuted so
// the words come out in order), and a power-of-two scale 2^e is applied exactly by adding e<<7
// to every non-zero, non-NaN word (see fp8_convert.h). Integer-only: no denormal float ever.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "cpu/fp8_convert.h"
#include "formats/kv_format.h"
#include "openmla/core.h"

namespace openmla {
namespace {

struct E4M3ByteTables {
  alignas(64) uint8_t lo[128];
  alignas(64) uint8_t hi[128];
  alignas(64) uint8_t perm[64];
  constexpr E4M3ByteTables() : lo(), hi(), perm() {
    for (uint32_t m = 0; m < 128; ++m) {
      lo[m] = static_cast<uint8_t>(kE4M3Bf16.bits[m] & 0xFF);
      hi[m] = static_cast<uint8_t>(kE4M3Bf16.bits[m] >> 8);
    }
    // Position 16j+i (i<8) takes code 8j+i; position 16j+8+i takes code 32+8j+i, so that
    // unpacklo/unpackhi_epi8 yield words for codes 0..31 and 32..63 in order.
    for (uint32_t j = 0; j < 4; ++j)
      for (uint32_t i = 0; i < 8; ++i) {
        perm[16 * j + i] = static_cast<uint8_t>(8 * j + i);
        perm[16 * j + 8 + i] = static_cast<uint8_t>(32 + 8 * j + i);
      }
  }
};
inline constexpr E4M3ByteTables kE4M3Bytes{};

struct E4M3Lut {
  __m512i lo0, lo1, hi0, hi1, perm;
};

inline E4M3Lut load_e4m3_lut() {
  E4M3Lut t;
  t.lo0 = _mm512_load_si512(kE4M3Bytes.lo);
  t.lo1 = _mm512_load_si512(kE4M3Bytes.lo + 64);
  t.hi0 = _mm512_load_si512(kE4M3Bytes.hi);
  t.hi1 = _mm512_load_si512(kE4M3Bytes.hi + 64);
  t.perm = _mm512_load_si512(kE4M3Bytes.perm);
  return t;
}

/// 64 e4m3 codes -> 64 bf16 words (w0: codes 0..31, w1: codes 32..63), scaled by 2^e via `add`
/// (a word vector of e<<7; zero vector for no scale).
inline void e4m3x64_to_bf16(const E4M3Lut& t, __m512i codes, __m512i add, __m512i* w0,
                            __m512i* w1) {
  const __m512i mag = _mm512_and_si512(codes, _mm512_set1_epi8(0x7F));
  const __mmask64 scale_mask =
      _mm512_mask_cmpneq_epi8_mask(_mm512_test_epi8_mask(mag, mag), mag, _mm512_set1_epi8(0x7F));
  const __m512i pc = _mm512_permutexvar_epi8(t.perm, codes);
  const __m512i lo = _mm512_permutex2var_epi8(t.lo0, pc, t.lo1);
  __m512i hi = _mm512_permutex2var_epi8(t.hi0, pc, t.hi1);
  hi = _mm512_ternarylogic_epi32(hi, pc, _mm512_set1_epi8(static_cast<char>(0x80)), 0xF8);  // hi | (pc & 0x80)
  const __m512i a = _mm512_unpacklo_epi8(lo, hi);
  const __m512i b = _mm512_unpackhi_epi8(lo, hi);
  *w0 = _mm512_mask_add_epi16(a, static_cast<__mmask32>(scale_mask), a, add);
  *w1 = _mm512_mask_add_epi16(b, static_cast<__mmask32>(scale_mask >> 32), b, add);
}

/// Dequantises `n` codes (n a multiple of 64) of one tile with one scale.
inline void dequant_tile_avx512(const E4M3Lut& t, const uint8_t* codes, int64_t n, int32_t add,
                                float scale, uint16_t* out) {
  if (add < 0) {
    dequant_tile_exact(codes, n, scale, out);
    return;
  }
  const __m512i addv = _mm512_set1_epi16(static_cast<int16_t>(add));
  for (int64_t i = 0; i < n; i += 64) {
    __m512i w0, w1;
    e4m3x64_to_bf16(t, _mm512_loadu_si512(codes + i), addv, &w0, &w1);
    _mm512_storeu_si512(out + i, w0);
    _mm512_storeu_si512(out + i + 32, w1);
  }
}

/// One token of a V32 / MODEL1 / BF16 cache -> head_dim bf16 words, bit-exact with
/// dequantize_token. `rec` is the token record, `scales` the MODEL1 scale record (V32: unused).
inline void dequant_token_avx512(const E4M3Lut& t, KvFormat format, int64_t head_dim,
                                 const uint8_t* rec, const uint8_t* scales, uint16_t* out) {
  using namespace kv_layout;
  if (format == KvFormat::kV32) {
    for (int tile = 0; tile < kV32NumTiles; ++tile) {
      const float scale = load_unaligned<float>(rec + kV32ScalesOffset + 4 * tile);
      dequant_tile_avx512(t, rec + kV32Tile * tile, kV32Tile, pow2_scale_add_f32(scale), scale,
                          out + kV32Tile * tile);
    }
    const uint8_t* rope = rec + kV32RopeOffset;
    for (int i = 0; i < kRopeBytes; i += 64)
      _mm512_storeu_si512(out + kV32NopeDim + i / 2, _mm512_loadu_si512(rope + i));
  } else if (format == KvFormat::kModel1) {
    for (int tile = 0; tile < kModel1NumTiles; ++tile) {
      const uint8_t code = scales[tile];
      dequant_tile_avx512(t, rec + kModel1Tile * tile, kModel1Tile, pow2_scale_add_ue8m0(code),
                          ue8m0_to_float(code), out + kModel1Tile * tile);
    }
    const uint8_t* rope = rec + kModel1RopeOffset;
    for (int i = 0; i < kRopeBytes; i += 64)
      _mm512_storeu_si512(out + kModel1NopeDim + i / 2, _mm512_loadu_si512(rope + i));
  } else {
    for (int64_t i = 0; i < head_dim; i += 32)
      _mm512_storeu_si512(out + i, _mm512_loadu_si512(rec + 2 * i));
  }
}

}  // namespace
}  // namespace openmla
