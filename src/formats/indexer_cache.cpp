// The lightning indexer's key cache: per-token quantisers (FP8 e4m3 with one power-of-two fp32
// scale per token, FP4 e2m1 with ue8m0 scales per 32 elements), the page-major cache view, and
// the public write / quantise / dequantise entry points. Validation first, then plain loops.
//
// Scale formulas, checked against upstream (vLLM `indexer_k_quant_and_cache_kernel` with
// use_ue8m0, DeepSeek-V3.2-Exp / V4 `act_quant` and V4 `fp4_act_quant`):
//   FP8: s = 2^ceil(log2(max(amax, 1e-4) / 448))      (vLLM divides, DeepSeek multiplies by
//   FP4: s = 2^ceil(log2(max(amax, 6 * 2^-126) / 6))  1/448 or 1/6: same ceil for every float)
// Codes are RNE(x / s); the scale bounds |x / s| by 448 (6), so saturation never applies.
// amax propagates NaN: a NaN key element makes the scale NaN and every code of its tile NaN
// (e4m3 0x7F) or, for FP4 (e2m1 has no NaN), 0x7 with the e8m0 NaN scale byte 0xFF.
#include <cmath>
#include <string>

#include "core/check.h"
#include "core/dtype.h"
#include "formats/indexer_cache_format.h"

namespace openmla {

const char* indexer_key_format_name(IndexerKeyFormat format) {
  switch (format) {
    case IndexerKeyFormat::kFp8:
      return "fp8";
    case IndexerKeyFormat::kFp4:
      return "fp4";
  }
  return "unknown";
}

int64_t indexer_key_bytes_per_token(IndexerKeyFormat format) {
  if (check_indexer_format(format).ok()) return indexer_code_bytes(format) + kIndexerScaleBytes;
  return 0;
}

Status check_indexer_format(IndexerKeyFormat format) {
  if (format == IndexerKeyFormat::kFp8 || format == IndexerKeyFormat::kFp4) return Status::Ok();
  return invalid_argument("format: unknown indexer key format " +
                          std::to_string(static_cast<int32_t>(format)) + " (kFp8 or kFp4)");
}

uint8_t float_to_e2m1(float f) {
  const uint8_t sign = std::signbit(f) && !std::isnan(f) ? 0x8 : 0x0;
  const float a = std::fabs(f);
  // Midpoints between neighbours; a tie goes to the even code (0, 1.0, 2.0, 4.0 have mantissa 0).
  uint8_t code = 7;  // also NaN: every comparison below is false
  if (a <= 0.25f)
    code = 0;
  else if (a < 0.75f)
    code = 1;
  else if (a <= 1.25f)
    code = 2;
  else if (a < 1.75f)
    code = 3;
  else if (a <= 2.5f)
    code = 4;
  else if (a < 3.5f)
    code = 5;
  else if (a <= 5.0f)
    code = 6;
  return sign | code;
}

float e2m1_to_float(uint8_t code) {
  static constexpr float kMagnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kMagnitude[code & 0x7];
  return (code & 0x8) ? -m : m;
}

namespace {

/// max |x| over n values; NaN if any value is NaN.
float abs_max_nan_propagating(const float* x, int64_t n) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (std::isnan(a)) return a;
    amax = a > amax ? a : amax;
  }
  return amax;
}

/// Biased fp32 exponent of 2^ceil(log2(q)) for a positive normal q (255 for inf, the NaN
/// encoding of ue8m0 for NaN).
uint32_t ceil_pow2_exponent(float q) {
  if (std::isnan(q)) return 255;
  const uint32_t bits = float_bits(q);
  const uint32_t exponent = (bits >> 23) & 0xFFu;
  return exponent == 255 ? 255 : exponent + ((bits & 0x7FFFFFu) != 0 ? 1u : 0u);
}

void quantize_fp8_key(const float* key, uint8_t* codes, uint8_t* scale_bytes) {
  float amax = abs_max_nan_propagating(key, kIndexerHeadDim);
  if (!std::isnan(amax) && amax < 1e-4f) amax = 1e-4f;
  const uint32_t exponent = ceil_pow2_exponent(amax / 448.0f);
  const float scale = std::isnan(amax) ? std::nanf("") : bits_float(exponent << 23);
  for (int64_t i = 0; i < kIndexerHeadDim; ++i) codes[i] = float_to_e4m3(key[i] / scale);
  store_unaligned<float>(scale_bytes, scale);
}

