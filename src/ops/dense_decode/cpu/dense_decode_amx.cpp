// Dense decode, amx kernel ("dense_decode.amx").
// Algorithm: split-KV over fixed-size pieces of each request (dense_decode_cpu.h), merge with
// cpu/combine.h. A piece is run one of two ways, chosen by the shape alone:
// - one query token and >= 64 query heads per kv head (the compute-bound decode of V3 / V3.2 /
//   V4 heads): the piece's tokens, in cache order, are the token list of the AMX token-list
//   attention that sparse_decode.amx runs (dense_decode_token_list.h); measured 6-15 % faster
//   than the engine on that shape (BENCHMARKS.md, third round);
// - otherwise the attention-rows engine (cpu/attn_rows_engine.h, AMX backend): all seq_q x
//   heads_q/heads_kv query rows of one kv head form the M dimension, keys are gathered once per
//   block (16-bit records read in place) and shared by every row, causal limits per row.
// Both: AMX-BF16 2x2-blocked tiles, QK with the key rows as A and Q^T (VNNI) as B, PV with P
// (bf16) as A and V (VNNI) as B, fp32 O; FP8 dequantised exactly, once per token.
// Invariants: keys at or past a row's visible length never reach it; piece boundaries and the
// choice of path depend only on the request's shape; deterministic for any thread count.
// fp16: not served (rounding fp16 to bf16 would lose 3 bits; AMX-FP16 tiles are not used), so
// the registry falls through to dense_decode.avx512.
#include "cpu/amx_attn_backend.h"
#include "ops/dense_decode/cpu/dense_decode_token_list.h"

namespace openmla {
namespace {

const char* amx_unsupported(const void* params) {
  if (const char* reason = dd_unsupported(params)) return reason;
  if (static_cast<const DenseDecodeParams*>(params)->dtype == DType::kF16)
    return "fp16 needs AMX-FP16 tiles (this kernel computes in AMX-BF16)";
  return nullptr;
}

Status run_amx(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const DenseDecodeParams*>(params);
  if (p.seq_q == 1 && p.heads_q / p.heads_kv >= kTokenListMinHeads)
    return dd_run_items(p, config,
                        [&](const DdItem& it) { token_list_item(p, it, amx_attend_token_list); });
  return dd_run<AmxAttnBackend>(p, config);
}

}  // namespace

const KernelEntry kDenseDecodeAmx = {"dense_decode.amx", Op::kDenseDecode, Isa::kAmx,
                                     amx_unsupported,    dd_choose_splits, run_amx};

}  // namespace openmla
