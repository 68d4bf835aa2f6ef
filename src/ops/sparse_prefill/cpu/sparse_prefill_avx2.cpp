// Sparse prefill, avx2 kernel ("sparse_prefill.avx2").
// Algorithm: one work item per (query token, kv head) (sparse_prefill_cpu.h): the valid slots of
// its index row are compacted, their kv rows gathered once per block and shared by all query
// heads of the kv head (M dimension), online softmax in base 2 (cpu/attn_rows_engine.h), then
// the one combine applies the sink; max_logits tracked from the raw scores.
// Layout: q [seq_q][heads_q][D], kv [seq_kv][heads_kv][D] bf16; scores S^T [keys][heads].
// Tiling: AVX2 fp32 FMA (bf16 widened by a shift): 4 keys x 16 heads of accumulators for QK,
// 2 heads x 32 dims for PV; 64 keys per block.
// Invariants: invalid / past-length slots are never read; pad key rows are zero with P = 0;
// outputs depend only on the item's own inputs (thread-count invariant).
#include "cpu/fma_attn_backend.h"
#include "ops/sparse_prefill/cpu/sparse_prefill_cpu.h"

namespace openmla {
namespace {

Status run_avx2(const void* params, const ExecConfig& config) {
  return sp_run<FmaAttnBackend>(*static_cast<const SparsePrefillParams*>(params), config);
}

}  // namespace

const KernelEntry kSparsePrefillAvx2 = {"sparse_prefill.avx2", Op::kSparsePrefill,
                                         Isa::kAvx2, sp_unsupported, nullptr, run_avx2};

}  // namespace openmla