void quantize_fp4_key(const float* key, uint8_t* codes, uint8_t* scale_bytes) {
  const float floor = 6.0f * bits_float(0x00800000u);  // 6 * 2^-126
  for (int64_t b = 0; b < kIndexerHeadDim / kIndexerFp4Block; ++b) {
    const float* x = key + b * kIndexerFp4Block;
    float amax = abs_max_nan_propagating(x, kIndexerFp4Block);
    if (!std::isnan(amax) && amax < floor) amax = floor;
    const uint32_t exponent = ceil_pow2_exponent(amax / 6.0f);
    const float scale = exponent == 255 ? std::nanf("") : bits_float(exponent << 23);
    scale_bytes[b] = static_cast<uint8_t>(exponent);
    for (int64_t i = 0; i < kIndexerFp4Block; i += 2) {
      const uint8_t low = float_to_e2m1(x[i] / scale);
      const uint8_t high = float_to_e2m1(x[i + 1] / scale);
      codes[(b * kIndexerFp4Block + i) / 2] = static_cast<uint8_t>(low | (high << 4));
    }
  }
}

}  // namespace

void quantize_indexer_key(IndexerKeyFormat format, const float* key, uint8_t* codes,
                          uint8_t* scales) {
  if (format == IndexerKeyFormat::kFp4)
    quantize_fp4_key(key, codes, scales);
  else
    quantize_fp8_key(key, codes, scales);
}

void dequantize_indexer_key(IndexerKeyFormat format, const uint8_t* codes, const uint8_t* scales,
                            float* key) {
  if (format == IndexerKeyFormat::kFp8) {
    const float scale = load_unaligned<float>(scales);
    for (int64_t i = 0; i < kIndexerHeadDim; ++i) key[i] = e4m3_to_float(codes[i]) * scale;
    return;
  }
  for (int64_t i = 0; i < kIndexerHeadDim; ++i) {
    const uint8_t byte = codes[i / 2];
    const uint8_t code = (i % 2 == 0) ? (byte & 0xF) : (byte >> 4);
    key[i] = e2m1_to_float(code) * ue8m0_to_float(scales[i / kIndexerFp4Block]);
  }
}

Status make_indexer_cache(const TensorView& t, const char* name, IndexerKeyFormat format,
                          IndexerCache* cache) {
  OPENMLA_RETURN_IF_ERROR(check_indexer_format(format));
  const std::string n(name);
  const int64_t bytes = indexer_key_bytes_per_token(format);
  OPENMLA_RETURN_IF_ERROR(check_tensor(t, name, {DType::kU8, DType::kI8, DType::kE4M3}, 4, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 2, 1, "heads (the indexer cache holds one key)"));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 3, bytes,
                                    format == IndexerKeyFormat::kFp8
                                        ? "bytes_per_token (132 for fp8)"
                                        : "bytes_per_token (68 for fp4)"));
  if (t.shape[1] > 1 && t.stride[1] != bytes) {
    return invalid_argument(n + ": stride[1] must be " + std::to_string(bytes) +
                            " (a page must be contiguous), got " + std::to_string(t.stride[1]));
  }
  const int64_t page_bytes = bytes * t.shape[1];
  if (t.shape[0] > 1 && t.stride[0] < page_bytes) {
    return invalid_argument(n + ": stride[0] must be at least the page size in bytes (" +
                            std::to_string(page_bytes) + "), got " + std::to_string(t.stride[0]));
  }
  cache->format = format;
  cache->base = static_cast<uint8_t*>(t.data);
  cache->num_blocks = t.shape[0];
  cache->page_size = t.shape[1];
  cache->block_stride = t.stride[0];
  cache->code_bytes = indexer_code_bytes(format);
  return Status::Ok();
}

namespace {

/// Validates keys [num_tokens, 128] f32 / bf16 with a contiguous last dimension.
Status check_keys(const TensorView& keys) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(keys, "keys", {DType::kF32, DType::kBF16}, 2, true));
  return check_dim(keys, "keys", 1, kIndexerHeadDim, "head_dim");
}

/// Row `i` of validated keys as 128 floats.
void load_key(const TensorView& keys, int64_t i, float* out) {
  if (keys.dtype == DType::kF32) {
    const float* row = static_cast<const float*>(keys.data) + i * keys.stride[0];
    for (int64_t d = 0; d < kIndexerHeadDim; ++d) out[d] = row[d];
    return;
  }
  const uint16_t* row = static_cast<const uint16_t*>(keys.data) + i * keys.stride[0];
  for (int64_t d = 0; d < kIndexerHeadDim; ++d) out[d] = bf16_to_float(row[d]);
}

int64_t slot_at(const TensorView& slot_mapping, int64_t i) {
  const int64_t off = i * slot_mapping.stride[0];
  return slot_mapping.dtype == DType::kI32 ? static_cast<const int32_t*>(slot_mapping.data)[off]
                                           : static_cast<const int64_t*>(slot_mapping.data)[off];
}

}  // namespace

