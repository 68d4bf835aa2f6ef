// Public KV-cache operations: sizes, whole-cache quantise / dequantise, token writes and the
// logical-to-physical index conversion. Validation first, then plain loops over tokens.
#include <string>

#include "core/check.h"
#include "core/dtype.h"
#include "core/thread_pool.h"
#include "formats/kv_format.h"
#include "openmla/kv_cache.h"

namespace openmla {

Status fp8_format_for_head_dim(int64_t head_dim, KvFormat* format) {
  if (head_dim == kv_layout::kV32HeadDim) *format = KvFormat::kV32;
  else if (head_dim == kv_layout::kModel1HeadDim) *format = KvFormat::kModel1;
  else return unsupported("head_dim " + std::to_string(head_dim) + " has no FP8 format (576 or 512)");
  return Status::Ok();
}

Status kv_bytes_per_token(KvFormat format, int64_t head_dim, int64_t* bytes) {
  if (bytes == nullptr) return invalid_argument("bytes: output pointer is null");
  if (format == KvFormat::kBF16 && (head_dim < 1 || head_dim > (int64_t{1} << 40)))
    return invalid_argument("head_dim must be positive, got " + std::to_string(head_dim));
  *bytes = format_geometry(format, head_dim).bytes_per_token;
  return Status::Ok();
}

Status kv_page_bytes(KvFormat format, int64_t page_size, int64_t head_dim, int64_t heads_kv,
                     int64_t* bytes) {
  if (bytes == nullptr) return invalid_argument("bytes: output pointer is null");
  if (page_size < 1 || page_size > (int64_t{1} << 31))
    return invalid_argument("page_size must be in [1, 2^31], got " + std::to_string(page_size));
  if (heads_kv < 1 || heads_kv > 65536)
    return invalid_argument("heads_kv must be in [1, 65536], got " + std::to_string(heads_kv));
  if (format != KvFormat::kBF16 && heads_kv != 1)
    return invalid_argument("FP8 caches hold one kv head, got heads_kv " + std::to_string(heads_kv));
  int64_t per_token = 0;
  OPENMLA_RETURN_IF_ERROR(kv_bytes_per_token(format, head_dim, &per_token));
  constexpr int64_t kAlign = kv_layout::kModel1PageAlign;
  int64_t raw = 0;
  if (__builtin_mul_overflow(per_token, page_size, &raw) ||
      __builtin_mul_overflow(raw, heads_kv, &raw) || raw > INT64_MAX - (kAlign - 1))
    return invalid_argument("page_size * heads_kv * bytes per token overflows int64");
  *bytes = format == KvFormat::kModel1 ? (raw + kAlign - 1) / kAlign * kAlign : raw;
  return Status::Ok();
}

namespace {

Status check_format_matches(const PagedCache& cache, KvFormat format, const char* name) {
  if (cache.format == format) return Status::Ok();
  return invalid_argument(std::string(name) + ": holds a " + kv_format_name(cache.format) +
                          " cache, but format " + kv_format_name(format) + " was requested");
}

/// Validates a bf16 [num_blocks, page_size, 1, head_dim] latent tensor matching `cache`.
Status check_latent_cache(const TensorView& t, const char* name, const PagedCache& cache) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(t, name, {DType::kBF16}, 4, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 0, cache.num_blocks, "num_blocks"));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 1, cache.page_size, "page_size"));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 2, 1, "heads_kv"));
  return check_dim(t, name, 3, cache.head_dim, "head_dim");
}

uint8_t* mutable_record(const PagedCache& cache, int64_t block, int64_t offset) {
  return const_cast<uint8_t*>(cache.token_record(block, offset, 0));
}

/// Encodes one bf16 latent (strided by 1) into slot (block, offset) of `cache`.
void write_token(const PagedCache& cache, int64_t block, int64_t offset, const uint16_t* latent) {
  uint8_t* record = mutable_record(cache, block, offset);
  if (cache.format == KvFormat::kBF16) {
    for (int64_t i = 0; i < cache.head_dim; ++i) store_unaligned<uint16_t>(record + 2 * i, latent[i]);
    return;
  }
  uint8_t* scales = const_cast<uint8_t*>(cache.format == KvFormat::kModel1
                                             ? cache.model1_scales(block, offset)
                                             : nullptr);
  quantize_token(cache.format, latent, record, scales);
}

/// Zeroes the bytes of page `block` past its last record, up to the next page (never past the
/// end of the view, so the last page keeps whatever follows it).
void zero_page_padding(const PagedCache& cache, int64_t block) {
  if (block + 1 >= cache.num_blocks) return;
  const int64_t used = cache.page_size * cache.geometry.bytes_per_token;
  uint8_t* page = mutable_record(cache, block, 0);
  for (int64_t i = used; i < cache.block_stride; ++i) page[i] = 0;
}

}  // namespace

Status quantize_kv_cache(const TensorView& src, KvFormat format, const TensorView& dst,
                         const Options& options) {
  if (format == KvFormat::kBF16) return invalid_argument("format: quantisation needs V32 or MODEL1");
  PagedCache cache;
  OPENMLA_RETURN_IF_ERROR(
      make_paged_cache(dst, "dst", format_geometry(format, 0).head_dim, &cache));
  OPENMLA_RETURN_IF_ERROR(check_format_matches(cache, format, "dst"));
  OPENMLA_RETURN_IF_ERROR(check_latent_cache(src, "src", cache));
  const uint16_t* base = static_cast<const uint16_t*>(src.data);
  parallel_for(cache.num_blocks, resolve_num_threads(options.num_threads), [&](int64_t b, int) {
    for (int64_t t = 0; t < cache.page_size; ++t)
      write_token(cache, b, t, base + b * src.stride[0] + t * src.stride[1]);
    zero_page_padding(cache, b);
  });
  return Status::Ok();
}

