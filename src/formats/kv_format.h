// Internal view of a validated paged KV cache and per-token encode/decode for the three formats.
//
// V32 token record (656 B): [0,512) e4m3 NoPE, element i scaled by fp32 scale[i/128] stored at
// [512,528); [528,656) 64 bf16 RoPE. Records are 656 B apart inside a page.
// MODEL1 page of P tokens: token t's 576-B record at 576t ([0,448) e4m3 NoPE, [448,576) 64 bf16
// RoPE), then its 8-B scale record at 576P + 8t (7 ue8m0 scales for tiles of 64, 1 pad byte).
// BF16: [num_blocks, page_size, heads_kv, head_dim] with arbitrary outer strides; the elements
// are bf16, or fp16 where the op allows it (dense decode with fp16 q).
#pragma once

#include <cstdint>

#include "openmla/core.h"

namespace openmla {

/// The one table of the FP8 token-record layouts (byte offsets and sizes; `int`, as the literals
/// they replace, so the kernels compile to the same code): the kernels, the
/// reference and the Python module (through the binding) take them from here.
namespace kv_layout {
constexpr int kHeadDimV = 512;  ///< V dims of both formats (MODEL1: all of K, RoPE included)
constexpr int kRopeDim = 64;    ///< bf16 RoPE dims stored verbatim at the end of a record
constexpr int kRopeBytes = 2 * kRopeDim;

constexpr int kV32HeadDim = 576;
constexpr int kV32NopeDim = 512;  ///< e4m3 codes at [0, 512)
constexpr int kV32Tile = 128;     ///< elements per fp32 scale
constexpr int kV32NumTiles = kV32NopeDim / kV32Tile;
constexpr int kV32ScalesOffset = kV32NopeDim;  ///< 4 fp32 scales at [512, 528)
constexpr int kV32RopeOffset = kV32ScalesOffset + 4 * kV32NumTiles;  ///< 528
constexpr int kV32RecordBytes = kV32RopeOffset + kRopeBytes;         ///< 656

constexpr int kModel1HeadDim = 512;
constexpr int kModel1NopeDim = 448;                                 ///< e4m3 codes at [0, 448)
constexpr int kModel1Tile = 64;                                     ///< elements per ue8m0 scale
constexpr int kModel1NumTiles = kModel1NopeDim / kModel1Tile;       ///< 7
constexpr int kModel1RopeOffset = kModel1NopeDim;                   ///< 448
constexpr int kModel1RecordBytes = kModel1RopeOffset + kRopeBytes;  ///< 576
constexpr int kModel1ScaleBytes = 8;  ///< 7 ue8m0 scales + 1 pad byte, after all records
constexpr int kModel1ViewBytes = kModel1RecordBytes + kModel1ScaleBytes;  ///< 584
/// A MODEL1 page is padded to a multiple of this many bytes.
constexpr int kModel1PageAlign = kModel1RecordBytes;

static_assert(kV32NopeDim + kRopeDim == kV32HeadDim && kV32RecordBytes == 656, "V32 layout");
static_assert(kModel1NopeDim + kRopeDim == kModel1HeadDim && kModel1RecordBytes == 576 &&
                  kModel1ViewBytes == 584 && kModel1HeadDim == kHeadDimV,
              "MODEL1 layout");
}  // namespace kv_layout

struct FormatGeometry {
  int64_t head_dim;  ///< d_qk
  int64_t nope_dim;  ///< quantised part (0 for BF16)
  int64_t rope_dim;  ///< bf16 part stored verbatim (head_dim for BF16)
  int64_t tile;      ///< elements per scale
  int64_t num_tiles;
  int64_t bytes_per_token;  ///< last dim of the tensor view (656, 584, 2*head_dim)
  int64_t record_bytes;     ///< distance between token records in a page (656, 576, -)
};

/// Geometry of an FP8 format, or of BF16 with `head_dim`.
FormatGeometry format_geometry(KvFormat format, int64_t head_dim);

struct PagedCache {
  KvFormat format = KvFormat::kBF16;
  DType dtype = DType::kBF16;  ///< BF16 layout: the element type (kBF16 or kF16)
  FormatGeometry geometry{};
  const uint8_t* base = nullptr;
  int64_t num_blocks = 0, page_size = 0, heads_kv = 1, head_dim = 0;
  int64_t block_stride = 0;  ///< bytes between pages
  int64_t token_stride = 0;  ///< bytes between token records (bf16: stride(1) * 2)
  int64_t head_stride = 0;   ///< bytes between kv heads (bf16 only)

  int64_t num_slots() const { return num_blocks * page_size; }
  const uint8_t* token_record(int64_t block, int64_t offset, int64_t head) const {
    return base + block * block_stride + offset * token_stride + head * head_stride;
  }
  /// MODEL1 only: the 8-byte scale record of a token.
  const uint8_t* model1_scales(int64_t block, int64_t offset) const {
    return base + block * block_stride + page_size * kv_layout::kModel1RecordBytes +
           offset * kv_layout::kModel1ScaleBytes;
  }
};

/// Validates `t` as a cache for `head_dim` (FP8 dtypes pick V32/MODEL1 from head_dim; a 16-bit
/// dtype picks BF16) and fills `cache`. A 16-bit cache must have dtype `dtype16` (the op's q
/// dtype: bf16, or fp16 for dense decode); the other 16-bit type is kWrongDtype. `name` prefixes
/// error messages.
Status make_paged_cache(const TensorView& t, const char* name, int64_t head_dim, PagedCache* cache,
                        DType dtype16 = DType::kBF16);

/// Decodes one token of one kv head into bf16 bit patterns, exactly as FlashMLA's reference
/// dequantiser (V32: fp32 product rounded to bf16; MODEL1: bf16 x bf16 rounded to bf16). A BF16
/// layout cache is copied verbatim (fp16 words stay fp16, see `cache.dtype`).
void dequantize_token(const PagedCache& cache, int64_t block, int64_t offset, int64_t head,
                      uint16_t* out);

/// Encodes one bf16 latent of head_dim values into a token's record (and, for MODEL1, its
/// 8-byte scale record), exactly as FlashMLA's reference quantiser.
void quantize_token(KvFormat format, const uint16_t* latent, uint8_t* record, uint8_t* scales);

}  // namespace openmla
