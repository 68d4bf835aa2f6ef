// Exact scalar conversions between float and the storage dtypes: bf16, fp16, float8 e4m3fn and
// ue8m0 (float8_e8m0fnu). Rounding is round-to-nearest-even everywhere, as PyTorch does.
// e4m3fn: finite only, max 448, 0x7F/0xFF are NaN; values that round past 448 become NaN.
// ue8m0: value 2^(byte - 127), 0xFF is NaN, there is no zero.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace openmla {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x0040);  // keep sign, make quiet
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

/// Rounds a float to the nearest bf16 value and returns it as float.
inline float round_to_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

/// Exact fp16 -> float. NaN stays NaN (made quiet, sign and payload kept, as F16C does).
inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t rest = h & 0x7FFFu;
  if (rest >= 0x7C00u) {
    const uint32_t quiet = rest > 0x7C00u ? 0x00400000u : 0u;
    return bits_float(sign | 0x7F800000u | quiet | ((rest & 0x3FFu) << 13));
  }
  if (rest >= 0x0400u) return bits_float(sign | ((rest << 13) + 0x38000000u));  // rebias 15 -> 127
  return bits_float(sign | float_bits(static_cast<float>(rest) * 5.9604644775390625e-08f));
}

/// float -> fp16, round-to-nearest-even with integer arithmetic (cheap enough for per-element
/// output rounding). At or above 65520 (the tie above 65504) gives inf; NaN gives sign | 0x7E00.
inline uint16_t float_to_fp16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7E00u;
  if (a >= 0x477FF000u) return sign | 0x7C00u;
  if (a >= 0x38800000u) {  // >= 2^-14: normal; a rounding carry may bump the exponent
    const uint32_t r = a - 0x38000000u;
    return sign | static_cast<uint16_t>((r + 0xFFFu + ((r >> 13) & 1u)) >> 13);
  }
  // Subnormal: after adding 0.5 the float step is 2^-24, so the FPU's RNE add does the rounding.
  return sign | static_cast<uint16_t>(float_bits(bits_float(a) + 0.5f) - 0x3F000000u);
}

namespace detail {
/// fp32 bit pattern of an e4m3fn code, built with integer arithmetic only (usable in constexpr).
constexpr uint32_t e4m3_code_to_f32_bits(uint32_t code) {
  const uint32_t sign = (code & 0x80u) << 24;
  const uint32_t exponent = (code >> 3) & 0xFu;
  uint32_t mantissa = code & 0x7u;
  if (exponent == 0xF && mantissa == 0x7) return sign | 0x7FC00000u;
  if (exponent == 0) {  // subnormal: mantissa * 2^-9, renormalised for fp32
    if (mantissa == 0) return sign;
    int32_t e = -6;
    while ((mantissa & 0x8u) == 0) {
      mantissa <<= 1;
      --e;
    }
    return sign | (static_cast<uint32_t>(e + 127) << 23) | ((mantissa & 0x7u) << 20);
  }
  return sign | ((exponent - 7 + 127) << 23) | (mantissa << 20);
}
struct E4M3Table {
  uint32_t bits[256];
  constexpr E4M3Table() : bits() {
    for (uint32_t c = 0; c < 256; ++c) bits[c] = e4m3_code_to_f32_bits(c);
  }
};
inline constexpr E4M3Table kE4M3Table{};
}  // namespace detail

/// Decodes one e4m3fn code (all 256 codes, subnormals and NaN included) through a table.
inline float e4m3_to_float(uint8_t code) { return bits_float(detail::kE4M3Table.bits[code]); }
uint8_t float_to_e4m3(float f);
/// out[i] = float_to_e4m3(bf16 in[i] / scale) for i < n, the quantisers' element loop: one call per
/// block, and a multiply by the exact reciprocal when scale is a normal power of two (the same
/// rounded quotient), else the division.
void bf16_to_e4m3_scaled(const uint16_t* in, int64_t n, float scale, uint8_t* out);

inline float ue8m0_to_float(uint8_t code) {
  if (code == 0xFF) return std::nanf("");
  if (code == 0) return bits_float(0x00400000u);  // 2^-127 is an fp32 subnormal
  return bits_float(static_cast<uint32_t>(code) << 23);
}
/// Nearest power of two (ties to the even exponent byte); NaN, inf, zero and negatives give 0xFF
/// except +0 and tiny values, which clamp to 2^-127 (code 0).
uint8_t float_to_ue8m0(float f);

/// Reads an unaligned little-endian value from a byte pointer.
template <typename T>
inline T load_unaligned(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <typename T>
inline void store_unaligned(void* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace openmla
