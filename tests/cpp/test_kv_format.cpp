// KV-cache byte formats: sizes, hand-worked golden bytes for V32 and MODEL1, the ue8m0 scale
// rule, NaN propagation, bit-exact dequantisation against an independent model, padded page
// strides, token writes and the logical-to-physical index conversion.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "openmla/kv_cache.h"
#include "support/test_support.h"

namespace {

using namespace openmla_test;
using openmla::kv_bytes_per_token;
using openmla::kv_page_bytes;

const std::vector<int64_t> kPageSizes = {1, 2, 53, 61, 64, 69, 576};

uint32_t le32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24); }
uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
bool is_e4m3_nan(uint8_t c) { return (c & 0x7F) == 0x7F; }

// ---------------------------------------------------------------- sizes

TEST(KvSizes, BytesPerTokenPerFormat) {
  int64_t bytes = 0;
  ASSERT_TRUE(kv_bytes_per_token(KvFormat::kV32, 576, &bytes).ok());
  EXPECT_EQ(bytes, 656);
  ASSERT_TRUE(kv_bytes_per_token(KvFormat::kModel1, 512, &bytes).ok());
  EXPECT_EQ(bytes, 584);
  ASSERT_TRUE(kv_bytes_per_token(KvFormat::kBF16, 576, &bytes).ok());
  EXPECT_EQ(bytes, 1152);
  ASSERT_TRUE(kv_bytes_per_token(KvFormat::kBF16, 512, &bytes).ok());
  EXPECT_EQ(bytes, 1024);
  EXPECT_FALSE(kv_bytes_per_token(KvFormat::kBF16, 0, &bytes).ok());
  EXPECT_FALSE(kv_bytes_per_token(KvFormat::kV32, 576, nullptr).ok());
}

TEST(KvSizes, PageBytesV32IsExactly656PerToken) {
  // Hand-computed: 656 * P.
  const int64_t want[] = {656, 1312, 34768, 40016, 41984, 45264, 377856};
  for (size_t i = 0; i < kPageSizes.size(); ++i) {
    int64_t bytes = 0;
    ASSERT_TRUE(kv_page_bytes(KvFormat::kV32, kPageSizes[i], 576, 1, &bytes).ok());
    EXPECT_EQ(bytes, want[i]) << "page size " << kPageSizes[i];
  }
}

TEST(KvSizes, PageBytesModel1RoundsUpTo576Multiple) {
  // Hand-computed: ceil(584 P / 576) * 576.
  const int64_t want[] = {1152, 1728, 31104, 35712, 37440, 40320, 336384};
  for (size_t i = 0; i < kPageSizes.size(); ++i) {
    int64_t bytes = 0;
    ASSERT_TRUE(kv_page_bytes(KvFormat::kModel1, kPageSizes[i], 512, 1, &bytes).ok());
    EXPECT_EQ(bytes, want[i]) << "page size " << kPageSizes[i];
    EXPECT_EQ(bytes % 576, 0);
    EXPECT_GE(bytes, 584 * kPageSizes[i]);
  }
}

TEST(KvSizes, PageBytesBf16CountsHeadsAndHeadDim) {
  int64_t bytes = 0;
  ASSERT_TRUE(kv_page_bytes(KvFormat::kBF16, 64, 576, 1, &bytes).ok());
  EXPECT_EQ(bytes, 64 * 576 * 2);
  ASSERT_TRUE(kv_page_bytes(KvFormat::kBF16, 61, 576, 4, &bytes).ok());
  EXPECT_EQ(bytes, 61 * 576 * 2 * 4);
  EXPECT_FALSE(kv_page_bytes(KvFormat::kBF16, 0, 576, 1, &bytes).ok());
  EXPECT_FALSE(kv_page_bytes(KvFormat::kV32, 64, 576, 2, &bytes).ok());  // FP8: one head
}

// ---------------------------------------------------------------- golden bytes

