// Dense decode, amx kernel ("dense_decode.amx").
// Algorithm: split-KV over fixed-size pieces of each request (dense_decode_cpu.h), online
// softmax per work item (cpu/attn_rows_engine.h), merge with cpu/combine.h.
// Layout: all seq_q x heads_q/heads_kv query rows of one kv head form the M dimension; keys are
// gathered (block table, any page size; FP8 dequantised once per token) into a [block][D] bf16
// buffer shared by every row, so the cache is streamed once per kv head whatever heads_q is.
// Tiling: AMX-BF16 tiles: QK with the gathered key rows as A and Q^T (VNNI) as B, S^T scores;
// PV with P (bf16, packed from S^T) as A and V (VNNI) as B, fp32 O tiles 2x2 blocked.
// Invariants: keys at or past a row's visible length never reach it (-inf score, zero-padded
// tail rows); piece boundaries depend only on the request; deterministic for any thread count.
// fp16: not served (rounding fp16 to bf16 would lose 3 bits; AMX-FP16 tiles are not used), so
// the registry falls through to dense_decode.avx512.
#include "cpu/amx_attn_backend.h"
#include "ops/dense_decode/cpu/dense_decode_cpu.h"

namespace openmla {
namespace {

const char* amx_unsupported(const void* params) {
  if (const char* reason = dd_unsupported(params)) return reason;
  if (static_cast<const DenseDecodeParams*>(params)->dtype == DType::kF16)
    return "fp16 needs AMX-FP16 tiles (this kernel computes in AMX-BF16)";
  return nullptr;
}

Status run_amx(const void* params, const ExecConfig& config) {
  return dd_run<AmxAttnBackend>(*static_cast<const DenseDecodeParams*>(params), config);
}

}  // namespace

const KernelEntry kDenseDecodeAmx = {"dense_decode.amx", Op::kDenseDecode, Isa::kAmx,
                                     amx_unsupported,    dd_choose_splits, run_amx};

}  // namespace openmla