Status dequantize_kv_cache(const TensorView& src, KvFormat format, const TensorView& dst,
                           const Options& options) {
  if (format == KvFormat::kBF16) return invalid_argument("format: dequantisation needs V32 or MODEL1");
  PagedCache cache;
  OPENMLA_RETURN_IF_ERROR(
      make_paged_cache(src, "src", format_geometry(format, 0).head_dim, &cache));
  OPENMLA_RETURN_IF_ERROR(check_format_matches(cache, format, "src"));
  OPENMLA_RETURN_IF_ERROR(check_latent_cache(dst, "dst", cache));
  uint16_t* base = static_cast<uint16_t*>(dst.data);
  parallel_for(cache.num_blocks, resolve_num_threads(options.num_threads), [&](int64_t b, int) {
    for (int64_t t = 0; t < cache.page_size; ++t)
      dequantize_token(cache, b, t, 0, base + b * dst.stride[0] + t * dst.stride[1]);
  });
  return Status::Ok();
}

Status write_kv_tokens(const TensorView& latents, const TensorView& slot_mapping, KvFormat format,
                       const TensorView& cache_view) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(latents, "latents", {DType::kBF16}, 2, true));
  const int64_t head_dim =
      format == KvFormat::kBF16 ? latents.shape[1] : format_geometry(format, 0).head_dim;
  PagedCache cache;
  OPENMLA_RETURN_IF_ERROR(make_paged_cache(cache_view, "cache", head_dim, &cache));
  OPENMLA_RETURN_IF_ERROR(check_format_matches(cache, format, "cache"));
  if (cache.heads_kv != 1) return unsupported("cache: write_kv_tokens needs heads_kv == 1");
  OPENMLA_RETURN_IF_ERROR(check_dim(latents, "latents", 1, head_dim, "head_dim"));
  OPENMLA_RETURN_IF_ERROR(
      check_tensor(slot_mapping, "slot_mapping", {DType::kI32, DType::kI64}, 1, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(slot_mapping, "slot_mapping", 0, latents.shape[0], "num_tokens"));
  auto slot_at = [&](int64_t i) -> int64_t {
    const int64_t off = i * slot_mapping.stride[0];
    return slot_mapping.dtype == DType::kI32 ? static_cast<const int32_t*>(slot_mapping.data)[off]
                                             : static_cast<const int64_t*>(slot_mapping.data)[off];
  };
  for (int64_t i = 0; i < latents.shape[0]; ++i) {
    if (slot_at(i) >= cache.num_slots()) {
      return invalid_argument("slot_mapping[" + std::to_string(i) + "] = " +
                              std::to_string(slot_at(i)) + " is outside the cache (" +
                              std::to_string(cache.num_slots()) + " slots)");
    }
  }
  const uint16_t* base = static_cast<const uint16_t*>(latents.data);
  for (int64_t i = 0; i < latents.shape[0]; ++i) {
    const int64_t slot = slot_at(i);
    if (slot < 0) continue;
    write_token(cache, slot / cache.page_size, slot % cache.page_size, base + i * latents.stride[0]);
  }
  return Status::Ok();
}

Status abs_indices_to_cache_indices(const TensorView& abs_indices, const TensorView& block_table,
                                    int64_t page_size, const TensorView& out) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(abs_indices, "abs_indices", {DType::kI32}, 3, false));
  OPENMLA_RETURN_IF_ERROR(check_tensor(block_table, "block_table", {DType::kI32}, 2, false));
  OPENMLA_RETURN_IF_ERROR(check_tensor(out, "out", {DType::kI32}, 3, false));
  if (page_size < 1) return invalid_argument("page_size must be at least 1, got " + std::to_string(page_size));
  OPENMLA_RETURN_IF_ERROR(check_dim(block_table, "block_table", 0, abs_indices.shape[0], "batch"));
  for (int d = 0; d < 3; ++d) {
    OPENMLA_RETURN_IF_ERROR(check_dim(out, "out", d, abs_indices.shape[d], "same as abs_indices"));
  }
  const int32_t* abs = static_cast<const int32_t*>(abs_indices.data);
  const int32_t* table = static_cast<const int32_t*>(block_table.data);
  int32_t* dst = static_cast<int32_t*>(out.data);
  const int64_t max_blocks = block_table.shape[1];
  for (int64_t b = 0; b < abs_indices.shape[0]; ++b)
    for (int64_t s = 0; s < abs_indices.shape[1]; ++s)
      for (int64_t k = 0; k < abs_indices.shape[2]; ++k) {
        const int64_t pos = abs[b * abs_indices.stride[0] + s * abs_indices.stride[1] +
                                k * abs_indices.stride[2]];
        int64_t result = -1;
        if (pos >= 0 && pos / page_size < max_blocks) {
          const int64_t block = table[b * block_table.stride[0] + (pos / page_size) * block_table.stride[1]];
          int64_t flat = 0;
          const bool overflow = __builtin_mul_overflow(block, page_size, &flat) ||
                                __builtin_add_overflow(flat, pos % page_size, &flat);
          result = (block >= 0 && !overflow && flat <= INT32_MAX) ? flat : -1;
        }
        dst[b * out.stride[0] + s * out.stride[1] + k * out.stride[2]] = static_cast<int32_t>(result);
      }
  return Status::Ok();
}

}  // namespace openmla