/// A V32 latent whose quantised bytes were worked out by hand (see the comments).
std::vector<uint16_t> v32_golden_latent() {
  std::vector<uint16_t> x(576, 0);
  // Tile 0: amax 56 = 448 * 2^-3 -> scale 2^-3.
  x[0] = bf16_exact(56.0f);               // 448          -> 0x7E
  x[1] = bf16_exact(-1.0f);               // -8 = -2^3     -> 0xD0
  x[2] = bf16_exact(std::ldexp(1.0f, -12));  // 2^-9      -> 0x01 (smallest subnormal)
  x[3] = bf16_exact(0.0390625f);          // 0.3125 = 1.25*2^-2 -> 0x2A
  x[4] = bf16_exact(std::ldexp(1.0f, -13));  // 2^-10 = half the smallest subnormal -> 0x00
  x[5] = bf16_exact(-std::ldexp(1.0f, -13)); // -> 0x80
  x[6] = bf16_exact(0.1328125f);          // 1.0625: tie 1.0 / 1.125 -> even 1.0 -> 0x38
  x[7] = bf16_exact(0.1484375f);          // 1.1875: tie 1.125 / 1.25 -> even 1.25 -> 0x3A
  x[8] = bf16_exact(-52.0f);              // -416 = -1.625*2^8 -> 0xFD
  // Tile 1: all zero -> amax 0 -> scale max(0, 1e-4) rounded up = 2^-13; codes 0.
  // Tile 2: amax 1 -> 1/448 -> 2^-8.
  x[256] = bf16_exact(1.0f);                      // 256 = 2^8 -> 0x78
  x[257] = bf16_exact(0.5f);                      // 128 -> 0x70
  x[258] = bf16_exact(3 * std::ldexp(1.0f, -17)); // 3*2^-9 -> 0x03
  // Tile 3: amax 57 -> 57/448 = 0.127 -> 2^-2.
  x[384] = bf16_exact(57.0f);                         // 228 -> 224 = 1.75*2^7 -> 0x76
  x[385] = bf16_exact(2.5f * std::ldexp(1.0f, -11));  // 2.5*2^-9: tie 2/3 -> 0x02
  x[386] = bf16_exact(-std::ldexp(1.0f, -20));        // 2^-18 -> -0 -> 0x80
  for (int i = 0; i < 64; ++i) x[512 + i] = static_cast<uint16_t>(0x3F80 + 3 * i);
  x[575] = 0xC2F7;
  return x;
}

void expect_v32_golden_record(const uint8_t* rec) {
  const std::vector<uint16_t> x = v32_golden_latent();
  const uint8_t tile0[] = {0x7E, 0xD0, 0x01, 0x2A, 0x00, 0x80, 0x38, 0x3A, 0xFD};
  for (int i = 0; i < 9; ++i) EXPECT_EQ(rec[i], tile0[i]) << "byte " << i;
  for (int i = 9; i < 128; ++i) EXPECT_EQ(rec[i], 0x00) << "byte " << i;
  for (int i = 128; i < 256; ++i) EXPECT_EQ(rec[i], 0x00) << "byte " << i;
  EXPECT_EQ(rec[256], 0x78);
  EXPECT_EQ(rec[257], 0x70);
  EXPECT_EQ(rec[258], 0x03);
  EXPECT_EQ(rec[384], 0x76);
  EXPECT_EQ(rec[385], 0x02);
  EXPECT_EQ(rec[386], 0x80);
  // fp32 scales, little endian, at [512, 528).
  const uint8_t scales[16] = {0x00, 0x00, 0x00, 0x3E,   // 2^-3
                              0x00, 0x00, 0x00, 0x39,   // 2^-13
                              0x00, 0x00, 0x80, 0x3B,   // 2^-8
                              0x00, 0x00, 0x80, 0x3E};  // 2^-2
  for (int i = 0; i < 16; ++i) EXPECT_EQ(rec[512 + i], scales[i]) << "scale byte " << i;
  // RoPE bf16 little endian at [528, 656).
  EXPECT_EQ(rec[528], 0x80);
  EXPECT_EQ(rec[529], 0x3F);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(le16(rec + 528 + 2 * i), x[512 + i]) << "rope " << i;
  EXPECT_EQ(rec[654], 0xF7);
  EXPECT_EQ(rec[655], 0xC2);
}

TEST(KvGolden, V32HandWorkedBytesAtDocumentedOffsetsWithUpstreamPagePadding) {
  // Two pages of two tokens, stride(0) = (P + 1) * 656 like upstream; golden token at page 1,
  // offset 1; the other tokens are zero latents.
  const int64_t P = 2, nb = 2, stride0 = (P + 1) * 656;
  std::vector<uint16_t> latents(nb * P * 576, 0);
  const std::vector<uint16_t> g = v32_golden_latent();
  std::copy(g.begin(), g.end(), latents.begin() + 3 * 576);
  std::vector<uint8_t> cache(nb * stride0, 0xAB);
  const TensorView src = contiguous_view(latents.data(), DType::kBF16, {nb, P, 1, 576});
  const TensorView dst = openmla::make_strided_tensor(cache.data(), DType::kU8, {nb, P, 1, 656},
                                                      {stride0, 656, 656, 1});
  ASSERT_TRUE(openmla::quantize_kv_cache(src, KvFormat::kV32, dst).ok());
  expect_v32_golden_record(cache.data() + stride0 + 656);
  // A zero latent: codes 0, four 2^-13 scales, zero RoPE.
  const uint8_t* zero_rec = cache.data() + 656;
  for (int i = 0; i < 512; ++i) ASSERT_EQ(zero_rec[i], 0);
  for (int t = 0; t < 4; ++t) EXPECT_EQ(le32(zero_rec + 512 + 4 * t), 0x39000000u);
  for (int i = 528; i < 656; ++i) ASSERT_EQ(zero_rec[i], 0);
  // Page 0's padding token is zeroed; the bytes past the view (page 1's padding) are untouched.
  for (int64_t i = 2 * 656; i < stride0; ++i) ASSERT_EQ(cache[i], 0) << "padding byte " << i;
  for (int64_t i = stride0 + 2 * 656; i < nb * stride0; ++i) ASSERT_EQ(cache[i], 0xAB) << i;
}

