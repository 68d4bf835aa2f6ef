// Exact FP8 (e4m3fn) -> bf16 dequantisation helpers without intrinsics, shared by every CPU
// kernel (the ISA-specific fast paths live in fp8_convert_<isa>.h).
//
// Every e4m3 value has at most 4 significant bits, so it is exact in bf16; its bf16 pattern is
// kE4M3Bf16[code] (NaN -> 0x7FC0, as float_to_bf16 of the fp32 NaN). FlashMLA's scales are
// powers of two; multiplying by 2^e is then exact and equals adding e to the bf16 exponent field
// of every non-zero, non-NaN value (no overflow/underflow while |e| <= 100). Other scales (NaN,
// non power of two, extreme) take the exact path: float_to_bf16(e4m3_to_float(c) * scale), the
// same expression as dequantize_token. No float operation here sees a denormal.
// Everything has internal linkage: the header is compiled under different ISA flags.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace openmla {
namespace {

struct E4M3Bf16Table {
  uint16_t bits[256];
  constexpr E4M3Bf16Table() : bits() {
    for (uint32_t c = 0; c < 256; ++c)
      bits[c] = static_cast<uint16_t>(detail::e4m3_code_to_f32_bits(c) >> 16);
  }
};
inline constexpr E4M3Bf16Table kE4M3Bf16{};

/// bf16 exponent increment (e << 7) for a power-of-two fp32 scale 2^e with |e| <= 100, or -1
/// when the scale needs the exact path.
inline int32_t pow2_scale_add_f32(float scale) {
  const uint32_t u = float_bits(scale);
  if ((u & 0x807FFFFFu) != 0) return -1;
  const int32_t e = static_cast<int32_t>(u >> 23);
  if (e < 27 || e > 227) return -1;
  return (e - 127) * 128 & 0xFFFF;
}
/// Same for a ue8m0 scale byte.
inline int32_t pow2_scale_add_ue8m0(uint8_t code) {
  if (code < 27 || code > 227) return -1;
  return (static_cast<int32_t>(code) - 127) * 128 & 0xFFFF;
}

/// Exact path for one tile: out[i] = bf16(e4m3(codes[i]) * scale).
inline void dequant_tile_exact(const uint8_t* codes, int64_t n, float scale, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(e4m3_to_float(codes[i]) * scale);
}

/// Portable tile dequant (used by the AVX2 kernel and tests of the fast paths).
inline void dequant_tile_portable(const uint8_t* codes, int64_t n, int32_t add, float scale,
                                  uint16_t* out) {
  if (add < 0) {
    dequant_tile_exact(codes, n, scale, out);
    return;
  }
  const uint16_t a = static_cast<uint16_t>(add);
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t c = codes[i];
    const uint8_t m = c & 0x7F;
    const uint16_t inc = (m != 0 && m != 0x7F) ? a : 0;
    out[i] = static_cast<uint16_t>(kE4M3Bf16.bits[c] + inc);
  }
}

}  // namespace
}  // namespace openmla
