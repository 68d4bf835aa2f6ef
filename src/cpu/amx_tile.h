// AMX tile configuration RAII (include only from *_amx.cpp). Loads palette 1 with all eight
// tiles at 16 rows x 64 bytes (the only shape openmla's AMX kernels use: bf16 A/B tiles of
// 16x32, fp32 C tiles of 16x16) and releases the tile state on scope exit. The AMX permission
// (arch_prctl) is requested by dispatch/cpu_features before any AMX kernel is selected.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace openmla {
namespace {

struct AmxTileScope {
  AmxTileScope() {
    alignas(64) uint8_t cfg[64];
    std::memset(cfg, 0, sizeof(cfg));
    cfg[0] = 1;  // palette 1
    for (int t = 0; t < 8; ++t) {
      cfg[16 + 2 * t] = 64;  // colsb (bytes per row), little-endian uint16
      cfg[48 + t] = 16;      // rows
    }
    _tile_loadconfig(cfg);
  }
  ~AmxTileScope() { _tile_release(); }
  AmxTileScope(const AmxTileScope&) = delete;
  AmxTileScope& operator=(const AmxTileScope&) = delete;
};

}  // namespace
}  // namespace openmla