std::vector<uint16_t> model1_golden_latent() {
  std::vector<uint16_t> x(512, 0);
  // Tile 0 (0..63): amax 56 -> 2^-3 (ue8m0 124).
  x[0] = bf16_exact(56.0f);                   // 0x7E
  x[1] = bf16_exact(-1.0f);                   // 0xD0
  x[2] = bf16_exact(std::ldexp(1.0f, -12));   // 0x01
  x[3] = bf16_exact(std::ldexp(1.0f, -13));   // tie to 0 -> 0x00
  x[4] = bf16_exact(0.1328125f);              // 0x38
  // Tile 1 (64..127): zeros -> 2^-13 (114).
  // Tile 2 (128..191): amax 1 -> 2^-8 (119).
  x[128] = bf16_exact(1.0f);                  // 0x78
  // Tile 3 (192..255): amax 57 -> 2^-2 (125).
  x[192] = bf16_exact(57.0f);                 // 0x76
  // Tile 4 (256..319): amax 2^-20 < 448e-4 -> clamp -> 2^-13 (114).
  x[256] = bf16_exact(std::ldexp(1.0f, -20)); // 2^-7 = 4 * 2^-9 -> 0x04
  // Tile 5 (320..383): amax 448 -> 1 (127).
  x[320] = bf16_exact(448.0f);                // 0x7E
  x[321] = bf16_exact(-3.0f);                 // 1.5*2^1 -> 0xC4
  // Tile 6 (384..447): amax 1792 = 448 * 4 -> 4 (129).
  x[384] = bf16_exact(1792.0f);               // 0x7E
  x[385] = bf16_exact(-4.0f);                 // -1 -> 0xB8
  for (int i = 0; i < 64; ++i) x[448 + i] = static_cast<uint16_t>(0x4000 + i);
  return x;
}

TEST(KvGolden, Model1HandWorkedBytesRecordsThenScaleRecordsThenPadding) {
  const int64_t P = 2, nb = 2, page = 1728, stride0 = page + 576;
  std::vector<uint16_t> latents(nb * P * 512, 0);
  const std::vector<uint16_t> g = model1_golden_latent();
  std::copy(g.begin(), g.end(), latents.begin() + 3 * 512);  // page 1, token 1
  std::vector<uint8_t> cache(nb * stride0, 0xAB);
  const TensorView src = contiguous_view(latents.data(), DType::kBF16, {nb, P, 1, 512});
  const TensorView dst = openmla::make_strided_tensor(cache.data(), DType::kU8, {nb, P, 1, 584},
                                                      {stride0, 584, 584, 1});
  ASSERT_TRUE(openmla::quantize_kv_cache(src, KvFormat::kModel1, dst).ok());
  const uint8_t* page1 = cache.data() + stride0;
  const uint8_t* rec = page1 + 576 * 1;  // token 1's 576-byte record
  const std::vector<std::pair<int, uint8_t>> codes = {
      {0, 0x7E}, {1, 0xD0}, {2, 0x01}, {3, 0x00}, {4, 0x38}, {5, 0x00}, {64, 0x00},
      {128, 0x78}, {192, 0x76}, {256, 0x04}, {320, 0x7E}, {321, 0xC4}, {384, 0x7E}, {385, 0xB8}};
  for (auto [i, c] : codes) EXPECT_EQ(rec[i], c) << "code byte " << i;
  for (int i = 0; i < 64; ++i) EXPECT_EQ(le16(rec + 448 + 2 * i), 0x4000 + i) << "rope " << i;
  const uint8_t* sc = page1 + 576 * P + 8 * 1;  // token 1's scale record
  const uint8_t want_scales[7] = {124, 114, 119, 125, 114, 127, 129};
  for (int t = 0; t < 7; ++t) EXPECT_EQ(sc[t], want_scales[t]) << "scale " << t;
  EXPECT_EQ(sc[7], 0) << "scale pad byte";
  // Token 0 of page 1 is a zero latent: seven 2^-13 scales right after the two records.
  for (int t = 0; t < 7; ++t) EXPECT_EQ(page1[576 * P + t], 114);
  // Page 0: bytes [584 P, stride0) are padding and zeroed; page 1's padding lies past the view.
  for (int64_t i = 584 * P; i < stride0; ++i) ASSERT_EQ(cache[i], 0) << "padding byte " << i;
  for (int64_t i = stride0 + 584 * P; i < nb * stride0; ++i) ASSERT_EQ(cache[i], 0xAB) << i;
}

