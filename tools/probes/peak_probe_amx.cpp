// AMX probes.
// peak_loop_amx: 4 independent TDPBF16PS chains on tiles loaded once (register-only): the
// machine's matmul peak.
// tile_gemm_loop_amx: the sparse-decode kernel's own QK^T strip loop (cpu/amx_qk_strip.h: 2x2
// blocked, every operand tile loaded) on the V3.2 shape, a strip of 32 keys x 576 dims
// (L1-resident) times Q^T of 128 heads (147 KiB, streamed from L2), with no gather, dequant or
// softmax around it: the ceiling of the decode kernels' GEMM phases with their data in cache.
#include <immintrin.h>

#include <cstdint>

#include "cpu/aligned_buffer.h"
#include "cpu/amx_qk_strip.h"
#include "cpu/amx_tile.h"
#include "peak_probe.h"

namespace openmla::probes {
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
constexpr int64_t kDepth = 576, kHeads = 128;
}  // namespace

double tile_gemm_loop_amx(long strips) {
  static thread_local AlignedBuffer<uint16_t> k_buf, q_buf;
  static thread_local AlignedBuffer<float> s_buf;
  uint16_t* ks = k_buf.get(32 * kDepth);
  uint16_t* qv = q_buf.get(kDepth * kHeads);
  float* st = s_buf.get(32 * kHeads);
  static thread_local bool filled = false;
  if (!filled) {  // once per thread, so that the timed calls run the strips alone
    for (int64_t i = 0; i < 32 * kDepth; ++i) ks[i] = 0x3F80;      // bf16 1.0: no denormal, no NaN
    for (int64_t i = 0; i < kDepth * kHeads; ++i) qv[i] = 0x3C00;  // bf16 2^-7
    filled = true;
  }
  AmxTileScope tiles;
  for (long s = 0; s < strips; ++s) qk_strip(ks, kDepth, qv, kHeads, st);
  asm volatile("" : : "r"(st) : "memory");
  return static_cast<double>(strips) * 2.0 * 32 * kHeads * kDepth;
}

}  // namespace detail
}  // namespace openmla::probes
