// The lightning indexer's key cache (indexer_cache.h): hand-worked golden bytes of one token in
// each format, byte-exactness against an independent double-precision model on random keys,
// round trips, page sizes 1 / 61 / 64 with padded page strides, slot handling (negative slots
// skipped, out-of-range slots rejected before anything is written), NaN keys and argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "openmla/indexer_cache.h"
#include "support/test_support.h"

namespace {

using namespace openmla_test;
using openmla::IndexerKeyFormat;
using openmla::StatusCode;

constexpr int64_t kDim = 128;

int64_t bytes_per_token(IndexerKeyFormat f) { return openmla::indexer_key_bytes_per_token(f); }

/// A cache [num_blocks, page_size, 1, bytes] whose pages are `pad` bytes longer than needed,
/// filled with 0xAA so untouched bytes are visible.
struct Cache {
  IndexerKeyFormat format;
  int64_t num_blocks, page_size, page_stride;
  std::vector<uint8_t> bytes;
  Cache(IndexerKeyFormat f, int64_t blocks, int64_t page, int64_t pad = 0)
      : format(f),
        num_blocks(blocks),
        page_size(page),
        page_stride(page * bytes_per_token(f) + pad),
        bytes(static_cast<size_t>(blocks * page_stride), 0xAA) {}
  TensorView view() {
    const int64_t b = bytes_per_token(format);
    return openmla::make_strided_tensor(bytes.data(), DType::kU8, {num_blocks, page_size, 1, b},
                                        {page_stride, b, b, 1});
  }
  const uint8_t* codes(int64_t slot) const {
    const int64_t code_bytes = format == IndexerKeyFormat::kFp8 ? 128 : 64;
    return bytes.data() + (slot / page_size) * page_stride + (slot % page_size) * code_bytes;
  }
  const uint8_t* scales(int64_t slot) const {
    const int64_t code_bytes = format == IndexerKeyFormat::kFp8 ? 128 : 64;
    return bytes.data() + (slot / page_size) * page_stride + page_size * code_bytes +
           (slot % page_size) * 4;
  }
};

Status write_keys(const std::vector<float>& keys, const std::vector<int64_t>& slots, Cache& cache) {
  const int64_t n = static_cast<int64_t>(slots.size());
  return openmla::indexer_write_keys(
      contiguous_view(const_cast<float*>(keys.data()), DType::kF32, {n, kDim}),
      contiguous_view(const_cast<int64_t*>(slots.data()), DType::kI64, {n}), cache.format,
      cache.view());
}

// ---- independent model: scales by ldexp / ceil(log2) in double, codes by nearest-value search

double model_e2m1_value(uint8_t code) {
  const double magnitude[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  return (code & 8) ? -magnitude[code & 7] : magnitude[code & 7];
}

/// Nearest of the 8 magnitudes (ties to the even code), saturating at 6; the sign bit follows x.
uint8_t model_e2m1_encode(double x) {
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double err = std::fabs(std::fabs(x) - model_e2m1_value(c));
    const double best_err = std::fabs(std::fabs(x) - model_e2m1_value(best));
    if (err < best_err || (err == best_err && (c & 1) == 0)) best = c;
  }
  return static_cast<uint8_t>((std::signbit(x) ? 8 : 0) | best);
}

/// Power-of-two exponent k with 2^k = 2^ceil(log2(max(amax, floor) / max_code)).
int model_scale_exponent(double amax, double floor, double max_code) {
  return static_cast<int>(std::ceil(std::log2(std::max(amax, floor) / max_code)));
}

void model_quantize(IndexerKeyFormat format, const float* key, uint8_t* codes, uint8_t* scales) {
  if (format == IndexerKeyFormat::kFp8) {
    double amax = 0;
    for (int i = 0; i < kDim; ++i) amax = std::max(amax, std::fabs(double(key[i])));
    const int k = model_scale_exponent(amax, double(1e-4f), 448.0);
    for (int i = 0; i < kDim; ++i) codes[i] = model_e4m3_encode(std::ldexp(double(key[i]), -k));
    const float scale = std::ldexp(1.0f, k);
    std::memcpy(scales, &scale, 4);
    return;
  }
  for (int b = 0; b < 4; ++b) {
    double amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(double(key[32 * b + i])));
    const int k = model_scale_exponent(amax, 6.0 * std::ldexp(1.0, -126), 6.0);
    scales[b] = static_cast<uint8_t>(k + 127);
    for (int i = 0; i < 32; i += 2) {
      const uint8_t lo = model_e2m1_encode(std::ldexp(double(key[32 * b + i]), -k));
      const uint8_t hi = model_e2m1_encode(std::ldexp(double(key[32 * b + i + 1]), -k));
      codes[(32 * b + i) / 2] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

std::vector<float> random_keys(Rng& rng, int64_t n) {
  std::vector<float> keys(n * kDim);
  for (int64_t t = 0; t < n; ++t) {
    const double magnitude = std::ldexp(1.0, static_cast<int>(rng.uniform_int(-12, 8)));
    for (int64_t d = 0; d < kDim; ++d) keys[t * kDim + d] = float(rng.normal() * magnitude);
  }
  return keys;
}

// ---- golden bytes

TEST(IndexerCache, SizesAndNames) {
  EXPECT_EQ(bytes_per_token(IndexerKeyFormat::kFp8), 132);
  EXPECT_EQ(bytes_per_token(IndexerKeyFormat::kFp4), 68);
  EXPECT_STREQ(openmla::indexer_key_format_name(IndexerKeyFormat::kFp8), "fp8");
  EXPECT_STREQ(openmla::indexer_key_format_name(IndexerKeyFormat::kFp4), "fp4");
  EXPECT_EQ(bytes_per_token(static_cast<IndexerKeyFormat>(7)), 0);
}

// One FP8 token at slot 1 of a 2-token page. amax = 3 -> 3/448 = 0.0067 -> scale 2^-7
// (fp32 0x3C000000, little endian 00 00 00 3C) at page byte 2*128 + 4*1 = 260. Codes x / 2^-7:
//   1.0 -> 128 = 2^7: exponent 7+7 = 14 -> 0x70;   -0.5 -> -64: exponent 13, sign -> 0xE8;
//   3.0 -> 384 = 1.5 * 2^8: exponent 15, mantissa 4 -> 0x7C;   0 -> 0x00;
//   0.3 -> 38.4 = 1.2 * 2^5: mantissa 1.6 -> 2 -> (12 << 3) | 2 = 0x62;
//   17 * 2^-7 -> 17, a tie of 16 (m 0) and 18 (m 1) -> even: 16 = 0x58;
//   19 * 2^-7 -> 19, a tie of 18 (m 1) and 20 (m 2) -> even: 20 = 0x5A.
TEST(IndexerCache, GoldenFp8Token) {
  std::vector<float> key(kDim, 0.0f);
  key[0] = 1.0f, key[1] = -0.5f, key[2] = 3.0f, key[4] = 0.3f;
  key[5] = 17.0f / 128, key[6] = 19.0f / 128;
  Cache cache(IndexerKeyFormat::kFp8, 1, 2);
  ASSERT_TRUE(write_keys(key, {1}, cache).ok());
  const uint8_t expected_codes[7] = {0x70, 0xE8, 0x7C, 0x00, 0x62, 0x58, 0x5A};
  for (int i = 0; i < 7; ++i) EXPECT_EQ(cache.bytes[128 + i], expected_codes[i]) << "code " << i;
  for (int i = 7; i < kDim; ++i) EXPECT_EQ(cache.bytes[128 + i], 0x00) << "code " << i;
  const uint8_t expected_scale[4] = {0x00, 0x00, 0x00, 0x3C};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(cache.bytes[260 + i], expected_scale[i]);
  for (int i = 0; i < 128; ++i) ASSERT_EQ(cache.bytes[i], 0xAA) << "slot 0 was written";
  for (int i = 256; i < 260; ++i) ASSERT_EQ(cache.bytes[i], 0xAA) << "slot 0's scale was written";
}

// One FP4 token at slot 2 of a 3-token page: codes at page bytes 128..191, scales at
// 3*64 + 2*4 = 200..203. Element 2i is the low nibble of byte i.
//   Block 0: amax 2.9 -> 2.9/6 = 0.48 -> scale 2^-1, ue8m0 126 = 0x7E. x / 0.5:
//     1.0 -> 2 (code 4), -0.75 -> -1.5 (0xB): byte 0 = 0xB4;  2.9 -> 5.8 (> 5: 6, code 7), 0:
//     byte 1 = 0x07;  0.375 -> 0.75, tie 0.5 / 1.0 -> 1.0 (code 2), 1.75 -> 3.5, tie 3 / 4 -> 4
//     (code 6): byte 2 = 0x62;  -0.125 -> -0.25, tie 0 / 0.5 -> -0 (0x8), 0.875 -> 1.75, tie
//     1.5 / 2 -> 2 (code 4): byte 3 = 0x48.
//   Block 1: all zero -> amax floor 6 * 2^-126 -> scale 2^-126, ue8m0 0x01; codes 0.
//   Block 2: element 64 = 12 -> 12/6 = 2 -> scale 2 (0x80), 12 / 2 = 6 -> code 7: byte 32 = 0x07.
//   Block 3: element 127 = -0.001 -> 1.7e-4 -> scale 2^-12 (0x73), -4.096 -> -4 (0xE), odd
//     element: high nibble of byte 63 = 0xE0.
TEST(IndexerCache, GoldenFp4Token) {
  std::vector<float> key(kDim, 0.0f);
  key[0] = 1.0f, key[1] = -0.75f, key[2] = 2.9f, key[4] = 0.375f, key[5] = 1.75f;
  key[6] = -0.125f, key[7] = 0.875f, key[64] = 12.0f, key[127] = -0.001f;
  Cache cache(IndexerKeyFormat::kFp4, 1, 3);
  ASSERT_TRUE(write_keys(key, {2}, cache).ok());
  std::vector<uint8_t> expected(64, 0x00);
  expected[0] = 0xB4, expected[1] = 0x07, expected[2] = 0x62, expected[3] = 0x48;
  expected[32] = 0x07, expected[63] = 0xE0;
  for (int i = 0; i < 64; ++i) EXPECT_EQ(cache.bytes[128 + i], expected[i]) << "code byte " << i;
  const uint8_t expected_scales[4] = {0x7E, 0x01, 0x80, 0x73};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(cache.bytes[200 + i], expected_scales[i]) << "scale " << i;
}

// ---- model agreement, round trips, page geometry

class IndexerCacheFormats : public ::testing::TestWithParam<IndexerKeyFormat> {};

TEST_P(IndexerCacheFormats, BytesMatchTheIndependentModelOnEveryPageSize) {
  const IndexerKeyFormat format = GetParam();
  for (int64_t page_size : {1, 61, 64}) {
    Rng rng(static_cast<uint32_t>(page_size * 7 + static_cast<int>(format)));
    const int64_t blocks = 3, n = blocks * page_size - 1;
    Cache cache(format, blocks, page_size, /*pad=*/36);
    std::vector<int64_t> perm = rng.permutation(blocks * page_size);
    std::vector<int64_t> slots(perm.begin(), perm.begin() + n);
    slots[0] = -1;  // padded token: skipped
    const std::vector<float> keys = random_keys(rng, n);
    ASSERT_TRUE(write_keys(keys, slots, cache).ok());
    const int64_t code_bytes = format == IndexerKeyFormat::kFp8 ? 128 : 64;
    std::vector<uint8_t> codes(code_bytes), scales(4);
    for (int64_t i = 1; i < n; ++i) {
      model_quantize(format, &keys[i * kDim], codes.data(), scales.data());
      ASSERT_EQ(0, std::memcmp(codes.data(), cache.codes(slots[i]), code_bytes))
          << "page " << page_size << " token " << i;
      ASSERT_EQ(0, std::memcmp(scales.data(), cache.scales(slots[i]), 4))
          << "page " << page_size << " token " << i;
    }
    for (int64_t s : {perm[0], perm[n]}) {  // the skipped slot and the never-named one
      for (int64_t b = 0; b < code_bytes; ++b) ASSERT_EQ(cache.codes(s)[b], 0xAA);
    }
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t p = page_size * bytes_per_token(format); p < cache.page_stride; ++p)
        ASSERT_EQ(cache.bytes[b * cache.page_stride + p], 0xAA) << "padding written";
  }
}

TEST_P(IndexerCacheFormats, DequantiseIsCodeTimesScaleAndCloseToTheKey) {
  const IndexerKeyFormat format = GetParam();
  Rng rng(11);
  const int64_t blocks = 2, page_size = 61, n = blocks * page_size;
  Cache cache(format, blocks, page_size, 4);
  std::vector<int64_t> slots(n);
  for (int64_t i = 0; i < n; ++i) slots[i] = i;
  const std::vector<float> keys = random_keys(rng, n);
  ASSERT_TRUE(write_keys(keys, slots, cache).ok());
  std::vector<float> out(n * kDim, -1.0f);
  ASSERT_TRUE(
      openmla::indexer_dequantize_cache(
          cache.view(), format, contiguous_view(out.data(), DType::kF32, {blocks, page_size, kDim}))
          .ok());
  const bool fp8 = format == IndexerKeyFormat::kFp8;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* codes = cache.codes(i);
    const uint8_t* scales = cache.scales(i);
    double amax[4] = {0, 0, 0, 0};
    for (int64_t d = 0; d < kDim; ++d)
      amax[d / 32] = std::max(amax[d / 32], std::fabs(double(keys[i * kDim + d])));
    for (int64_t d = 0; d < kDim; ++d) {
      double expected;
      if (fp8) {
        float scale;
        std::memcpy(&scale, scales, 4);
        expected = model_e4m3_value(codes[d]) * scale;
      } else {
        const uint8_t code = (d % 2 == 0) ? (codes[d / 2] & 0xF) : (codes[d / 2] >> 4);
        expected = model_e2m1_value(code) * std::ldexp(1.0, scales[d / 32] - 127);
      }
      ASSERT_EQ(double(out[i * kDim + d]), expected) << "token " << i << " dim " << d;
      // Error bound: half a step at the top of the range relative to the tile's max.
      const double tile_max = fp8 ? std::max({amax[0], amax[1], amax[2], amax[3]}) : amax[d / 32];
      ASSERT_LE(std::fabs(expected - keys[i * kDim + d]), tile_max * (fp8 ? 1.0 / 8 : 1.0 / 3))
          << "token " << i << " dim " << d;
    }
  }
}

TEST_P(IndexerCacheFormats, QuantizeKeysGivesTheCacheBytesSeparately) {
  const IndexerKeyFormat format = GetParam();
  Rng rng(5);
  const int64_t n = 9;
  const std::vector<float> keys = random_keys(rng, n);
  Cache cache(format, 1, n);
  std::vector<int64_t> slots(n);
  for (int64_t i = 0; i < n; ++i) slots[i] = i;
  ASSERT_TRUE(write_keys(keys, slots, cache).ok());
  const bool fp8 = format == IndexerKeyFormat::kFp8;
  const int64_t code_bytes = fp8 ? 128 : 64;
  std::vector<uint8_t> codes(n * code_bytes), scale_bytes(n * 4);
  const TensorView scales = fp8 ? contiguous_view(scale_bytes.data(), DType::kF32, {n})
                                : contiguous_view(scale_bytes.data(), DType::kU8, {n, 4});
  const TensorView keys_view =
      contiguous_view(const_cast<float*>(keys.data()), DType::kF32, {n, kDim});
  ASSERT_TRUE(
      openmla::indexer_quantize_keys(
          keys_view, format, contiguous_view(codes.data(), DType::kU8, {n, code_bytes}), scales)
          .ok());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(0, std::memcmp(&codes[i * code_bytes], cache.codes(i), code_bytes)) << i;
    ASSERT_EQ(0, std::memcmp(&scale_bytes[i * 4], cache.scales(i), 4)) << i;
  }
}