// ---------------------------------------------------------------- scale rule, NaN

/// Quantises one token (page of 1) and returns its record (+ scale record for MODEL1).
std::vector<uint8_t> quantize_one(KvFormat f, const std::vector<uint16_t>& latent) {
  const int64_t d = f == KvFormat::kV32 ? 576 : 512;
  const int64_t page = f == KvFormat::kV32 ? 656 : 1152;
  std::vector<uint8_t> cache(page, 0xAB);
  std::vector<uint16_t> src = latent;
  const Status st = openmla::quantize_kv_cache(
      contiguous_view(src.data(), DType::kBF16, {1, 1, 1, d}), f,
      openmla::make_strided_tensor(cache.data(), DType::kU8, {1, 1, 1, f == KvFormat::kV32 ? 656 : 584},
                                   {page, f == KvFormat::kV32 ? 656 : 584, f == KvFormat::kV32 ? 656 : 584, 1}));
  EXPECT_TRUE(st.ok()) << st.to_string();
  return cache;
}

float v32_scale(const std::vector<uint8_t>& rec, int tile) {
  float s;
  std::memcpy(&s, rec.data() + 512 + 4 * tile, 4);
  return s;
}

TEST(KvScaleRule, ScaleIsSmallestPowerOfTwoAboveAmaxOver448ClampedAt1e4) {
  // (amax, log2 of the expected scale) pairs, worked out by hand.
  const std::vector<std::pair<float, int>> cases = {
      {0.0f, -13},               // clamp: 1e-4 -> 2^-13 (2^-14 = 6.1e-5 < 1e-4 < 2^-13)
      {std::ldexp(1.0f, -30), -13},
      {0.0448f, -13},            // 0.0448/448 = 1e-4 (bf16 rounding makes it a bit less)
      {0.0546875f, -13},         // /448 = 1.22e-4 -> 2^-13 = 1.22e-4 ... exact: 0.0546875 = 448*2^-13
      {0.0556640625f, -12},      // just above 448 * 2^-13
      {1.0f, -8},
      {56.0f, -3},               // exactly 448 * 2^-3
      {57.0f, -2},
      {448.0f, 0},
      {450.0f, 1},
      {std::ldexp(1.0f, 127), 119},  // 2^127 / 448 = 2^119 / 1.75
  };
  for (auto [amax, k] : cases) {
    const float a = bf(openmla::float_to_bf16(amax));
    std::vector<uint16_t> v(576, 0), m(512, 0);
    v[5] = openmla::float_to_bf16(-a);  // sign must not matter
    m[5] = openmla::float_to_bf16(-a);
    const std::vector<uint8_t> rv = quantize_one(KvFormat::kV32, v);
    EXPECT_EQ(v32_scale(rv, 0), std::ldexp(1.0f, k)) << "V32 amax " << a;
    const std::vector<uint8_t> rm = quantize_one(KvFormat::kModel1, m);
    EXPECT_EQ(rm[576], k + 127) << "MODEL1 amax " << a;
    // The largest element lands at |code| <= 448 and never becomes NaN.
    EXPECT_FALSE(is_e4m3_nan(rv[5])) << a;
    EXPECT_FALSE(is_e4m3_nan(rm[5])) << a;
  }
}

TEST(KvScaleRule, NaNLatentGivesNaNScaleAndNaNCodesInItsTileOnly) {
  std::vector<uint16_t> v(576), m(512);
  for (int i = 0; i < 576; ++i) v[i] = bf16_exact(0.25f * ((i % 7) - 3));
  for (int i = 0; i < 512; ++i) m[i] = bf16_exact(0.25f * ((i % 7) - 3));
  v[130] = kBf16NaN;  // tile 1 of V32
  m[70] = kBf16NaN;   // tile 1 of MODEL1
  const std::vector<uint8_t> rv = quantize_one(KvFormat::kV32, v);
  EXPECT_TRUE(std::isnan(v32_scale(rv, 1)));
  for (int t : {0, 2, 3}) EXPECT_EQ(v32_scale(rv, t), std::ldexp(1.0f, -9)) << t;  // 0.75/448 = 1.67e-3
  for (int i = 128; i < 256; ++i) EXPECT_TRUE(is_e4m3_nan(rv[i])) << i;
  for (int i = 0; i < 128; ++i) EXPECT_FALSE(is_e4m3_nan(rv[i])) << i;
  const std::vector<uint8_t> rm = quantize_one(KvFormat::kModel1, m);
  EXPECT_EQ(rm[576 + 1], 0xFF);
  EXPECT_EQ(rm[576 + 0], 127 - 9);
  for (int i = 64; i < 128; ++i) EXPECT_TRUE(is_e4m3_nan(rm[i])) << i;
  for (int i = 128; i < 448; ++i) EXPECT_FALSE(is_e4m3_nan(rm[i])) << i;
  // Dequantising gives NaN exactly in that tile.
  std::vector<uint16_t> out(576);
  std::vector<uint8_t> cache = rv;
  ASSERT_TRUE(openmla::dequantize_kv_cache(
                  openmla::make_strided_tensor(cache.data(), DType::kU8, {1, 1, 1, 656}, {656, 656, 656, 1}),
                  KvFormat::kV32, contiguous_view(out.data(), DType::kBF16, {1, 1, 1, 576}))
                  .ok());
  for (int i = 0; i < 512; ++i) EXPECT_EQ(std::isnan(bf(out[i])), i >= 128 && i < 256) << i;
}

