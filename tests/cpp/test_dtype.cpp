// Exhaustive and constructed-case tests of the scalar conversions in core/dtype.h, each checked
// against an independent formula written here (sign / exponent / mantissa arithmetic in double).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "support/test_support.h"

namespace {

using namespace openmla;
using openmla_test::model_e4m3_encode;
using openmla_test::model_e4m3_value;

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

bool is_e4m3_nan(uint8_t c) { return (c & 0x7F) == 0x7F; }

// ---------------------------------------------------------------- e4m3

TEST(E4M3, AllCodesDecodeToSignExponentMantissaFormula) {
  for (int c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    const float got = e4m3_to_float(code);
    const bool negative = c & 0x80;
    const int e = (c >> 3) & 0xF, m = c & 7;
    if (e == 15 && m == 7) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c;
      continue;
    }
    const double magnitude = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
    const double expected = negative ? -magnitude : magnitude;
    EXPECT_EQ(static_cast<double>(got), expected) << "code " << c;
    EXPECT_EQ(std::signbit(got), negative) << "code " << c;  // covers -0 (0x80)
  }
}

TEST(E4M3, SpecialCodesHaveDocumentedValues) {
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_float(0xFE), -448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_to_float(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_to_float(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(e4m3_to_float(0x38), 1.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_float(0xFF)));
  EXPECT_FALSE(std::signbit(e4m3_to_float(0x00)));
  EXPECT_TRUE(std::signbit(e4m3_to_float(0x80)));
  EXPECT_EQ(e4m3_to_float(0x80), 0.0f);
}

TEST(E4M3, EncodeRoundTripsEveryFiniteCode) {
  for (int c = 0; c < 256; ++c) {
    if (is_e4m3_nan(static_cast<uint8_t>(c))) continue;
    EXPECT_EQ(float_to_e4m3(e4m3_to_float(static_cast<uint8_t>(c))), c) << "code " << c;
  }
}

TEST(E4M3, EveryMidpointBetweenAdjacentValuesRoundsToEvenCode) {
  for (int sign = 0; sign < 2; ++sign) {
    for (int c = 0; c < 0x7E; ++c) {  // pairs (c, c+1) of adjacent positive finite values
      const double lo = model_e4m3_value(static_cast<uint8_t>(c));
      const double hi = model_e4m3_value(static_cast<uint8_t>(c + 1));
      const float mid = static_cast<float>((lo + hi) / 2);  // exact: needs 5 significant bits
      ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
      const int even = (c % 2 == 0) ? c : c + 1;
      const uint8_t s = sign ? 0x80 : 0x00;
      const float m = sign ? -mid : mid;
      EXPECT_EQ(float_to_e4m3(m), s | even) << "midpoint of codes " << c << "," << c + 1;
      // Just off the midpoint the nearer value wins.
      EXPECT_EQ(float_to_e4m3(std::nextafter(m, 0.0f)), s | c) << "below midpoint " << c;
      EXPECT_EQ(float_to_e4m3(std::nextafter(m, sign ? -kInf : kInf)), s | (c + 1))
          << "above midpoint " << c;
    }
  }
}

TEST(E4M3, ValuesBeyond448SaturateUntilTheTieThenBecomeNaN) {
  EXPECT_EQ(float_to_e4m3(448.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3(449.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3(464.0f), 0x7E);  // tie between 448 (even code) and 480: even wins
  EXPECT_EQ(float_to_e4m3(-464.0f), 0xFE);
  EXPECT_TRUE(is_e4m3_nan(float_to_e4m3(std::nextafter(464.0f, kInf))));
  EXPECT_TRUE(is_e4m3_nan(float_to_e4m3(465.0f)));
  EXPECT_TRUE(is_e4m3_nan(float_to_e4m3(480.0f)));
  EXPECT_TRUE(is_e4m3_nan(float_to_e4m3(1e6f)));
  EXPECT_TRUE(is_e4m3_nan(float_to_e4m3(3.0e38f)));
  EXPECT_EQ(float_to_e4m3(kInf), 0x7F);
  EXPECT_EQ(float_to_e4m3(-kInf), 0xFF);
  EXPECT_TRUE(is_e4m3_nan(float_to_e4m3(kNaN)));
  EXPECT_TRUE(is_e4m3_nan(float_to_e4m3(-kNaN)));
}

TEST(E4M3, TinyValuesFlushToSignedZeroWithTiesToEven) {
  const float smallest = std::ldexp(1.0f, -9);
  EXPECT_EQ(float_to_e4m3(smallest / 2), 0x00);   // tie between 0 and 2^-9 -> 0 (even)
  EXPECT_EQ(float_to_e4m3(-smallest / 2), 0x80);  // keeps the sign
  EXPECT_EQ(float_to_e4m3(std::nextafter(smallest / 2, 1.0f)), 0x01);
  EXPECT_EQ(float_to_e4m3(-std::nextafter(smallest / 2, 1.0f)), 0x81);
  EXPECT_EQ(float_to_e4m3(smallest / 4), 0x00);
  EXPECT_EQ(float_to_e4m3(std::ldexp(1.0f, -140)), 0x00);
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::denorm_min()), 0x00);
  EXPECT_EQ(float_to_e4m3(-std::numeric_limits<float>::denorm_min()), 0x80);
  EXPECT_EQ(float_to_e4m3(1.5f * smallest), 0x02);  // tie 1 vs 2 -> 2
  EXPECT_EQ(float_to_e4m3(2.5f * smallest), 0x02);  // tie 2 vs 3 -> 2
  EXPECT_EQ(float_to_e4m3(7.5f * smallest), 0x08);  // tie subnormal 7 vs smallest normal
  EXPECT_EQ(float_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(float_to_e4m3(-0.0f), 0x80);
}

TEST(E4M3, EncodeOfEveryBf16PatternMatchesExhaustiveNearestSearch) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_float(static_cast<uint16_t>(h));
    const uint8_t got = float_to_e4m3(f);
    const uint8_t want = model_e4m3_encode(static_cast<double>(f));
    if (std::isnan(f) || is_e4m3_nan(want)) {
      EXPECT_TRUE(is_e4m3_nan(got)) << "bf16 0x" << std::hex << h;
    } else {
      EXPECT_EQ(got, want) << "bf16 0x" << std::hex << h << " = " << f;
    }
  }
}

