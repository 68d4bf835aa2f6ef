// Engram gate, AVX-512 fp32 kernel ("engram_gate.avx512"). The algorithm, layouts and invariants
// are in engram_fma.h; compiled with this file's flags it runs on 16-lane vectors.
#include "ops/engram/cpu/engram_fma.h"

namespace openmla {

const KernelEntry kEngramGateAvx512 = {
    "engram_gate.avx512",   Op::kEngramGate, Isa::kAvx512,
    engram_fma_unsupported, nullptr,         engram_gate_fma_run};

}  // namespace openmla
