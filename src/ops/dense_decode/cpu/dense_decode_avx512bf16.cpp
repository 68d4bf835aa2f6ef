// Dense decode, AVX512-BF16 kernel ("dense_decode.avx512bf16"), for hosts with the BF16 dot and
// no AMX (e.g. AMD Zen 4).
// Algorithm: split-KV over fixed-size pieces of each request (dense_decode_cpu.h), merged by the
// one combine; every (request, kv head, piece) item runs each of its query tokens through the
// AVX512-BF16 token-list attention (dense_decode_token_list.h, cpu/token_list_core.h): the
// piece's tokens gathered and dequantised exactly once per query token for all heads of the kv
// head, vdpbf16ps register tiles for QK and PV, P rounded to bf16 (as FlashMLA and the AMX
// kernel), fp32 O.
// Invariants: keys at or past a row's visible length never reach it; piece boundaries depend only
// on the request's shape; deterministic for any thread count.
// fp16: not served (rounding fp16 to bf16 would lose 3 bits), so the registry falls through to
// dense_decode.avx512.
#include "ops/dense_decode/cpu/dense_decode_token_list.h"

namespace openmla {
namespace {

const char* bf16_unsupported(const void* params) {
  if (const char* reason = dd_unsupported(params)) return reason;
  if (static_cast<const DenseDecodeParams*>(params)->dtype == DType::kF16)
    return "fp16 is not exact in the BF16 dot product (this kernel computes in bf16)";
  return nullptr;
}

Status run_bf16(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const DenseDecodeParams*>(params);
  return dd_run_items(p, config,
                      [&](const DdItem& it) { token_list_item(p, it, bf16_attend_token_list); });
}

}  // namespace

const KernelEntry kDenseDecodeAvx512Bf16 = {"dense_decode.avx512bf16", Op::kDenseDecode,
                                            Isa::kAvx512Bf16,          bf16_unsupported,
                                            dd_choose_splits,          run_bf16};

}  // namespace openmla
