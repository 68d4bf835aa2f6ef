// Element loops of the split-KV combine (cpu/combine.h), in two versions that give the same bits:
// plain C++ (combine.cpp) and AVX-512 (combine_avx512.cpp). combine_partials uses the AVX-512
// one when the host has it; a unit test compares the two bit for bit.
// Both compute acc = w * o, then acc = acc + w * o piece by piece as a rounded multiply followed
// by a rounded add (never fused), and round acc once (RNE, integer arithmetic) to bf16 or fp16
// with the NaN rules of core/dtype.h (float_to_bf16 / float_to_fp16).
#pragma once

#include <cstdint>

#include "openmla/core.h"

namespace openmla {

struct CombineLoops {
  void (*scale)(float w, const float* o, int64_t n, float* acc);       ///< acc = w * o
  void (*add_scaled)(float w, const float* o, int64_t n, float* acc);  ///< acc += w * o
  void (*round)(const float* acc, int64_t n, DType dtype, uint16_t* out);
};

const CombineLoops& combine_loops_portable();
/// Callable only on hosts with AVX-512 F and BW.
const CombineLoops& combine_loops_avx512();
/// The AVX-512 loops when the host supports AVX-512 (F, BW), else the portable ones.
const CombineLoops& combine_loops();

}  // namespace openmla
