// Sparse prefill, AVX512-BF16 kernel ("sparse_prefill.avx512bf16"), for hosts with the BF16 dot
// and no AMX (e.g. AMD Zen 4).
// Algorithm: one work item per (query token, kv head) (sparse_prefill_cpu.h): the valid slots of
// its index row are compacted and attended by all query heads of the kv head at once through the
// AVX512-BF16 token-list attention (sparse_prefill_token_list.h, cpu/token_list_core.h: each kv
// row read once for all heads, vdpbf16ps register tiles for QK and PV, P rounded to bf16, fp32
// O), then the one combine applies the sink; max_logits from the raw scores.
// Invariants: invalid / past-length slots are never read; outputs depend only on the item's own
// inputs (thread-count invariant).
#include "ops/sparse_prefill/cpu/sparse_prefill_token_list.h"

namespace openmla {
namespace {

Status run_bf16(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const SparsePrefillParams*>(params);
  return sp_run_items(p, config, [&](int64_t s, int64_t g, const int32_t* valid, int64_t n) {
    token_list_item(p, s, g, valid, n, bf16_attend_token_list);
  });
}

}  // namespace

const KernelEntry kSparsePrefillAvx512Bf16 = {"sparse_prefill.avx512bf16",
                                              Op::kSparsePrefill,
                                              Isa::kAvx512Bf16,
                                              sp_unsupported,
                                              nullptr,
                                              run_bf16};

}  // namespace openmla
