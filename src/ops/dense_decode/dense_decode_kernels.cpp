// The dense-decode kernel inventory, fastest first; the reference is always last.
#include "ops/dense_decode/dense_decode.h"

namespace openmla {

const std::vector<const KernelEntry*>& dense_decode_kernels() {
  static const std::vector<const KernelEntry*> list = {&kDenseDecodeAmx, &kDenseDecodeAvx512Bf16,
                                                       &kDenseDecodeAvx512, &kDenseDecodeAvx2,
                                                       &kDenseDecodeRef};
  return list;
}

}  // namespace openmla