// ---------------------------------------------------------------- bf16

TEST(BF16, AllPatternsDecodeToFormulaAndRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    const float f = bf16_to_float(b);
    const bool negative = h & 0x8000;
    const int e = (h >> 7) & 0xFF, m = h & 0x7F;
    if (e == 0xFF) {
      if (m == 0) {
        EXPECT_EQ(f, negative ? -kInf : kInf);
        EXPECT_EQ(float_to_bf16(f), b);
      } else {
        EXPECT_TRUE(std::isnan(f));
        const uint16_t back = float_to_bf16(f);
        EXPECT_EQ(back & 0x7F80, 0x7F80) << std::hex << h;
        EXPECT_NE(back & 0x7F, 0) << "NaN must stay NaN, pattern 0x" << std::hex << h;
        EXPECT_EQ(back & 0x8000, h & 0x8000) << "NaN sign, pattern 0x" << std::hex << h;
      }
      continue;
    }
    const double magnitude = e == 0 ? std::ldexp(m, -133) : std::ldexp(128 + m, e - 134);
    EXPECT_EQ(static_cast<double>(f), negative ? -magnitude : magnitude) << std::hex << h;
    EXPECT_EQ(std::signbit(f), negative);
    EXPECT_EQ(float_to_bf16(f), b) << "round trip of 0x" << std::hex << h;
  }
}

TEST(BF16, FloatTiesRoundToEvenInBothDirections) {
  int checked = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const int e = (h >> 7) & 0xFF;
    if (e == 0xFF) continue;
    const uint32_t tie_bits = (h << 16) | 0x8000u;  // exactly halfway to the next pattern
    const float tie = bits_float(tie_bits);
    const uint16_t even = (h & 1) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    EXPECT_EQ(float_to_bf16(tie), even) << "tie above 0x" << std::hex << h;
    EXPECT_EQ(float_to_bf16(bits_float(tie_bits - 1)), h) << "just below tie 0x" << std::hex << h;
    EXPECT_EQ(float_to_bf16(bits_float(tie_bits + 1)), static_cast<uint16_t>(h + 1))
        << "just above tie 0x" << std::hex << h;
    ++checked;
  }
  EXPECT_GT(checked, 60000);
  // Named examples: 1 + 2^-8 ties between 1 (0x3F80, even) and 1 + 2^-7 (0x3F81).
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  // 1 + 3 * 2^-8 ties between 0x3F81 (odd) and 0x3F82 (even) -> rounds up.
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  // The largest finite bf16 (0x7F7F, odd) plus half a step rounds to +inf.
  EXPECT_EQ(float_to_bf16(bits_float(0x7F7F8000u)), 0x7F80);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);
}

TEST(BF16, NaNWithOnlyLowMantissaBitsStaysNaN) {
  for (uint32_t bits : {0x7F800001u, 0xFF800001u, 0x7F807FFFu, 0x7FC00000u, 0xFFFFFFFFu}) {
    const uint16_t h = float_to_bf16(bits_float(bits));
    EXPECT_EQ(h & 0x7F80, 0x7F80) << std::hex << bits;
    EXPECT_NE(h & 0x7F, 0) << "NaN 0x" << std::hex << bits << " became inf";
    EXPECT_EQ(h >> 15, bits >> 31) << "sign of NaN 0x" << std::hex << bits;
  }
  EXPECT_TRUE(std::isnan(round_to_bf16(kNaN)));
}

// ---------------------------------------------------------------- fp16

double fp16_formula(uint32_t h) {
  const bool negative = h & 0x8000;
  const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
  double magnitude;
  if (e == 0x1F)
    magnitude = m ? std::numeric_limits<double>::quiet_NaN() : INFINITY;
  else if (e == 0)
    magnitude = std::ldexp(m, -24);
  else
    magnitude = std::ldexp(1024 + m, e - 25);
  return negative ? -magnitude : magnitude;
}

