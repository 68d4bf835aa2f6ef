// Lightning indexer, AVX-512 fp32 kernels ("*.avx512"), for CPUs without AMX. The
// algorithm, layouts, tiling and invariants are in indexer_fma.h; compiled with this file's
// AVX-512 flags it runs on 16-lane vectors (score tiles of 6 keys x 4 head vectors).
#include "ops/indexer/cpu/indexer_fma.h"

namespace openmla {

const KernelEntry kMqaLogitsAvx512 = {
    "mqa_logits.avx512", Op::kMqaLogits, Isa::kAvx512,
    indexer_any_problem, nullptr,        indexer_mqa_run<FmaMath>};
const KernelEntry kPagedMqaLogitsAvx512 = {
    "paged_mqa_logits.avx512", Op::kPagedMqaLogits, Isa::kAvx512, indexer_any_problem, nullptr,
    indexer_paged_run<FmaMath>};
const KernelEntry kPagedIndexerTopkAvx512 = {
    "paged_indexer_topk.avx512", Op::kPagedIndexerTopk, Isa::kAvx512, indexer_any_problem, nullptr,
    indexer_fused_run<FmaMath>};

}  // namespace openmla
