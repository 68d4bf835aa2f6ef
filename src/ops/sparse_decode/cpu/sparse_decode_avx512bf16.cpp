// Sparse decode, AVX512-BF16 kernel ("sparse_decode.avx512bf16"): the token-list driver of
// sparse_decode_token_list.h on the AVX512-BF16 token-list attention
// (cpu/token_list_attention_avx512bf16.cpp: vdpbf16ps register tiles, heads along the vectors).
#include "ops/sparse_decode/cpu/sparse_decode_token_list.h"

namespace openmla {
namespace {

Status bf16_run(const void* params, const ExecConfig& config) {
  return token_list_run(params, config, bf16_attend_token_list);
}

}  // namespace

const KernelEntry kSparseDecodeAvx512Bf16 = {"sparse_decode.avx512bf16", Op::kSparseDecode,
                                             Isa::kAvx512Bf16,           sd_unsupported,
                                             sd_choose_splits,           bf16_run};

}  // namespace openmla
