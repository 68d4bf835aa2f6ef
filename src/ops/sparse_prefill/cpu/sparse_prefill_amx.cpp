// Sparse prefill, amx kernel ("sparse_prefill.amx").
// Algorithm: one work item per (query token, kv head) (sparse_prefill_cpu.h): the valid slots of
// its index row are compacted, their kv rows gathered once per block and shared by all query
// heads of the kv head (M dimension), online softmax in base 2 (cpu/attn_rows_engine.h), then
// the one combine applies the sink; max_logits tracked from the raw scores.
// Layout: q [seq_q][heads_q][D], kv [seq_kv][heads_kv][D] bf16; scores S^T [keys][heads].
// Tiling: AMX-BF16: QK with gathered kv rows as A, Q^T (VNNI) as B -> S^T [keys][heads]; PV with
// P (bf16 from S^T) as A, V (VNNI) as B; fp32 O tiles, 2x2 blocking; 128 keys per block.
// Invariants: invalid / past-length slots are never read; pad key rows are zero with P = 0;
// outputs depend only on the item's own inputs (thread-count invariant).
#include "cpu/amx_attn_backend.h"
#include "ops/sparse_prefill/cpu/sparse_prefill_cpu.h"

namespace openmla {
namespace {

Status run_amx(const void* params, const ExecConfig& config) {
  return sp_run<AmxAttnBackend>(*static_cast<const SparsePrefillParams*>(params), config);
}

}  // namespace

const KernelEntry kSparsePrefillAmx = {"sparse_prefill.amx", Op::kSparsePrefill,
                                         Isa::kAmx, sp_unsupported, nullptr, run_amx};

}  // namespace openmla
