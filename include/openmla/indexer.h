// openmla public API: the lightning indexer (DeepSeek V3.2 / V4 sparse-attention top-k), with
// DeepGEMM's `fp8_mqa_logits` / `fp8_paged_mqa_logits` semantics and a top-k that emits the
// index encoding `sparse_decode` / `sparse_prefill` take.
//
// Score of query row m (one token) for key s:
//   logit[m, s] = sum_h weights[m, h] * ReLU(q[m, h, :] . k[s, :]) * k_scale[s]
// with q and k e4m3 codes (q's own scale is folded into the weights, as in DeepSeek's code).
// Visibility: prefill row m sees keys s in [ks[m], ke[m]); decode row (b, j) of next_n sees the
// first len(b, j) tokens of request b, len(b, j) = context_lens[b] - next_n + 1 + j for
// context_lens [batch] (clamped at 0), or context_lens[b, j] for [batch, next_n].
// Logits of keys a row does not see are -inf, always written (DeepGEMM's paged op leaves the
// positions past a row's length unwritten unless clean_logits; writing them is the safe
// superset). Tokens at or past a row's visible length, and pages past a request's, are never
// read (their bytes may be anything, NaN included); every block-table entry a request reads is
// checked against the cache's blocks. Top-k takes the k largest visible logits; ties go
// to the lower key position; NaN never occurs for finite inputs. Each op has args, plan_*, run_*
// and a one-shot form, as the attention ops (see attention.h for Plan).
#pragma once

#include "openmla/attention.h"
#include "openmla/indexer_cache.h"

namespace openmla {

/// DeepGEMM `fp8_mqa_logits` (prefill, keys contiguous).
struct MqaLogitsArgs {
  TensorView q;        ///< [rows, heads, 128] e4m3 (u8 / i8 / e4m3 dtype), last dim contiguous
  TensorView k;        ///< [keys, 128] e4m3 codes, last dim contiguous
  TensorView k_scale;  ///< [keys] f32
  TensorView weights;  ///< [rows, heads] f32
  TensorView ks;       ///< [rows] int32, first visible key (clamped to [0, keys])
  TensorView ke;       ///< [rows] int32, one past the last visible key (clamped to [ks, keys])
  TensorView logits;   ///< [rows, keys] f32 (written; any row stride >= keys)
};
Status plan_mqa_logits(const MqaLogitsArgs& args, const Options& options, Plan* plan);
Status run_mqa_logits(const Plan& plan, const MqaLogitsArgs& args);
Status mqa_logits(const MqaLogitsArgs& args, const Options& options = {});

/// DeepGEMM `fp8_paged_mqa_logits` (decode, keys in the paged indexer cache).
struct PagedMqaLogitsArgs {
  TensorView q;             ///< [batch, next_n, heads, 128] e4m3
  TensorView kv_cache;      ///< indexer cache [blocks, page_size, 1, 132] (kFp8) or 68 (kFp4)
  IndexerKeyFormat format = IndexerKeyFormat::kFp8;
  TensorView weights;       ///< [batch * next_n, heads] f32
  TensorView context_lens;  ///< [batch] or [batch, next_n] int32
  TensorView block_table;   ///< [batch, max_blocks] int32
  TensorView logits;        ///< [batch * next_n, max_len] f32; max_len >= every visible length
                            ///< (else an error naming context_lens); last dim contiguous
};
Status plan_paged_mqa_logits(const PagedMqaLogitsArgs& args, const Options& options, Plan* plan);
Status run_paged_mqa_logits(const Plan& plan, const PagedMqaLogitsArgs& args);
Status paged_mqa_logits(const PagedMqaLogitsArgs& args, const Options& options = {});

/// Top-k over a logits matrix [rows, n]; row r's visible keys are [starts[r], ends[r]).
/// Without block_table, indices[r, i] (i < topk_length[r]) is a selected key's position relative
/// to starts[r] (vLLM's prefill convention: an index into that request's keys). With block_table,
/// that relative position p of row r (request r / next_n) becomes the physical cache slot
/// block_table[r / next_n, p / page_size] * page_size + p % page_size, the encoding
/// sparse_decode's `indices` takes. Entries past topk_length[r] are -1. Selected entries are in
/// ascending position order.
struct IndexerTopkArgs {
  TensorView logits;       ///< [rows, n] f32
  TensorView starts;       ///< optional [rows] int32 (absent: 0)
  TensorView ends;         ///< [rows] int32
  TensorView block_table;  ///< optional [batch, max_blocks] int32, rows = batch * next_n
  int64_t page_size = 64;  ///< page size of block_table's cache
  int64_t next_n = 1;      ///< rows per request (for block_table)
  TensorView indices;      ///< [rows, topk] int32 (written), topk >= 1
  TensorView topk_length;  ///< optional [rows] int32 (written): min(topk, visible)
};
Status indexer_topk(const IndexerTopkArgs& args, const Options& options = {});

/// Fused paged logits + top-k: never materialises a logits row. Same inputs as
/// PagedMqaLogitsArgs; the output is sparse_decode's index encoding through `block_table`
/// (or `out_block_table` / `out_page_size` when the attention cache is paged differently).
struct PagedIndexerTopkArgs {
  PagedMqaLogitsArgs logits_args;  ///< its `logits` tensor is ignored (not written)
  TensorView out_block_table;      ///< optional; absent: logits_args.block_table
  int64_t out_page_size = 0;       ///< 0: the indexer cache's page size
  TensorView indices;              ///< [batch, next_n, topk] int32 (written), topk >= 1; slot
                                   ///< = out_block_table[b, p / P] * P + p % P, P = out_page_size
  TensorView topk_length;          ///< optional [batch, next_n] int32 (written)
};
Status plan_paged_indexer_topk(const PagedIndexerTopkArgs& args, const Options& options,
                               Plan* plan);
Status run_paged_indexer_topk(const Plan& plan, const PagedIndexerTopkArgs& args);
Status paged_indexer_topk(const PagedIndexerTopkArgs& args, const Options& options = {});

}  // namespace openmla
