// Sparse prefill, amx kernel ("sparse_prefill.amx").
// Algorithm: one work item per (query token, kv head) (sparse_prefill_cpu.h): the valid slots of
// its index row are compacted and attended by all query heads of the kv head at once, then the
// one combine applies the sink; max_logits from the raw scores. Two paths, chosen by the shape:
// - >= 64 query heads per kv head: the AMX token-list attention (sparse_prefill_token_list.h, the
//   core of sparse_decode.amx) with the slots as the list;
// - fewer: the attention-rows engine (cpu/attn_rows_engine.h, AMX backend, heads as M rows).
// Both: AMX-BF16 2x2-blocked tiles, QK with gathered kv rows as A and Q^T (VNNI) as B, PV with P
// (bf16) as A and V (VNNI) as B, fp32 O; online softmax in base 2.
// Invariants: invalid / past-length slots are never read; pad key rows are zero with P = 0;
// outputs depend only on the item's own inputs (thread-count invariant).
#include "cpu/amx_attn_backend.h"
#include "ops/sparse_prefill/cpu/sparse_prefill_token_list.h"

namespace openmla {
namespace {

Status run_amx(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const SparsePrefillParams*>(params);
  if (p.heads_q / p.heads_kv >= kTokenListMinHeads) {
    return sp_run_items(p, config, [&](int64_t s, int64_t g, const int32_t* valid, int64_t n) {
      token_list_item(p, s, g, valid, n, amx_attend_token_list);
    });
  }
  return sp_run<AmxAttnBackend>(p, config);
}

}  // namespace

const KernelEntry kSparsePrefillAmx = {
    "sparse_prefill.amx", Op::kSparsePrefill, Isa::kAmx, sp_unsupported, nullptr, run_amx};

}  // namespace openmla