// ---------------------------------------------------------------- model equivalence

/// Random latents with a per-tile magnitude spread over many binades, including exact zeros.
std::vector<uint16_t> spread_latents(int64_t tokens, int64_t d, int64_t tile, uint32_t seed) {
  Rng rng(seed);
  std::vector<uint16_t> x(static_cast<size_t>(tokens * d));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t k = 0; k < d; k += tile) {
      const int e = static_cast<int>(rng.uniform_int(-24, 10));
      for (int64_t i = k; i < std::min(d, k + tile); ++i) {
        const double v = rng.uniform_int(0, 15) == 0 ? 0.0 : rng.normal() * std::ldexp(1.0, e);
        x[t * d + i] = openmla::float_to_bf16(static_cast<float>(v));
      }
    }
  }
  return x;
}

struct FormatCase {
  KvFormat format;
  int64_t d, tile, bpt, record, pad;
};
const FormatCase kV32Case{KvFormat::kV32, 576, 128, 656, 656, 656};
const FormatCase kModel1Case{KvFormat::kModel1, 512, 64, 584, 576, 576};

/// Quantises nb pages of P tokens with padded stride and checks every byte against the model.
void check_quantise_against_model(const FormatCase& fc, int64_t P, int64_t nb, uint32_t seed) {
  SCOPED_TRACE("format " + std::string(openmla::kv_format_name(fc.format)) + " page " + std::to_string(P));
  int64_t page = 0;
  ASSERT_TRUE(kv_page_bytes(fc.format, P, fc.d, 1, &page).ok());
  const int64_t stride0 = page + fc.pad;
  ASSERT_GT(stride0, page);
  std::vector<uint16_t> latents = spread_latents(nb * P, fc.d, fc.tile, seed);
  std::vector<uint8_t> cache(static_cast<size_t>(nb * stride0), 0xAB);
  const TensorView dst = openmla::make_strided_tensor(cache.data(), DType::kU8, {nb, P, 1, fc.bpt},
                                                      {stride0, fc.bpt, fc.bpt, 1});
  ASSERT_TRUE(openmla::quantize_kv_cache(
                  contiguous_view(latents.data(), DType::kBF16, {nb, P, 1, fc.d}), fc.format, dst)
                  .ok());
  std::vector<uint8_t> rec(fc.record), sc(7);
  std::vector<uint16_t> want(fc.d), got(static_cast<size_t>(nb * P * fc.d));
  ASSERT_TRUE(openmla::dequantize_kv_cache(dst, fc.format,
                                           contiguous_view(got.data(), DType::kBF16, {nb, P, 1, fc.d}))
                  .ok());
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* pg = cache.data() + b * stride0;
    for (int64_t t = 0; t < P; ++t) {
      const uint16_t* lat = latents.data() + (b * P + t) * fc.d;
      model_quantize_token(fc.format, lat, rec.data(), sc.data());
      const uint8_t* actual = pg + t * fc.record;
      ASSERT_EQ(std::memcmp(actual, rec.data(), fc.record), 0) << "record of token " << t << " page " << b;
      const uint8_t* actual_sc = fc.format == KvFormat::kModel1 ? pg + 576 * P + 8 * t : nullptr;
      if (actual_sc) {
        ASSERT_EQ(std::memcmp(actual_sc, sc.data(), 7), 0) << "scales of token " << t;
        ASSERT_EQ(actual_sc[7], 0) << "scale pad of token " << t;
      }
      model_dequantize_token(fc.format, actual, actual_sc, want.data());
      for (int64_t i = 0; i < fc.d; ++i)
        ASSERT_EQ(got[(b * P + t) * fc.d + i], want[i]) << "dequantised element " << i << " token " << t;
    }
    if (b + 1 < nb) {
      for (int64_t i = fc.bpt * P; i < stride0; ++i) ASSERT_EQ(pg[i], 0) << "page padding " << i;
    }
  }
  // The last page's padding lies beyond the view and must be untouched.
  for (int64_t i = (nb - 1) * stride0 + fc.bpt * P; i < nb * stride0; ++i) ASSERT_EQ(cache[i], 0xAB);
}

