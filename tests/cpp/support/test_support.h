// Small shared helpers for the openmla GoogleTest suite: bf16 buffers, deterministic random data,
// padded (non-contiguous) tensor views, paged KV caches built through the public API, thin
// wrappers that run the three ops, an independent e4m3 model and a FlashMLA-style comparator.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "openmla/attention.h"
#include "openmla/core.h"
#include "openmla/kv_cache.h"

namespace openmla_test {

using openmla::DType;
using openmla::KvFormat;
using openmla::Status;
using openmla::TensorView;

constexpr uint16_t kBf16NaN = 0x7FC0;
constexpr int32_t kGarbageBlock = 2147480000;

/// bf16 bits of `f`; the caller promises f is exactly representable (checked by a gtest ASSERT in
/// the helper: a non-exact value aborts the test with a message).
uint16_t bf16_exact(float f);
inline float bf(uint16_t h) { return openmla::bf16_to_float(h); }

/// Deterministic random source.
class Rng {
 public:
  explicit Rng(uint32_t seed) : gen_(seed) {}
  double normal() { return std::normal_distribution<double>(0.0, 1.0)(gen_); }
  int64_t uniform_int(int64_t lo, int64_t hi) {  // inclusive
    return std::uniform_int_distribution<int64_t>(lo, hi)(gen_);
  }
  /// bf16 values normal(0, sd) clamped to [-clamp, clamp].
  std::vector<uint16_t> bf16_normal(int64_t n, double sd, double clamp);
  std::vector<int64_t> permutation(int64_t n);
  std::mt19937& engine() { return gen_; }

 private:
  std::mt19937 gen_;
};

/// Independent e4m3fn model (written from the format description, not from the library):
/// value of a code (NaN for 0x7F / 0xFF) and round-to-nearest-even encoding by exhaustive search
/// over the 127 finite magnitudes (values that round past 448 give NaN).
double model_e4m3_value(uint8_t code);
uint8_t model_e4m3_encode(double x);

/// Byte-exact model of FlashMLA's quantiser for one token (latent of 576 or 512 bf16), writing the
/// record (656 B for V32, 576 B for MODEL1) and, for MODEL1, the 7 scale bytes. Independent of
/// the library (uses only model_e4m3_encode and plain arithmetic).
void model_quantize_token(KvFormat format, const uint16_t* latent, uint8_t* record,
                          uint8_t* scales7);
/// Reference dequantisation model: V32 fp32 product rounded to bf16, MODEL1 bf16 x bf16.
void model_dequantize_token(KvFormat format, const uint8_t* record, const uint8_t* scales7,
                            uint16_t* out);

/// A padded copy of a row-major tensor: every dim but the last gets one extra element of pitch,
/// the last dim gets `last_pad` extra (so all strides are non-trivial, last dim stays contiguous).
template <typename T>
struct Padded {
  std::vector<int64_t> shape, stride;
  std::vector<T> buf;
  Padded(std::vector<int64_t> shape_in, T fill, int64_t last_pad = 3) : shape(std::move(shape_in)) {
    const size_t n = shape.size();
    stride.assign(n, 1);
    int64_t pitch = shape[n - 1] + last_pad;
    for (size_t i = n - 1; i-- > 0;) {
      stride[i] = pitch;
      pitch *= shape[i] + 1;
    }
    buf.assign(static_cast<size_t>(pitch + 8), fill);
  }
  int64_t offset(int64_t flat) const {  // flat row-major index -> element offset
    int64_t off = 0;
    for (size_t i = shape.size(); i-- > 0;) {
      off += (flat % shape[i]) * stride[i];
      flat /= shape[i];
    }
    return off;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  void load(const std::vector<T>& c) {
    for (int64_t i = 0; i < numel(); ++i) buf[offset(i)] = c[i];
  }
  std::vector<T> extract() const {
    std::vector<T> c(numel());
    for (int64_t i = 0; i < numel(); ++i) c[i] = buf[offset(i)];
    return c;
  }
  TensorView view(DType dtype) {
    TensorView t;
    t.data = buf.data();
    t.dtype = dtype;
    t.ndim = static_cast<int32_t>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) {
      t.shape[i] = shape[i];
      t.stride[i] = stride[i];
    }
    return t;
  }
};

TensorView contiguous_view(void* data, DType dtype, const std::vector<int64_t>& shape);

/// A paged KV cache holding one or more requests, each starting on a fresh page. Pages are placed
/// at permuted physical positions; one spare page is never used. Every slot no request fills holds
/// NaN latents (quantised for FP8 formats). For FP8 formats the page stride is the minimum page
/// size plus `pad_bytes` (V32 default: one extra 656-B token like upstream).
struct PagedKv {
  KvFormat format = KvFormat::kBF16;
  int64_t head_dim = 0, heads_kv = 1, page_size = 1, num_blocks = 0;
  int64_t page_stride_bytes = 0;             ///< bytes between pages
  int64_t page_bytes = 0;                    ///< minimum bytes of one page
  std::vector<uint64_t> storage;             ///< 8-byte aligned backing store
  std::vector<std::vector<int32_t>> blocks;  ///< per request: physical block of each logical block

