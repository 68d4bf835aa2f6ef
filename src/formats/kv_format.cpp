#include "formats/kv_format.h"

#include <cmath>
#include <string>

#include "core/check.h"
#include "core/dtype.h"

namespace openmla {

FormatGeometry format_geometry(KvFormat format, int64_t head_dim) {
  using namespace kv_layout;
  switch (format) {
    case KvFormat::kV32:
      return {kV32HeadDim,  kV32NopeDim,     kRopeDim,       kV32Tile,
              kV32NumTiles, kV32RecordBytes, kV32RecordBytes};
    case KvFormat::kModel1:
      return {kModel1HeadDim,  kModel1NopeDim,   kRopeDim,          kModel1Tile,
              kModel1NumTiles, kModel1ViewBytes, kModel1RecordBytes};
    case KvFormat::kBF16:
      break;
  }
  return {head_dim, 0, head_dim, 0, 0, 2 * head_dim, 2 * head_dim};
}

namespace {

Status make_fp8_cache(const TensorView& t, const std::string& n, KvFormat format,
                      PagedCache* cache) {
  const FormatGeometry g = format_geometry(format, 0);
  OPENMLA_RETURN_IF_ERROR(
      check_tensor(t, n.c_str(), {DType::kU8, DType::kI8, DType::kE4M3}, 4, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, n.c_str(), 2, 1, "heads_kv (FP8 caches hold one head)"));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, n.c_str(), 3, g.bytes_per_token, "bytes_per_token"));
  if (t.shape[1] > 1 && t.stride[1] != g.bytes_per_token) {
    return invalid_argument(n + ": stride[1] must be " + std::to_string(g.bytes_per_token) +
                            " (a page must be contiguous), got " + std::to_string(t.stride[1]));
  }
  const int64_t page_bytes = g.bytes_per_token * t.shape[1];
  if (t.shape[0] > 1 && t.stride[0] < page_bytes) {
    return invalid_argument(n + ": stride[0] must be at least the page size in bytes (" +
                            std::to_string(page_bytes) + "), got " + std::to_string(t.stride[0]));
  }
  cache->format = format;
  cache->geometry = g;
  cache->heads_kv = 1;
  cache->head_dim = g.head_dim;
  cache->block_stride = t.stride[0];
  cache->token_stride = g.record_bytes;
  cache->head_stride = 0;
  return Status::Ok();
}

Status make_16bit_cache(const TensorView& t, const std::string& n, int64_t head_dim, DType dtype16,
                        PagedCache* cache) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(t, n.c_str(), {DType::kBF16, DType::kF16}, 4, true));
  if (t.dtype != dtype16) {
    return Status(StatusCode::kWrongDtype,
                  n + ": expected dtype " + dtype_name(dtype16) +
                      " (a 16-bit cache takes the dtype of q or the latents), got " +
                      dtype_name(t.dtype));
  }
  OPENMLA_RETURN_IF_ERROR(check_dim(t, n.c_str(), 3, head_dim, "head_dim"));
  if (t.shape[2] < 1) return invalid_argument(n + ": heads_kv (shape[2]) must be at least 1");
  cache->format = KvFormat::kBF16;
  cache->dtype = dtype16;
  cache->geometry = format_geometry(KvFormat::kBF16, head_dim);
  cache->heads_kv = t.shape[2];
  cache->head_dim = head_dim;
  cache->block_stride = t.stride[0] * 2;
  cache->token_stride = t.stride[1] * 2;
  cache->head_stride = t.stride[2] * 2;
  return Status::Ok();
}

}  // namespace

