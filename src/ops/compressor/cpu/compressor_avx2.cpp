// KV compressor, AVX2 + FMA fp32 kernel ("compressor.avx2"), for CPUs without AVX-512.
// The algorithm and invariants are in compressor_fma.h; compiled with this file's AVX2 flags it
// pools 8-lane vectors with the exp2 of cpu/softmax_avx2.h.
#include "ops/compressor/cpu/compressor_fma.h"

namespace openmla {

const KernelEntry kCompressorAvx2 = {"compressor.avx2", Op::kCompressor,
                                     Isa::kAvx2,        compressor_fma_unsupported,
                                     nullptr,           compressor_fma_run};

}  // namespace openmla