TEST_P(IndexerCacheFormats, Bf16KeysQuantiseAsTheirFloatValues) {
  const IndexerKeyFormat format = GetParam();
  Rng rng(3);
  const int64_t n = 4;
  std::vector<uint16_t> bf16 = rng.bf16_normal(n * kDim, 2.0, 100.0);
  std::vector<float> as_float(n * kDim);
  for (int64_t i = 0; i < n * kDim; ++i) as_float[i] = bf(bf16[i]);
  Cache from_bf16(format, 1, n), from_float(format, 1, n);
  std::vector<int32_t> slots32 = {3, 0, 2, 1};
  ASSERT_TRUE(openmla::indexer_write_keys(contiguous_view(bf16.data(), DType::kBF16, {n, kDim}),
                                          contiguous_view(slots32.data(), DType::kI32, {n}), format,
                                          from_bf16.view())
                  .ok());
  ASSERT_TRUE(write_keys(as_float, {3, 0, 2, 1}, from_float).ok());
  EXPECT_EQ(from_bf16.bytes, from_float.bytes);
}

INSTANTIATE_TEST_SUITE_P(BothFormats, IndexerCacheFormats,
                         ::testing::Values(IndexerKeyFormat::kFp8, IndexerKeyFormat::kFp4));

// ---- NaN, slots, argument errors

