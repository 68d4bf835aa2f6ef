// openmla public API: KV-cache formats — sizes, quantisation, dequantisation, token writes and
// logical-to-physical index conversion. Byte-exact with FlashMLA's reference quantiser.
//
// FP8 caches are viewed as uint8 / int8 / e4m3 tensors of shape
// [num_blocks, page_size, 1, bytes_per_token] with stride(3) == 1, stride(1) == bytes_per_token
// and stride(0) >= page_bytes (extra bytes per page are padding and never read).
// BF16 caches are [num_blocks, page_size, heads_kv, head_dim] with stride(3) == 1.
#pragma once

#include "openmla/core.h"

namespace openmla {

/// head_dim (d_qk) of a format: V32 576, MODEL1 512, BF16 the caller's.
/// Bytes of the per-token view row: V32 656, MODEL1 584 (a view size; see README), BF16 2*head_dim.
Status kv_bytes_per_token(KvFormat format, int64_t head_dim, int64_t* bytes);

/// Minimum bytes of one page of `page_size` tokens: V32 656*P, MODEL1 ceil(584*P/576)*576 (the
/// reference quantiser's padded page), BF16 2*head_dim*heads_kv*P.
Status kv_page_bytes(KvFormat format, int64_t page_size, int64_t head_dim, int64_t heads_kv,
                     int64_t* bytes);

/// The FP8 format whose head_dim is `head_dim` (576 -> V32, 512 -> MODEL1).
Status fp8_format_for_head_dim(int64_t head_dim, KvFormat* format);

/// Quantises a bf16 cache `src` [num_blocks, page_size, 1, head_dim] into the FP8 cache `dst`
/// (V32 or MODEL1 view, see above). Unused bytes of `dst` (MODEL1 scale pad byte, page padding)
/// are set to zero. NaN latents produce NaN scales and NaN codes, as upstream.
Status quantize_kv_cache(const TensorView& src, KvFormat format, const TensorView& dst,
                         const Options& options = {});

/// Dequantises an FP8 cache into a bf16 tensor [num_blocks, page_size, 1, head_dim], exactly as
/// FlashMLA's reference (V32: fp32 product rounded to bf16; MODEL1: bf16 product).
Status dequantize_kv_cache(const TensorView& src, KvFormat format, const TensorView& dst,
                           const Options& options = {});

/// Writes `latents` [num_tokens, head_dim] (bf16) into `cache` at flat slots
/// `slot_mapping` [num_tokens] (int32 or int64; slot = block * page_size + offset; a negative
/// slot is skipped, as engines pad with -1). Works for every format (heads_kv must be 1).
Status write_kv_tokens(const TensorView& latents, const TensorView& slot_mapping, KvFormat format,
                       const TensorView& cache);

/// indices_in_cache[b, s, k] = block_table[b, abs / page_size] * page_size + abs % page_size.
/// abs == -1, any other negative value, or a position beyond the block table yields -1.
/// abs_indices: [batch, seq_q, topk] int32; block_table: [batch, max_blocks] int32; out like abs.
Status abs_indices_to_cache_indices(const TensorView& abs_indices, const TensorView& block_table,
                                    int64_t page_size, const TensorView& out);

}  // namespace openmla