TEST(KvQuantise, V32MatchesIndependentModelForEveryPageSizeWithPaddedStride) {
  for (int64_t P : kPageSizes) check_quantise_against_model(kV32Case, P, 2, 100 + P);
}

TEST(KvQuantise, Model1MatchesIndependentModelForEveryPageSizeWithPaddedStride) {
  for (int64_t P : kPageSizes) check_quantise_against_model(kModel1Case, P, 2, 200 + P);
}

TEST(KvDequantise, ArbitraryBytesMatchReferenceProductRules) {
  // Random bytes everywhere (any fp32 scale for V32, any ue8m0 byte for MODEL1, including NaN
  // codes and scale 0 = 2^-127): V32 = fp32 product rounded to bf16, MODEL1 = bf16 x bf16.
  for (const FormatCase& fc : {kV32Case, kModel1Case}) {
    const int64_t P = 3, nb = 2;
    int64_t page = 0;
    ASSERT_TRUE(kv_page_bytes(fc.format, P, fc.d, 1, &page).ok());
    Rng rng(7);
    std::vector<uint8_t> cache(static_cast<size_t>(nb * page));
    for (auto& b : cache) b = static_cast<uint8_t>(rng.uniform_int(0, 255));
    // Make V32 scales mostly finite so the products are interesting.
    if (fc.format == KvFormat::kV32) {
      for (int64_t s = 0; s < nb * P; ++s)
        for (int t = 0; t < 3; ++t) {
          const float sc = static_cast<float>(rng.normal() * std::ldexp(1.0, static_cast<int>(rng.uniform_int(-30, 30))));
          std::memcpy(cache.data() + s * 656 + 512 + 4 * t, &sc, 4);
        }
    } else {
      cache[576 * P] = 0;      // 2^-127: products become bf16 subnormals
      cache[576 * P + 1] = 0xFF;
      cache[576 * P + 2] = 254;  // 2^127: products overflow to inf
    }
    std::vector<uint16_t> got(static_cast<size_t>(nb * P * fc.d));
    ASSERT_TRUE(openmla::dequantize_kv_cache(
                    openmla::make_strided_tensor(cache.data(), DType::kU8, {nb, P, 1, fc.bpt},
                                                 {page, fc.bpt, fc.bpt, 1}),
                    fc.format, contiguous_view(got.data(), DType::kBF16, {nb, P, 1, fc.d}))
                    .ok());
    std::vector<uint16_t> want(fc.d);
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t t = 0; t < P; ++t) {
        const uint8_t* pg = cache.data() + b * page;
        model_dequantize_token(fc.format, pg + t * fc.record,
                               fc.format == KvFormat::kModel1 ? pg + 576 * P + 8 * t : nullptr, want.data());
        for (int64_t i = 0; i < fc.d; ++i) {
          const uint16_t g = got[(b * P + t) * fc.d + i];
          if (std::isnan(bf(want[i]))) {
            ASSERT_TRUE(std::isnan(bf(g))) << "element " << i;
          } else {
            ASSERT_EQ(g, want[i]) << openmla::kv_format_name(fc.format) << " token " << t << " element " << i;
          }
        }
      }
  }
}

TEST(KvDequantise, RopeIsCopiedVerbatimIncludingNaNPayloads) {
  std::vector<uint16_t> v(576, 0);
  for (int i = 0; i < 64; ++i) v[512 + i] = static_cast<uint16_t>(0x7F81 + i);  // signalling-like NaNs
  std::vector<uint8_t> rec = quantize_one(KvFormat::kV32, v);
  std::vector<uint16_t> out(576);
  ASSERT_TRUE(openmla::dequantize_kv_cache(
                  openmla::make_strided_tensor(rec.data(), DType::kU8, {1, 1, 1, 656}, {656, 656, 656, 1}),
                  KvFormat::kV32, contiguous_view(out.data(), DType::kBF16, {1, 1, 1, 576}))
                  .ok());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out[512 + i], 0x7F81 + i);
}

// ---------------------------------------------------------------- write_kv_tokens

