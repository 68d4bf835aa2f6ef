// Lightning indexer, AVX2 + FMA fp32 kernels ("*.avx2"), for CPUs without AVX-512. The
// algorithm, layouts, tiling and invariants are in indexer_fma.h; compiled with this file's AVX2
// flags it runs on 8-lane vectors (score tiles of 6 keys x 2 head vectors).
#include "ops/indexer/cpu/indexer_fma.h"

namespace openmla {

const KernelEntry kMqaLogitsAvx2 = {"mqa_logits.avx2",   Op::kMqaLogits, Isa::kAvx2,
                                    indexer_any_problem, nullptr,        indexer_mqa_run<FmaMath>};
const KernelEntry kPagedMqaLogitsAvx2 = {
    "paged_mqa_logits.avx2",   Op::kPagedMqaLogits, Isa::kAvx2, indexer_any_problem, nullptr,
    indexer_paged_run<FmaMath>};
const KernelEntry kPagedIndexerTopkAvx2 = {
    "paged_indexer_topk.avx2", Op::kPagedIndexerTopk, Isa::kAvx2, indexer_any_problem, nullptr,
    indexer_fused_run<FmaMath>};

}  // namespace openmla
