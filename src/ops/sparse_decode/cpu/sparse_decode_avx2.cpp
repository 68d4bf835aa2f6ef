// Sparse decode, AVX2 + FMA fp32 kernel ("sparse_decode.avx2"), for CPUs without AVX-512.
// The algorithm, layouts, tiling and invariants are in sparse_decode_fma.h; compiled with this
// file's AVX2 flags it runs on 8-lane vectors (QK: up to 2 head vectors, PV: up to 2 heads), with
// the portable e4m3 tables of cpu/fp8_convert.h and cpu/softmax_avx2.h.
#include "ops/sparse_decode/cpu/sparse_decode_fma.h"

namespace openmla {

const KernelEntry kSparseDecodeAvx2 = {"sparse_decode.avx2", Op::kSparseDecode,
                                       Isa::kAvx2,           sd_unsupported,
                                       sd_choose_splits,     sparse_decode_fma_run};

}  // namespace openmla