Status make_paged_cache(const TensorView& t, const char* name, int64_t head_dim, PagedCache* cache,
                        DType dtype16) {
  const std::string n(name);
  if (!t.present()) return invalid_argument(n + ": required tensor is missing");
  if (t.dtype == DType::kBF16 || t.dtype == DType::kF16) {
    OPENMLA_RETURN_IF_ERROR(make_16bit_cache(t, n, head_dim, dtype16, cache));
  } else {
    KvFormat format;
    if (head_dim == kv_layout::kV32HeadDim) {
      format = KvFormat::kV32;
    } else if (head_dim == kv_layout::kModel1HeadDim) {
      format = KvFormat::kModel1;
    } else {
      return unsupported(n + ": FP8 caches need head_dim 576 (V32) or 512 (MODEL1), got " +
                         std::to_string(head_dim));
    }
    OPENMLA_RETURN_IF_ERROR(make_fp8_cache(t, n, format, cache));
  }
  cache->base = static_cast<const uint8_t*>(t.data);
  cache->num_blocks = t.shape[0];
  cache->page_size = t.shape[1];
  if (cache->page_size < 1)  // also for an empty cache: callers divide by page_size
    return invalid_argument(n + ": page_size (shape[1]) must be at least 1");
  return Status::Ok();
}

void dequantize_token(const PagedCache& cache, int64_t block, int64_t offset, int64_t head,
                      uint16_t* out) {
  const uint8_t* rec = cache.token_record(block, offset, head);
  const FormatGeometry& g = cache.geometry;
  if (cache.format == KvFormat::kBF16) {
    for (int64_t i = 0; i < g.head_dim; ++i) out[i] = load_unaligned<uint16_t>(rec + 2 * i);
    return;
  }
  const uint8_t* scales =
      cache.format == KvFormat::kV32 ? rec + g.nope_dim : cache.model1_scales(block, offset);
  for (int64_t tile = 0; tile < g.num_tiles; ++tile) {
    const float scale = cache.format == KvFormat::kV32 ? load_unaligned<float>(scales + 4 * tile)
                                                       : ue8m0_to_float(scales[tile]);
    for (int64_t i = tile * g.tile; i < (tile + 1) * g.tile; ++i)
      out[i] = float_to_bf16(e4m3_to_float(rec[i]) * scale);
  }
  const uint8_t* rope = rec + (cache.format == KvFormat::kV32 ? kv_layout::kV32RopeOffset
                                                              : kv_layout::kModel1RopeOffset);
  for (int64_t i = 0; i < g.rope_dim; ++i)
    out[g.nope_dim + i] = load_unaligned<uint16_t>(rope + 2 * i);
}

namespace {

/// FlashMLA's scale: 2^ceil(log2(max(amax / 448, 1e-4))), computed in fp32 (NaN stays NaN).
float ue8m0_scale_for(float amax) {
  float s = amax / 448.0f;
  if (std::isnan(s)) return s;
  s = std::fmax(s, 1e-4f);
  return std::pow(2.0f, std::ceil(std::log2(s)));
}

}  // namespace

void quantize_token(KvFormat format, const uint16_t* latent, uint8_t* record, uint8_t* scales) {
  const FormatGeometry g = format_geometry(format, 0);
  for (int64_t tile = 0; tile < g.num_tiles; ++tile) {
    float amax = 0.0f;
    for (int64_t i = tile * g.tile; i < (tile + 1) * g.tile; ++i) {
      const float a = std::fabs(bf16_to_float(latent[i]));
      amax = (std::isnan(a) || std::isnan(amax)) ? NAN : std::fmax(amax, a);
    }
    const float scale = ue8m0_scale_for(amax);
    bf16_to_e4m3_scaled(latent + tile * g.tile, g.tile, scale, record + tile * g.tile);
    if (format == KvFormat::kV32) {
      store_unaligned<float>(record + g.nope_dim + 4 * tile, scale);
    } else {
      scales[tile] = float_to_ue8m0(scale);
    }
  }
  if (format == KvFormat::kModel1) scales[7] = 0;
  uint8_t* rope = record + (format == KvFormat::kV32 ? kv_layout::kV32RopeOffset
                                                     : kv_layout::kModel1RopeOffset);
  for (int64_t i = 0; i < g.rope_dim; ++i)
    store_unaligned<uint16_t>(rope + 2 * i, latent[g.nope_dim + i]);
}

}  // namespace openmla
