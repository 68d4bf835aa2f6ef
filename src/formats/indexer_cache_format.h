// Internal view of a validated lightning-indexer key cache (see include/openmla/indexer_cache.h
// for the byte layouts) and the per-token encode / decode both formats share with the ops.
//
// Page of P tokens, page-major: [codes of token 0 .. P-1 | scales of token 0 .. P-1].
//   kFp8: 128 e4m3 codes (128 B) per token, then one fp32 scale (4 B) per token.
//   kFp4: 128 e2m1 codes packed two per byte (64 B) per token, element 2i in the low nibble of
//         byte i, then 4 ue8m0 scales (one per 32 elements, 4 B) per token.
#pragma once

#include <cstdint>

#include "openmla/indexer_cache.h"

namespace openmla {

constexpr int64_t kIndexerScaleBytes = 4;  ///< fp32 scale (kFp8) or 4 ue8m0 bytes (kFp4)
constexpr int64_t kIndexerFp4Block = 32;   ///< elements per ue8m0 scale (kFp4)

/// Bytes of one token's codes: 128 (kFp8) or 64 (kFp4).
inline int64_t indexer_code_bytes(IndexerKeyFormat format) {
  return format == IndexerKeyFormat::kFp4 ? kIndexerHeadDim / 2 : kIndexerHeadDim;
}

struct IndexerCache {
  IndexerKeyFormat format = IndexerKeyFormat::kFp8;
  uint8_t* base = nullptr;
  int64_t num_blocks = 0, page_size = 0;
  int64_t block_stride = 0;  ///< bytes between pages (>= page_size * bytes per token)
  int64_t code_bytes = 0;    ///< 128 or 64

  int64_t num_slots() const { return num_blocks * page_size; }
  uint8_t* codes(int64_t block, int64_t offset) const {
    return base + block * block_stride + offset * code_bytes;
  }
  uint8_t* scales(int64_t block, int64_t offset) const {
    return base + block * block_stride + page_size * code_bytes + offset * kIndexerScaleBytes;
  }
};

/// kInvalidArgument unless `format` is kFp8 or kFp4.
Status check_indexer_format(IndexerKeyFormat format);

/// Validates `t` as an indexer cache of `format` ([num_blocks, page_size, 1, bytes_per_token],
/// u8 / i8 / e4m3, stride(3) == 1, stride(1) == bytes_per_token, stride(0) >= the page) and
/// fills `cache`. `name` prefixes error messages.
Status make_indexer_cache(const TensorView& t, const char* name, IndexerKeyFormat format,
                          IndexerCache* cache);

/// Quantises one key of 128 floats: kFp8 writes 128 code bytes and a 4-byte fp32 scale, kFp4 64
/// packed code bytes and 4 ue8m0 scale bytes.
void quantize_indexer_key(IndexerKeyFormat format, const float* key, uint8_t* codes,
                          uint8_t* scales);

/// Decodes one key into 128 floats: code value times scale, exact in fp32.
void dequantize_indexer_key(IndexerKeyFormat format, const uint8_t* codes, const uint8_t* scales,
                            float* key);

/// e2m1 (fp4) helpers: magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6}, bit 3 the sign.
/// Round-to-nearest-even, saturating at 6 (as CUDA's cvt.rn.satfinite); NaN gives 0x7.
uint8_t float_to_e2m1(float f);
float e2m1_to_float(uint8_t code);

}  // namespace openmla
