// Sparse decode, AVX-512 fp32-FMA kernel ("sparse_decode.avx512"), for CPUs without AMX.
// The algorithm, layouts, tiling and invariants are in sparse_decode_fma.h; compiled with this
// file's AVX-512 flags it runs on 16-lane vectors (QK: up to 4 head vectors, PV: up to 4 heads),
// with the VBMI e4m3 tables of cpu/fp8_convert_avx512.h and cpu/softmax_avx512.h.
#include "ops/sparse_decode/cpu/sparse_decode_fma.h"

namespace openmla {

const KernelEntry kSparseDecodeAvx512 = {"sparse_decode.avx512", Op::kSparseDecode,
                                         Isa::kAvx512,           sd_unsupported,
                                         sd_choose_splits,       sparse_decode_fma_run};

}  // namespace openmla
