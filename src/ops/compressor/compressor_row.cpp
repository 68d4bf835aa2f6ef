// KV compressor, the steps after pooling shared by the fast kernels (fp32, as DeepSeek's reference
// `Compressor.forward` after the weighted sum): pooled -> bf16 -> RMSNorm (fp32, weight) -> bf16
// -> RoPE on the last 64 dims (interleaved pairs, fp32 complex product) -> bf16 -> (indexer keys:
// normalised Walsh-Hadamard, fp32) -> MODEL1 quantiser, indexer_write_keys or the bf16 latent
// verbatim at the entry's slot.
#include <cmath>

#include "core/dtype.h"
#include "ops/compressor/compressor.h"

namespace openmla {

void compressor_store_latent(const CompressorParams& p, int64_t slot, const uint16_t* latent) {
  if (p.indexer_cache) {
    int64_t one_slot = slot;
    const TensorView key =
        make_tensor(const_cast<uint16_t*>(latent), DType::kBF16, {1, p.head_dim});
    indexer_write_keys(key, make_tensor(&one_slot, DType::kI64, {1}), p.indexer_format,
                       p.indexer_view);
    return;
  }
  const PagedCache& kv = p.kv;
  const int64_t block = slot / kv.page_size, offset = slot % kv.page_size;
  uint8_t* rec = const_cast<uint8_t*>(kv.token_record(block, offset, 0));
  if (kv.format == KvFormat::kModel1) {
    quantize_token(KvFormat::kModel1, latent, rec,
                   const_cast<uint8_t*>(kv.model1_scales(block, offset)));
  } else {
    for (int64_t i = 0; i < kv.head_dim; ++i) store_unaligned<uint16_t>(rec + 2 * i, latent[i]);
  }
}

void compressor_finish_row(const CompressorParams& p, int64_t row, const float* pooled) {
  const int64_t d = p.head_dim, nope = d - kCompressorRopeDim;
  float x[kCompressorHeadDim];
  float sum_sq = 0.0f;
  for (int64_t j = 0; j < d; ++j) {
    x[j] = round_to_bf16(pooled[j]);
    sum_sq += x[j] * x[j];
  }
  const float r = 1.0f / std::sqrt(sum_sq / static_cast<float>(d) + p.eps);
  for (int64_t j = 0; j < d; ++j)
    x[j] = round_to_bf16(p.norm_weight[j * p.norm_weight_stride] * (x[j] * r));
  const int64_t pos = p.positions.at(row) + 1 - p.ratio;
  const float* cs = p.cos_sin + pos * p.cos_sin_stride;
  constexpr int64_t kPairs = kCompressorRopeDim / 2;
  for (int64_t i = 0; i < kPairs; ++i) {
    const float a = x[nope + 2 * i], b = x[nope + 2 * i + 1];
    const float c = cs[i], s = cs[kPairs + i];
    x[nope + 2 * i] = round_to_bf16(a * c - b * s);
    x[nope + 2 * i + 1] = round_to_bf16(a * s + b * c);
  }
  if (p.hadamard) {
    walsh_hadamard(x, d);
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    for (int64_t j = 0; j < d; ++j) x[j] *= scale;
  }
  uint16_t latent[kCompressorHeadDim];
  for (int64_t j = 0; j < d; ++j) latent[j] = float_to_bf16(x[j]);
  compressor_store_latent(p, p.kv_slots.at(row), latent);
}

}  // namespace openmla
