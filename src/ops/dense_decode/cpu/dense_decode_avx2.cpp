// Dense decode, avx2 kernel ("dense_decode.avx2").
// Algorithm: split-KV over fixed-size pieces of each request (dense_decode_cpu.h), online
// softmax per work item (cpu/attn_rows_engine.h), merge with cpu/combine.h.
// Layout: all seq_q x heads_q/heads_kv query rows of one kv head form the M dimension; keys are
// gathered (block table, any page size; FP8 dequantised once per token) into a [block][D] 16-bit
// buffer shared by every row, so the cache is streamed once per kv head whatever heads_q is.
// dtypes: q and a BF16-layout cache in bf16 or fp16 (out in q's dtype); FP8 caches with bf16 q.
// Tiling: AVX2 fp32 FMA (8 lanes): bf16 widened by a shift, fp16 by F16C (both exact);
// 4 keys x 16 heads of accumulators for QK, 2 rows x 4 vectors for PV; FP8 dequant bit-exact
// (VBMI tables / portable table).
// Invariants: keys at or past a row's visible length never reach it (-inf score, zero-padded
// tail rows); piece boundaries depend only on the request; deterministic for any thread count.
#include "cpu/fma_attn_backend.h"
#include "ops/dense_decode/cpu/dense_decode_cpu.h"

namespace openmla {
namespace {

Status run_avx2(const void* params, const ExecConfig& config) {
  return dd_run<FmaAttnBackend>(*static_cast<const DenseDecodeParams*>(params), config);
}

}  // namespace

const KernelEntry kDenseDecodeAvx2 = {"dense_decode.avx2", Op::kDenseDecode, Isa::kAvx2,
                                      dd_unsupported,      dd_choose_splits, run_avx2};

}  // namespace openmla