/// Whole-cache quantisation vs writing every token through write_kv_tokens (shuffled order,
/// interleaved with -1 slots carrying NaN latents that must be skipped).
void check_write_tokens_matches_whole_cache(const FormatCase& fc, int64_t P, DType slot_dtype) {
  SCOPED_TRACE(std::string(openmla::kv_format_name(fc.format)) + " page " + std::to_string(P));
  const int64_t nb = 3;
  int64_t page = 0;
  ASSERT_TRUE(kv_page_bytes(fc.format, P, fc.d, 1, &page).ok());
  const int64_t stride0 = page + fc.pad;
  std::vector<uint16_t> latents = spread_latents(nb * P, fc.d, fc.tile, 11);
  std::vector<uint8_t> whole(static_cast<size_t>(nb * stride0), 0), written(whole);
  const TensorView whole_v = openmla::make_strided_tensor(whole.data(), DType::kU8, {nb, P, 1, fc.bpt},
                                                          {stride0, fc.bpt, fc.bpt, 1});
  TensorView written_v = whole_v;
  written_v.data = written.data();
  ASSERT_TRUE(openmla::quantize_kv_cache(contiguous_view(latents.data(), DType::kBF16, {nb, P, 1, fc.d}),
                                         fc.format, whole_v)
                  .ok());
  Rng rng(5);
  const std::vector<int64_t> order = rng.permutation(nb * P);
  std::vector<uint16_t> rows;
  std::vector<int64_t> slots;
  for (int64_t s : order) {
    if (rng.uniform_int(0, 3) == 0) {  // a padding row
      rows.insert(rows.end(), fc.d, kBf16NaN);
      slots.push_back(-1);
    }
    rows.insert(rows.end(), latents.begin() + s * fc.d, latents.begin() + (s + 1) * fc.d);
    slots.push_back(s);
  }
  const int64_t n = static_cast<int64_t>(slots.size());
  std::vector<int32_t> s32(slots.begin(), slots.end());
  TensorView slot_v = slot_dtype == DType::kI32 ? contiguous_view(s32.data(), DType::kI32, {n})
                                                : contiguous_view(slots.data(), DType::kI64, {n});
  const Status st = openmla::write_kv_tokens(contiguous_view(rows.data(), DType::kBF16, {n, fc.d}),
                                             slot_v, fc.format, written_v);
  ASSERT_TRUE(st.ok()) << st.to_string();
  // Page padding is not a token: compare only what the view's token records and scales cover.
  for (int64_t b = 0; b < nb; ++b)
    ASSERT_EQ(std::memcmp(whole.data() + b * stride0, written.data() + b * stride0, fc.bpt * P), 0)
        << "page " << b;
}

TEST(KvWriteTokens, SameBytesAsWholeCacheQuantisationAndSkipsNegativeSlots) {
  for (int64_t P : {1, 2, 61, 64}) {
    check_write_tokens_matches_whole_cache(kV32Case, P, DType::kI32);
    check_write_tokens_matches_whole_cache(kModel1Case, P, DType::kI64);
  }
}

TEST(KvWriteTokens, TouchesOnlyTheTargetTokenBytes) {
  for (const FormatCase& fc : {kV32Case, kModel1Case}) {
    const int64_t P = 4, nb = 2;
    int64_t page = 0;
    ASSERT_TRUE(kv_page_bytes(fc.format, P, fc.d, 1, &page).ok());
    std::vector<uint8_t> cache(static_cast<size_t>(nb * page), 0xCD), before;
    before = cache;
    std::vector<uint16_t> lat = spread_latents(1, fc.d, fc.tile, 3);
    int32_t slot = 6;  // page 1, offset 2
    ASSERT_TRUE(openmla::write_kv_tokens(
                    contiguous_view(lat.data(), DType::kBF16, {1, fc.d}),
                    contiguous_view(&slot, DType::kI32, {1}), fc.format,
                    openmla::make_strided_tensor(cache.data(), DType::kU8, {nb, P, 1, fc.bpt},
                                                 {page, fc.bpt, fc.bpt, 1}))
                    .ok());
    std::vector<uint8_t> rec(fc.record), sc(7);
    model_quantize_token(fc.format, lat.data(), rec.data(), sc.data());
    const int64_t rec_at = page + 2 * fc.record;
    const int64_t sc_at = page + 576 * P + 16;
    for (int64_t i = 0; i < nb * page; ++i) {
      if (i >= rec_at && i < rec_at + fc.record) {
        ASSERT_EQ(cache[i], rec[i - rec_at]) << i;
      } else if (fc.format == KvFormat::kModel1 && i >= sc_at && i < sc_at + 8) {
        ASSERT_EQ(cache[i], i - sc_at < 7 ? sc[i - sc_at] : 0) << i;
      } else {
        ASSERT_EQ(cache[i], before[i]) << "byte " << i << " changed";
      }
    }
  }
}

