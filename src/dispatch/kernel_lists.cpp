// Maps each op to its inventory (defined in src/ops/<op>/<op>_kernels.cpp).
#include "dispatch/registry.h"

namespace openmla {

const std::vector<const KernelEntry*>& sparse_decode_kernels();
const std::vector<const KernelEntry*>& dense_decode_kernels();
const std::vector<const KernelEntry*>& sparse_prefill_kernels();
const std::vector<const KernelEntry*>& mqa_logits_kernels();
const std::vector<const KernelEntry*>& paged_mqa_logits_kernels();
const std::vector<const KernelEntry*>& paged_indexer_topk_kernels();
const std::vector<const KernelEntry*>& compressor_kernels();
const std::vector<const KernelEntry*>& mhc_pre_kernels();
const std::vector<const KernelEntry*>& mhc_post_kernels();
const std::vector<const KernelEntry*>& mhc_head_kernels();
const std::vector<const KernelEntry*>& engram_gate_kernels();

const std::vector<const KernelEntry*>& kernels_for(Op op) {
  switch (op) {
    case Op::kSparseDecode: return sparse_decode_kernels();
    case Op::kDenseDecode: return dense_decode_kernels();
    case Op::kSparsePrefill: return sparse_prefill_kernels();
    case Op::kMqaLogits: return mqa_logits_kernels();
    case Op::kPagedMqaLogits: return paged_mqa_logits_kernels();
    case Op::kPagedIndexerTopk: return paged_indexer_topk_kernels();
    case Op::kCompressor: return compressor_kernels();
    case Op::kMhcPre: return mhc_pre_kernels();
    case Op::kMhcPost: return mhc_post_kernels();
    case Op::kMhcHead: return mhc_head_kernels();
    case Op::kEngramGate: return engram_gate_kernels();
  }
  return sparse_decode_kernels();
}

}  // namespace openmla
