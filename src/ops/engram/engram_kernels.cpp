// The Engram gate kernel inventory, fastest first; the reference is always last.
#include "ops/engram/engram.h"

namespace openmla {

const std::vector<const KernelEntry*>& engram_gate_kernels() {
  static const std::vector<const KernelEntry*> list = {&kEngramGateAvx512, &kEngramGateAvx2,
                                                       &kEngramGateRef};
  return list;
}

}  // namespace openmla
