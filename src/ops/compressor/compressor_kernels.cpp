// The KV-compressor kernel inventory, fastest first; the reference is always last.
#include "ops/compressor/compressor.h"

namespace openmla {

const std::vector<const KernelEntry*>& compressor_kernels() {
  static const std::vector<const KernelEntry*> list = {&kCompressorAvx512, &kCompressorAvx2,
                                                       &kCompressorRef};
  return list;
}

}  // namespace openmla
