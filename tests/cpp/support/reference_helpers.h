// Helpers shared by the reference-semantics tests (test_reference_*.cpp): forced reference
// runs, bf16 data, key decoding through an independent model, and small setup builders.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "support/test_support.h"

namespace openmla_test {

inline const float kInf = std::numeric_limits<float>::infinity();
inline const std::vector<int64_t> kAllPageSizes = {1, 2, 53, 61, 64, 69, 576};

// These tests check the reference kernels, so every call forces them by name.
inline OpResult ref_sparse_decode(const SparseDecodeCase& c, bool nc = false) {
  openmla::Options o;
  o.kernel = "sparse_decode.ref";
  return run_sparse_decode(c, nc, o);
}
inline OpResult ref_dense_decode(const DenseDecodeCase& c, bool nc = false) {
  openmla::Options o;
  o.kernel = "dense_decode.ref";
  return run_dense_decode(c, nc, o);
}
inline OpResult ref_sparse_prefill(const SparsePrefillCase& c, bool nc = false) {
  openmla::Options o;
  o.kernel = "sparse_prefill.ref";
  return run_sparse_prefill(c, nc, o);
}

inline int64_t dim_of(KvFormat f) { return f == KvFormat::kModel1 ? 512 : 576; }
inline const char* name_of(KvFormat f) { return openmla::kv_format_name(f); }

inline std::vector<uint16_t> rand_bf16(int64_t n, uint32_t seed, double sd = 0.1, double clamp = 1.0) {
  return Rng(seed).bf16_normal(n, sd, clamp);
}

/// Maps logical token ids to cache slots; values outside [0, n) pass through raw (invalid ones).
inline std::vector<int32_t> to_slots(const PagedKv& kv, const std::vector<int64_t>& logical, int64_t n,
                              int64_t request = 0) {
  std::vector<int32_t> s;
  for (int64_t v : logical)
    s.push_back(v >= 0 && v < n ? kv.slot(v, request) : static_cast<int32_t>(v));
  return s;
}

/// Key vector (floats) of `slot` in a BF16 PagedKv.
inline std::vector<float> key_of(const PagedKv& kv, int64_t slot, int64_t head = 0) {
  const int64_t block = slot / kv.page_size, off = slot % kv.page_size;
  const uint8_t* p = kv.bytes() + block * kv.page_stride_bytes + (off * kv.heads_kv + head) * kv.head_dim * 2;
  std::vector<float> k(kv.head_dim);
  for (int64_t i = 0; i < kv.head_dim; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    k[i] = bf(h);
  }
  return k;
}

/// What one token of `format` dequantises to, computed with the independent model.
inline std::vector<uint16_t> model_roundtrip(KvFormat f, const uint16_t* latent) {
  const int64_t d = dim_of(f);
  std::vector<uint16_t> out(latent, latent + d);
  if (f == KvFormat::kBF16) return out;
  std::vector<uint8_t> rec(656), sc(7);
  model_quantize_token(f, latent, rec.data(), sc.data());
  model_dequantize_token(f, rec.data(), sc.data(), out.data());
  return out;
}

inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

inline std::vector<float> row_floats(const std::vector<uint16_t>& v, int64_t at, int64_t n) {
  std::vector<float> f(n);
  for (int64_t i = 0; i < n; ++i) f[i] = bf(v[at + i]);
  return f;
}

inline void expect_lonely(const OpResult& r, int64_t row_out, int64_t row_lse) {
  for (int64_t i = 0; i < 512; ++i) ASSERT_EQ(bf(r.out[row_out * 512 + i]), 0.0f) << "element " << i;
  EXPECT_EQ(r.lse[row_lse], kInf);
}

// ================================================================ sparse decode

struct SdSetup {
  std::vector<uint16_t> tokens;  // [n, d] logical latents
  PagedKv kv;
  int64_t n;
};

inline SdSetup sd_setup(KvFormat f, int64_t n, int64_t page, uint32_t seed) {
  SdSetup s;
  s.n = n;
  s.tokens = rand_bf16(n * dim_of(f), seed);
  s.kv = build_paged_kv(f, dim_of(f), 1, page, {s.tokens}, seed + 1);
  return s;
}
}  // namespace openmla_test
