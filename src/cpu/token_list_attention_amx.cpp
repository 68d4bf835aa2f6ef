// Attention of one query token's heads over a token list on AMX-BF16 (cpu/token_list_attention.h;
// the core of sparse_decode.amx and of the AMX dense-decode / sparse-prefill many-head paths).
// The engine (gather, dequantisation, softmax, layouts, invariants) is cpu/token_list_core.h;
// this file supplies its two GEMMs as AMX tile loops: QK S^T = K . Q^T (cpu/amx_qk_strip.h) and
// PV O += P_hi . V + P_lo . V (two passes), 16x64-B tiles 2x2 blocked (32 heads x 32 columns; C
// tiles zeroed on the first block, else loaded from O).
#include <immintrin.h>

#include <cstdint>

#include "cpu/amx_qk_strip.h"
#include "cpu/amx_tile.h"
#include "cpu/token_list_core.h"

namespace openmla {
namespace {
// C tiles t0, t0+1 <- 16x32 floats at o (row stride ldo bytes), or zero when `init`.
inline void load_acc_pair(bool init, const float* o, int64_t ldo, int t0) {
  if (init) {
    if (t0 == 0) {
      _tile_zero(0);
      _tile_zero(1);
    } else {
      _tile_zero(2);
      _tile_zero(3);
    }
  } else if (t0 == 0) {
    _tile_loadd(0, o, ldo);
    _tile_loadd(1, o + 16, ldo);
  } else {
    _tile_loadd(2, o, ldo);
    _tile_loadd(3, o + 16, ldo);
  }
}

// O [hp][512] (+)= P [hp][n_pad] . V (VNNI [n_pad/2][512][2]); `init`: O = P . V.
void pv_amx(const uint16_t* pb, int64_t hp, int64_t n_pad, const uint16_t* vv, float* acc,
            bool init) {
  const int64_t ht = hp / 16, ksteps = n_pad / 32;
  const int64_t ldp = p_stride(n_pad) * 2, ldv = kLdV * 2, ldo = kLdO * 4;
  for (int64_t v = 0; v < kDimV / 16; v += 2) {
    int64_t i = 0;
    for (; i + 2 <= ht; i += 2) {
      float* o0 = acc + i * 16 * kLdO + v * 16;
      float* o1 = o0 + 16 * kLdO;
      load_acc_pair(init, o0, ldo, 0);
      load_acc_pair(init, o1, ldo, 2);
      const uint16_t* p0 = pb + i * 16 * p_stride(n_pad);
      const uint16_t* p1 = p0 + 16 * p_stride(n_pad);
      for (int64_t k = 0; k < ksteps; ++k) {
        const uint16_t* vk = vv + k * 16 * kLdV + v * 32;
        _tile_loadd(4, p0 + k * 32, ldp);
        _tile_loadd(6, vk, ldv);
        _tile_loadd(7, vk + 32, ldv);
        _tile_loadd(5, p1 + k * 32, ldp);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, o0, ldo);
      _tile_stored(1, o0 + 16, ldo);
      _tile_stored(2, o1, ldo);
      _tile_stored(3, o1 + 16, ldo);
    }
    if (i < ht) {
      float* o0 = acc + i * 16 * kLdO + v * 16;
      load_acc_pair(init, o0, ldo, 0);
      const uint16_t* p0 = pb + i * 16 * p_stride(n_pad);
      for (int64_t k = 0; k < ksteps; ++k) {
        const uint16_t* vk = vv + k * 16 * kLdV + v * 32;
        _tile_loadd(4, p0 + k * 32, ldp);
        _tile_loadd(6, vk, ldv);
        _tile_loadd(7, vk + 32, ldv);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
      }
      _tile_stored(0, o0, ldo);
      _tile_stored(1, o0 + 16, ldo);
    }
  }
}

struct AmxKernels {
  using Scope = AmxTileScope;
  static void qk_strip(const uint16_t* ks, int64_t d_qk, const uint16_t* qv, int64_t hp,
                       float* st) {
    openmla::qk_strip(ks, d_qk, qv, hp, st);
  }
  static void pv(const uint16_t* pb, const uint16_t* pl, int64_t hp, int64_t n_pad,
                 const uint16_t* vv, float* acc, bool init) {
    pv_amx(pb, hp, n_pad, vv, acc, init);
    pv_amx(pl, hp, n_pad, vv, acc, false);
  }
};

}  // namespace

void amx_attend_token_list(const TokenListQuery& query, TokenSource& source, HeadSink& sink) {
  attend_token_list_with<AmxKernels>(query, source, sink);
}

}  // namespace openmla
