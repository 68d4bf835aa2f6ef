// openmla public API: DeepSeek V4's KV compressor (CSA, ratio 4 with overlapping windows; HCA,
// ratio 128), which fills the compressed ("extra") MODEL1 cache that sparse decode reads.
//
// The op split and the state layout are vLLM's (`save_partial_states` +
// `compress_norm_rope_store`), so engines can keep their caches and the two can be cross-checked.
// The projections a = x W_kv^T and z = x W_gate^T are GEMMs outside these ops.
//
// State cache: fp32 [num_blocks, block_size, 2 * width], width = coff * head_dim (coff = 2 for
// ratio 4, else 1); a token's row holds its a (width values) then its z + ape[position % ratio].
// Rows are addressed by flat slot = block * block_size + offset, as engines page them.
//
// Compression (for each token t whose position p has (p + 1) % ratio == 0, entry k = p / ratio):
// the window is the coff * ratio positions p - coff * ratio + 1 .. p, their state rows named by
// gather_slots[t] (-1: before the sequence, weight 0). For ratio 4, window slots 0..3 (the
// previous 4 tokens) contribute the first head_dim channels of their rows, slots 4..7 (the
// entry's own tokens) the second head_dim channels; for ratio 128 every slot contributes all
// head_dim channels. Per channel j: C[j] = sum_s softmax_s(z_s[j]) a_s[j]. Then, as DeepSeek's
// reference `Compressor` (inference/model.py): C is rounded to bf16, RMSNorm'd with the weight in
// fp32 and rounded to bf16, the last 64 dims are rotated (interleaved pairs) at position k * ratio
// by the cos/sin table and rounded to bf16, and the latent is quantised into kv_cache slot
// kv_slot_mapping[t] by FlashMLA's MODEL1 quantiser (a bf16 cache stores the latent verbatim).
// Tokens with other positions, or with kv_slot_mapping -1, write nothing.
//
// Indexer keys (head_dim 128, the lightning indexer's own compressor): the same pooling, RMSNorm
// and RoPE (last 64 of 128 dims), then the Hadamard rotation and indexer_write_keys.
//
// Decode (one token per sequence) and prefill (a chunk of tokens per sequence) are the same two
// calls over a token list: save the chunk's states first, then compress.
#pragma once

#include "openmla/attention.h"
#include "openmla/core.h"

namespace openmla {

/// `save_partial_states`: writes each token's a and z + ape[position % ratio] into its state row.
struct CompressorSaveStatesArgs {
  TensorView kv;            ///< a: [num_tokens, width] fp32, last dim contiguous
  TensorView score;         ///< z: [num_tokens, width] fp32, last dim contiguous
  TensorView ape;           ///< [ratio, width] fp32 (ratio 4 or 128; width = coff * head_dim)
  TensorView positions;     ///< [num_tokens] int32 / int64, >= 0
  TensorView state_cache;   ///< [num_blocks, block_size, 2 * width] fp32 (written)
  TensorView slot_mapping;  ///< [num_tokens] int32 / int64 state slot; -1 skips the token
};
Status compressor_save_states(const CompressorSaveStatesArgs& args, const Options& options = {});

/// `compress_norm_rope_store`: pools each completed window and writes the compressed entry.
struct CompressorStoreArgs {
  TensorView state_cache;      ///< [num_blocks, block_size, 2 * width] fp32
  TensorView gather_slots;     ///< [num_tokens, coff * ratio] int32 / int64 state slots or -1
  TensorView positions;        ///< [num_tokens] int32 / int64, >= 0
  TensorView kv_slot_mapping;  ///< [num_tokens] int32 / int64 kv_cache slot of the entry, or -1
  TensorView rms_norm_weight;  ///< [head_dim] fp32: 512 (MODEL1 entries) or 128 (indexer keys)
  float rms_norm_eps = 1e-6f;
  TensorView cos_sin_cache;  ///< [max_position, 64] fp32: 32 cos then 32 sin per position
  /// head_dim 512: MODEL1 FP8 [blocks, page, 1, 584] or bf16 [blocks, page, 1, 512];
  /// head_dim 128: an indexer cache (openmla/indexer_cache.h: u8 [blocks, page, 1, 132] FP8 or
  /// [.., 68] FP4, written by indexer_write_keys) or bf16 [blocks, page, 1, 128].
  TensorView kv_cache;
  int64_t compress_ratio = 4;  ///< 4 (CSA, overlapping) or 128 (HCA)
  /// head_dim 128 only: rotate the key by the normalised 128-point Walsh-Hadamard transform
  /// after RoPE, as the reference (`rotate_activation`); vLLM's CPU indexer op does not.
  bool hadamard = true;
};
Status plan_compressor_store(const CompressorStoreArgs& args, const Options& options, Plan* plan);
Status run_compressor_store(const Plan& plan, const CompressorStoreArgs& args);
Status compressor_store(const CompressorStoreArgs& args, const Options& options = {});

/// RoPE table of the compressed layers as the reference computes it (fp32, `precompute_freqs_cis`):
/// f_i = theta^(-2i/64), with YaRN (factor, original_seq_len, beta_fast, beta_slow) when
/// original_seq_len > 0; cos_sin [max_position, 64] fp32 gets cos(p f_i) then sin(p f_i).
/// V4: theta 160000, factor 16, original 65536, beta_fast 32, beta_slow 1.
Status compressor_rope_table(double theta, double factor, int64_t original_seq_len,
                             double beta_fast, double beta_slow, const TensorView& cos_sin);

}  // namespace openmla
