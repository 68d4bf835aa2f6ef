// Engram gate, AVX2 + FMA fp32 kernel ("engram_gate.avx2"). The algorithm, layouts and invariants
// are in engram_fma.h; compiled with this file's flags it runs on 8-lane vectors.
#include "ops/engram/cpu/engram_fma.h"

namespace openmla {

const KernelEntry kEngramGateAvx2 = {"engram_gate.avx2",     Op::kEngramGate, Isa::kAvx2,
                                     engram_fma_unsupported, nullptr,         engram_gate_fma_run};

}  // namespace openmla
