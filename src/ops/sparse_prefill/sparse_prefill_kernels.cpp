// The sparse-prefill kernel inventory, fastest first; the reference is always last.
#include "ops/sparse_prefill/sparse_prefill.h"

namespace openmla {

const std::vector<const KernelEntry*>& sparse_prefill_kernels() {
  static const std::vector<const KernelEntry*> list = {
      &kSparsePrefillAmx, &kSparsePrefillAvx512Bf16, &kSparsePrefillAvx512, &kSparsePrefillAvx2,
      &kSparsePrefillRef};
  return list;
}

}  // namespace openmla