TEST(IndexerCache, NanKeysPoisonTheirTileOnly) {
  std::vector<float> key(kDim, 0.25f);
  key[40] = std::numeric_limits<float>::quiet_NaN();
  Cache fp8(IndexerKeyFormat::kFp8, 1, 1);
  ASSERT_TRUE(write_keys(key, {0}, fp8).ok());
  float scale;
  std::memcpy(&scale, fp8.scales(0), 4);
  EXPECT_TRUE(std::isnan(scale));
  for (int d = 0; d < kDim; ++d) EXPECT_EQ(fp8.codes(0)[d] & 0x7F, 0x7F) << d;

  Cache fp4(IndexerKeyFormat::kFp4, 1, 1);
  ASSERT_TRUE(write_keys(key, {0}, fp4).ok());
  const uint8_t* s = fp4.scales(0);
  EXPECT_EQ(s[1], 0xFF);  // the NaN's block: ue8m0 NaN, every code saturated to 0x7
  EXPECT_EQ(s[0], 0x7B);  // 0.25 / 6 = 0.042 -> 2^-4 (127 - 4); 0.25 / 2^-4 = 4 -> code 6
  EXPECT_EQ(fp4.codes(0)[0], 0x66);
  for (int i = 16; i < 32; ++i) EXPECT_EQ(fp4.codes(0)[i], 0x77) << i;
  std::vector<float> out(kDim);
  ASSERT_TRUE(
      openmla::indexer_dequantize_cache(fp4.view(), IndexerKeyFormat::kFp4,
                                        contiguous_view(out.data(), DType::kF32, {1, 1, kDim}))
          .ok());
  for (int d = 0; d < kDim; ++d) EXPECT_EQ(std::isnan(out[d]), d / 32 == 1) << d;
}

