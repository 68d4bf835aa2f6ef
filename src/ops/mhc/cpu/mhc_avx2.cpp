// mHC, AVX2 + FMA fp32 kernels ("mhc_pre.avx2", "mhc_head.avx2", "mhc_post.avx2"). The algorithm,
// layouts, tiling and invariants are in mhc_fma.h; compiled with this file's flags it runs on
// 8-lane vectors.
#include "ops/mhc/cpu/mhc_fma.h"

namespace openmla {

const KernelEntry kMhcPreAvx2 = {"mhc_pre.avx2",      Op::kMhcPre, Isa::kAvx2,
                                 mhc_fma_unsupported, nullptr,     mhc_mix_fma_run};
const KernelEntry kMhcHeadAvx2 = {"mhc_head.avx2",     Op::kMhcHead, Isa::kAvx2,
                                  mhc_fma_unsupported, nullptr,      mhc_mix_fma_run};
const KernelEntry kMhcPostAvx2 = {"mhc_post.avx2",     Op::kMhcPost, Isa::kAvx2,
                                  mhc_fma_unsupported, nullptr,      mhc_post_fma_run};

}  // namespace openmla
