// A program that uses openmla as an installed library: builds a tiny DeepSeek V3.2 FP8 cache
// (V32, 656 bytes per token) with the public API, runs sparse decode on it and checks the result.
//
// Every cache token holds the same latent vector, so whatever the attention weights, each output
// row must equal that vector's first 512 dims (exact here: the values are representable in e4m3
// with a power-of-two scale). Prints "openmla <version> sparse decode ok: ..." and exits 0.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "openmla/openmla.h"

namespace {

uint16_t to_bf16(float f) {  // round to nearest even; no NaN here
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

float from_bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

int fail(const char* what, const openmla::Status& s) {
  std::fprintf(stderr, "%s: %s\n", what, s.to_string().c_str());
  return 1;
}

}  // namespace

int main() {
  constexpr int64_t kBlocks = 2, kPage = 16, kDim = 576, kDimV = 512;
  constexpr int64_t kBatch = 1, kSeqQ = 1, kHeads = 4, kTopk = 8;

  // The latent of every token: 0, 0.125, ..., 0.875 repeating; RoPE dims the same pattern.
  std::vector<float> latent(kDim);
  for (int64_t d = 0; d < kDim; ++d) latent[d] = 0.125f * static_cast<float>(d % 8);
  std::vector<uint16_t> latents(kBlocks * kPage * kDim);
  for (std::size_t i = 0; i < latents.size(); ++i) latents[i] = to_bf16(latent[i % kDim]);

  int64_t page_bytes = 0;
  openmla::Status s = openmla::kv_page_bytes(openmla::KvFormat::kV32, kPage, kDim, 1, &page_bytes);
  if (!s.ok()) return fail("kv_page_bytes", s);
  std::vector<uint8_t> cache(kBlocks * page_bytes);
  const openmla::TensorView cache_view = openmla::make_strided_tensor(
      cache.data(), openmla::DType::kU8, {kBlocks, kPage, 1, 656}, {page_bytes, 656, 656, 1});
  s = openmla::quantize_kv_cache(
      openmla::make_tensor(latents.data(), openmla::DType::kBF16, {kBlocks, kPage, 1, kDim}),
      openmla::KvFormat::kV32, cache_view);
  if (!s.ok()) return fail("quantize_kv_cache", s);

  std::vector<uint16_t> q(kBatch * kSeqQ * kHeads * kDim);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = to_bf16(std::sin(0.37f * i) * 0.5f);
  // Six cache slots and two invalid (-1) ones, which are ignored.
  std::vector<int32_t> indices = {0, 5, 17, 31, 9, 22, -1, -1};
  std::vector<uint16_t> out(kBatch * kSeqQ * kHeads * kDimV);
  std::vector<float> lse(kBatch * kHeads * kSeqQ);

  openmla::SparseDecodeArgs a;
  a.q = openmla::make_tensor(q.data(), openmla::DType::kBF16, {kBatch, kSeqQ, kHeads, kDim});
  a.kv_cache = cache_view;
  a.indices = openmla::make_tensor(indices.data(), openmla::DType::kI32, {kBatch, kSeqQ, kTopk});
  a.out = openmla::make_tensor(out.data(), openmla::DType::kBF16, {kBatch, kSeqQ, kHeads, kDimV});
  a.lse = openmla::make_tensor(lse.data(), openmla::DType::kF32, {kBatch, kHeads, kSeqQ});

  openmla::Plan plan;
  s = openmla::plan_sparse_decode(a, {}, &plan);
  if (s.ok()) s = openmla::run_sparse_decode(plan, a);
  if (!s.ok()) return fail("sparse decode", s);

  double max_err = 0.0;
  for (std::size_t i = 0; i < out.size(); ++i)
    max_err = std::max(max_err, std::fabs(double(from_bf16(out[i])) - latent[i % kDimV]));
  bool lse_finite = true;
  for (float v : lse) lse_finite &= std::isfinite(v);
  const bool ok = max_err == 0.0 && lse_finite;
  std::printf(
      "openmla %s sparse decode %s: kernel %s, %lld heads x %lld dims, max error %g, "
      "lse[0] %.4f\n",
      openmla::version(), ok ? "ok" : "FAILED", plan.kernel_name(), static_cast<long long>(kHeads),
      static_cast<long long>(kDimV), max_err, lse[0]);
  return ok ? 0 : 1;
}
