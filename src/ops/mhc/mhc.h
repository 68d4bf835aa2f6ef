// mHC: validated parameters shared by every mHC kernel, and the kernels' registry entries. See
// include/openmla/v4_blocks.h for the semantics. hc_pre and hc_head share MhcMixParams: hc_head
// is the mix with `rows == hc` (pre weights only, no post / comb outputs).
#pragma once

#include <cstdint>

#include "dispatch/registry.h"

namespace openmla {

constexpr int64_t kMhcMaxStreams = 8;  ///< hc is validated into [1, 8] (V4 uses 4)

struct MhcMixParams {
  bool head = false;  ///< hc_head: rows == hc, one scale, no post / comb
  int64_t tokens = 0, hc = 0, hidden = 0;
  int64_t rows = 0;  ///< projection rows: (2 + hc) * hc, or hc for the head
  int64_t sinkhorn_iters = 0;
  float rms_eps = 0.0f, hc_eps = 0.0f;
  const uint16_t* x = nullptr;  ///< bf16
  int64_t x_stride[2] = {};     ///< token, stream (elements); hidden is contiguous
  const float* fn = nullptr;    ///< [rows, hc * hidden], row stride fn_stride, rows contiguous
  int64_t fn_stride = 0;
  float scale[3] = {};  ///< hc_scale values (the head uses scale[0])
  float base[(2 + kMhcMaxStreams) * kMhcMaxStreams] = {};
  uint16_t* y = nullptr;  ///< [tokens, hidden] bf16
  int64_t y_stride = 0;
  float* post = nullptr;  ///< [tokens, hc] (pre only)
  int64_t post_stride[2] = {};
  float* comb = nullptr;  ///< [tokens, hc, hc] (pre only)
  int64_t comb_stride[3] = {};
};

struct MhcPostParams {
  int64_t tokens = 0, hc = 0, hidden = 0;
  const uint16_t* x = nullptr;  ///< f [tokens, hidden]
  int64_t x_stride = 0;
  const uint16_t* residual = nullptr;
  int64_t residual_stride[2] = {};
  const float* post = nullptr;
  int64_t post_stride[2] = {};
  const float* comb = nullptr;
  int64_t comb_stride[3] = {};
  uint16_t* out = nullptr;
  int64_t out_stride[2] = {};
};

/// The 2 + hc gates of one token from its projection `mix` (already multiplied by the rsqrt):
/// pre, post and the Sinkhorn-normalised comb (row-major hc x hc), fp32, in the order of the
/// reference (softmax over each row + eps, column step, then iters - 1 row + column steps).
/// Shared by the fast kernels so that they agree on the tiny serial part.
void mhc_gates_f32(const MhcMixParams& p, const float* mix, float* pre, float* post, float* comb);

extern const KernelEntry kMhcPreAvx512;
extern const KernelEntry kMhcPreAvx2;
extern const KernelEntry kMhcPreRef;
extern const KernelEntry kMhcHeadAvx512;
extern const KernelEntry kMhcHeadAvx2;
extern const KernelEntry kMhcHeadRef;
extern const KernelEntry kMhcPostAvx512;
extern const KernelEntry kMhcPostAvx2;
extern const KernelEntry kMhcPostRef;

}  // namespace openmla