TEST(KvWriteTokens, Bf16CacheStoresLatentsVerbatim) {
  const int64_t P = 3, nb = 2, d = 576;
  std::vector<uint16_t> cache(nb * P * d, 0);
  std::vector<uint16_t> lat = Rng(9).bf16_normal(2 * d, 1.0, 10.0);
  std::vector<int64_t> slots = {5, 1};
  ASSERT_TRUE(openmla::write_kv_tokens(contiguous_view(lat.data(), DType::kBF16, {2, d}),
                                       contiguous_view(slots.data(), DType::kI64, {2}), KvFormat::kBF16,
                                       contiguous_view(cache.data(), DType::kBF16, {nb, P, 1, d}))
                  .ok());
  for (int64_t i = 0; i < d; ++i) {
    EXPECT_EQ(cache[5 * d + i], lat[i]);
    EXPECT_EQ(cache[1 * d + i], lat[d + i]);
    EXPECT_EQ(cache[0 * d + i], 0);
  }
}

TEST(KvWriteTokens, RejectsSlotsPastTheEndWithoutWritingAnything) {
  const int64_t P = 2, nb = 2;
  std::vector<uint8_t> cache(nb * P * 656, 0xCD);
  const std::vector<uint8_t> before = cache;
  std::vector<uint16_t> lat(2 * 576, bf16_exact(1.0f));
  for (int32_t bad : {4, 5, 1 << 30}) {
    std::vector<int32_t> slots = {0, bad};
    const Status st = openmla::write_kv_tokens(
        contiguous_view(lat.data(), DType::kBF16, {2, 576}), contiguous_view(slots.data(), DType::kI32, {2}),
        KvFormat::kV32, contiguous_view(cache.data(), DType::kU8, {nb, P, 1, 656}));
    EXPECT_FALSE(st.ok()) << "slot " << bad;
    EXPECT_NE(st.message().find("slot_mapping"), std::string::npos) << st.message();
    EXPECT_EQ(cache, before) << "a rejected call must not write";
  }
}

// ---------------------------------------------------------------- abs_indices_to_cache_indices

TEST(KvAbsIndices, MatchesHandComputationWithNonContiguousViews) {
  // page_size 4; request 0 uses blocks [7, 2, 5], request 1 uses [1, 0, 3].
  const int64_t P = 4;
  // block_table with row stride 5 (non-contiguous rows).
  std::vector<int32_t> bt = {7, 2, 5, -9, -9, 1, 0, 3, -9, -9};
  const TensorView bt_v = openmla::make_strided_tensor(bt.data(), DType::kI32, {2, 3}, {5, 1});
  // abs indices [2, 1, 8] stored with stride 2 in the last dim (every other int is garbage).
  const std::vector<int32_t> abs0 = {0, 5, 11, -1, 12, -7, 3, INT32_MIN};
  const std::vector<int32_t> abs1 = {4, 9, -1, 2, 100, 8, 7, 0};
  std::vector<int32_t> abs_buf(2 * 16 + 4, 424242);
  for (int k = 0; k < 8; ++k) {
    abs_buf[2 * k] = abs0[k];
    abs_buf[16 + 2 * k] = abs1[k];
  }
  const TensorView abs_v = openmla::make_strided_tensor(abs_buf.data(), DType::kI32, {2, 1, 8}, {16, 16, 2});
  // Output with stride 3 in the last dim.
  std::vector<int32_t> out_buf(2 * 30, 777);
  const TensorView out_v = openmla::make_strided_tensor(out_buf.data(), DType::kI32, {2, 1, 8}, {30, 30, 3});
  ASSERT_TRUE(openmla::abs_indices_to_cache_indices(abs_v, bt_v, P, out_v).ok());
  // Hand computation: block_table[b][abs / 4] * 4 + abs % 4.
  const int32_t want0[8] = {28, 9, 23, -1, -1, -1, 31, -1};  // 12 is past the 3-block table
  const int32_t want1[8] = {0, 13, -1, 6, -1, 12, 3, 4};
  for (int k = 0; k < 8; ++k) {
    EXPECT_EQ(out_buf[3 * k], want0[k]) << "request 0 position " << k;
    EXPECT_EQ(out_buf[30 + 3 * k], want1[k]) << "request 1 position " << k;
  }
  EXPECT_EQ(out_buf[1], 777);  // gaps between strided outputs are untouched
}

TEST(KvAbsIndices, HugePageSizeGivesMinusOneInsteadOfOverflowing) {
  std::vector<int32_t> bt = {7};
  std::vector<int32_t> abs = {0, 5};
  std::vector<int32_t> out(2, 0);
  const int64_t page = int64_t{1} << 62;  // 7 * 2^62 does not fit in int64
  ASSERT_TRUE(openmla::abs_indices_to_cache_indices(contiguous_view(abs.data(), DType::kI32, {1, 1, 2}),
                                                    contiguous_view(bt.data(), DType::kI32, {1, 1}), page,
                                                    contiguous_view(out.data(), DType::kI32, {1, 1, 2}))
                  .ok());
  EXPECT_EQ(out[0], -1);
  EXPECT_EQ(out[1], -1);
}

}  // namespace
