// The RNE encoders for e4m3 and ue8m0 (fp16 is inline in dtype.h).
#include "core/dtype.h"

namespace openmla {

uint8_t float_to_e4m3(float f) {
  // Integer arithmetic on the fp32 bits (no libm call: this is the per-element step of every
  // cache quantiser). Normal range: round the 23-bit mantissa to 3 bits, ties to even, a carry
  // moves into the exponent. Below 2^-6: the subnormal grid of step 2^-9 (8 steps is the smallest
  // normal), rounded to nearest even by the 2^23 magic-number add.
  const uint32_t bits = float_bits(f);
  const uint8_t sign = (bits >> 31) ? 0x80 : 0x00;
  const uint32_t a = bits & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) return sign | 0x7F;  // inf, NaN
  if (a < 0x3C800000u) {                     // below 2^-6
    const float t = bits_float(a) * 512.0f + 8388608.0f;
    return sign | static_cast<uint8_t>(static_cast<int>(t - 8388608.0f));
  }
  const uint32_t r = a + 0x7FFFFu + ((a >> 20) & 1u);
  const int exponent = static_cast<int>(r >> 23) - 127 + 7;
  const int mantissa = static_cast<int>((r >> 20) & 7u);
  if (exponent > 15 || (exponent == 15 && mantissa == 7)) return sign | 0x7F;
  return sign | static_cast<uint8_t>((exponent << 3) | mantissa);
}

void bf16_to_e4m3_scaled(const uint16_t* in, int64_t n, float scale, uint8_t* out) {
  const uint32_t bits = float_bits(scale);
  const uint32_t exponent = (bits >> 23) & 0xFFu;
  // 2^k with k in [-126, 126]: 1 / 2^k = 2^-k is a normal float, and x * 2^-k rounds the same real
  // number x / 2^k does.
  if ((bits & 0x807FFFFFu) == 0 && exponent >= 1 && exponent <= 253) {
    const float inv = bits_float((254u - exponent) << 23);
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_e4m3(bf16_to_float(in[i]) * inv);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_e4m3(bf16_to_float(in[i]) / scale);
  }
}

uint8_t float_to_ue8m0(float f) {
  if (std::isnan(f) || std::isinf(f) || f < 0.0f) return 0xFF;
  if (f <= bits_float(0x00400000u)) return 0;
  int e;
  const float m = std::frexp(f, &e);  // f = m * 2^e, m in [0.5, 1) -> f = (2m) * 2^(e-1)
  int exponent = e - 1 + 127;
  const float frac = m * 2.0f;
  if (frac > 1.5f || (frac == 1.5f && (exponent & 1))) ++exponent;
  if (exponent < 0) return 0;
  if (exponent >= 255) return 0xFF;
  return static_cast<uint8_t>(exponent);
}

}  // namespace openmla
