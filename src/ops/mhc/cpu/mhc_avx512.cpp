// mHC, AVX-512 fp32 kernels ("mhc_pre.avx512", "mhc_head.avx512", "mhc_post.avx512"). The
// algorithm, layouts, tiling and invariants are in mhc_fma.h; compiled with this file's flags it
// runs on 16-lane vectors.
#include "ops/mhc/cpu/mhc_fma.h"

namespace openmla {

const KernelEntry kMhcPreAvx512 = {"mhc_pre.avx512",    Op::kMhcPre, Isa::kAvx512,
                                   mhc_fma_unsupported, nullptr,     mhc_mix_fma_run};
const KernelEntry kMhcHeadAvx512 = {"mhc_head.avx512",   Op::kMhcHead, Isa::kAvx512,
                                    mhc_fma_unsupported, nullptr,      mhc_mix_fma_run};
const KernelEntry kMhcPostAvx512 = {"mhc_post.avx512",   Op::kMhcPost, Isa::kAvx512,
                                    mhc_fma_unsupported, nullptr,      mhc_post_fma_run};

}  // namespace openmla
