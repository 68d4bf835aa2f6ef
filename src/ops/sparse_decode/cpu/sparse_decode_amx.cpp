// Sparse decode, AMX-BF16 kernel ("sparse_decode.amx"): the token-list driver of
// sparse_decode_token_list.h on the AMX token-list attention (cpu/token_list_attention_amx.cpp:
// heads folded into the AMX tiles).
#include "ops/sparse_decode/cpu/sparse_decode_token_list.h"

namespace openmla {
namespace {

Status amx_run(const void* params, const ExecConfig& config) {
  return token_list_run(params, config, amx_attend_token_list);
}

}  // namespace

const KernelEntry kSparseDecodeAmx = {"sparse_decode.amx", Op::kSparseDecode, Isa::kAmx,
                                      sd_unsupported,      sd_choose_splits,  amx_run};

}  // namespace openmla