TEST(IndexerCache, OutOfRangeSlotIsAnErrorAndWritesNothing) {
  for (IndexerKeyFormat format : {IndexerKeyFormat::kFp8, IndexerKeyFormat::kFp4}) {
    Cache cache(format, 2, 4);
    const std::vector<uint8_t> before = cache.bytes;
    std::vector<float> keys(3 * kDim, 1.0f);
    EXPECT_TRUE(Fails(write_keys(keys, {0, 8, 1}, cache), "slot_mapping[1] = 8"));
    EXPECT_EQ(cache.bytes, before);
    EXPECT_TRUE(write_keys(keys, {-1, 7, -5}, cache).ok());
  }
}

TEST(IndexerCache, BadArgumentsNameTheArgument) {
  Cache cache(IndexerKeyFormat::kFp8, 2, 4);
  std::vector<float> keys(2 * kDim, 1.0f);
  std::vector<int64_t> slots = {0, 1};
  const TensorView k = contiguous_view(keys.data(), DType::kF32, {2, kDim});
  const TensorView s = contiguous_view(slots.data(), DType::kI64, {2});
  EXPECT_TRUE(Fails(openmla::indexer_write_keys(k, s, IndexerKeyFormat::kFp4, cache.view()),
                    "bytes_per_token"));
  EXPECT_TRUE(Fails(
      openmla::indexer_write_keys(k, s, static_cast<IndexerKeyFormat>(3), cache.view()), "format"));
  TensorView bad = cache.view();
  bad.stride[1] = 140;
  EXPECT_TRUE(Fails(openmla::indexer_write_keys(k, s, IndexerKeyFormat::kFp8, bad), "stride[1]"));
  bad = cache.view();
  bad.stride[0] = 4 * 132 - 1;
  EXPECT_TRUE(Fails(openmla::indexer_write_keys(k, s, IndexerKeyFormat::kFp8, bad), "stride[0]"));
  TensorView bad_keys = contiguous_view(keys.data(), DType::kF32, {1, 2 * kDim});
  EXPECT_TRUE(Fails(openmla::indexer_write_keys(bad_keys, s, IndexerKeyFormat::kFp8, cache.view()),
                    "keys"));
  bad_keys = k;
  bad_keys.dtype = DType::kF16;
  EXPECT_TRUE(Fails(openmla::indexer_write_keys(bad_keys, s, IndexerKeyFormat::kFp8, cache.view()),
                    "keys", StatusCode::kWrongDtype));
  const TensorView short_slots = contiguous_view(slots.data(), DType::kI64, {1});
  EXPECT_TRUE(
      Fails(openmla::indexer_write_keys(k, short_slots, IndexerKeyFormat::kFp8, cache.view()),
            "slot_mapping"));
  std::vector<float> out(2 * 3 * kDim);
  EXPECT_TRUE(Fails(
      openmla::indexer_dequantize_cache(cache.view(), IndexerKeyFormat::kFp8,
                                        contiguous_view(out.data(), DType::kF32, {2, 3, kDim})),
      "page_size"));
  std::vector<uint8_t> codes(2 * 128);
  std::vector<float> scales(2);
  EXPECT_TRUE(
      Fails(openmla::indexer_quantize_keys(k, IndexerKeyFormat::kFp4,
                                           contiguous_view(codes.data(), DType::kU8, {2, 128}),
                                           contiguous_view(scales.data(), DType::kF32, {2})),
            "codes"));
  EXPECT_TRUE(
      Fails(openmla::indexer_quantize_keys(k, IndexerKeyFormat::kFp8,
                                           contiguous_view(codes.data(), DType::kU8, {2, 128}),
                                           contiguous_view(scales.data(), DType::kF32, {3})),
            "scales"));
}

}  // namespace