TEST(FP16, AllPatternsDecodeToFormulaAndRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_float(static_cast<uint16_t>(h));
    const double want = fp16_formula(h);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << h;
      EXPECT_TRUE(((float_to_fp16(f) >> 10) & 0x1F) == 0x1F && (float_to_fp16(f) & 0x3FF) != 0)
          << "NaN must stay NaN, 0x" << std::hex << h;
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), want) << std::hex << h;
    EXPECT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << h;
    EXPECT_EQ(float_to_fp16(f), h) << "round trip of 0x" << std::hex << h;
  }
}

TEST(FP16, MidpointsBetweenAllAdjacentFiniteValuesRoundToEven) {
  for (uint32_t h = 0; h < 0x7C00; ++h) {  // h and h+1 both finite or h+1 = +inf (0x7C00)
    const double lo = fp16_formula(h);
    const double hi = h + 1 == 0x7C00 ? 65536.0 : fp16_formula(h + 1);
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    const uint16_t even = static_cast<uint16_t>((h & 1) ? h + 1 : h);
    EXPECT_EQ(float_to_fp16(mid), even) << "midpoint above 0x" << std::hex << h;
    EXPECT_EQ(float_to_fp16(-mid), even | 0x8000) << "negative midpoint above 0x" << std::hex << h;
    EXPECT_EQ(float_to_fp16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
  }
}

TEST(FP16, OverflowGoesToInfinityAndSubnormalsRoundCorrectly) {
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7C00);  // tie with the next step (even) = inf
  EXPECT_EQ(float_to_fp16(-65520.0f), 0xFC00);
  EXPECT_EQ(float_to_fp16(1e6f), 0x7C00);
  EXPECT_EQ(float_to_fp16(kInf), 0x7C00);
  EXPECT_EQ(float_to_fp16(-kInf), 0xFC00);
  const float smallest = std::ldexp(1.0f, -24);
  EXPECT_EQ(float_to_fp16(smallest), 0x0001);
  EXPECT_EQ(float_to_fp16(smallest / 2), 0x0000);  // tie -> 0
  EXPECT_EQ(float_to_fp16(-smallest / 2), 0x8000);
  EXPECT_EQ(float_to_fp16(std::nextafter(smallest / 2, 1.0f)), 0x0001);
  EXPECT_EQ(float_to_fp16(1.5f * smallest), 0x0002);
  EXPECT_EQ(float_to_fp16(std::ldexp(1023.5f, -24)), 0x0400);  // largest subnormal tie -> normal
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(float_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

// ---------------------------------------------------------------- ue8m0

TEST(UE8M0, AllCodesDecodeToPowersOfTwo) {
  for (int c = 0; c < 256; ++c) {
    const float f = ue8m0_to_float(static_cast<uint8_t>(c));
    if (c == 0xFF) {
      EXPECT_TRUE(std::isnan(f));
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), std::ldexp(1.0, c - 127)) << "code " << c;
  }
  EXPECT_EQ(ue8m0_to_float(0), std::ldexp(1.0f, -127));  // no zero: code 0 is 2^-127
  EXPECT_EQ(ue8m0_to_float(127), 1.0f);
  EXPECT_EQ(ue8m0_to_float(114), std::ldexp(1.0f, -13));
}

TEST(UE8M0, EncodeOfEveryPowerOfTwoGivesItsExponentByte) {
  for (int e = -127; e <= 127; ++e)
    EXPECT_EQ(float_to_ue8m0(std::ldexp(1.0f, e)), e + 127) << "2^" << e;
  for (int c = 0; c < 255; ++c)
    EXPECT_EQ(float_to_ue8m0(ue8m0_to_float(static_cast<uint8_t>(c))), c) << "code " << c;
  EXPECT_EQ(float_to_ue8m0(kNaN), 0xFF);
  EXPECT_EQ(float_to_ue8m0(kInf), 0xFF);
  EXPECT_EQ(float_to_ue8m0(-1.0f), 0xFF);
}

TEST(E4M3, ScaledBlockEncodeEqualsDividingEveryElement) {
  // Every bf16 pattern against every power-of-two scale 2^-127 .. 2^127 (the reciprocal path and
  // its edges), non-powers of two, zero, inf and NaN (the division path).
  std::vector<uint16_t> in(65536);
  for (uint32_t i = 0; i < 65536; ++i) in[i] = static_cast<uint16_t>(i);
  std::vector<float> scales = {0.0f, -0.0f, kInf, kNaN, 3.0f, 0.7f, -2.0f, 1e-40f, 448.0f};
  for (int e = -127; e <= 127; ++e) scales.push_back(std::ldexp(1.0f, e));
  std::vector<uint8_t> out(in.size());
  for (float scale : scales) {
    bf16_to_e4m3_scaled(in.data(), static_cast<int64_t>(in.size()), scale, out.data());
    int wrong = 0;
    for (uint32_t i = 0; i < 65536; ++i)
      wrong += out[i] != float_to_e4m3(bf16_to_float(in[i]) / scale);
    EXPECT_EQ(wrong, 0) << "scale " << scale;
  }
}

}  // namespace
