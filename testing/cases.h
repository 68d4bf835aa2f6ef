// FlashMLA-style test cases for the three ops (spec §7.3): random paged caches with random block
// tables, NaN in every cache slot no valid index names (poisoned before quantisation, so FP8
// data, scales and RoPE bytes are NaN, and page padding is 0xFF), random index lists with
// invalid entries, topk_length, ±inf sinks and optionally non-contiguous inputs.
#pragma once

#include <cstdint>

#include "openmla/attention.h"
#include "tensors.h"

namespace openmla::testing {

/// An FP8 or BF16 paged cache holding `latents` (kept for reference checks).
struct CacheBundle {
  KvFormat format = KvFormat::kV32;
  int64_t num_blocks = 0, page_size = 0, heads_kv = 1, head_dim = 0;
  OwnedTensor cache;    ///< what kernels read
  OwnedTensor latents;  ///< bf16 (BF16 layout: or fp16) [blocks, page, heads_kv, dim], unquantised
};

/// Allocates a cache of `num_blocks` pages and quantises / copies `latents` into it. FP8 pages
/// get FlashMLA's padding (V32: one extra 656-byte row per page; MODEL1: rounded up to 576 B),
/// which is then filled with 0xFF, as is MODEL1's scale pad byte.
CacheBundle make_cache(KvFormat format, OwnedTensor latents, int64_t head_dim);

struct SparseDecodeConfig {
  KvFormat format = KvFormat::kV32;
  int64_t head_dim = 576;  ///< BF16 only; FP8 formats fix it
  int64_t batch = 2, seq_q = 1, heads_q = 16, topk = 64, page_size = 64, cache_tokens = 256;
  int64_t extra_topk = 0, extra_page_size = 64, extra_cache_tokens = 256;  ///< extra_topk 0: none
  bool topk_length = false, extra_topk_length = false, sink = false;
  bool all_invalid = false;   ///< every index -1
  bool zero_lengths = false;  ///< ~half the lengths 0 (with topk_length)
  bool odd_invalid = true;    ///< pad with -7, num_slots and INT32_MAX as well as -1
  bool non_contiguous = false;
  bool nan_poison = true;
  float softmax_scale = 0.0f;  ///< 0: default
  uint64_t seed = 1;
};

struct SparseDecodeCase {
  SparseDecodeConfig config;
  int64_t head_dim = 0;
  OwnedTensor q, indices, topk_length, sink, extra_indices, extra_topk_length;
  CacheBundle kv, extra_kv;
  int64_t attended = 0;           ///< valid (batch, seq, slot) triples, main + extra
  int64_t unique_tokens = 0;      ///< distinct cache tokens read
  SparseDecodeArgs args() const;  ///< inputs only; attach outputs with bind_outputs
};

SparseDecodeCase make_sparse_decode_case(const SparseDecodeConfig& config);

struct DenseDecodeConfig {
  KvFormat format = KvFormat::kBF16;
  DType dtype = DType::kBF16;  ///< q, out and (BF16 format) the cache: kBF16 or kF16
  int64_t head_dim = 576;      ///< BF16 only; FP8 formats fix it
  int64_t batch = 2, seq_q = 1, heads_q = 16, heads_kv = 1, page_size = 64, cache_tokens = 256;
  bool varlen = true, zero_lengths = false, causal = false, non_contiguous = false;
  uint64_t seed = 1;
};

struct DenseDecodeCase {
  DenseDecodeConfig config;
  int64_t head_dim = 0;
  OwnedTensor q, block_table, cache_seqlens;
  CacheBundle kv;
  int64_t total_tokens = 0;  ///< sum of lengths
  DenseDecodeArgs args() const;
};

DenseDecodeCase make_dense_decode_case(const DenseDecodeConfig& config);

struct SparsePrefillConfig {
  int64_t seq_q = 8, seq_kv = 256, heads_q = 16, heads_kv = 1, head_dim = 576, topk = 64;
  bool topk_length = false, sink = false, all_invalid_rows = false, non_contiguous = false;
  float softmax_scale = 0.5f;
  uint64_t seed = 1;
};

struct SparsePrefillCase {
  SparsePrefillConfig config;
  OwnedTensor q, kv, indices, topk_length, sink;
  int64_t attended = 0;
  SparsePrefillArgs args() const;
};

SparsePrefillCase make_sparse_prefill_case(const SparsePrefillConfig& config);

/// Output buffers for one run: out bf16 (dense decode: q's dtype), lse (decode: FlashMLA's
/// transposed [b, h, s] view of a [b, s, h] buffer), max_logits (prefill only).
struct Outputs {
  OwnedTensor out, lse, max_logits;
};
Outputs bind_outputs(SparseDecodeArgs* args, bool non_contiguous = false);
Outputs bind_outputs(DenseDecodeArgs* args, bool non_contiguous = false);
Outputs bind_outputs(SparsePrefillArgs* args, bool non_contiguous = false);

/// FLOPs as FlashMLA counts them: 2 * heads_q * attended * (d_qk + d_v).
double sparse_decode_flops(const SparseDecodeCase& c);
double dense_decode_flops(const DenseDecodeCase& c);
double sparse_prefill_flops(const SparsePrefillCase& c);
/// Bytes as FlashMLA counts them (q + unique KV tokens + out).
double sparse_decode_bytes(const SparseDecodeCase& c);
double dense_decode_bytes(const DenseDecodeCase& c);
double sparse_prefill_bytes(const SparsePrefillCase& c);

}  // namespace openmla::testing
