// openmla public API: the lightning indexer's key cache (DeepSeek V3.2 and V4).
//
// Two byte formats, both paged and page-major (a page holds every token's codes first, then every
// token's scales), viewed as uint8 / int8 tensors [num_blocks, page_size, 1, bytes_per_token]
// with stride(3) == 1, stride(1) == bytes_per_token and stride(0) >= page_size * bytes_per_token
// (bytes past a page's records are padding, never read or written):
//
//   kFp8 (V3.2, vLLM's CPU V4 path; DeepGEMM's `fp8_paged_mqa_logits` cache), 132 B per token:
//     page bytes [0, 128 P): token t's 128 e4m3 codes at 128 t;
//     page bytes [128 P, 132 P): token t's fp32 scale at 128 P + 4 t (little endian).
//     scale = 2^ceil(log2(max(amax, 1e-4) / 448)), code = RNE(k / scale) as e4m3 (vLLM's
//     `indexer_k_quant_and_cache` with ue8m0 scales, DeepSeek's `act_quant` with scale_fmt; the
//     readers take any fp32 scale, e.g. DeepGEMM's test helper writes amax / 448 unrounded).
//   kFp4 (V4 reference), 68 B per token:
//     page bytes [0, 64 P): token t's 128 e2m1 codes at 64 t, two per byte, element 2i in the low
//     nibble of byte i and element 2i+1 in the high nibble;
//     page bytes [64 P, 68 P): token t's 4 ue8m0 scales (one per 32 elements) at 64 P + 4 t.
//     scale = 2^ceil(log2(max(amax, 6 * 2^-126) / 6)), code = RNE(k / scale) as e2m1 (V4's
//     `fp4_act_quant`; the ue8m0 byte is the scale's fp32 exponent field). A negative value that
//     rounds to zero keeps its sign (code 0x8, as a hardware cvt; DeepGEMM's helper writes 0x0).
//
// Keys are head_dim 128 (the only size DeepSeek uses). NaN propagates through a tile's amax: its
// scale becomes NaN (fp32 NaN; ue8m0 0xFF) and its codes NaN (e4m3 0x7F) or 0x7 (e2m1 has no
// NaN), so a poisoned slot dequantises to NaN. (vLLM's CUDA writer takes amax with fmaxf, which
// drops NaN; the comment here used to say "as upstream".) The ops never read slots no index
// or length names.
#pragma once

#include "openmla/core.h"

namespace openmla {

enum class IndexerKeyFormat : int32_t {
  kFp8 = 0,  ///< 128 e4m3 + fp32 scale per token, page-major (132 B)
  kFp4 = 1,  ///< 128 e2m1 + 4 ue8m0 scales per token, page-major (68 B)
};
const char* indexer_key_format_name(IndexerKeyFormat format);

constexpr int64_t kIndexerHeadDim = 128;

/// Bytes of one token's record in `format`: 132 (kFp8) or 68 (kFp4).
int64_t indexer_key_bytes_per_token(IndexerKeyFormat format);

/// Quantises keys [num_tokens, 128] (f32 or bf16) and writes them into `cache` at the flat slots
/// `slot_mapping` [num_tokens] (int32 or int64; slot = block * page_size + offset; a negative slot
/// is skipped, as engines pad with -1; a slot beyond the cache is an error naming it).
Status indexer_write_keys(const TensorView& keys, const TensorView& slot_mapping,
                          IndexerKeyFormat format, const TensorView& cache);

/// Quantises keys [num_tokens, 128] (f32 or bf16) into separate codes and scales, DeepGEMM's
/// non-paged `fp8_mqa_logits` operands: kFp8 codes [num_tokens, 128] u8/e4m3 and scales
/// [num_tokens] f32; kFp4 codes [num_tokens, 64] u8 and scales [num_tokens, 4] u8 (ue8m0).
Status indexer_quantize_keys(const TensorView& keys, IndexerKeyFormat format,
                             const TensorView& codes, const TensorView& scales);

/// Dequantises every token of `cache` into `keys` [num_blocks, page_size, 128] f32 (exact:
/// code value times scale).
Status indexer_dequantize_cache(const TensorView& cache, IndexerKeyFormat format,
                                const TensorView& keys);

}  // namespace openmla
