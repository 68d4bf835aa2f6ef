// AMX probes.
// peak_loop_amx: 4 independent TDPBF16PS chains on tiles loaded once (register-only): the
// machine's matmul peak.
// tile_gemm_loop_amx: the sparse-decode kernel's own QK^T strip loop (cpu/amx_qk_strip.h: 2x2
// blocked, every operand tile loaded) on the V3.2 shape, a strip of 32 keys x 576 dims
// (L1-resident) times Q^T of 128 heads (147 KiB, streamed from L2), with no gather, dequant or
// softmax around it: the ceiling of the decode kernels' GEMM phases with their data in cache.
#include <immintrin.h>

#include <cstdint>

#include "cpu/amx_qk_strip.h"
#include "cpu/amx_tile.h"
#include "peak_probe.h"
#include "tile_gemm_operands.h"

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

double tile_gemm_loop_amx(long strips) {
  const TileGemmOperands op = tile_gemm_operands();
  AmxTileScope tiles;
  for (long s = 0; s < strips; ++s) qk_strip(op.ks, kTileGemmDepth, op.qv, kTileGemmHeads, op.st);
  asm volatile("" : : "r"(op.st) : "memory");
  return tile_gemm_flops(strips);
}

}  // namespace detail
}  // namespace openmla::probes
