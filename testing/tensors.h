// Owning strided tensors and deterministic random data (splitmix64) for tests, verify, bench and
// demo. `non_contiguous` mimics FlashMLA's non_contiguousify: the last dim is padded by 128
// elements and every other dim by 1, so every stride is unusual while the last dim stays dense.
#pragma once

#include <cstdint>
#include <vector>

#include "openmla/core.h"

namespace openmla::testing {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next();
  double uniform();          ///< [0, 1)
  int64_t below(int64_t n);  ///< [0, n)
  float normal();            ///< approximately N(0, 1)

 private:
  uint64_t state_;
};

struct OwnedTensor {
  std::vector<uint64_t> storage;  ///< 8-byte aligned backing store
  TensorView view;

  template <typename T>
  T* data() const {
    return static_cast<T*>(view.data);
  }
  /// Element offset of a logical index.
  int64_t offset(std::initializer_list<int64_t> index) const;
  template <typename T>
  T& at(std::initializer_list<int64_t> index) const {
    return data<T>()[offset(index)];
  }
};

/// Allocates a tensor of `shape` (zero-filled, padding included).
OwnedTensor make_owned(DType dtype, const std::vector<int64_t>& shape, bool non_contiguous);
/// Allocates raw bytes viewed with explicit strides (in elements).
OwnedTensor make_owned_strided(DType dtype, const std::vector<int64_t>& shape,
                               const std::vector<int64_t>& stride, int64_t storage_elements);

/// A view of `data` with `shape`; row-major contiguous strides unless `stride` (in elements) is
/// given. The view does not own the data.
TensorView tensor_view(const void* data, DType dtype, const std::vector<int64_t>& shape,
                       const std::vector<int64_t>& stride = {});

/// Reads a bf16 / fp16 / f32 tensor in logical row-major order as floats.
std::vector<float> to_float_vector(const TensorView& t);

/// Fills a bf16 or fp16 tensor with clamp(normal * scale + shift, -limit, limit), rounded to
/// its dtype (RNE).
void fill_normal(const OwnedTensor& t, Rng& rng, float scale, float shift, float limit);

/// An attention-sink vector: normal values with ~31 % +inf and ~31 % -inf (FlashMLA's tests).
void fill_sink(const OwnedTensor& t, Rng& rng);

}  // namespace openmla::testing
