// AMX peak loop: 4 independent TDPBF16PS chains on tiles loaded once (register-only).
#include <immintrin.h>

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

}  // namespace detail
}  // namespace openmla
