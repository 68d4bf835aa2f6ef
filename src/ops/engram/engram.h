// Engram: validated parameters of the gate kernels and their registry entries. See
// include/openmla/v4_blocks.h for the semantics (the hash and the row gather are plain functions
// in engram_lookup.cpp; only the gate has per-ISA kernels).
#pragma once

#include <cstdint>

#include "dispatch/registry.h"

namespace openmla {

struct EngramGateParams {
  int64_t tokens = 0, hc = 0, hidden = 0;
  float eps = 0.0f, clamp_value = 0.0f;
  const uint16_t* h = nullptr;  ///< bf16 [tokens, hc, hidden]
  int64_t h_stride[2] = {};
  const uint16_t* kv = nullptr;  ///< bf16 [tokens, (hc + 1) * hidden]
  int64_t kv_stride = 0;
  const float* weight = nullptr;  ///< [hc, hidden]
  int64_t weight_stride = 0;
  uint16_t* out = nullptr;
  int64_t out_stride[2] = {};
};

/// sigmoid(sign(d) * sqrt(max(|d|, clamp))) in fp32: the gate of the fast kernels.
float engram_gate_value_f32(float d, float clamp_value);

extern const KernelEntry kEngramGateAvx512;
extern const KernelEntry kEngramGateAvx2;
extern const KernelEntry kEngramGateRef;

}  // namespace openmla
