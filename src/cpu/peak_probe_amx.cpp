// AMX probes.
// peak_loop_amx: 4 independent TDPBF16PS chains on tiles loaded once (register-only): the
// machine's matmul peak.
// tile_gemm_loop_amx: what a plain 2x2-blocked tile GEMM reaches when every operand tile is
// loaded, on the MLA decode QK^T shape (a strip of 32 keys x 576 dims, L1-resident, times Q^T of
// 128 heads as contiguous 1 KiB B tiles, 147 KiB, streamed from L2; the 4 C tiles stored per head
// pair): the ceiling of the GEMM phases of the decode kernels with their data already in cache.
#include <immintrin.h>

#include <cstdint>

#include "cpu/aligned_buffer.h"
#include "cpu/amx_tile.h"
#include "cpu/peak_probe.h"

namespace openmla {
namespace detail {

double peak_loop_amx(long iters) {
  alignas(64) uint16_t ones[16 * 32];
  for (uint16_t& v : ones) v = 0x3F80;  // bf16 1.0
  AmxTileScope tiles;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, ones, 64);
  _tile_loadd(5, ones, 64);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, ones, 64);
  for (long i = 0; i < iters; ++i) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float sink[256];
  _tile_stored(0, sink, 64);
  asm volatile("" : : "r"(sink) : "memory");
  return 4.0 * 16 * 16 * 32 * 2 * static_cast<double>(iters);
}

namespace {

constexpr int64_t kDepth = 576, kHeads = 128, kKeySteps = kDepth / 32, kHeadTiles = kHeads / 16;

// S^T [32][128] = K [32][576] . Q^T, 2x2 blocked over (2 key tiles, 2 head tiles).
void qk_strip_probe(const uint16_t* ks, const uint16_t* qv, float* st) {
  constexpr int64_t ldk = kDepth * 2, lds = kHeads * 4;
  const uint16_t* k1 = ks + 16 * kDepth;
  for (int64_t j = 0; j < kHeadTiles; j += 2) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t k = 0; k < kKeySteps; ++k) {
      const uint16_t* q = qv + (k * kHeadTiles + j) * 512;
      _tile_loadd(4, ks + k * 32, ldk);
      _tile_loadd(6, q, 64);
      _tile_loadd(7, q + 512, 64);
      _tile_loadd(5, k1 + k * 32, ldk);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, st + j * 16, lds);
    _tile_stored(1, st + j * 16 + 16, lds);
    _tile_stored(2, st + 16 * kHeads + j * 16, lds);
    _tile_stored(3, st + 16 * kHeads + j * 16 + 16, lds);
  }
}

}  // namespace

double tile_gemm_loop_amx(long strips) {
  static thread_local AlignedBuffer<uint16_t> k_buf, q_buf;
  static thread_local AlignedBuffer<float> s_buf;
  uint16_t* ks = k_buf.get(32 * kDepth);
  uint16_t* qv = q_buf.get(kDepth * kHeads);
  float* st = s_buf.get(32 * kHeads);
  for (int64_t i = 0; i < 32 * kDepth; ++i) ks[i] = 0x3F80;      // bf16 1.0: no denormal, no NaN
  for (int64_t i = 0; i < kDepth * kHeads; ++i) qv[i] = 0x3C00;  // bf16 2^-7
  AmxTileScope tiles;
  for (long s = 0; s < strips; ++s) qk_strip_probe(ks, qv, st);
  asm volatile("" : : "r"(st) : "memory");
  return static_cast<double>(strips) * (kHeadTiles / 2) * kKeySteps * 4 * (16.0 * 16 * 32 * 2);
}

}  // namespace detail
}  // namespace openmla
