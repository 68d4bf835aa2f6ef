// The indexer kernel inventories, fastest first; the reference is always last.
#include "ops/indexer/indexer.h"

namespace openmla {

const std::vector<const KernelEntry*>& mqa_logits_kernels() {
  static const std::vector<const KernelEntry*> list = {&kMqaLogitsAvx512Bf16, &kMqaLogitsAvx512,
                                                       &kMqaLogitsAvx2, &kMqaLogitsRef};
  return list;
}

const std::vector<const KernelEntry*>& paged_mqa_logits_kernels() {
  static const std::vector<const KernelEntry*> list = {&kPagedMqaLogitsAvx512Bf16,
                                                       &kPagedMqaLogitsAvx512, &kPagedMqaLogitsAvx2,
                                                       &kPagedMqaLogitsRef};
  return list;
}

const std::vector<const KernelEntry*>& paged_indexer_topk_kernels() {
  static const std::vector<const KernelEntry*> list = {
      &kPagedIndexerTopkAvx512Bf16, &kPagedIndexerTopkAvx512, &kPagedIndexerTopkAvx2,
      &kPagedIndexerTopkRef};
  return list;
}

}  // namespace openmla
