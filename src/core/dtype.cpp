// The RNE encoders for e4m3 and ue8m0 (fp16 is inline in dtype.h).
#include "core/dtype.h"

namespace openmla {

uint8_t float_to_e4m3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f) || std::isinf(f)) return sign | 0x7F;
  const float a = std::fabs(f);
  if (a < 0.015625f) {  // below 2^-6: subnormal grid of step 2^-9; 8 steps is the smallest normal
    return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  int exponent = e - 1 + 7;
  int mantissa = static_cast<int>(std::nearbyint((m * 2.0f - 1.0f) * 8.0f));
  if (mantissa == 8) {
    mantissa = 0;
    ++exponent;
  }
  if (exponent > 15 || (exponent == 15 && mantissa == 7)) return sign | 0x7F;
  return sign | static_cast<uint8_t>((exponent << 3) | mantissa);
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