  uint8_t* bytes() { return reinterpret_cast<uint8_t*>(storage.data()); }
  const uint8_t* bytes() const { return reinterpret_cast<const uint8_t*>(storage.data()); }
  int64_t total_bytes() const { return num_blocks * page_stride_bytes; }
  /// Flat slot (block * page_size + offset) of logical token t of request r.
  int32_t slot(int64_t t, int64_t r = 0) const {
    return static_cast<int32_t>(blocks[r][t / page_size] * page_size + t % page_size);
  }
  TensorView view();
  /// Overwrites all page padding (and MODEL1 scale pad bytes) with 0xFF.
  void poison_padding();
};

/// requests[r] holds L_r tokens of heads_kv x head_dim bf16 values ([L_r, heads_kv, head_dim]).
/// pad_tokens: extra token-sized padding per page (bytes = pad_tokens * bytes_per_token for V32
/// / BF16, pad_tokens * 576 for MODEL1).
PagedKv build_paged_kv(KvFormat format, int64_t head_dim, int64_t heads_kv, int64_t page_size,
                       const std::vector<std::vector<uint16_t>>& requests, uint32_t seed,
                       int64_t pad_tokens = 1);
/// The BF16 copy of an FP8 PagedKv made with dequantize_kv_cache (same page placement).
PagedKv dequantized_copy(PagedKv& fp8);

struct SparseDecodeCase {
  int64_t batch = 1, seq_q = 1, heads_q = 2, head_dim = 576, topk = 4;
  std::vector<uint16_t> q;           ///< [batch, seq_q, heads_q, head_dim]
  std::vector<int32_t> indices;      ///< [batch, seq_q, topk]
  std::vector<int32_t> topk_length;  ///< empty: absent
  std::vector<float> sink;           ///< empty: absent
  PagedKv* kv = nullptr;
  PagedKv* extra = nullptr;
  int64_t extra_topk = 0;
  std::vector<int32_t> extra_indices;  ///< [batch, seq_q, extra_topk]
  std::vector<int32_t> extra_topk_length;
  float scale = 0.0f;
};
struct OpResult {
  Status status;
  std::vector<uint16_t> out;
  std::vector<float> lse;         ///< [batch, heads_q, seq_q] (prefill: [seq_q, heads_q])
  std::vector<float> max_logits;  ///< prefill only
};
/// Runs sparse decode through the public API. noncontiguous: q, indices, out, lse (and the
/// optional tensors) are passed as padded views; lse as upstream's transposed view.
OpResult run_sparse_decode(const SparseDecodeCase& c, bool noncontiguous = false,
                           const openmla::Options& options = {});

struct DenseDecodeCase {
  int64_t batch = 1, seq_q = 1, heads_q = 2, head_dim = 576;
  std::vector<uint16_t> q;       ///< [batch, seq_q, heads_q, head_dim]
  PagedKv* kv = nullptr;         ///< one request per batch element
  std::vector<int32_t> seqlens;  ///< [batch]
  int64_t max_blocks = 0;        ///< block table width (unused entries = kGarbageBlock)
  bool causal = false;
  float scale = 0.0f;
};
OpResult run_dense_decode(const DenseDecodeCase& c, bool noncontiguous = false,
                          const openmla::Options& options = {});

struct SparsePrefillCase {
  int64_t seq_q = 1, seq_kv = 4, heads_q = 2, heads_kv = 1, head_dim = 576, topk = 4;
  std::vector<uint16_t> q;           ///< [seq_q, heads_q, head_dim]
  std::vector<uint16_t> kv;          ///< [seq_kv, heads_kv, head_dim]
  std::vector<int32_t> indices;      ///< [seq_q, heads_kv, topk]
  std::vector<int32_t> topk_length;  ///< empty: absent
  std::vector<float> sink;
  float scale = 0.5f;
};
OpResult run_sparse_prefill(const SparsePrefillCase& c, bool noncontiguous = false,
                            const openmla::Options& options = {});

/// Bitwise equality of two vectors of trivially copyable values (NaN payloads, -0 and inf
/// included), reporting the first differing element.
template <typename T>
::testing::AssertionResult SameBits(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure()
             << "first difference at element " << i << ": " << +a[i] << " vs " << +b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

/// FlashMLA's check_is_allclose (spec 7.1) on float data.
::testing::AssertionResult AllClose(const std::vector<float>& answer,
                                    const std::vector<float>& reference, double abs_tol,
                                    double rel_tol, double cos_tol);
std::vector<float> bf16_to_floats(const std::vector<uint16_t>& v);

/// `st` is an error of `code` whose message contains `needle` (the argument it must name).
::testing::AssertionResult Fails(const Status& st, const std::string& needle,
                                 openmla::StatusCode code = openmla::StatusCode::kInvalidArgument);

/// Independent naive attention in long double: for one query row q (floats), keys [n, d],
/// returns lse/max and writes out (dv floats, normalised, sink applied as in the spec).
struct NaiveRow {
  double lse, max_logit;
};
NaiveRow naive_attention(const std::vector<float>& q, const std::vector<std::vector<float>>& keys,
                         double scale, int64_t dv, const float* sink, std::vector<double>* out);

}  // namespace openmla_test
