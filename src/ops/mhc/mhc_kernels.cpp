// The mHC kernel inventories (hc_pre, hc_post, hc_head), fastest first; the reference is last.
#include "ops/mhc/mhc.h"

namespace openmla {

const std::vector<const KernelEntry*>& mhc_pre_kernels() {
  static const std::vector<const KernelEntry*> list = {&kMhcPreAvx512, &kMhcPreAvx2, &kMhcPreRef};
  return list;
}

const std::vector<const KernelEntry*>& mhc_post_kernels() {
  static const std::vector<const KernelEntry*> list = {&kMhcPostAvx512, &kMhcPostAvx2,
                                                       &kMhcPostRef};
  return list;
}

const std::vector<const KernelEntry*>& mhc_head_kernels() {
  static const std::vector<const KernelEntry*> list = {&kMhcHeadAvx512, &kMhcHeadAvx2,
                                                       &kMhcHeadRef};
  return list;
}

}  // namespace openmla
