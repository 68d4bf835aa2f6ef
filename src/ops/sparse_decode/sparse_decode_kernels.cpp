// The sparse-decode kernel inventory, fastest first; the reference is always last.
#include "ops/sparse_decode/sparse_decode.h"

namespace openmla {

const std::vector<const KernelEntry*>& sparse_decode_kernels() {
  static const std::vector<const KernelEntry*> list = {&kSparseDecodeAmx, &kSparseDecodeAvx512Bf16,
                                                       &kSparseDecodeAvx512, &kSparseDecodeAvx2,
                                                       &kSparseDecodeRef};
  return list;
}

}  // namespace openmla
