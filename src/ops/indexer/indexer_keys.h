// The indexer cache's byte layouts (include/openmla/indexer_cache.h) read back one token at a
// time: where a token's codes and scales live in a page-major page, and the exact scalar decode
// of a token to doubles (the reference) or floats. Internal linkage: also included by the ISA
// files.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "openmla/indexer_cache.h"

namespace openmla {
namespace {

/// e2m1 code (low nibble) -> value: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives.
constexpr float kE2M1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                   -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/// Bytes of one token's record (the op's own copy of indexer_key_bytes_per_token).
constexpr int64_t indexer_bytes_per_token(IndexerKeyFormat format) {
  return format == IndexerKeyFormat::kFp8 ? 132 : 68;
}

/// One token of a page-major page: its code bytes and its scale bytes.
struct IndexerTokenBytes {
  const uint8_t* codes;   ///< 128 e4m3 (kFp8) or 64 bytes of e2m1 pairs (kFp4)
  const uint8_t* scales;  ///< one fp32 (kFp8) or 4 ue8m0 bytes (kFp4)
};

inline IndexerTokenBytes indexer_token_bytes(const uint8_t* page, int64_t page_size, int64_t offset,
                                             IndexerKeyFormat format) {
  if (format == IndexerKeyFormat::kFp8)
    return {page + 128 * offset, page + 128 * page_size + 4 * offset};
  return {page + 64 * offset, page + 64 * page_size + 4 * offset};
}

/// Exact decode of one token to `out[128]` (code value times its block scale for kFp4, the
/// bare e4m3 value for kFp8) and its key scale (the fp32 scale for kFp8, 1 for kFp4): the score
/// formula multiplies ReLU(q . k) by the key scale, as DeepGEMM does.
template <typename T>
inline T decode_indexer_token(const IndexerTokenBytes& t, IndexerKeyFormat format, T* out) {
  if (format == IndexerKeyFormat::kFp8) {
    for (int d = 0; d < 128; ++d) out[d] = static_cast<T>(e4m3_to_float(t.codes[d]));
    return static_cast<T>(load_unaligned<float>(t.scales));
  }
  for (int d = 0; d < 128; ++d) {
    const uint8_t byte = t.codes[d / 2];
    const uint8_t code = (d % 2 == 0) ? (byte & 0xF) : (byte >> 4);
    out[d] = static_cast<T>(kE2M1Values[code]) * static_cast<T>(ue8m0_to_float(t.scales[d / 32]));
  }
  return static_cast<T>(1);
}

}  // namespace
}  // namespace openmla