Status indexer_write_keys(const TensorView& keys, const TensorView& slot_mapping,
                          IndexerKeyFormat format, const TensorView& cache_view) {
  IndexerCache cache;
  OPENMLA_RETURN_IF_ERROR(make_indexer_cache(cache_view, "cache", format, &cache));
  OPENMLA_RETURN_IF_ERROR(check_keys(keys));
  OPENMLA_RETURN_IF_ERROR(
      check_tensor(slot_mapping, "slot_mapping", {DType::kI32, DType::kI64}, 1, false));
  OPENMLA_RETURN_IF_ERROR(
      check_dim(slot_mapping, "slot_mapping", 0, keys.shape[0], "num_tokens, as keys"));
  for (int64_t i = 0; i < keys.shape[0]; ++i) {
    if (slot_at(slot_mapping, i) >= cache.num_slots()) {
      return invalid_argument(
          "slot_mapping[" + std::to_string(i) + "] = " + std::to_string(slot_at(slot_mapping, i)) +
          " is outside the cache (" + std::to_string(cache.num_slots()) + " slots)");
    }
  }
  float key[kIndexerHeadDim];
  for (int64_t i = 0; i < keys.shape[0]; ++i) {
    const int64_t slot = slot_at(slot_mapping, i);
    if (slot < 0) continue;
    const int64_t block = slot / cache.page_size, offset = slot % cache.page_size;
    load_key(keys, i, key);
    quantize_indexer_key(format, key, cache.codes(block, offset), cache.scales(block, offset));
  }
  return Status::Ok();
}

Status indexer_quantize_keys(const TensorView& keys, IndexerKeyFormat format,
                             const TensorView& codes, const TensorView& scales) {
  OPENMLA_RETURN_IF_ERROR(check_indexer_format(format));
  OPENMLA_RETURN_IF_ERROR(check_keys(keys));
  const int64_t n = keys.shape[0];
  const bool fp8 = format == IndexerKeyFormat::kFp8;
  OPENMLA_RETURN_IF_ERROR(
      check_tensor(codes, "codes",
                   fp8 ? std::initializer_list<DType>{DType::kU8, DType::kI8, DType::kE4M3}
                       : std::initializer_list<DType>{DType::kU8, DType::kI8},
                   2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(codes, "codes", 0, n, "num_tokens, as keys"));
  OPENMLA_RETURN_IF_ERROR(check_dim(codes, "codes", 1, indexer_code_bytes(format),
                                    fp8 ? "128 e4m3 codes" : "64 bytes of packed e2m1"));
  if (fp8) {
    OPENMLA_RETURN_IF_ERROR(check_tensor(scales, "scales", {DType::kF32}, 1, false));
  } else {
    OPENMLA_RETURN_IF_ERROR(check_tensor(scales, "scales", {DType::kU8, DType::kI8}, 2, true));
    OPENMLA_RETURN_IF_ERROR(check_dim(scales, "scales", 1, 4, "ue8m0 scales per token"));
  }
  OPENMLA_RETURN_IF_ERROR(check_dim(scales, "scales", 0, n, "num_tokens, as keys"));
  uint8_t* code_base = static_cast<uint8_t*>(codes.data);
  uint8_t* scale_base = static_cast<uint8_t*>(scales.data);
  const int64_t scale_row_bytes = fp8 ? scales.stride[0] * 4 : scales.stride[0];
  float key[kIndexerHeadDim];
  uint8_t scale_bytes[kIndexerScaleBytes];
  for (int64_t i = 0; i < n; ++i) {
    load_key(keys, i, key);
    quantize_indexer_key(format, key, code_base + i * codes.stride[0], scale_bytes);
    for (int64_t b = 0; b < kIndexerScaleBytes; ++b)
      scale_base[i * scale_row_bytes + b] = scale_bytes[b];
  }
  return Status::Ok();
}

Status indexer_dequantize_cache(const TensorView& cache_view, IndexerKeyFormat format,
                                const TensorView& keys) {
  IndexerCache cache;
  OPENMLA_RETURN_IF_ERROR(make_indexer_cache(cache_view, "cache", format, &cache));
  OPENMLA_RETURN_IF_ERROR(check_tensor(keys, "keys", {DType::kF32}, 3, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(keys, "keys", 0, cache.num_blocks, "num_blocks"));
  OPENMLA_RETURN_IF_ERROR(check_dim(keys, "keys", 1, cache.page_size, "page_size"));
  OPENMLA_RETURN_IF_ERROR(check_dim(keys, "keys", 2, kIndexerHeadDim, "head_dim"));
  float* out = static_cast<float*>(keys.data);
  for (int64_t b = 0; b < cache.num_blocks; ++b)
    for (int64_t t = 0; t < cache.page_size; ++t)
      dequantize_indexer_key(format, cache.codes(b, t), cache.scales(b, t),
                             out + b * keys.stride[0] + t * keys.stride[1]);
  return Status::Ok();
}

}  // namespace openmla
