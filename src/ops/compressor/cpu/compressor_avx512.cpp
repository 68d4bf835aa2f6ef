// KV compressor, AVX-512 fp32 kernel ("compressor.avx512").
// The algorithm and invariants are in compressor_fma.h; compiled with this file's AVX-512 flags
// it pools 16-lane vectors with the exp2 of cpu/softmax_avx512.h.
#include "ops/compressor/cpu/compressor_fma.h"

namespace openmla {

const KernelEntry kCompressorAvx512 = {
    "compressor.avx512",        Op::kCompressor, Isa::kAvx512,
    compressor_fma_unsupported, nullptr,         compressor_fma_run};

}  // namespace openmla
